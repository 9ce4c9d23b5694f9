"""``skip_fusion``: concatenated skip connections become additions, as in Micro-Net."""

from __future__ import annotations

import operator
from typing import Literal

import torch
import torch.fx
from torch import nn

from compressor.transforms.base import Change, TransformError, register_transform
from compressor.transforms.calibration import Counterpart
from compressor.transforms.graph import finish_graph, module_of, node_shape, trace_with_shapes
from compressor.transforms.inherit import inherit_fused
from compressor.transforms.selection import LayerTransform, replace_submodule

__all__ = ["SkipFusion"]

_CONCATS = (torch.cat, torch.concat, torch.concatenate)


@register_transform("skip_fusion")
class SkipFusion(LayerTransform):
    """Replaces ``conv(torch.cat([a, b], dim=1))`` with ``conv'(a + b)``.

    Where two tensors of equal shape are concatenated along channels and the result
    feeds exactly one ``Conv2d``, the concatenation becomes an addition and the conv
    takes half the input channels. With ``init="inherit"`` (the default) its weights start
    as the mean of the two halves of the original kernel; ``random`` leaves PyTorch's
    initialization. Selection (``include``, ``exclude``, ``min_channels``) applies to that
    conv's name. The result is a ``torch.fx.GraphModule`` keeping the original layer names.

    Args:
        init: ``inherit`` (from the replaced conv's weights) or ``random``.
    """

    def __init__(self, *, init: Literal["inherit", "random"] = "inherit", **selection) -> None:
        super().__init__(**selection)
        self.init = init

    def transform(self, model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, Change]:
        graph_module = trace_with_shapes(model, example_input, transform=self.name)
        selected = {name for name, _ in self.selected(graph_module)}
        change = Change()
        concats = [node for node in graph_module.graph.nodes if node.op == "call_function" and node.target in _CONCATS]
        if not concats:
            raise TransformError(f"{self.name}: {type(model).__name__} has no torch.cat (its skips are not concatenated)")
        for node in concats:
            reason, consumer = self._check(graph_module, node)
            label = consumer.target if consumer is not None else f"node {node.name!r}"
            if consumer is not None and consumer.target not in selected and reason is None:
                continue
            if reason:
                self.skip(change, label, reason)
                continue
            half = self._fuse(graph_module, node, consumer)
            change.changed.append(consumer.target)
            change.counterparts[consumer.target] = Counterpart.same(consumer.target, adapt=_halves_added(half))
        if change.changed:
            finish_graph(graph_module)
        self.require_changes(model, change)
        return graph_module, change

    def _check(self, graph_module: torch.fx.GraphModule, node: torch.fx.Node) -> tuple[str | None, torch.fx.Node | None]:
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        users = list(node.users)
        consumer = users[0] if len(users) == 1 and users[0].op == "call_module" else None
        shapes = [node_shape(t) if isinstance(t, torch.fx.Node) else None for t in tensors]
        if not isinstance(tensors, (list, tuple)) or len(tensors) != 2:
            return f"concatenation at node {node.name!r} joins {len(tensors)} tensors, not 2", consumer
        if any(shape is None or len(shape) != 4 for shape in shapes) or dim not in (1, -3):
            return f"concatenation at node {node.name!r} is not of two 4-D tensors along channels", consumer
        if shapes[0] != shapes[1]:
            return (
                f"concatenation at node {node.name!r} joins shapes {shapes[0]} and {shapes[1]}; "
                "addition needs equal shapes",
                consumer,
            )
        if consumer is None:
            return f"concatenation at node {node.name!r} does not feed exactly one layer", None
        conv = module_of(graph_module, consumer)
        if type(conv) is not nn.Conv2d:
            return f"concatenation at node {node.name!r} feeds {type(conv).__name__}, not a plain Conv2d", consumer
        if conv.groups != 1:
            return f"concatenation at node {node.name!r} feeds a grouped conv (groups={conv.groups})", consumer
        if sum(1 for n in graph_module.graph.nodes if n.op == "call_module" and n.target == consumer.target) > 1:
            return "is called more than once (shared weights)", consumer
        return None, consumer

    def _fuse(self, graph_module: torch.fx.GraphModule, node: torch.fx.Node, consumer: torch.fx.Node) -> int:
        first, second = node.args[0]
        with graph_module.graph.inserting_before(node):
            added = graph_module.graph.call_function(operator.add, (first, second))
        node.replace_all_uses_with(added)
        graph_module.graph.erase_node(node)
        conv = graph_module.get_submodule(consumer.target)
        half = conv.in_channels // 2
        fused = nn.Conv2d(
            half, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
            dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode,
        ).to(conv.weight.device)
        if self.init == "inherit":
            inherit_fused(conv, fused)
        replace_submodule(graph_module, consumer.target, fused)
        return half


def _halves_added(half: int):
    """What the fused conv reads, from what the original one read: ``a + b`` from ``cat([a, b])``."""
    return lambda concatenated: concatenated[:, :half] + concatenated[:, half:]
