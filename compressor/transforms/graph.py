"""torch.fx helpers: trace a model, attach shapes, read them back."""

from __future__ import annotations

import math

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from compressor.transforms.base import TransformError

__all__ = ["trace_with_shapes", "node_shape", "resolution_levels", "finish_graph", "module_of"]


def trace_with_shapes(model: nn.Module, example_input: torch.Tensor, *, transform: str) -> torch.fx.GraphModule:
    """Symbolically traces ``model`` and records each node's output shape in ``node.meta``.

    Raises:
        TransformError: naming ``transform`` and the reason, if fx cannot trace the model
            (data-dependent control flow, for example).
    """
    try:
        graph_module = torch.fx.symbolic_trace(model)
    except Exception as error:  # noqa: BLE001 - fx raises many kinds of errors
        raise TransformError(
            f"{transform}: torch.fx cannot trace {type(model).__name__} ({_first_line(error)}); "
            "this transform needs the model's graph"
        ) from None
    # Type annotations of the traced forward become string globals in the generated
    # code, which GraphModule pickling (torch.save) cannot handle; they carry nothing we use.
    for node in graph_module.graph.nodes:
        node.type = None
    graph_module.recompile()
    was_training = model.training
    model.eval()
    graph_module.eval()
    try:
        with torch.no_grad():
            expected = model(example_input)
            try:
                traced = ShapeProp(graph_module).propagate(example_input)
            except Exception as error:  # noqa: BLE001 - the traced graph is not the model
                raise TransformError(
                    f"{transform}: the torch.fx graph of {type(model).__name__} does not run "
                    f"({_first_line(error.__cause__ or error)}); its forward() probably branches on values fx cannot see"
                ) from None
    finally:
        model.train(was_training)
        graph_module.train(was_training)
    if not _same_output(expected, traced):
        raise TransformError(
            f"{transform}: the torch.fx graph of {type(model).__name__} computes something else than the "
            "model (its forward() branches on values fx cannot see); refusing to rewrite it"
        )
    return graph_module


def node_shape(node: torch.fx.Node) -> tuple[int, ...] | None:
    """The output shape of ``node`` if it is a single tensor, else None."""
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape) if shape is not None else None


def resolution_levels(graph_module: torch.fx.GraphModule, input_height: int) -> dict[torch.fx.Node, int]:
    """Level of every 4-D tensor node: ``round(log2(input_height / height))``.

    Level 0 is full resolution, 1 is half, and so on; up-sampled tensors go back down.
    Globally pooled tensors (1 x 1 from a larger input) have no level: they are not a
    down-sampling stage.
    """
    levels = {}
    for node in graph_module.graph.nodes:
        shape = node_shape(node)
        if shape is None or len(shape) != 4 or node.op == "get_attr" or shape[-2] < 1:
            continue
        if shape[-2] == shape[-1] == 1 and input_height > 1:
            continue
        levels[node] = round(math.log2(input_height / shape[-2]))
    return levels


def finish_graph(graph_module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Removes dead nodes and unused submodules, checks and recompiles the graph."""
    graph_module.graph.eliminate_dead_code()
    graph_module.delete_all_unused_submodules()
    graph_module.graph.lint()
    graph_module.recompile()
    return graph_module


def module_of(graph_module: torch.fx.GraphModule, node: torch.fx.Node) -> nn.Module | None:
    """The submodule a ``call_module`` node calls, else None."""
    return graph_module.get_submodule(node.target) if node.op == "call_module" else None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _same_output(expected: object, traced: object) -> bool:
    if isinstance(expected, torch.Tensor) and isinstance(traced, torch.Tensor):
        return expected.shape == traced.shape and torch.allclose(expected, traced, rtol=1e-4, atol=1e-5)
    return type(expected) is type(traced)
