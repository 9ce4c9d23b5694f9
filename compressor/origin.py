"""How a network was made, as data: the builder it came from, its arguments, and the steps applied since.

:func:`compressor.build_model` (and :func:`compressor.unet`, :func:`compressor.micronet`)
record the builder and its arguments on the module they return; :func:`compressor.apply`
adds each step it applied (a ``prune`` step with the widths it left, since which channels
go depends on the weights) and the input shape it traced at. That is enough to build the
same architecture again without unpickling anything, which is how
:func:`compressor.save_model` stores a network (:mod:`compressor.saving`).

Example:
    >>> import compressor
    >>> origin_of(compressor.unet(base_width=4)).base, origin_of(compressor.unet(base_width=4)).args
    ('unet', {'base_width': 4})
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from compressor.annotations import annotate, annotation

__all__ = ["Origin", "origin_of", "set_origin", "ORIGIN_ATTRIBUTE"]

ORIGIN_ATTRIBUTE = "compressor_origin"


@dataclass(frozen=True)
class Origin:
    """Where a network came from.

    Attributes:
        base: a registered model name (``unet``) or an import path (``package.module:callable``).
        args: the builder's keyword arguments (plain data).
        steps: the recipe steps applied since, as plain data (``{"name": ..., **params}``).
        input_shape: the example input shape the steps were applied at (None without steps).
    """

    base: str
    args: dict[str, Any] = field(default_factory=dict)
    steps: tuple[dict[str, Any], ...] = ()
    input_shape: tuple[int, ...] | None = None

    def then(self, step: dict[str, Any], input_shape: tuple[int, ...]) -> Origin:
        """This origin with one more applied step."""
        return dataclasses.replace(self, steps=(*self.steps, step), input_shape=tuple(input_shape))

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "args": dict(self.args), "steps": [dict(step) for step in self.steps],
                "input_shape": list(self.input_shape) if self.input_shape else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Origin:
        shape = data.get("input_shape")
        return cls(base=str(data["base"]), args=dict(data.get("args") or {}),
                   steps=tuple(dict(step) for step in data.get("steps") or ()),
                   input_shape=tuple(int(size) for size in shape) if shape else None)


def set_origin(model: nn.Module, origin: Origin | None) -> nn.Module:
    """Records ``origin`` on ``model`` (None forgets it); returns ``model``."""
    return annotate(model, ORIGIN_ATTRIBUTE, None if origin is None else origin.to_dict())


def origin_of(model: nn.Module) -> Origin | None:
    """The origin recorded on ``model``, or None (a network compressor did not build)."""
    data = annotation(model, ORIGIN_ATTRIBUTE)
    return Origin.from_dict(data) if data else None
