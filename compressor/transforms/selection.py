"""Choosing layers by dotted-name glob and channel count, and swapping submodules."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from compressor.annotations import network_name
from compressor.bounds import shown
from compressor.errors import ConfigError
from compressor.transforms.base import Change, Transform, TransformError

__all__ = ["LayerTransform", "replace_submodule", "conv_channels", "MAX_PATTERNS"]

#: the most include or exclude globs a step takes (each is matched against every layer's name)
MAX_PATTERNS = 4096


def conv_channels(module: nn.Module) -> tuple[int, int]:
    """``(in_channels, out_channels)`` of a conv or linear layer."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


class LayerTransform(Transform):
    """A transform acting layer by layer on modules chosen by name and width.

    Args:
        include: dotted-name globs of layers to consider (``"*"`` is all;
            ``"encoder.*"`` one part of the model).
        exclude: dotted-name globs of layers to leave alone, even if included.
        min_channels: only layers whose input and output channels are both at least this.
        strict: refuse (raise) when a selected layer cannot be transformed, instead of
            skipping it and saying so in the record.
        calibrate: batches of real images on which every changed layer is refitted by
            least squares to reproduce the input model's output there (0: none; a layer
            whose output changed shape, as a pruned one, is left as it is); the
            images come from the caller (``apply(..., calibration=...)``, ``compressor
            compress`` and the search take them from the training patches).
    """

    layer_types: tuple[type[nn.Module], ...] = (nn.Conv2d,)

    def __init__(
        self, *, include: list[str] | str = "*", exclude: list[str] | str | None = None, min_channels: int = 0,
        strict: bool = False, calibrate: int = 0,
    ) -> None:
        super().__init__()
        if calibrate < 0:
            raise ConfigError(f"{self.name}: calibrate must be >= 0 batches, got {calibrate}")
        self.calibrate = calibrate
        self.include = [include] if isinstance(include, str) else list(include)
        self.exclude = [exclude] if isinstance(exclude, str) else list(exclude or [])
        for key, patterns in (("include", self.include), ("exclude", self.exclude)):
            if len(patterns) > MAX_PATTERNS:  # each is matched against every layer's name
                raise ConfigError(f"{self.name}: {key} has {len(patterns):,} patterns, more than {MAX_PATTERNS:,}")
            long = next((pattern for pattern in patterns if isinstance(pattern, str) and len(pattern) > 256), None)
            if long is not None:  # compiled by fnmatch: a dotted layer name is far shorter
                raise ConfigError(f"{self.name}: {key} has a pattern of {len(long):,} characters, more than 256")
        self.min_channels = min_channels
        self.strict = strict

    def selected(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """Layers of :attr:`layer_types` matching the include/exclude globs and width."""
        chosen = []
        for name, module in model.named_modules():
            if not name or type(module) not in self.layer_types:
                continue
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.include):
                continue
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude):
                continue
            if min(conv_channels(module)) < self.min_channels:
                continue
            chosen.append((name, module))
        return chosen

    def describe_selection(self) -> str:
        parts = [f"include={shown(self.include, 200)}"]
        if self.exclude:
            parts.append(f"exclude={shown(self.exclude, 200)}")
        if self.min_channels:
            parts.append(f"min_channels={self.min_channels}")
        return " ".join(parts)

    def skip(self, change: Change, layer: str, reason: str) -> None:
        """Records a selected layer left alone, or refuses in strict mode."""
        if self.strict:
            raise TransformError(f"{self.name}: layer {layer!r} {reason}")
        change.skipped[layer] = reason

    def replace(self, model: nn.Module, change: Change, name: str, layer: nn.Module, replacement: nn.Module,
                inherit: Callable[[nn.Module, nn.Module], None] | None = None) -> None:
        """Puts ``replacement`` where the selected ``layer`` was (on its device) and records it;
        with ``init: inherit`` (when the transform has that parameter), ``inherit(layer, replacement)``
        first carries the layer's weights over."""
        if inherit is not None and getattr(self, "init", "inherit") == "inherit":
            inherit(layer, replacement)
        replace_submodule(model, name, replacement.to(layer.weight.device))
        change.changed.append(name)

    def require_changes(self, model: nn.Module, change: Change) -> None:
        """Raises when nothing was changed: a selection that does nothing is never silent."""
        if change.changed:
            return
        kinds = "/".join(t.__name__ for t in self.layer_types)
        if change.skipped:
            first = "; ".join(f"{name}: {why}" for name, why in list(change.skipped.items())[:3])
            raise TransformError(
                f"{self.name}: no layer could be changed ({len(change.skipped)} selected, all skipped: {first})"
            )
        raise TransformError(
            f"{self.name}: no {kinds} layer of {network_name(model)} matches {self.describe_selection()}"
        )


def replace_submodule(model: nn.Module, name: str, replacement: nn.Module) -> None:
    """Replaces the submodule at dotted ``name`` (``"encoder.0.conv"``)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, replacement)
