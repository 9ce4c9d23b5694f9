"""Public names of a package, imported from their modules on first use (PEP 562).

A package's ``__init__`` lists where each public name lives; ``import package.module`` then
loads that module alone, and ``package.name`` (or ``from package import name``) imports its
module the first time.

Example:
    >>> import types
    >>> package = types.ModuleType("demo")
    >>> package.__getattr__, package.__dir__ = lazy_exports(package.__dict__, {"sqrt": "math"})
    >>> package.__getattr__("sqrt")(9.0)
    3.0
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(namespace: dict[str, Any], public: dict[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for a package whose ``namespace`` re-exports ``public``
    (name -> the module that defines it); a name is imported once, then kept in ``namespace``."""

    def __getattr__(name: str) -> Any:
        if name not in public:
            raise AttributeError(f"module {namespace.get('__name__')!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(public[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*public, *(key for key in namespace if not key.startswith("_"))})

    return __getattr__, __dir__
