"""Networks built in different ways, to test transforms far beyond the reference U-Net."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compressor import micronet, unet


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResidualStridedNet(nn.Module):
    """Residual encoder with strided-conv down-sampling; decoder with F.interpolate and torch.cat."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2, width: int = 8) -> None:
        super().__init__()
        self.stem = ResidualBlock(in_channels, width)
        self.down1 = ResidualBlock(width, 2 * width, stride=2)
        self.down2 = ResidualBlock(2 * width, 4 * width, stride=2)
        self.reduce2 = nn.Conv2d(4 * width, 2 * width, 1)
        self.fuse1 = nn.Conv2d(4 * width, 2 * width, 3, padding=1)
        self.reduce1 = nn.Conv2d(2 * width, width, 1)
        self.fuse0 = nn.Conv2d(2 * width, width, 3, padding=1)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem(x)
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        up1 = F.interpolate(self.reduce2(s2), scale_factor=2.0, mode="bilinear", align_corners=False)
        x1 = F.relu(self.fuse1(torch.cat([s1, up1], dim=1)))
        up0 = F.interpolate(self.reduce1(x1), scale_factor=2.0, mode="nearest")
        x0 = F.relu(self.fuse0(torch.cat([s0, up0], dim=1)))
        return self.head(x0)


class GroupedInstanceNet(nn.Module):
    """Grouped convs and instance norm; nn.Upsample and additive skips; average pooling."""

    def __init__(self, in_channels: int = 3, num_classes: int = 3, width: int = 16) -> None:
        super().__init__()
        self.enc0 = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.InstanceNorm2d(width, affine=True), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, groups=4), nn.InstanceNorm2d(width, affine=True), nn.ReLU(),
        )
        self.pool = nn.AvgPool2d(2)
        self.enc1 = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, padding=1, groups=2), nn.InstanceNorm2d(2 * width, affine=True), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.InstanceNorm2d(2 * width, affine=True), nn.ReLU(),
        )
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * width, width, 1))
        self.dec0 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.InstanceNorm2d(width, affine=True), nn.ReLU())
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc0(x)
        deep = self.enc1(self.pool(skip))
        return self.head(self.dec0(self.up(deep) + skip))


class TinyClassifier(nn.Module):
    """A classifier: no decoder; strided convs, max-pool, global pooling and a linear layer."""

    def __init__(self, in_channels: int = 3, num_classes: int = 5, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(inplace=True),
            nn.Conv2d(4 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def monai_basic_unet() -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=3, out_channels=2, features=(8, 8, 16, 32, 64, 8))


def monai_unet() -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=3, out_channels=2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)


def monai_segresnet() -> nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=2, in_channels=3, out_channels=2, init_filters=8, blocks_down=(1, 1, 1), blocks_up=(1, 1))


NETWORKS = {
    "unet": lambda: unet(base_width=8, norm="batch"),
    "micronet": lambda: micronet(base_width=8, norm="batch"),
    "residual_strided": ResidualStridedNet,
    "grouped_instance": GroupedInstanceNet,
    "classifier": TinyClassifier,
    "monai_basic_unet": monai_basic_unet,
    "monai_unet": monai_unet,
    "monai_segresnet": monai_segresnet,
}

# What in each network makes a transform refuse it (compressor.transforms.NETWORK_TRAITS): the
# contract suite expects a transform to refuse exactly the networks with a trait it lists in
# its `refuses`, and to work on every other.
TRAITS = {
    "unet": set(),
    "micronet": {"concat-into-other"},  # its only cats are inside fire modules, feeding a ReLU
    "residual_strided": set(),
    "grouped_instance": {"no-concat", "one-level"},
    "classifier": {"no-concat", "no-resolution-pair", "no-conv-run"},
    "monai_basic_unet": set(),
    "monai_unet": {"concat-into-other"},  # its up-sampling (a transposed conv) reads the cat
    "monai_segresnet": {"no-concat"},
}
