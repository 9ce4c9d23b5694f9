"""Turning a model spec (a registered name or ``package.module:callable``) into a module."""

from __future__ import annotations

import contextlib
import io
import reprlib
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from compressor.errors import ModelLoadError, first_line
from compressor.keyvalue import parse_pairs
from compressor.models import construction, policy
from compressor.models.micronet import micronet
from compressor.models.unet import unet
from compressor.origin import Origin, set_origin
from compressor.registry import Registry

__all__ = ["MODELS", "build_model", "allowed", "parse_model_args"]

_SHORT = reprlib.Repr()  # builder arguments in a message: a few levels and items, never the whole of a shared list
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxstring, _SHORT.maxother = 3, 8, 8, 8, 60, 60
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
    source = policy.current_source()
    if source is not None:  # a model file's or a study's network: data, built under the policy
        builder, args = allowed(spec, args)
        # A stored network's deprecation notes and prints are not the user's to act on.
        with construction.no_downloads(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            construction.check_size(spec, builder, args, source)
            with construction.construction_budget(spec, source):
                model = _call(spec, builder, args)
    else:
        model = _call(spec, resolve_builder(spec), args)
    return set_origin(model, Origin(base=spec, args=args))


def allowed(spec: str, args: Mapping[str, Any] | None = None) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The builder ``spec`` names and the arguments to build it with, as the policy of
    :mod:`compressor.models.policy` allows them while a file or a study is being built (nothing
    is built; outside :func:`~compressor.models.policy.building_from`, everything is allowed).

    Raises:
        UntrustedModelError: what the policy refuses.
        ModelLoadError: a builder that cannot be found.
    """
    args = dict(args or {})
    source = policy.current_source()
    if source is None:
        return resolve_builder(spec), args
    registered = spec in MODELS
    policy.check_builder(spec, registered=registered, source=source)
    builder = resolve_builder(spec)
    return builder, policy.checked_args(spec, builder, args, registered=registered, source=source)


def _call(spec: str, builder: Callable[..., Any], args: dict[str, Any]) -> nn.Module:
    try:
        model = builder(**args)
    except construction.ConstructionLimitError:  # the policy's budget stopped it: its own one-line refusal
        raise
    except Exception as error:  # noqa: BLE001 - the user's code may raise anything
        raise ModelLoadError(f"model {spec!r} failed to build with {_SHORT.repr(args)}: {type(error).__name__}: "
                             f"{first_line(error)}") from error
    if not isinstance(model, nn.Module):
        raise ModelLoadError(
            f"model {spec!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    try:
        model.state_dict()
    except Exception as error:  # noqa: BLE001 - a subclass that skipped nn.Module.__init__
        raise ModelLoadError(f"model {spec!r} returned a {type(model).__name__} that does not work as a "
                             f"torch.nn.Module ({type(error).__name__}: {first_line(error)})") from None
    return model


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
    module = policy.import_module_of(spec)
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