"""The input sizes a captured graph takes, and the original network's handling of the others kept.

A graph captured on one example follows the Python branches the network took at that size
(:mod:`compressor.transforms.capture`). Many networks branch on their input's size: MONAI's
BasicUNet pads a decoder feature whose size does not match its skip, segmentation_models_pytorch
refuses sides that 32 does not divide. The captured graph holds neither branch, so at another
size it would crash inside a ``torch.cat`` (BasicUNet at 263x131) or lose the original's message.

:func:`size_rule` finds, by running the original network and the captured graph side by side
on a few sizes above the example's, the step ``multiple`` at which the graph computes what the
network computes, and whether the network itself takes sizes off that step.
:func:`keep_input_handling` then puts one node at the graph's input:

- the network takes other sizes (it pads them itself): the input is zero-padded up to a
  multiple and every output of the padded size is cropped back, so every size the original
  takes still runs;
- the network refuses other sizes: the graph refuses them too, with the original's message.

Both nodes are single leaves for any later capture or rewrite, and export to ONNX with
dynamic sizes.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.overrides import handle_torch_function, has_torch_function

from compressor.errors import InputSizeError, first_line
from compressor.models.blocks import crop_like, pad_to_multiple
from compressor.models.construction import ConstructionLimitError
from compressor.outputs import primary_output

__all__ = ["SizeRule", "size_rule", "keep_input_handling", "pad_input", "crop_output", "check_input_size"]

#: the largest step tried (a network that down-samples 2**8 times is not one that runs on patches)
MAX_MULTIPLE = 256


@dataclass(frozen=True)
class SizeRule:
    """What sizes a captured graph takes, and what the original network does with the others.

    Attributes:
        multiple: the graph computes what the network computes at sides that ``multiple`` divides.
        original_takes_others: the network itself runs at sizes off that step (it pads them).
        refusal: what the network says at a size it refuses (``""`` when it takes them).
        probe: the size that showed it (``65x65``).
    """

    multiple: int
    original_takes_others: bool
    refusal: str = ""
    probe: str = ""

    def describe(self) -> str:
        if self.original_takes_others:
            return (f"other sizes are zero-padded to a multiple of {self.multiple} and the output cropped back, "
                    "since the original takes them (it handles them in Python the graph cannot hold)")
        return (f"other sizes than multiples of {self.multiple} are refused, as the original refuses them "
                f"(at {self.probe}: {self.refusal})")


def pad_input(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` zero-padded at the bottom and right to sides that ``multiple`` divides (one graph node)."""
    if has_torch_function((x,)):
        return handle_torch_function(pad_input, (x,), x, multiple)
    return pad_to_multiple(x, multiple)


