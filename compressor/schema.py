"""Type-checked keyword arguments from plain data (YAML, JSON, ``key=value``).

A callable's signature is its schema: parameter names, type hints and defaults. Unknown
keys and wrong types become :class:`~compressor.errors.ConfigError` naming the key and
where it came from.
"""

from __future__ import annotations

import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union

from compressor.bounds import shown
from compressor.errors import ConfigError

__all__ = ["Parameter", "parameters_of", "check_arguments", "check_value"]


class Parameter(typing.NamedTuple):
    name: str
    annotation: Any
    default: Any
    required: bool

    def type_name(self) -> str:
        return _type_name(self.annotation)


def parameters_of(function: Callable[..., Any]) -> list[Parameter]:
    """The keyword parameters of ``function`` with resolved type hints."""
    hints = typing.get_type_hints(function)
    result = []
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        required = parameter.default is inspect.Parameter.empty
        result.append(Parameter(name, hints.get(name, Any), None if required else parameter.default, required))
    return result


def check_arguments(
    schema: Callable[..., Any] | list[Parameter], arguments: Mapping[str, Any], *, where: str
) -> dict[str, Any]:
    """Checks ``arguments`` against a schema and fills defaults.

    Args:
        schema: a callable whose signature is the schema, or its :func:`parameters_of`.
        arguments: plain values, e.g. read from YAML.
        where: prefix of error messages, e.g. ``"recipe.yaml: transforms[1] (fire)"``.

    Returns:
        All parameters, given ones converted (ints accepted for floats, lists for tuples)
        and the rest at their defaults.

    Raises:
        ConfigError: an unknown key, a missing required key, or a value of the wrong type.

    Example:
        >>> def scale(*, factor: float = 1.0, name: str | None = None): ...
        >>> check_arguments(scale, {"factor": 2}, where="x")
        {'factor': 2.0, 'name': None}
        >>> check_arguments(scale, {"factor": "1e-3"}, where="x")  # YAML 1.1 reads 1e-3 as a string
        {'factor': 0.001, 'name': None}
    """
    parameters = schema if isinstance(schema, list) else parameters_of(schema)
    known = {parameter.name: parameter for parameter in parameters}
    unknown = [key for key in arguments if key not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(known) or '(none)'}")
    result = {}
    for name, parameter in known.items():
        if name in arguments:
            result[name] = check_value(arguments[name], parameter.annotation, where=f"{where}: {name}")
        elif parameter.required:
            raise ConfigError(f"{where}: missing required key {name!r}")
        else:
            result[name] = parameter.default
    return result


def check_value(value: Any, annotation: Any, *, where: str) -> Any:
    """Checks one value against a type hint; returns it converted where lossless.

    Raises:
        ConfigError: ``"<where>: expected <type>, got <value>"``; NaN or infinity where a
            number is expected: ``"<where>: expected a finite number, got nan"``.
    """
    converted = _convert(value, annotation)
    if converted is _MISMATCH:
        if _non_finite(value) and _takes_float(annotation):
            raise ConfigError(f"{where}: expected a finite number, got {shown(value, limit=200)}")
        raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {shown(value, limit=200)}")
    return converted


def _as_float(value: Any) -> float | None:
    """``value`` as a float (infinity for an integer too large for one); None if not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf
    if isinstance(value, float):
        return value
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)  # 1e-3: a number, though YAML 1.1 (PyYAML) reads it as a string
    return None


def _non_finite(value: Any) -> bool:
    """NaN, infinity, or an integer too large for a float (or a list holding one)."""
    if isinstance(value, (list, tuple)):
        return any(_non_finite(item) for item in value)
    number = _as_float(value)
    return number is not None and not math.isfinite(number)


def _takes_float(annotation: Any) -> bool:
    """Whether a number is among the types of ``annotation`` (also inside a list or union)."""
    return annotation is float or any(_takes_float(option) for option in typing.get_args(annotation))


_MISMATCH = object()
_EXPONENT_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")


def _convert(value: Any, annotation: Any) -> Any:
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(annotation):
            converted = _convert(value, option)
            if converted is not _MISMATCH:
                return converted
        return _MISMATCH
    if origin is Literal:
        return value if value in typing.get_args(annotation) else _MISMATCH
    if annotation is type(None):
        return None if value is None else _MISMATCH
    if annotation is bool:
        return value if isinstance(value, bool) else _MISMATCH
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _MISMATCH
    if annotation is float:  # finite: NaN and infinity are refused wherever a number is read
        number = _as_float(value)
        return number if number is not None and math.isfinite(number) else _MISMATCH
    if annotation is str:
        return value if isinstance(value, str) else _MISMATCH
    if origin in (list, tuple, typing.get_origin(list[int])) or annotation in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            return _MISMATCH
        args = typing.get_args(annotation)
        item_type = args[0] if args else Any
        items = [_convert(item, item_type) for item in value]
        if any(item is _MISMATCH for item in items):
            return _MISMATCH
        return tuple(items) if origin is tuple else list(items)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            return _MISMATCH
        key_type, item_type = typing.get_args(annotation) or (Any, Any)
        pairs = [(_convert(key, key_type), _convert(item, item_type)) for key, item in value.items()]
        if any(key is _MISMATCH or item is _MISMATCH for key, item in pairs):
            return _MISMATCH
        return dict(pairs)
    return value if isinstance(value, annotation) else _MISMATCH


def _type_name(annotation: Any, *, plural: bool = False) -> str:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(option, plural=plural) for option in typing.get_args(annotation))
    if origin is Literal:
        return "one of " + ", ".join(repr(option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if origin in (list, tuple) or annotation in (list, tuple):
        args = typing.get_args(annotation)
        return f"list of {_type_name(args[0], plural=True)}" if args else "list"
    if origin is dict or annotation is dict:
        args = typing.get_args(annotation)
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}" if args else "mapping"
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    name = names.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return f"{name}s" if plural else name
