"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse

from torch import nn

from compressor.models import build_model, parse_model_args
from compressor.outputs import declare_output, parse_output_key
from compressor.units import parse_shape

__all__ = ["add_model_arguments", "model_from_args", "input_shape_from_args", "default_input_shape"]


def add_model_arguments(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    if positional:
        parser.add_argument(
            "model", metavar="MODEL",
            help="'unet', 'micronet', or an import path 'package.module:callable'",
        )
    parser.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE",
        help="keyword argument for the model builder (repeatable), e.g. norm=batch",
    )
    parser.add_argument(
        "--model-output", metavar="KEY", default=None,
        help="for a model returning a dict or tuple: the key (or index) of the segmentation "
        "(default: 'out', or the only tensor)",
    )
    parser.add_argument(
        "--input-shape", metavar="N,C,H,W", default=None,
        help="input shape to measure at (default: 1,C,224,224 with C read from the first conv)",
    )


def model_from_args(args: argparse.Namespace, spec: str | None = None) -> nn.Module:
    model = build_model(spec or args.model, parse_model_args(args.model_arg))
    return declare_output(model, parse_output_key(args.model_output))


def default_input_shape(model: nn.Module, size: int = 224) -> tuple[int, int, int, int]:
    """``(1, C, size, size)`` with ``C`` the input channels of the model's first conv (3 if none)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return (1, module.in_channels, size, size)
    return (1, 3, size, size)


def input_shape_from_args(args: argparse.Namespace, model: nn.Module) -> tuple[int, ...]:
    if args.input_shape is None:
        return default_input_shape(model)
    return parse_shape(args.input_shape, what="--input-shape")
