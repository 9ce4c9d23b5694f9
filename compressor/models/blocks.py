"""Building blocks shared by the reference models and the transforms.

The transforms insert exactly these modules (``Fire``, ``SeparableConv2d``) into a
user's network, so a transformed U-Net and the hand-built Micro-Net are made of the
same parts and are costed the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compressor.errors import ConfigError

__all__ = [
    "NORM_KINDS",
    "make_norm",
    "ConvNormAct",
    "DoubleConv",
    "Fire",
    "squeeze_channels",
    "SeparableConv2d",
    "pad_to_multiple",
    "crop_like",
]

NORM_KINDS = ("batch", "instance", "group")


def make_norm(kind: str | None, channels: int) -> nn.Module:
    """Returns a normalization layer of ``kind`` (None gives ``nn.Identity``).

    Raises:
        ConfigError: if ``kind`` is not one of :data:`NORM_KINDS` or None.
    """
    if kind is None:
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(_group_count(channels), channels)
    raise ConfigError(f"unknown norm {kind!r}; valid: {', '.join(NORM_KINDS)} or none")


def _group_count(channels: int) -> int:
    for groups in (32, 16, 8, 4, 2):
        if channels % groups == 0:
            return groups
    return 1


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the spatial size of an odd ``kernel_size`` conv at stride 1."""
    return dilation * (kernel_size - 1) // 2


class ConvNormAct(nn.Sequential):
    """``Conv2d`` then an optional norm then an optional ReLU.

    Children are named ``conv``, ``norm``, ``act`` so transforms and cost tables can
    address them by dotted name.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: str | None = None,
        activation: bool = True,
    ) -> None:
        if padding is None:
            padding = same_padding(kernel_size, dilation)
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        self.norm = make_norm(norm, out_channels)
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()


class DoubleConv(nn.Sequential):
    """Two 3x3 ``ConvNormAct`` layers: one U-Net level."""

    def __init__(
        self, in_channels: int, out_channels: int, *, bias: bool = False, norm: str | None = None
    ) -> None:
        super().__init__(
            ConvNormAct(in_channels, out_channels, 3, bias=bias, norm=norm),
            ConvNormAct(out_channels, out_channels, 3, bias=bias, norm=norm),
        )


def check_fire_shares(squeeze_ratio: float, expand3x3_share: float) -> None:
    """Refuses a squeeze ratio outside (0, 4] or a 3x3 share outside (0, 1), naming the value."""
    if not 0.0 < squeeze_ratio <= 4.0:
        raise ConfigError(f"fire: squeeze_ratio must be in (0, 4], got {squeeze_ratio}")
    if not 0.0 < expand3x3_share < 1.0:
        raise ConfigError(f"fire: expand3x3_share must be in (0, 1), got {expand3x3_share}")


def squeeze_channels(out_channels: int, squeeze_ratio: float) -> int:
    """The width of a fire module's squeeze: ``squeeze_ratio * out_channels``, rounded, at least 1."""
    return max(1, int(round(squeeze_ratio * out_channels)))


