"""A small named registry filled by a decorator.

One instance holds models, one transforms, one search spaces. Duplicate names are
rejected at registration; an unknown name raises an error that lists the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from compressor.errors import CompressorError

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(CompressorError, KeyError):
    """A name looked up in a registry does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects.

    Example:
        >>> widgets = Registry("widget")
        >>> @widgets.register("knob")
        ... def knob():
        ...     return 1
        >>> widgets.get("knob")()
        1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``.

        Raises:
            ValueError: if ``name`` is already registered.
        """

        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Returns the object registered as ``name``.

        Raises:
            UnknownNameError: naming the valid choices.
        """
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
