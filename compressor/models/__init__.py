"""Reference models, their blocks, and the lookup of a model by name or import path."""

from __future__ import annotations

from compressor.models.blocks import ConvNormAct, DoubleConv, Fire, SeparableConv2d
from compressor.models.loading import MODELS, build_model, parse_model_args
from compressor.models.micronet import MicroNet, micronet
from compressor.models.unet import UNet, unet

__all__ = [
    "MODELS",
    "build_model",
    "parse_model_args",
    "unet",
    "micronet",
    "UNet",
    "MicroNet",
    "Fire",
    "SeparableConv2d",
    "ConvNormAct",
    "DoubleConv",
]
