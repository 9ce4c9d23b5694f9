"""torch.fx helpers: trace a model, attach shapes, read them back."""

from __future__ import annotations

import contextlib
import io
import math

import torch
import torch.fx
from torch import nn
from torch.fx.node import map_aggregate, map_arg
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from compressor.annotations import NETWORK_NAME, annotate, network_name
from compressor.errors import ConfigError
from compressor.outputs import declare_output, declared_output, primary_output
from compressor.transforms.base import TransformError
from compressor.transforms.capture import CaptureError, capture
from compressor.transforms.input_sizes import keep_input_handling, size_rule

__all__ = ["trace_with_shapes", "branch_note", "node_shape", "resolution_levels", "finish_graph", "module_of"]


def trace_with_shapes(model: nn.Module, example_input: torch.Tensor, *, transform: str) -> torch.fx.GraphModule:
    """Captures ``model``'s graph on ``example_input`` and records each node's output shape
    in ``node.meta`` (see :mod:`compressor.transforms.capture`).

    Python branches the model takes on the example's shapes are followed; each is listed
    in ``graph_module.meta["branches"]`` (``file:line (code)``).

    Raises:
        TransformError: naming ``transform``, the module and source line at fault, if the
            graph cannot be captured or does not compute what the model computes.
    """
    name = network_name(model)
    try:
        captured = capture(model, example_input)
    except CaptureError as error:
        where = f" ({error.where})" if error.where else ""
        raise TransformError(f"{transform}: cannot capture the graph of {name}{where}: {error}; "
                             "this transform needs the model's graph") from None
    graph_module = captured.graph_module
    # Type annotations of the traced forward become string globals in the generated
    # code, which GraphModule pickling (torch.save) cannot handle; they carry nothing we use.
    for node in graph_module.graph.nodes:
        node.type = None
    graph_module.recompile()
    graph_module.meta["branches"] = list(captured.branches)
    declare_output(graph_module, declared_output(model))
    annotate(graph_module, NETWORK_NAME, name)
    # each node's shape is the one its value had while capturing (the graph records that run, op for op, so running
    # it again would give the same values: torch.fx's ShapeProp was that second run); the model's own forward is
    # what tells whether the graph stands for it (a branch on isinstance, state the graph cannot hold)
    _record_shapes(graph_module, captured.values)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            expected = model(example_input)
    finally:
        model.train(was_training)
    graph_module.train(was_training)
    if not _same_output(expected, _output_value(graph_module, captured.values), declared_output(model)):
        raise TransformError(
            f"{transform}: the captured graph of {name} computes something else than the model "
            "(its forward() depends on something the graph cannot hold); refusing to rewrite it"
        )
    if captured.branches:  # sizes that take other branches: handled as the original handles them
        rule = size_rule(model, graph_module, example_input, output_key=declared_output(model))
        if rule is not None:
            keep_input_handling(graph_module, rule, name)
            graph_module.meta["size_rule"] = rule.describe()
    return graph_module


def branch_note(graph_module: torch.fx.GraphModule) -> list[str]:
    """A note for the user if capturing followed Python branches of the model on the example."""
    branches = graph_module.meta.get("branches") or []
    if not branches:
        return []
    rule = graph_module.meta.get("size_rule")
    return [
        f"graph captured for inputs shaped like the example: followed {len(branches)} Python branch(es) "
        f"of forward() on its shapes, first at {branches[0]}" + (f"; {rule}" if rule else "")
    ]


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



def _record_shapes(graph_module: torch.fx.GraphModule, values: dict[torch.fx.Node, object]) -> None:
    """``node.meta["tensor_meta"]`` (and ``["type"]``) from each node's captured value, as ShapeProp records them."""
    for node in graph_module.graph.nodes:
        value = _output_value(graph_module, values) if node.op == "output" else values.get(node)
        found = False

        def tensor_meta(obj: object) -> object:
            nonlocal found
            if isinstance(obj, torch.Tensor):
                found = True
                return _extract_tensor_metadata(obj)
            return obj

        meta = map_aggregate(value, tensor_meta)
        if found:
            node.meta["tensor_meta"] = meta
        node.meta["type"] = type(value)


def _output_value(graph_module: torch.fx.GraphModule, values: dict[torch.fx.Node, object]) -> object:
    """What the captured graph returned on the example: its output node's arguments, valued."""
    output = next(node for node in graph_module.graph.nodes if node.op == "output")
    return map_arg(output.args[0], lambda node: values.get(node))


def _same_output(expected: object, traced: object, key: str | int | None) -> bool:
    try:
        expected, traced = primary_output(expected, key), primary_output(traced, key)
    except ConfigError:
        return False
    return expected.shape == traced.shape and torch.allclose(expected, traced, rtol=1e-4, atol=1e-5)
