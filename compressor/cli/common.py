"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
import torch.fx
from torch import nn

from compressor.errors import ConfigError
from compressor.experiment import ModelConfig
from compressor.models import build_model, parse_model_args
from compressor.models.loading import MODELS
from compressor.origin import origin_of
from compressor.outputs import declare_output, parse_output_key
from compressor.saving import load_saved
from compressor.units import parse_shape

__all__ = [
    "add_model_arguments", "model_from_args", "input_shape_from_args", "default_input_shape",
    "add_base_model_arguments", "add_builder_arguments", "model_config_from_args",
]


def add_model_arguments(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    if positional:
        parser.add_argument(
            "model", metavar="MODEL",
            help="'unet', 'micronet', an import path 'package.module:callable', or a model file compressor "
                 "saved (.pt: train, apply --out, compress, export)",
        )
    add_builder_arguments(parser)
    parser.add_argument(
        "--input-shape", metavar="N,C,H,W", default=None,
        help="input shape to measure at (default: 1,C,224,224 with C read from the first conv)",
    )
    parser.add_argument("--trust", action="store_true",
                        help="let a model file run code to load (a pickle, or a network built by a function of "
                             "your own); only for a file you trust")


def add_builder_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE",
        help="keyword argument for the model builder (repeatable), e.g. norm=batch",
    )
    parser.add_argument(
        "--model-output", metavar="KEY", default=None,
        help="for a model returning a dict or tuple: the key (or index) of the segmentation "
        "(default: 'out', or the only tensor)",
    )


def add_base_model_arguments(parser: argparse.ArgumentParser, help_model: str) -> None:
    """``--model`` (defaulting to the experiment's), ``--model-arg`` and ``--model-output``."""
    parser.add_argument("--model", metavar="MODEL", help=help_model)
    add_builder_arguments(parser)


def names_a_file(model: str) -> bool:
    """Whether MODEL is a model file (``.pt``/``.pth``, or a file that exists) rather than a builder; a registered
    model's name or an import path (``package.module:callable``) is the builder even beside a file of that name."""
    path = Path(model)
    if path.suffix in (".pt", ".pth"):
        return True
    builder = model in MODELS or ":" in model  # resolve_builder's own rule for a builder
    return not builder and path.is_file()


def model_config_from_args(args: argparse.Namespace, default: ModelConfig) -> ModelConfig:
    """``default`` (the experiment's model) with ``--model``, ``--model-arg`` and ``--model-output`` applied.

    Builder arguments and the output key carry over only while the model stays the same.
    """
    extra = parse_model_args(args.model_arg)
    output = parse_output_key(args.model_output)
    if args.model and args.model != default.name:
        default = ModelConfig(name=args.model)
    if not extra and output is None:
        return default
    return dataclasses.replace(default, args={**default.args, **extra},
                               output=default.output if output is None else output)


def model_from_args(args: argparse.Namespace, spec: str | None = None) -> nn.Module:
    """The network MODEL names: built by its builder with ``--model-arg``, or loaded from a model file."""
    name = spec or args.model
    if not names_a_file(name):
        return declare_output(build_model(name, parse_model_args(args.model_arg)), parse_output_key(args.model_output))
    if args.model_arg:
        raise ConfigError(f"{name} is a model file: it carries its builder's arguments; drop --model-arg")
    model = load_saved(name, trust=getattr(args, "trust", False)).model
    output = parse_output_key(args.model_output)
    return model if output is None else declare_output(model, output)


def default_input_shape(model: nn.Module, size: int = 224) -> tuple[int, int, int, int]:
    """``(1, C, size, size)``, ``C`` the model's input channels: those its recipe's steps were applied at (a
    network compressor built records them), else those of the conv that reads the input of a captured graph,
    else those of its first conv (3 if none). (The first conv registered is not always the first run: a
    1x1 bridge that ``downsample_depth`` adds comes after the layers it skips.)"""
    origin = origin_of(model)
    if origin is not None and origin.input_shape and len(origin.input_shape) > 1:
        return (1, int(origin.input_shape[1]), size, size)
    if isinstance(model, torch.fx.GraphModule):  # the first conv the input reaches (through a norm, a pad...)
        queue = [node for node in model.graph.nodes if node.op == "placeholder"][:1]
        seen = set(queue)
        while queue:
            node = queue.pop(0)
            module = model.get_submodule(node.target) if node.op == "call_module" else None
            if isinstance(module, _CONVS):
                return (1, module.in_channels, size, size)
            fresh = [user for user in node.users if user not in seen]
            seen.update(fresh)
            queue.extend(fresh)
    for module in model.modules():
        if isinstance(module, _CONVS):
            return (1, module.in_channels, size, size)
    return (1, 3, size, size)


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def input_shape_from_args(args: argparse.Namespace, model: nn.Module) -> tuple[int, ...]:
    if args.input_shape is None:
        return default_input_shape(model)
    return parse_shape(args.input_shape, what="--input-shape")
