"""Micro-Net, the paper's miniaturized U-Net."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx
from torch import nn

from compressor.errors import ConfigError
from compressor.models.blocks import Fire, crop_like, make_norm, pad_to_multiple
from compressor.models.unet import MAX_DEPTH, _check_positive
from compressor.origin import Origin, set_origin

# fx.wrap patches the name in the calling module, so each user of the helpers wraps them:
# tracing then records one leaf call instead of failing on their shape checks.
torch.fx.wrap("pad_to_multiple")
torch.fx.wrap("crop_like")

__all__ = ["MicroNet", "micronet"]


class MicroNet(nn.Module):
    """Fire modules, few down-samplings, cascades of atrous rates, additive skips.

    Encoder stage ``s`` (``s = 0..depth``) holds ``len(encoder_rates)`` fire modules of
    width ``e = base_width * 2**s`` (the paper's ``e = 64 * 2**(i // 4)`` for module ``i``)
    with dilation rates ``encoder_rates``; stages are separated by 2x2 max-pools. The
    decoder mirrors it: a stage of ``len(decoder_rates)`` fire modules at each resolution,
    from the deepest up, joined by 2x2 stride-2 transposed convs that halve the width,
    with the encoder's features of that resolution *added* to the up-sampled ones. A 1x1
    conv makes the logits.

    Inputs whose height or width do not divide by ``2**depth`` are zero-padded and the
    output cropped back.
    """

    def __init__(
        self, *, in_channels: int = 3, num_classes: int = 2, base_width: int = 64, depth: int = 2,
        encoder_rates: Sequence[int] = (1, 1, 2, 3), decoder_rates: Sequence[int] = (3, 2, 1),
        squeeze_ratio: float = 0.25, expand3x3_share: float = 0.5, bias: bool = False, norm: str | None = None,
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, num_classes=num_classes, base_width=base_width)
        if not 0 <= depth <= MAX_DEPTH:
            raise ConfigError(f"micronet depth must be in [0, {MAX_DEPTH}] (an input is cut by 2**depth), got {depth}")
        if not encoder_rates or not decoder_rates:
            raise ConfigError("micronet needs at least one encoder rate and one decoder rate")
        make_norm(norm, 1)
        fire_options = dict(
            squeeze_ratio=squeeze_ratio, expand3x3_share=expand3x3_share, bias=bias, norm=norm
        )
        widths = [base_width * 2**stage for stage in range(depth + 1)]
        self.size_multiple = 2**depth
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths:
            stage = []
            for rate in encoder_rates:
                stage.append(Fire(channels, width, dilation=rate, **fire_options))
                channels = width
            self.encoder.append(nn.Sequential(*stage))
        self.pools = nn.ModuleList(nn.MaxPool2d(2) for _ in range(depth))
        self.decoder = nn.ModuleList()
        self.ups = nn.ModuleList()
        for index, width in enumerate(reversed(widths)):
            if index > 0:
                self.ups.append(nn.ConvTranspose2d(channels, width, 2, stride=2, bias=bias))
                channels = width
            self.decoder.append(
                nn.Sequential(*(Fire(width, width, dilation=rate, **fire_options) for rate in decoder_rates))
            )
        self.head = nn.Conv2d(channels, num_classes, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        original = x
        x = pad_to_multiple(x, self.size_multiple)
        skips = []
        for stage, pool in zip(self.encoder, self.pools):
            x = stage(x)
            skips.append(x)
            x = pool(x)
        x = self.decoder[0](self.encoder[-1](x))
        for up, stage, skip in zip(self.ups, self.decoder[1:], reversed(skips)):
            x = stage(up(x) + skip)
        return crop_like(self.head(x), original)


def micronet(**options: Any) -> MicroNet:
    """Builds Micro-Net as in the paper.

    With the defaults it has exactly 1,055,920 parameters: 29.38x fewer than
    :func:`~compressor.models.unet` (the paper reports 29.26x).

    Args (keyword only, those of :class:`MicroNet`):
        in_channels: channels of the input image.
        num_classes: channels of the output logits.
        base_width: fire width ``e`` of the first stage; it doubles per stage.
        depth: number of max-pools (the paper: 2).
        encoder_rates: dilation of each fire module of an encoder stage.
        decoder_rates: dilation of each fire module of a decoder stage.
        squeeze_ratio: squeeze channels as a share of ``e``.
        expand3x3_share: share of ``e`` made by the 3x3 expand.
        bias: give convolutions a bias.
        norm: norm after each conv: None, "batch", "instance" or "group".

    Example:
        >>> sum(p.numel() for p in micronet().parameters())
        1055920
    """
    return set_origin(MicroNet(**options), Origin(base="micronet", args=dict(options)))


micronet.__signature__ = inspect.signature(MicroNet)  # its keywords are MicroNet's (what a model file may give)
