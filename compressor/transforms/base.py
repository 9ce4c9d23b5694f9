"""The transform contract: a base class, the registry, errors and records."""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from compressor.errors import CompressorError
from compressor.registry import Registry
from compressor.schema import Parameter, check_arguments, parameters_of
from compressor.transforms.calibration import Counterpart

__all__ = ["Transform", "TransformError", "TransformRecord", "Change", "TRANSFORMS", "register_transform"]


class TransformError(CompressorError):
    """A transform cannot be applied; the message names the layer (or node) and why."""


@dataclass
class Change:
    """What one transform did to a model, before costs are attached.

    Attributes:
        changed: dotted names of the layers replaced, modified or added.
        removed: dotted names of layers taken out.
        skipped: layer name -> why a selected layer was left alone.
        notes: anything else worth telling the user.
        counterparts: for a changed layer that does not simply replace the layer of the
            same name (a new bridge, a conv taking ``a + b`` instead of ``cat([a, b])``),
            where its input and the output it should reproduce are in the input model;
            the engine measures (and calibrates) every changed layer through these;
            None for a layer nothing in the input model compares with.
    """

    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counterparts: dict[str, Counterpart | None] = field(default_factory=dict)


@dataclass(frozen=True)
class TransformRecord:
    """One applied step of a recipe: its configuration, what changed, and costs around it.

    Costs are fvcore counts at the example input's shape (one multiply-add = one flop).
    ``errors`` holds, per changed layer, the relative output error of the replacement
    against the layer it replaced, on the calibration images (or the example input), and
    ``output_error`` the same for the whole network's output; None where not measurable.
    An optional step that did not apply has ``skipped_step`` (the refusal) and changes nothing.
    """

    transform: str
    params: dict[str, Any]
    changed: list[str]
    removed: list[str]
    skipped: dict[str, str]
    notes: list[str]
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    errors: dict[str, float] = field(default_factory=dict)
    output_error: float | None = None
    #: for an optional step that did not apply: why (the model went on unchanged)
    skipped_step: str | None = None

    def max_error(self) -> tuple[str, float] | None:
        """The changed layer with the largest relative output error, or None."""
        if not self.errors:
            return None
        name = max(self.errors, key=self.errors.__getitem__)
        return name, self.errors[name]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Transform(abc.ABC):
    """Base class of every transform.

    A transform is configured by plain keyword values (so it can live in YAML and on an
    Optuna trial) and declares them in its ``__init__`` signature with type hints and
    defaults: that signature is its schema (see :meth:`parameters`).

    The engine (:func:`compressor.transforms.apply`) calls, on a private deep copy of
    the model:

    1. :meth:`check` - validate and raise :class:`TransformError` naming the layer; the
       default does nothing.
    2. :meth:`transform` - change the copy and return ``(model, Change)``; the returned
       model may be the same object or a new one (a ``torch.fx.GraphModule``).

    A transform that would change nothing must raise :class:`TransformError` saying so,
    never return silently.
    """

    name: ClassVar[str] = ""
    #: parameters added after studies were stored: left out of a recipe's hash while at their
    #: default, so a stored recipe keeps its hash (and its finished twin) across versions
    omit_when_default: ClassVar[tuple[str, ...]] = ()
    params: dict[str, Any]

    @classmethod
    def parameters(cls) -> list[Parameter]:
        """The transform's parameters, gathered from ``__init__`` along the class hierarchy."""
        seen: dict[str, Parameter] = {}
        for klass in reversed(cls.__mro__):
            if "__init__" in vars(klass) and issubclass(klass, Transform) and klass is not Transform:
                for parameter in parameters_of(vars(klass)["__init__"]):
                    seen[parameter.name] = parameter
        return list(seen.values())

    @classmethod
    def from_params(cls, params: dict[str, Any], *, where: str | None = None) -> Transform:
        """Builds the transform after checking ``params`` against :meth:`parameters`."""
        checked = check_arguments(cls.parameters(), params, where=where or f"transform {cls.name!r}")
        instance = cls(**checked)
        instance.params = checked
        return instance

    def check(self, model: nn.Module, example_input: torch.Tensor) -> None:  # noqa: B027 - optional hook
        """Validates ``model`` before anything changes. Raises :class:`TransformError`."""

    @abc.abstractmethod
    def transform(self, model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, Change]:
        """Changes ``model`` (a copy the engine owns) and says what changed."""


TRANSFORMS: Registry[type[Transform]] = Registry("transform")


def register_transform(name: str):
    """Class decorator: registers a :class:`Transform` subclass under ``name``."""

    def decorator(cls: type[Transform]) -> type[Transform]:
        cls.name = name
        return TRANSFORMS.register(name)(cls)

    return decorator
