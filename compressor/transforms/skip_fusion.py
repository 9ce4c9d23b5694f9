"""``skip_fusion``: concatenated skip connections become additions, as in Micro-Net."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.fx
from torch import nn

from compressor.annotations import network_name
from compressor.transforms.base import Change, TransformError, register_transform
from compressor.transforms.calibration import Counterpart
from compressor.transforms.graph import branch_note, finish_graph, module_of, node_shape, trace_with_shapes
from compressor.transforms.inherit import group_average, inherit_fused
from compressor.transforms.selection import LayerTransform, replace_submodule

__all__ = ["SkipFusion"]

_CONCATS = (torch.cat, torch.concat, torch.concatenate)
# Modules that pass their input through unchanged in eval mode: a concatenation may reach
# its conv through them (segmentation_models_pytorch puts an Identity "attention" there).
_NO_OPS = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.Dropout3d, nn.AlphaDropout)
_PROJECTIONS = "skip_projections"


@dataclass(frozen=True)
class _Site:
    """A concatenation that can become a sum, and the conv that reads it."""

    node: torch.fx.Node
    conv: str
    widths: tuple[int, ...]


@register_transform("skip_fusion")
class SkipFusion(LayerTransform):
    """Replaces ``conv(torch.cat([a, b, ...], dim=1))`` with ``conv'(a + b + ...)``.

    Where 4-D tensors of equal height and width are concatenated along channels and the
    result feeds exactly one ``Conv2d`` (directly or through no-op modules: ``Identity``,
    dropout), the concatenation becomes a sum and the conv reads the narrowest tensor's
    width. A tensor wider than that is first brought down to it by a new 1x1 conv (a
    *projection*, under ``skip_projections`` in the result; with ``project: false`` such
    a site is skipped instead). Any number of tensors may be joined (DeepLab's ASPP joins
    5). With ``init="inherit"`` (the default) the conv starts from the mean of its kernel's
    chunks, a projection as the mean of groups of channels; ``random`` leaves PyTorch's
    initialization. Selection (``include``, ``exclude``, ``min_channels``) applies to the
    conv's name, which is the layer reported as changed. The result is a
    ``torch.fx.GraphModule`` keeping the original layer names.

    Args:
        init: ``inherit`` (from the replaced conv's weights) or ``random``.
        project: join tensors of unequal widths through 1x1 projections (else skip them).
    """

    example = {}
    refuses = {
        "no-concat": r"has no torch.cat",
        "concat-into-other": r"feeds (a grouped conv|\w+, not a plain Conv2d)",
    }
    search_order = 20

    @classmethod
    def suggest(cls, trial, applicability, steps):
        if trial.suggest_categorical("skip", ["concat", "add"]) != "add":
            return None
        # a cut before it may take every concatenation with it (a shallow U-Net keeps none): then skip it
        return {"optional": True} if steps else {}

    @classmethod
    def smallest(cls, applicability):
        return {"skip": "add"}

    @classmethod
    def unchanged(cls, applicability):
        return {"skip": "concat"}

    omit_when_default = ("project",)

    def __init__(
        self, *, init: Literal["inherit", "random"] = "inherit", project: bool = True, **selection
    ) -> None:
        super().__init__(**selection)
        self.init = init
        self.project = project

    def transform(self, model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, Change]:
        graph_module = trace_with_shapes(model, example_input, transform=self.name)
        selected = {name for name, _ in self.selected(graph_module)}
        change = Change()
        concats = [node for node in graph_module.graph.nodes if node.op == "call_function" and node.target in _CONCATS]
        if not concats:
            raise TransformError(f"{self.name}: {network_name(model)} has no torch.cat (its skips are not concatenated)")
        for node in concats:
            reason, conv, site = self._check(graph_module, node)
            label = conv or f"node {node.name!r}"
            if reason is None and conv not in selected:
                continue
            if reason:
                self.skip(change, label, reason)
                continue
            projections = self._fuse(graph_module, site)
            change.changed.append(site.conv)
            change.counterparts[site.conv] = Counterpart.same(
                site.conv, adapt=_summed(site.widths, [graph_module.get_submodule(p) if p else None for p in projections])
            )
            for projection in filter(None, projections):
                change.changed.append(projection)
                change.counterparts[projection] = None
        if change.changed:
            finish_graph(graph_module)
            change.notes.extend(branch_note(graph_module))
        self.require_changes(model, change)
        return graph_module, change

    def _check(
        self, graph_module: torch.fx.GraphModule, node: torch.fx.Node
    ) -> tuple[str | None, str | None, _Site | None]:
        """``(why not, the conv's name, the site)``; the reason is None where it can be fused."""
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        consumer = _consumer(graph_module, node)
        conv_name = consumer.target if consumer is not None else None
        where = f"concatenation at node {node.name!r}"
        if not isinstance(tensors, (list, tuple)) or len(tensors) < 2:
            return f"{where} joins fewer than 2 tensors", conv_name, None
        shapes = [node_shape(t) if isinstance(t, torch.fx.Node) else None for t in tensors]
        if any(shape is None or len(shape) != 4 for shape in shapes) or dim not in (1, -3):
            return f"{where} is not of 4-D tensors along channels", conv_name, None
        if len({(shape[0], *shape[2:]) for shape in shapes}) > 1:
            sizes = ", ".join("x".join(map(str, shape[2:])) for shape in shapes)
            return f"{where} joins tensors of different sizes ({sizes}); a sum needs equal sizes", conv_name, None
        widths = tuple(shape[1] for shape in shapes)
        if len(set(widths)) > 1 and not self.project:
            return f"{where} joins widths {list(widths)} and project is false", conv_name, None
        if consumer is None:
            return f"{where} does not feed exactly one layer", None, None
        conv = module_of(graph_module, consumer)
        if type(conv) is not nn.Conv2d:
            return f"{where} feeds {type(conv).__name__}, not a plain Conv2d", conv_name, None
        if conv.groups != 1:
            return f"{where} feeds a grouped conv (groups={conv.groups})", conv_name, None
        if sum(1 for n in graph_module.graph.nodes if n.op == "call_module" and n.target == consumer.target) > 1:
            return "is called more than once (shared weights)", conv_name, None
        return None, conv_name, _Site(node, consumer.target, widths)

    def _fuse(self, graph_module: torch.fx.GraphModule, site: _Site) -> list[str | None]:
        """Rewrites the site; returns the name of each tensor's projection (None: none)."""
        conv = graph_module.get_submodule(site.conv)
        width = min(site.widths)
        graph = graph_module.graph
        projections: list[str | None] = []
        terms = []
        with graph.inserting_before(site.node):
            for index, (tensor, tensor_width) in enumerate(zip(site.node.args[0], site.widths)):
                if tensor_width == width:
                    projections.append(None)
                    terms.append(tensor)
                    continue
                name = f"{_PROJECTIONS}.{site.conv.replace('.', '_')}_{index}"
                projection = nn.Conv2d(tensor_width, width, 1, bias=False).to(conv.weight.device)
                if self.init == "inherit":
                    group_average(projection)
                graph_module.add_submodule(name, projection)
                projections.append(name)
                terms.append(graph.call_module(name, (tensor,)))
            total = terms[0]
            for term in terms[1:]:
                total = graph.call_function(operator.add, (total, term))
        site.node.replace_all_uses_with(total)
        graph.erase_node(site.node)
        fused = nn.Conv2d(
            width, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
            dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode,
        ).to(conv.weight.device)
        if self.init == "inherit":
            inherit_fused(conv, fused, list(site.widths))
        replace_submodule(graph_module, site.conv, fused)
        return projections


def _consumer(graph_module: torch.fx.GraphModule, node: torch.fx.Node) -> torch.fx.Node | None:
    """The one module node that reads ``node``, looking through no-op modules; else None."""
    current = node
    while True:
        users = list(current.users)
        if len(users) != 1 or users[0].op != "call_module":
            return None
        if not isinstance(module_of(graph_module, users[0]), _NO_OPS):
            return users[0]
        current = users[0]


def _summed(widths: tuple[int, ...], projections: list[nn.Module | None]):
    """What the fused conv reads, from what the original one read (the concatenation)."""

    def adapt(concatenated: torch.Tensor) -> torch.Tensor:
        parts = torch.split(concatenated, list(widths), dim=1)
        terms = [part if projection is None else projection(part) for part, projection in zip(parts, projections)]
        return torch.stack(terms).sum(dim=0)

    return adapt
