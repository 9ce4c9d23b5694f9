"""A small named registry filled by a decorator, and by other packages through entry points.

One instance holds models, one transforms, one search spaces. Duplicate names are
rejected at registration; an unknown name raises an error that lists the valid ones.

A registry with an entry-point group (``compressor.transforms``, ``compressor.search_spaces``)
also holds what installed packages declare there, loaded the first time it is read::

    # the other package's setup.cfg
    [options.entry_points]
    compressor.transforms =
        my_transform = my_package.transforms:MyTransform

Loading an entry point imports it; if that import registered the name (a decorator), that
is the object, else the loaded object is registered under the entry point's name. An entry
point that fails to load is left out of :meth:`Registry.names` and named, with why, when it
is asked for.
"""

from __future__ import annotations

import importlib.metadata
import types
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

    def __init__(
        self, kind: str, *, entry_points: str | None = None, on_register: Callable[[str, T], None] | None = None
    ) -> None:
        self.kind = kind
        self.entry_points = entry_points
        self.on_register = on_register
        self._items: dict[str, T] = {}
        self._broken: dict[str, str] = {}
        self._loaded = entry_points is None

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for entry in _entry_points(self.entry_points):
            if entry.name in self._items:
                continue
            try:
                obj = entry.load()
                if entry.name not in self._items and not isinstance(obj, types.ModuleType):
                    self.register(entry.name)(obj)
            except Exception as error:  # the other package's bug: say so when its name is asked for
                self._broken[entry.name] = f"{entry.value} failed to load: {type(error).__name__}: {error}"
                continue
            if entry.name not in self._items:
                self._broken[entry.name] = f"{entry.value} registered no {self.kind} named {entry.name!r}"

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``.

        Raises:
            ValueError: if ``name`` is already registered.
        """

        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if self.on_register is not None:
                self.on_register(name, obj)
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Returns the object registered as ``name``.

        Raises:
            UnknownNameError: naming the valid choices.
        """
        self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            if name in self._broken:
                raise UnknownNameError(f"{self.kind} {name!r}: entry point {self._broken[name]}") from None
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def get_or_none(self, name: str) -> T | None:
        """The object registered as ``name``, or None."""
        self._load_entry_points()
        return self._items.get(name)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_entry_points()
        return len(self._items)


def _entry_points(group: str | None) -> list[importlib.metadata.EntryPoint]:
    """Every distribution's entry points in ``group``, the first of each name on ``sys.path`` kept.

    Unlike ``importlib.metadata.entry_points``, a distribution is not hidden by an older copy of
    its metadata earlier on the path (a stale ``*.egg-info`` in the working folder).
    """
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for distribution in importlib.metadata.distributions():
        for entry in distribution.entry_points:
            if entry.group == group:
                found.setdefault(entry.name, entry)
    return list(found.values())
