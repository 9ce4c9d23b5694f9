"""Making torch-pruning's dependency graph work on more networks.

torch-pruning 1.6 fails on common encoder-decoders (MONAI's ``BasicUNet`` and ``UNet``)
for two reasons, both handled here for the duration of one pruning:

1. It infers the channel sizes of a ``torch.cat`` from the layers around it; where a
   functional op sits in between (``F.pad`` before the concatenation) the inference
   returns None and its concat index mapping raises ``TypeError``. We record the real
   sizes of every concatenation during its tracing forward pass and hand them over.
2. In-place activations (``LeakyReLU(inplace=True)``) put ``AsStridedBackward`` nodes in
   the autograd graph that cut the link between a conv and the norm after it, which then
   keeps its old width. In-place flags are switched off while the graph is built.

The patch of torch-pruning's concat handler is scoped to a ``with`` block and undone
after it, whatever happens inside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch_pruning.dependency import index_mapping

__all__ = ["pruning_compatibility"]

_CONCATS = (torch.cat, torch.concat, torch.concatenate)


class _ConcatSizes(TorchFunctionMode):
    """Records ``grad_fn -> channel sizes`` of every concatenation along dim 1."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[Any, list[int]] = {}
        self._outputs: list[torch.Tensor] = []  # keeps grad_fn objects alive while tp uses them

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        if func in _CONCATS and isinstance(output, torch.Tensor) and output.grad_fn is not None:
            tensors = args[0] if args else kwargs.get("tensors", ())
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if output.dim() >= 2 and dim in (1, 1 - output.dim()):
                self.sizes[output.grad_fn] = [int(t.shape[1]) for t in tensors]
                self._outputs.append(output)
        return output


@contextlib.contextmanager
def pruning_compatibility(model: nn.Module) -> Iterator[Callable[[nn.Module, Any], Any]]:
    """Context in which torch-pruning can build its graph of ``model``.

    Yields the ``forward_fn`` to pass to torch-pruning's pruner.
    """
    recorder = _ConcatSizes()
    original = index_mapping.update_concat_index_mapping

    def update_concat_index_mapping(graph, cat_node):
        if getattr(cat_node.module, "concat_sizes", None) is None and cat_node.grad_fn in recorder.sizes:
            cat_node.module.concat_sizes = recorder.sizes[cat_node.grad_fn]
        return original(graph, cat_node)

    def forward_fn(module: nn.Module, example_inputs: Any) -> Any:
        with recorder:
            return module(example_inputs)

    in_place = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    for module in in_place:
        module.inplace = False
    index_mapping.update_concat_index_mapping = update_concat_index_mapping
    try:
        yield forward_fn
    finally:
        index_mapping.update_concat_index_mapping = original
        for module in in_place:
            module.inplace = True
