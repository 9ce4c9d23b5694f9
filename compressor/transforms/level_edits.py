"""The graph edits a cut of down-sampling levels makes (:mod:`compressor.transforms.downsample_depth`):
rescaling an up-sampling, finding the layer that makes the output, the layer a bridge stands for,
a stride-one pool, and names for what it adds and for messages."""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from compressor.transforms.calibration import Counterpart
from compressor.transforms.graph import (
    module_of,
)

__all__ = ["UPSAMPLERS", "rescale", "output_head", "segmentation_node", "bridge_counterpart", "stride_one_pool", "where",
           "free_name", "module_device"]


UPSAMPLERS = (nn.Upsample, nn.UpsamplingBilinear2d, nn.UpsamplingNearest2d)


def rescale(graph_module: torch.fx.GraphModule, node: torch.fx.Node, factor: int) -> str | None:
    """Makes the resizing ``node`` start from a tensor ``factor`` times larger; returns why not.

    A resize to a ``size`` needs nothing; one by ``scale_factor`` gets it divided by ``factor``.
    """
    module = module_of(graph_module, node)
    if isinstance(module, UPSAMPLERS):
        if sum(1 for other in graph_module.graph.nodes if other.op == "call_module" and other.target == node.target) > 1:
            return f"is layer {node.target!r}, called at several places (a rescale would change them all)"
        if module.size is not None:
            return None
        scale = module.scale_factor
        module.scale_factor = tuple(s / factor for s in scale) if isinstance(scale, tuple) else scale / factor
        return None
    if node.op == "call_function" and node.target is torch.nn.functional.interpolate:
        arguments = dict(zip(("input", "size", "scale_factor"), node.args)) | dict(node.kwargs)
        if arguments.get("size") is not None:
            return None
        scale = arguments.get("scale_factor")
        if isinstance(scale, (int, float)):
            args = list(node.args)
            if len(args) > 2:
                args[2] = scale / factor
                node.args = tuple(args)
            else:
                node.kwargs = {**node.kwargs, "scale_factor": scale / factor}
            return None
        return "its scale factor is not a constant"
    return "is not a resize (F.interpolate, nn.Upsample) that could start from the kept level"


def output_head(graph_module: torch.fx.GraphModule, key: str | int | None) -> torch.fx.Node | None:
    """The layer that makes the segmentation: the last conv or linear layer on its way to the output
    (an auxiliary head that runs after it, as torchvision's ``aux`` does, is not it)."""
    order = {node: index for index, node in enumerate(graph_module.graph.nodes)}
    output = next(node for node in reversed(graph_module.graph.nodes) if node.op == "output")
    start = segmentation_node(output.args[0], key)
    if start is None:
        return None
    seen, stack, head = set(), [start], None
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if isinstance(module_of(graph_module, node), (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if head is None or order[node] > order[head]:
                head = node
            continue  # the nearest layer on this path; what feeds it is not the head
        stack.extend(node.all_input_nodes)
    return head


def segmentation_node(returned: object, key: str | int | None) -> torch.fx.Node | None:
    """The node of the returned structure that :func:`compressor.outputs.primary_output` would pick."""
    if isinstance(returned, torch.fx.Node):
        return returned
    if isinstance(returned, dict):
        if key is None:
            key = "out" if "out" in returned else next(iter(returned), None) if len(returned) == 1 else None
        return segmentation_node(returned.get(key), None) if key is not None else None
    if isinstance(returned, (list, tuple)):
        if key is None and len(returned) == 1:
            key = 0
        return segmentation_node(returned[key], None) if isinstance(key, int) and -len(returned) <= key < len(
            returned) else None
    return None


def bridge_counterpart(
    source: torch.fx.Node, region: set[torch.fx.Node], exit_node: torch.fx.Node
) -> Counterpart | None:
    """The bridge reads ``source`` and stands for ``exit_node``'s output, when both are layers' tensors."""
    if exit_node.op != "call_module":
        return None
    # The down-sampling that reads ``source`` is usually a layer of its own; the layer that made
    # ``source`` may be shared (one ReLU module used twice), whose tensors cannot be told apart.
    readers = [node for node in source.users if node in region and node.op == "call_module"]
    if readers:
        return Counterpart(input_layer=readers[0].target, input_side="input", target_layer=exit_node.target)
    if source.op == "call_module":
        return Counterpart(input_layer=source.target, input_side="output", target_layer=exit_node.target)
    return None


def stride_one_pool(pool: nn.Module) -> nn.Module:
    kernel = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
    padding = pool.padding if isinstance(pool.padding, int) else pool.padding[0]
    if kernel % 2 == 1 and padding == kernel // 2:
        pool.stride = 1
        return pool
    return nn.Identity()


def where(node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return f"layer {node.target!r}"
    if node.op == "call_function":
        return f"{getattr(node.target, '__name__', node.target)} (node {node.name!r})"
    return f"node {node.name!r}"


def free_name(graph_module: torch.fx.GraphModule, base: str) -> str:
    names = {name for name, _ in graph_module.named_modules()}
    name, suffix = base, 0
    while name in names:
        suffix += 1
        name = f"{base}_{suffix}"
    return name


def module_device(module: nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))
