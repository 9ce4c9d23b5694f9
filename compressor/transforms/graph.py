"""torch.fx helpers: trace a model, attach shapes, read them back."""

from __future__ import annotations

import contextlib
import io
import math

import torch
import torch.fx
from torch import nn
from torch.fx.node import map_arg
from torch.fx.passes.shape_prop import ShapeProp

from compressor.annotations import NETWORK_NAME, annotate, network_name
from compressor.errors import ConfigError, first_line
from compressor.outputs import declare_output, declared_output, primary_output
from compressor.transforms.base import TransformError
from compressor.transforms.capture import Captured, CaptureError, capture, tensor_meta
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
    random_state = _random_state(example_input)
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
    # each node's shape is the one its value had when the capture made it (the graph records that run op for op, so
    # running it again gives the same values: torch.fx's ShapeProp was that second run); the model's own forward is
    # what tells whether the graph stands for it (a branch on isinstance, state the graph cannot hold). Where a
    # tensor the graph reads as an attribute changed in place while tracing, the graph may not give what the trace
    # saw: it is run, as ShapeProp, and that run is what the model is compared with. It is run too where forward()
    # draws random numbers, so that the random state after the capture is the one running the graph leaves.
    replay = bool(captured.mutated) or not _same_state(random_state, _random_state(example_input))
    was_training = model.training
    model.eval()
    graph_module.eval()
    try:
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            expected = model(example_input)
            if replay:
                try:
                    traced = ShapeProp(graph_module).propagate(example_input)
                except Exception as error:  # noqa: BLE001 - the captured graph is not the model
                    raise TransformError(
                        f"{transform}: the captured graph of {name} does not run "
                        f"({first_line(error.__cause__ or error)}); refusing to rewrite it"
                    ) from None
            else:
                traced = _output_value(graph_module, captured.values)
                _record_shapes(graph_module, captured, traced)
    finally:
        model.train(was_training)
        graph_module.train(was_training)
    if not _same_output(expected, traced, declared_output(model)):
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



def _record_shapes(graph_module: torch.fx.GraphModule, captured: Captured, output: object) -> None:
    """``node.meta["tensor_meta"]`` and ``["type"]`` of every node as ShapeProp records them, from the capture's
    (``output``: what the graph returned, :func:`_output_value`)."""
    for node in graph_module.graph.nodes:
        if node.op == "output":
            meta, kind = tensor_meta(output), type(output)
        else:
            meta, kind = captured.meta.get(node, (None, type(None)))
        if meta is not None:
            node.meta["tensor_meta"] = meta
        node.meta["type"] = kind


def _random_state(example: torch.Tensor) -> list[torch.Tensor]:
    """The random states a forward pass on ``example`` can draw from: the CPU's, and its GPU's."""
    states = [torch.random.get_rng_state()]
    if example.device.type == "cuda":
        states.append(torch.cuda.get_rng_state(example.device))
    return states


def _same_state(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return all(torch.equal(one, two) for one, two in zip(before, after, strict=True))


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
