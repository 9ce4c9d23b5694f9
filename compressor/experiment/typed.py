"""Plain data to typed frozen dataclasses and back, checking every key against the fields' type hints."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from compressor.bounds import check_config_value
from compressor.budget import Budget
from compressor.errors import CompressorError, ConfigError
from compressor.schema import check_value

__all__ = ["from_data", "to_data"]


def from_data(cls: type, raw: Any, *, where: str, source: str) -> Any:
    """Builds the dataclass ``cls`` from plain data, checking keys and types field by field.

    Nested dataclass fields recurse; a class with a ``subclass_for(raw)`` classmethod
    (the ``data:`` section) picks its subclass from the data first; :class:`Budget`
    goes through :meth:`Budget.from_dict`. Validation in ``__post_init__`` that raises
    a :class:`CompressorError` is reported with ``source`` in front; then every numeric key
    is checked against its bounds (:data:`compressor.bounds.CONFIG_BOUNDS`; NaN and infinity
    are refused already as numbers, by :func:`compressor.schema.check_value`).

    Raises:
        ConfigError: ``"<source>: <dotted key>: <problem>"``.
    """
    label = f"{source}: {where}" if where else source
    if cls is Budget:
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"{label}: expected a mapping, got {raw!r}")
        return _construct(lambda: Budget.from_dict(raw), label)
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: expected a mapping, got {raw!r}")
    if hasattr(cls, "subclass_for"):
        base = cls
        cls = _construct(lambda: base.subclass_for(raw), f"{source}: {_join(where, 'name')}")
    hints = typing.get_type_hints(cls)
    fields = {item.name: item for item in dataclasses.fields(cls) if item.init}
    unknown = [key for key in raw if key not in fields]
    if unknown:
        raise ConfigError(
            f"{source}: {_join(where, str(unknown[0]))}: unknown key; valid keys: {', '.join(fields)}"
        )
    values = {}
    for key, value in raw.items():
        annotation = hints[key]
        dotted = _join(where, key)
        nested = _optional_dataclass(annotation)
        if dataclasses.is_dataclass(annotation) or annotation is Budget:
            values[key] = from_data(annotation, value, where=dotted, source=source)
        elif nested is not None:
            values[key] = None if value is None else from_data(nested, value, where=dotted, source=source)
        elif typing.get_origin(annotation) is dict:
            values[key] = _check_mapping(value, annotation, label=f"{source}: {dotted}")
        else:
            values[key] = check_value(value, annotation, where=f"{source}: {dotted}")
    missing = [
        name for name, item in fields.items()
        if name not in values and item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: {_join(where, missing[0])}: missing required key")
    config = _construct(lambda: cls(**values), source)
    for key, value in values.items():  # after the class's own checks, which relate keys and say more
        check_config_value(_join(where, key), value, where=f"{source}: {_join(where, key)}")
    return config


def _optional_dataclass(annotation: Any) -> type | None:
    """``X`` for ``X | None`` where ``X`` is a dataclass (an optional section), else None."""
    options = [option for option in typing.get_args(annotation) if option is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(options) == 1:
        return options[0] if dataclasses.is_dataclass(options[0]) else None
    return None


def _construct(make: Callable[[], Any], label: str) -> Any:
    """``make()``, with a user error re-raised as a ``ConfigError`` prefixed by ``label``."""
    try:
        return make()
    except CompressorError as error:
        raise ConfigError(f"{label}: {error}") from None


def _check_mapping(value: Any, annotation: Any, *, label: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{label}: expected a mapping, got {value!r}")
    key_type, value_type = typing.get_args(annotation) or (Any, Any)
    return {
        check_value(key, key_type, where=f"{label} key"): check_value(item, value_type, where=f"{label}.{key}")
        for key, item in value.items()
    }


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def to_data(config: Any) -> Any:
    """Plain YAML/JSON-safe data of a (nested) configuration dataclass.

    A dataclass may name fields in an ``omit_when_default`` class attribute: those are left
    out while equal to their default, so adding a field keeps the keys of stored results.
    """
    if isinstance(config, Budget):
        return config.to_dict()
    if dataclasses.is_dataclass(config):
        omitted = getattr(config, "omit_when_default", ())
        return {
            item.name: to_data(getattr(config, item.name)) for item in dataclasses.fields(config)
            if not (item.name in omitted and getattr(config, item.name) == item.default)
        }
    if isinstance(config, (list, tuple)):
        return [to_data(item) for item in config]
    if isinstance(config, Mapping):
        return {key: to_data(value) for key, value in config.items()}
    return config