def crop_output(output: Any, padded: torch.Tensor, original: torch.Tensor) -> Any:
    """``output`` with every tensor of ``padded``'s height and width cropped to ``original``'s (one graph node)."""
    if has_torch_function((padded, original)):
        return handle_torch_function(crop_output, (padded, original), output, padded, original)
    height, width = padded.shape[-2:]

    def crop(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() >= 3 and tuple(value.shape[-2:]) == (height, width):
            return crop_like(value, original)
        if isinstance(value, dict):
            return type(value)((key, crop(item)) for key, item in value.items())
        if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
            return type(value)(crop(item) for item in value)
        return value

    return crop(output)


def check_input_size(x: torch.Tensor, multiple: int, message: str) -> torch.Tensor:
    """``x``, if ``multiple`` divides its height and width; else :class:`InputSizeError` (one graph node)."""
    if has_torch_function((x,)):
        return handle_torch_function(check_input_size, (x,), x, multiple, message)
    height, width = x.shape[-2:]
    if not torch.onnx.is_in_onnx_export() and (height % multiple or width % multiple):
        raise InputSizeError(f"input {height}x{width}: {message}")
    return x


def size_rule(model: nn.Module, graph_module: torch.fx.GraphModule, example: torch.Tensor, *,
              output_key: str | int | None = None) -> SizeRule | None:
    """The step at which ``graph_module`` (captured from ``model`` on ``example``) computes what
    ``model`` computes, found on sizes ``example + d`` for ``d`` = 1, 2, 4, ...; None when the graph
    matches the network at an odd size already (its branches are not about the size) or at no step
    that divides the example's sides (nothing is added then: the graph holds at the example's size
    and those that take its branches, as captured)."""
    # in eval mode, as the graph was checked: a probe must not move a batch norm's running statistics
    modes = [(network, network.training) for network in (model, graph_module)]
    for network, _ in modes:
        network.eval()
    try:
        return _probe(model, graph_module, example, output_key)
    finally:
        for network, mode in modes:
            network.train(mode)


def _probe(model: nn.Module, graph_module: torch.fx.GraphModule, example: torch.Tensor,
           output_key: str | int | None) -> SizeRule | None:
    height, width = example.shape[-2:]
    generator = torch.Generator().manual_seed(0)
    refusal = probe = ""
    original_takes_others = True
    multiple = 1
    # only steps that divide the example's sides: padding to one then leaves the example as it was captured
    while multiple <= MAX_MULTIPLE and height % multiple == 0 and width % multiple == 0:
        shape = (*example.shape[:-2], height + multiple, width + multiple)
        images = torch.randn(*shape, generator=generator).to(example.device, example.dtype)
        expected, error = _run(model, images, output_key)
        if multiple == 1 and expected is None:
            original_takes_others, refusal, probe = False, error, f"{shape[-2]}x{shape[-1]}"
        if expected is not None:
            got, _ = _run(graph_module, images, output_key)
            if got is not None and got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
                if multiple == 1:
                    return None
                return SizeRule(multiple, original_takes_others, refusal, probe)
        multiple *= 2
    return None


def keep_input_handling(graph_module: torch.fx.GraphModule, rule: SizeRule, name: str) -> torch.fx.GraphModule:
    """Puts ``rule``'s handling at the input of ``graph_module`` (in place; recompiled)."""
    graph = graph_module.graph
    image = next(node for node in graph.nodes if node.op == "placeholder")
    users = list(image.users)
    with graph.inserting_after(image):
        if rule.original_takes_others:
            handled = graph.call_function(pad_input, (image, rule.multiple))
        else:
            message = (f"{name}, as captured, takes sides that {rule.multiple} divides, as the original does "
                       f"(at {rule.probe} it says: {rule.refusal})")
            handled = graph.call_function(check_input_size, (image, rule.multiple, message))
    handled.meta = dict(image.meta)
    for user in users:
        user.replace_input_with(image, handled)
    if rule.original_takes_others:
        output = next(node for node in graph.nodes if node.op == "output")
        with graph.inserting_before(output):  # each returned tensor its own crop: the output's structure stays
            output.args = torch.fx.node.map_arg(
                output.args, lambda node: _cropped(graph, node, handled, image))
    graph.lint()
    graph_module.recompile()
    return graph_module


def _cropped(graph: torch.fx.Graph, node: torch.fx.Node, padded: torch.fx.Node, image: torch.fx.Node) -> torch.fx.Node:
    cropped = graph.call_function(crop_output, (node, padded, image))
    cropped.meta = dict(node.meta)
    return cropped


def _run(network: nn.Module, images: torch.Tensor, output_key: str | int | None) -> tuple[torch.Tensor | None, str]:
    """``network``'s segmentation output on ``images``, or None and the first line of its error."""
    try:
        # a captured graph prints its generated code to stderr when it fails: the reason is what counts
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            return primary_output(network(images), output_key), ""
    except ConstructionLimitError:  # a model file's steps re-applied past their budget: not the network's answer
        raise
    except Exception as error:  # noqa: BLE001 - the network's own refusal, whatever it raises
        return None, first_line(error)
