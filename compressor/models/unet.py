"""The reference U-Net, as in the Micro-Net paper's own code."""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.fx
from torch import nn

from compressor.errors import ConfigError
from compressor.models.blocks import DoubleConv, crop_like, make_norm, pad_to_multiple
from compressor.origin import Origin, set_origin

# fx.wrap patches the name in the calling module, so each user of the helpers wraps them:
# tracing then records one leaf call instead of failing on their shape checks.
torch.fx.wrap("pad_to_multiple")
torch.fx.wrap("crop_like")

__all__ = ["UNet", "unet"]


class UNet(nn.Module):
    """U-Net: ``depth`` max-pool levels, two 3x3 convs per level, 2x2 stride-2 transposed
    convs up, concatenated skips, a 1x1 head.

    Inputs whose height or width do not divide by ``2**depth`` are zero-padded at the
    bottom/right and the output is cropped back, so any size works and the output always
    has the input's height and width.
    """

    def __init__(
        self, *, in_channels: int = 3, num_classes: int = 2, base_width: int = 64, depth: int = 4, bias: bool = False,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, num_classes=num_classes, base_width=base_width)
        if not 0 <= depth <= MAX_DEPTH:
            raise ConfigError(f"unet depth must be in [0, {MAX_DEPTH}] (an input is cut by 2**depth), got {depth}")
        make_norm(norm, 1)  # validates the name before any layer is built
        widths = [base_width * 2**level for level in range(depth + 1)]
        self.size_multiple = 2**depth
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoder.append(DoubleConv(channels, width, bias=bias, norm=norm))
            channels = width
        self.pools = nn.ModuleList(nn.MaxPool2d(2) for _ in range(depth))
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.ups.append(nn.ConvTranspose2d(channels, width, 2, stride=2, bias=bias))
            self.decoder.append(DoubleConv(2 * width, width, bias=bias, norm=norm))
            channels = width
        self.head = nn.Conv2d(channels, num_classes, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        original = x
        x = pad_to_multiple(x, self.size_multiple)
        skips = []
        for level, pool in enumerate(self.pools):
            x = self.encoder[level](x)
            skips.append(x)
            x = pool(x)
        x = self.encoder[-1](x)
        for up, decode, skip in zip(self.ups, self.decoder, reversed(skips)):
            x = decode(torch.cat([skip, up(x)], dim=1))
        return crop_like(self.head(x), original)


def unet(**options: Any) -> UNet:
    """Builds the reference U-Net.

    With the defaults (3 input channels, 2 classes, no bias, no norm) it has exactly
    31,024,960 parameters, as in the paper.

    Args (keyword only, those of :class:`UNet`):
        in_channels: channels of the input image.
        num_classes: channels of the output logits.
        base_width: channels of the first level; level ``i`` has ``base_width * 2**i``.
        depth: number of max-pool levels.
        bias: give convolutions a bias.
        norm: norm after each 3x3 conv: None, "batch", "instance" or "group". Batch norm
            is what makes training from scratch on a CPU budget work.

    Example:
        >>> model = unet()
        >>> sum(p.numel() for p in model.parameters())
        31024960
    """
    return set_origin(UNet(**options), Origin(base="unet", args=dict(options)))


unet.__signature__ = inspect.signature(UNet)  # its keywords are UNet's (what a model file may give)


#: the most max-pool levels a reference network takes: an input is padded to a multiple of 2**depth
MAX_DEPTH = 12


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
