"""``separable``: k x k convolutions become depthwise k x k + pointwise 1 x 1."""

from __future__ import annotations

import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.models.blocks import NORM_KINDS, SeparableConv2d
from compressor.transforms.base import Change, register_transform
from compressor.transforms.selection import LayerTransform, replace_submodule

__all__ = ["Separable"]


@register_transform("separable")
class Separable(LayerTransform):
    """Replaces each selected ``Conv2d`` (groups 1, kernel > 1) with a
    :class:`~compressor.models.blocks.SeparableConv2d` of the same stride, padding and
    dilation, so the output shape is unchanged. About ``k*k`` times fewer parameters for
    wide layers.

    Args:
        mid_norm: norm between the depthwise and pointwise convs (None, "batch",
            "instance", "group").
        mid_activation: ReLU between the depthwise and pointwise convs.
    """

    def __init__(self, *, mid_norm: str | None = None, mid_activation: bool = False, **selection) -> None:
        super().__init__(**selection)
        if mid_norm is not None and mid_norm not in NORM_KINDS:
            raise ConfigError(f"separable: mid_norm must be one of {', '.join(NORM_KINDS)} or null, got {mid_norm!r}")
        self.mid_norm = mid_norm
        self.mid_activation = mid_activation

    def transform(self, model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, Change]:
        change = Change()
        for name, conv in self.selected(model):
            if conv.groups != 1:
                self.skip(change, name, f"is already grouped (groups={conv.groups})")
                continue
            if max(conv.kernel_size) == 1:
                self.skip(change, name, "is a 1x1 conv (nothing to separate)")
                continue
            replacement = SeparableConv2d(
                conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
                mid_norm=self.mid_norm, mid_activation=self.mid_activation,
            )
            replacement.depthwise.padding_mode = conv.padding_mode
            replace_submodule(model, name, replacement.to(conv.weight.device))
            change.changed.append(name)
        self.require_changes(model, change)
        return model, change
