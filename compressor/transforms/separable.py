"""``separable``: k x k convolutions become depthwise k x k + pointwise 1 x 1."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.models.blocks import NORM_KINDS, SeparableConv2d
from compressor.transforms.base import Change, register_transform
from compressor.transforms.inherit import inherit_separable
from compressor.transforms.selection import LayerTransform

__all__ = ["Separable"]


@register_transform("separable")
class Separable(LayerTransform):
    """Replaces each selected ``Conv2d`` (groups 1, kernel > 1) with a
    :class:`~compressor.models.blocks.SeparableConv2d` of the same stride, padding and
    dilation, so the output shape is unchanged. About ``k*k`` times fewer parameters for
    wide layers.

    With ``init="inherit"`` (the default) the depthwise and pointwise weights come from a
    per-input-channel SVD of the conv's kernel (exact when each input channel's slice of
    the kernel has rank at most ``depth_multiplier``; a ReLU in between makes it
    approximate); ``random`` leaves PyTorch's initialization.

    Args:
        mid_norm: norm between the depthwise and pointwise convs (None, "batch",
            "instance", "group").
        mid_activation: ReLU between the depthwise and pointwise convs.
        depth_multiplier: depthwise filters per input channel (the rank kept per channel).
        init: ``inherit`` (from the replaced conv's weights) or ``random``.
    """

    example = {}
    produces = frozenset({"no-dense-conv", "concat-into-other"})
    search_order = 30
    search_group = "conv"

    @classmethod
    def suggest(cls, trial, applicability, steps):
        return {}

    @classmethod
    def smallest(cls, applicability):
        return {}

    def __init__(
        self,
        *,
        mid_norm: str | None = None,
        mid_activation: bool = False,
        depth_multiplier: int = 1,
        init: Literal["inherit", "random"] = "inherit",
        **selection,
    ) -> None:
        super().__init__(**selection)
        if depth_multiplier < 1:
            raise ConfigError(f"separable: depth_multiplier must be >= 1, got {depth_multiplier}")
        self.depth_multiplier = depth_multiplier
        self.init = init
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
                mid_norm=self.mid_norm, mid_activation=self.mid_activation, depth_multiplier=self.depth_multiplier,
            )
            replacement.depthwise.padding_mode = conv.padding_mode
            self.replace(model, change, name, conv, replacement, inherit_separable)
        self.require_changes(model, change)
        return model, change
