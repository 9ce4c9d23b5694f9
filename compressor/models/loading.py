"""Turning a model spec (a registered name or ``package.module:callable``) into a module."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from compressor.errors import ModelLoadError
from compressor.keyvalue import parse_pairs
from compressor.models.micronet import micronet
from compressor.models.unet import unet
from compressor.origin import Origin, set_origin
from compressor.registry import Registry

__all__ = ["MODELS", "build_model", "parse_model_args"]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", entry_points="compressor.models")
MODELS.register("unet")(unet)
MODELS.register("micronet")(micronet)


def build_model(spec: str | nn.Module, args: Mapping[str, Any] | None = None) -> nn.Module:
    """Builds the model named by ``spec``.

    Args:
        spec: a registered name (``"unet"``, ``"micronet"``), an import path
            ``"package.module:callable"`` whose callable returns an ``nn.Module``, or a
            module (returned as is).
        args: keyword arguments for the builder.

    Returns:
        The model.

    Raises:
        ModelLoadError: the name is unknown, the import fails, the attribute is missing
            or not callable, the call fails, or it returns something that is not an
            ``nn.Module``.

    Example:
        >>> build_model("unet", {"base_width": 8}).head.in_channels
        8
    """
    if isinstance(spec, nn.Module):
        return spec
    args = dict(args or {})
    builder = resolve_builder(spec)
    try:
        model = builder(**args)
    except Exception as error:  # noqa: BLE001 - the user's code may raise anything
        raise ModelLoadError(f"model {spec!r} failed to build with {args}: {error}") from error
    if not isinstance(model, nn.Module):
        raise ModelLoadError(
            f"model {spec!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return set_origin(model, Origin(base=spec, args=args))


def resolve_builder(spec: str) -> Callable[..., Any]:
    """The callable a model spec names: a registered model, or an import path (the module is imported).

    Raises:
        ModelLoadError: an unknown name, or an import path that does not resolve to a callable.
    """
    if ":" in spec:
        return _import_callable(spec)
    if spec in MODELS:
        return MODELS.get(spec)
    raise ModelLoadError(
        f"unknown model {spec!r}; use one of {', '.join(MODELS.names())} or an import path 'package.module:callable'"
    )


def _import_callable(spec: str) -> Callable[..., Any]:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ModelLoadError(f"model import path {spec!r} must look like 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - ImportError, or whatever the module raises
        raise ModelLoadError(f"cannot import module {module_name!r} of model {spec!r}: {error}") from error
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ModelLoadError(f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ModelLoadError(f"{spec!r} is a {type(target).__name__}, not a callable")
    return target


def parse_model_args(pairs: Iterable[str]) -> dict[str, Any]:
    """Parses ``key=value`` strings (:mod:`compressor.keyvalue`); values are read as YAML (``8``, ``true``, ``null``).

    Raises:
        ConfigError: a pair without ``=`` or with an empty key.
    """
    return parse_pairs(pairs, what="model argument")