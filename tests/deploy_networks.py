"""Networks for the deployment tests, importable by path (``deploy_networks:SpectralNet``)."""

from __future__ import annotations

import torch
from torch import nn


class Spectral(nn.Module):
    """The magnitude of the image's 2-D Fourier transform: an operation ONNX's exporter cannot express."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(x).abs()


class SpectralNet(nn.Module):
    """A segmentation head on spectral features: convolution, then the Fourier magnitude, then 1x1 to 2 classes."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.features = nn.Sequential(nn.Conv2d(4, 4, 1), Spectral())
        self.head = nn.Conv2d(4, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


class ShapeBranchNet(nn.Module):
    """Down, up, concatenate with the input: the up-sampled map is padded only when the input's
    size is odd, a Python branch on the shape, as MONAI's BasicUNet does. Tracing keeps the branch
    taken at the traced size."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_channels, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.head = nn.Conv2d(in_channels + 4, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up(self.down(x))
        if up.shape[-2:] != x.shape[-2:]:
            up = up[..., : x.shape[-2], : x.shape[-1]]
        return self.head(torch.cat([x, up], dim=1))