class Fire(nn.Module):
    """SqueezeNet's fire module with the in/out contract of a plain convolution.

    A 1x1 *squeeze* to ``squeeze_ratio * out_channels`` channels, then two parallel
    *expands*, a 1x1 and a ``kernel_size`` one (dilated by ``dilation``), whose outputs
    are concatenated to ``out_channels``. ``expand3x3_share`` is the share of output
    channels produced by the larger kernel. Micro-Net uses ``squeeze_ratio=0.25`` and
    ``expand3x3_share=0.5``.

    The stride, when not 1, is applied by both expands, so the module down-samples
    exactly like the convolution it replaces.

    Args:
        in_channels: input channels.
        out_channels: output channels (the paper's ``e``).
        squeeze_ratio: squeeze channels as a share of ``out_channels`` (at least 1 channel).
        expand3x3_share: share of the output made by the ``kernel_size`` expand, in (0, 1).
        kernel_size: kernel of the larger expand (odd).
        stride: stride of both expands.
        padding: padding of the larger expand; None means "same".
        dilation: dilation of the larger expand.
        bias: give every conv a bias.
        norm: norm after every conv (None, "batch", "instance", "group").
        activation: apply ReLU after the concatenated expand (Micro-Net does; a fire that
            replaces a conv followed by its own activation does not).

    Example:
        >>> fire = Fire(64, 128, dilation=2)
        >>> fire(torch.zeros(1, 64, 16, 16)).shape
        torch.Size([1, 128, 16, 16])
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, squeeze_ratio: float = 0.25, expand3x3_share: float = 0.5,
        kernel_size: int = 3, stride: int = 1, padding: int | None = None, dilation: int = 1, bias: bool = False,
        norm: str | None = None, activation: bool = True,
    ) -> None:
        super().__init__()
        check_fire_shares(squeeze_ratio, expand3x3_share)
        if out_channels < 2:
            raise ConfigError(f"fire needs at least 2 output channels, got {out_channels}")
        if padding is None:
            padding = same_padding(kernel_size, dilation)
        squeezed = squeeze_channels(out_channels, squeeze_ratio)
        expand3x3_channels = min(out_channels - 1, max(1, int(round(expand3x3_share * out_channels))))
        expand1x1_channels = out_channels - expand3x3_channels
        self.squeeze = ConvNormAct(
            in_channels, squeezed, 1, bias=bias, norm=norm, activation=True
        )
        self.expand1x1 = ConvNormAct(
            squeezed, expand1x1_channels, 1, stride=stride, padding=0, bias=bias,
            norm=norm, activation=False,
        )
        self.expand3x3 = ConvNormAct(
            squeezed, expand3x3_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, bias=bias, norm=norm, activation=False,
        )
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.squeeze(x)
        return self.act(torch.cat([self.expand1x1(squeezed), self.expand3x3(squeezed)], dim=1))


class SeparableConv2d(nn.Module):
    """A depthwise ``kernel_size`` conv then a pointwise 1x1 conv.

    Drop-in for ``nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
    dilation)``: the depthwise conv keeps the stride, padding and dilation, so the output
    has the same shape.

    Args:
        mid_norm: norm between depthwise and pointwise (None, "batch", ...).
        mid_activation: ReLU between depthwise and pointwise.
        depth_multiplier: depthwise filters per input channel (MobileNet's multiplier);
            ``m`` filters make the factorization of a k x k kernel rank ``m`` per input channel.

    Example:
        >>> SeparableConv2d(32, 64, 3, padding=1)(torch.zeros(1, 32, 8, 8)).shape
        torch.Size([1, 64, 8, 8])
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1, padding: int | None = None,
        dilation: int = 1, bias: bool = False, mid_norm: str | None = None, mid_activation: bool = False,
        depth_multiplier: int = 1,
    ) -> None:
        super().__init__()
        if depth_multiplier < 1:
            raise ConfigError(f"separable depth_multiplier must be >= 1, got {depth_multiplier}")
        if padding is None:
            padding = same_padding(kernel_size, dilation)
        mid_channels = in_channels * depth_multiplier
        self.depthwise = nn.Conv2d(
            in_channels, mid_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=in_channels, bias=False,
        )
        self.norm = make_norm(mid_norm, mid_channels)
        self.act = nn.ReLU(inplace=True) if mid_activation else nn.Identity()
        self.pointwise = nn.Conv2d(mid_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.act(self.norm(self.depthwise(x))))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pads the bottom and right of ``x`` so height and width divide by ``multiple``.

    Modules calling it wrap it with ``torch.fx.wrap("pad_to_multiple")`` so that tracing
    records one leaf call.
    """
    pad_h = -x.shape[-2] % multiple
    pad_w = -x.shape[-1] % multiple
    if pad_h == 0 and pad_w == 0 and not torch.onnx.is_in_onnx_export():  # exported: no branch on the shape
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


def crop_like(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Crops the bottom and right of ``x`` to the height and width of ``reference``."""
    height, width = reference.shape[-2:]
    if x.shape[-2] == height and x.shape[-1] == width and not torch.onnx.is_in_onnx_export():
        return x
    return x[..., :height, :width]
