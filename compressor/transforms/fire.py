"""``fire``: k x k convolutions become SqueezeNet fire modules."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.models.blocks import NORM_KINDS, Fire, check_fire_shares, squeeze_channels
from compressor.transforms.base import Change, register_transform
from compressor.transforms.heads import output_layers
from compressor.transforms.inherit import inherit_fire
from compressor.transforms.selection import LayerTransform

__all__ = ["FireTransform"]


@register_transform("fire")
class FireTransform(LayerTransform):
    """Replaces each selected ``Conv2d`` (groups 1, square odd kernel > 1, "same"
    padding) with a :class:`~compressor.models.blocks.Fire` module of the same input and
    output channels, stride and dilation: a 1x1 squeeze, then parallel 1x1 and k x k
    expands concatenated. Micro-Net's setting is ``squeeze_ratio=0.25``,
    ``expand3x3_share=0.5``.

    The fire module ends without an activation, since the conv it replaces is normally
    followed by the host network's own norm and activation.

    With ``init="inherit"`` (the default) the squeeze projects onto the leading singular
    directions of the kernel's input channels (each paired with its negative, so the
    squeeze's ReLU loses nothing), the k x k expand applies the kernel projected onto them
    and the 1x1 expand the sum of its taps (see :func:`~compressor.transforms.inherit.inherit_fire`);
    ``random`` leaves PyTorch's initialization.

    The layers that make the network's outputs (its classifier: smp's 3x3 ``segmentation_head``)
    are left as they are unless ``head`` is true: their output channels are the classes, so a
    fire module sized by them would squeeze the whole decoder through a channel or two (see
    :mod:`~compressor.transforms.heads`).

    Args:
        squeeze_ratio: squeeze channels as a share of the conv's output channels.
        expand3x3_share: share of the output channels made by the k x k expand.
        norm: norm after the fire's inner convs (None, "batch", "instance", "group").
        init: ``inherit`` (from the replaced conv's weights) or ``random``.
        head: also replace the layers that make the network's outputs.
    """

    example = {}
    refuses = {"no-dense-conv": r"is grouped"}
    search_order = 31
    search_group = "conv"
    #: ``head`` came later: at its default, stored recipe hashes hold (the project's U-Net, whose head is
    #: a 1x1 conv, builds as before; a network with a wider head now keeps it)
    omit_when_default = ("head",)
    #: a step saved in a model file before ``head`` existed replaced the head too
    recorded_before = {"head": True}
    #: the squeeze ratios and 3x3 shares a search draws from
    SQUEEZE_RATIOS = (0.125, 0.25, 0.5)
    EXPAND3X3_SHARES = (0.25, 0.5, 0.75)

    @classmethod
    def suggest(cls, trial, applicability, steps):
        return {"squeeze_ratio": trial.suggest_categorical("fire_squeeze", list(cls.SQUEEZE_RATIOS)),
                "expand3x3_share": trial.suggest_categorical("fire_share3x3", list(cls.EXPAND3X3_SHARES))}

    @classmethod
    def smallest(cls, applicability):
        return {"fire_squeeze": min(cls.SQUEEZE_RATIOS), "fire_share3x3": min(cls.EXPAND3X3_SHARES)}

    def __init__(
        self, *, squeeze_ratio: float = 0.25, expand3x3_share: float = 0.5, norm: str | None = None,
        init: Literal["inherit", "random"] = "inherit", head: bool = False, **selection,
    ) -> None:
        super().__init__(**selection)
        self.init = init
        self.head = bool(head)
        check_fire_shares(squeeze_ratio, expand3x3_share)
        if norm is not None and norm not in NORM_KINDS:
            raise ConfigError(f"fire: norm must be one of {', '.join(NORM_KINDS)} or null, got {norm!r}")
        self.squeeze_ratio = squeeze_ratio
        self.expand3x3_share = expand3x3_share
        self.norm = norm

    def transform(self, model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, Change]:
        change = Change()
        selected = self.selected(model)
        heads = set() if self.head or not selected else output_layers(model, example_input)
        for name, conv in selected:
            reason = _unsupported(conv)
            if reason:
                self.skip(change, name, reason)
                continue
            if name in heads:  # kept by choice, not refused: strict does not apply
                change.skipped[name] = self._head_reason(conv)
                continue
            kernel, dilation, stride = conv.kernel_size[0], conv.dilation[0], conv.stride[0]
            replacement = Fire(
                conv.in_channels, conv.out_channels, squeeze_ratio=self.squeeze_ratio,
                expand3x3_share=self.expand3x3_share, kernel_size=kernel, stride=stride,
                padding=None if isinstance(conv.padding, str) else conv.padding[0], dilation=dilation, bias=conv.bias is not None,
                norm=self.norm, activation=False,
            )
            self.replace(model, change, name, conv, replacement, inherit_fire)
        self.require_changes(model, change)
        return model, change

    def _head_reason(self, conv: nn.Conv2d) -> str:
        squeeze = squeeze_channels(conv.out_channels, self.squeeze_ratio)
        return (f"makes the network's output ({conv.out_channels} channels): a fire module would squeeze its "
                f"{conv.in_channels} inputs to {squeeze} channel{'s' if squeeze > 1 else ''}; kept (head: true replaces it)")


def _unsupported(conv: nn.Conv2d) -> str | None:
    """Why ``conv`` cannot become a fire module, or None."""
    if conv.groups != 1:
        return f"is grouped (groups={conv.groups})"
    kernel = conv.kernel_size
    if max(kernel) == 1:
        return "is a 1x1 conv (a fire module would not be smaller)"
    if kernel[0] != kernel[1] or kernel[0] % 2 == 0:
        return f"has kernel {kernel}; fire needs a square odd kernel"
    if conv.out_channels < 2:
        return "has fewer than 2 output channels"
    if conv.stride[0] != conv.stride[1] or conv.dilation[0] != conv.dilation[1]:
        return "has different strides or dilations along height and width"
    if isinstance(conv.padding, str):
        return None if conv.padding == "same" and conv.stride[0] == 1 else f"has padding {conv.padding!r}"
    if conv.padding[0] != conv.padding[1] or 2 * conv.padding[0] != conv.dilation[0] * (kernel[0] - 1):
        return (
            f"has padding {conv.padding} that is not 'same' for kernel {kernel[0]} and dilation "
            f"{conv.dilation[0]}; the fire's 1x1 expand could not match its output size"
        )
    if conv.padding_mode != "zeros":
        return f"uses padding_mode={conv.padding_mode!r}"
    return None
