"""The layers that make a network's output: its classifier (the output compressor reads; every returned
tensor when none is declared and there are several).

A segmentation network ends in a layer whose output channels are the classes: segmentation_models_pytorch's
``segmentation_head`` (a 3x3 conv), torchvision's ``classifier[-1]``, U-Net's last 1x1 conv. Such a layer's
width says nothing of what it needs: a fire module sized by its output channels (a quarter of 2 classes: one
squeeze channel) would pass the whole decoder through one rectified channel. Transforms that size their
replacement by the output channels leave these layers as they are.

Found by running the network once on the example input and following the autograd graph back from the
output compressor reads: on each path, the first convolution or linear layer met makes that output (a functional
``F.conv2d`` met first ends the path: then no module does).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1), nn.Identity())
    >>> sorted(output_layers(net, torch.zeros(1, 1, 8, 8)))
    ['2']
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compressor.errors import CompressorError
from compressor.outputs import declared_output, primary_output, returned_tensors

__all__ = ["LAYER_KINDS", "output_layers"]

#: the layers that can make an output (what the walk stops at)
LAYER_KINDS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def output_layers(model: nn.Module, example_input: torch.Tensor) -> set[str]:
    """Dotted names of the layers (convolutions, linear) nearest to the tensor ``model`` returns: its
    declared or primary output (:func:`~compressor.outputs.primary_output`), else every tensor it returns.

    ``model`` runs once in eval mode with gradients (the input, when it is floating point, and every
    parameter tracked for the pass, so frozen weights work too); every module's mode and
    ``requires_grad`` are restored, batch-norm statistics are not touched, nothing is accumulated.
    When no returned tensor has an autograd history (a forward under ``no_grad``, a ``detach``) the
    last of those layers to run stands for the output, as for pruning.
    """
    made: dict[Any, str] = {}
    order: list[str] = []

    def hook(name: str):
        def record(_module: nn.Module, _inputs: tuple, output: object) -> None:
            order.append(name)
            if isinstance(output, torch.Tensor) and output.grad_fn is not None:
                made[output.grad_fn] = name
        return record

    layers = [(name, module) for name, module in model.named_modules() if name and isinstance(module, LAYER_KINDS)]
    handles = [module.register_forward_hook(hook(name)) for name, module in layers]
    modes = [(module, module.training) for module in model.modules()]
    frozen = [parameter for parameter in model.parameters() if not parameter.requires_grad]
    model.eval()
    try:
        for parameter in frozen:
            parameter.requires_grad_(True)
        example = example_input.detach().clone()
        if example.is_floating_point():  # a non-leaf copy that tracks gradients: a model may change its input in place
            example = example.requires_grad_(True).clone()
        with torch.enable_grad():
            outputs = _returned(model, model(example))
            tracked = [tensor for tensor in outputs if tensor.grad_fn is not None]
            if not tracked:
                return {order[-1]} if order else set()
            return _nearest(tracked, made)
    finally:
        for module, mode in modes:
            module.training = mode
        for parameter in frozen:
            parameter.requires_grad_(False)
        for handle in handles:
            handle.remove()


def _returned(model: nn.Module, returned: object) -> list[torch.Tensor]:
    """The tensor compressor reads of ``returned`` (the declared output, ``out``, the only one), else all of them."""
    try:
        return [primary_output(returned, declared_output(model))]
    except CompressorError:
        return returned_tensors(returned)


def _nearest(outputs: list[torch.Tensor], made: dict[Any, str]) -> set[str]:
    found: set[str] = set()
    stack = [tensor.grad_fn for tensor in outputs if tensor.grad_fn is not None]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node in made:
            found.add(made[node])
            continue  # the nearest layer on this path: what feeds it does not make the output
        if type(node).__name__.startswith("ConvolutionBackward"):
            continue  # a functional convolution (no module) makes this output: nothing before it does
        stack.extend(function for function, _ in node.next_functions)
    return found
