"""``downsample_depth``: remove the deepest down-sampling levels of an encoder-decoder."""

from __future__ import annotations

from typing import Literal

import torch
import torch.fx
from torch import nn

from compressor.annotations import network_name
from compressor.errors import ConfigError
from compressor.models.blocks import pad_to_multiple
from compressor.outputs import declared_output
from compressor.transforms.base import Change, Transform, TransformError, register_transform
from compressor.transforms.dilation import set_dilation
from compressor.transforms.graph import (
    branch_note,
    finish_graph,
    module_of,
    node_shape,
    resolution_levels,
    trace_with_shapes,
)
from compressor.transforms.inherit import identity_like
from compressor.transforms.level_edits import (
    bridge_counterpart,
    free_name,
    module_device,
    output_head,
    rescale,
    stride_one_pool,
    where,
)
from compressor.transforms.selection import replace_submodule

__all__ = ["DownsampleDepth"]


@register_transform("downsample_depth")
class DownsampleDepth(Transform):
    """Removes the ``levels`` deepest resolution levels of an encoder-decoder.

    The model is traced with torch.fx and every tensor gets a resolution level from its
    shape on the example input. Everything below the kept levels (the down-sampling into
    them, the layers there, and the up-sampling back) is cut out; the tensor that was
    down-sampled feeds, through a new 1x1 conv per up-sampling (``downsample_bridge_*``),
    every place that the up-sampled result fed. So each down-sampling (pooling, strided
    conv) is paired with its up-sampling (transposed conv, ``Upsample``,
    ``F.interpolate``) by resolution, and shapes still meet. The result is a
    ``torch.fx.GraphModule`` that keeps the original layer names.

    With ``stride_to_dilation`` the levels are not cut but flattened DeepLab-style (for
    networks with no decoder, such as classifiers): the down-sampling into them gets
    stride 1 and every k x k conv in them gets its dilation multiplied by 2 per level
    removed, keeping the receptive field. Parameters stay; FLOPs grow.

    With ``init="inherit"`` (the default) a bridge starts identity-like (input channel
    ``i`` to output channel ``i``), so the decoder first sees the kept features where the
    deep path's came in; ``calibrate`` refits it by least squares to the deep path's
    output on real images. ``random`` leaves PyTorch's initialization.

    Args:
        levels: how many of the deepest levels to remove (>= 1).
        stride_to_dilation: flatten the levels instead of cutting them.
        init: ``inherit`` (identity-like bridges) or ``random``.
        calibrate: batches of real images on which the bridges are refitted; 0: none.
            (Flattened levels run at another resolution than before: nothing there is
            compared with the input model, measured or refitted.)
        all_levels: cut every level when ``levels`` is the network's depth (what is left is its
            layers at full resolution and a 1x1 bridge: the Micro-Net recipe's ``levels: 2`` on a
            2-level network keeps 45 of 12k params of a MONAI UNet). Off: refused, so a recipe
            with ``strict: false`` skips the step there.
    """

    example = {"levels": 1}
    refuses = {"no-resolution-pair": r"nothing to pair.*stride_to_dilation",
               "one-level": r"removing all of them would leave .* remove at most 0 \(or set all_levels=true\)"}
    omit_when_default = ("all_levels",)
    #: a file saved before the refusal was built with it allowed
    recorded_before = {"all_levels": True}
    search_order = 10
    #: the most levels a search cuts
    MAX_LEVELS = 3

    @classmethod
    def applicability(cls, context):
        """How many levels can be cut (0 to :attr:`MAX_LEVELS`)."""
        levels = 0
        while levels < cls.MAX_LEVELS and context.applies(cls.name, levels=levels + 1):
            levels += 1
        return levels

    @classmethod
    def suggest(cls, trial, applicability, steps):
        removed = trial.suggest_int("levels_removed", 0, applicability)
        return {"levels": removed} if removed else None

    @classmethod
    def smallest(cls, applicability):
        return {"levels_removed": applicability}

    @classmethod
    def unchanged(cls, applicability):
        return {"levels_removed": 0}

    def __init__(
        self,
        *,
        levels: int = 1,
        stride_to_dilation: bool = False,
        init: Literal["inherit", "random"] = "inherit",
        calibrate: int = 0,
        all_levels: bool = False,
    ) -> None:
        super().__init__()
        if levels < 1:
            raise ConfigError(f"downsample_depth: levels must be >= 1, got {levels}")
        if calibrate < 0:
            raise ConfigError(f"downsample_depth: calibrate must be >= 0 batches, got {calibrate}")
        self.init = init
        self.calibrate = calibrate
        self.levels = levels
        self.stride_to_dilation = stride_to_dilation
        self.all_levels = all_levels

    def transform(self, model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, Change]:
        graph_module = trace_with_shapes(model, example_input, transform=self.name)
        levels = resolution_levels(graph_module, example_input.shape[-2])
        deepest = max(levels.values(), default=0)
        if deepest <= 0:
            raise TransformError(f"{self.name}: {network_name(model)} never down-samples its input; nothing to remove")
        if self.levels > deepest:
            raise TransformError(
                f"{self.name}: {network_name(model)} has {deepest} down-sampling level(s) at input "
                f"{tuple(example_input.shape)}; cannot remove {self.levels}"
            )
        if self.levels == deepest and not self.stride_to_dilation and not self.all_levels:
            raise TransformError(
                f"{self.name}: {network_name(model)} has {deepest} down-sampling level(s) at input "
                f"{tuple(example_input.shape)}; removing all of them would leave its first and last layers "
                f"and a 1x1 bridge, nothing at a coarser resolution; remove at most {deepest - 1} (or set "
                "all_levels=true)"
            )
        keep = deepest - self.levels
        region = {node for node, level in levels.items() if level > keep}
        if self.stride_to_dilation:
            result, change = self._flatten(model, graph_module, levels, region, keep)
        else:
            result, change = self._cut(graph_module, levels, region, keep, example_input)
        change.notes.extend(branch_note(graph_module))
        return result, change

    def _cut(
        self,
        graph_module: torch.fx.GraphModule,
        levels: dict[torch.fx.Node, int],
        region: set[torch.fx.Node],
        keep: int,
        example_input: torch.Tensor,
    ) -> tuple[nn.Module, Change]:
        entries = {source for node in region for source in node.all_input_nodes if source in levels and source not in region}
        if len(entries) != 1:
            names = ", ".join(sorted(where(node) for node in entries)) or "none"
            raise TransformError(
                f"{self.name}: the removed levels must be entered from one tensor; found {len(entries)} ({names}): "
                "this network's deepest levels are reached from several places (a side branch or a skip "
                f"into them), so they cannot be cut out; use stride_to_dilation=true to run them at a finer "
                f"resolution instead, or fewer levels than {self.levels}"
            )
        (source,) = entries
        head = output_head(graph_module, declared_output(graph_module))
        if head is not None and head in region:
            raise TransformError(
                f"{self.name}: the removed levels hold the layer that makes the output ({where(head)}): "
                "cutting them would leave a 1x1 bridge as the whole head; use stride_to_dilation=true to run "
                "those levels at a finer resolution instead"
            )
        exits = [node for node in graph_module.graph.nodes if node not in region and any(i in region for i in node.all_input_nodes)]
        spatial_exits = [node for node in exits if node in levels]
        if not spatial_exits:
            raise TransformError(
                f"{self.name}: nothing to pair: no up-sampling brings level {keep + 1} back to level {keep} "
                f"(the deep part feeds {where(exits[0]) if exits else 'nothing'}); this looks like a network "
                "without a decoder; use stride_to_dilation=true"
            )
        resized = {}
        for node in spatial_exits:
            if levels[node] > keep:
                raise TransformError(
                    f"{self.name}: {where(node)} brings the deep part to level {levels[node]}, deeper than the "
                    f"kept level {keep}; cannot bridge it from one tensor"
                )
            if levels[node] < keep:
                # It up-samples past the kept level (DeepLabV3+'s x4): it can read the bridge instead of
                # the deep tensor if it resizes to a size, or by a factor that can shrink.
                deep = [i for i in node.all_input_nodes if i in region and i in levels]
                reason = rescale(graph_module, node, 2 ** (levels[deep[0]] - keep)) if len(deep) == 1 else (
                    "reads several deep tensors")
                if reason:
                    raise TransformError(
                        f"{self.name}: {where(node)} brings the deep part to level {levels[node]}, past the kept "
                        f"level {keep}, and {reason}; cannot bridge it from one tensor"
                    )
                resized[node] = deep[0]
        down = [where(node) for node in region if source in node.all_input_nodes]
        params_before = sum(parameter.numel() for parameter in graph_module.parameters())
        source_channels = node_shape(source)[1]
        change = Change()
        for index, exit_node in enumerate(spatial_exits):
            name = free_name(graph_module, f"downsample_bridge_{index}")
            stands_for = resized.get(exit_node, exit_node)
            out_channels = node_shape(stands_for)[1]
            bridge = nn.Conv2d(source_channels, out_channels, 1, bias=False).to(module_device(graph_module))
            if self.init == "inherit":
                identity_like(bridge)
            graph_module.add_submodule(name, bridge)
            counterpart = bridge_counterpart(source, region, stands_for)
            if counterpart is not None:
                change.counterparts[name] = counterpart
            with graph_module.graph.inserting_before(exit_node):
                bridged = graph_module.graph.call_module(name, (source,))
            if exit_node in resized:
                exit_node.replace_input_with(stands_for, bridged)
            else:
                exit_node.replace_all_uses_with(bridged)
            change.changed.append(name)
            change.notes.append(
                f"down-sampling at {', '.join(sorted(down))} paired with up-sampling at {where(exit_node)}: "
                f"bridged {where(source)} ({source_channels} ch) -> {out_channels} ch with 1x1 conv {name}"
                + (" (it now up-samples from the kept level)" if exit_node in resized else "")
            )
        before = {name for name, _ in graph_module.named_modules()}
        finish_graph(graph_module)
        leftovers = [node for node in graph_module.graph.nodes if node in region]
        if leftovers:
            users = ", ".join(where(user) for user in leftovers[0].users)
            raise TransformError(
                f"{self.name}: cannot cut the deep levels out: {where(leftovers[0])} is still used by {users}"
            )
        gone = before - {name for name, _ in graph_module.named_modules()}
        change.removed = sorted(name for name in gone if name.rpartition(".")[0] not in gone)
        params_after = sum(parameter.numel() for parameter in graph_module.parameters())
        change.notes.append(
            f"the cut levels held {1 - params_after / max(params_before, 1):.0%} of the parameters "
            f"({len(change.removed)} layer(s) removed, e.g. {', '.join(change.removed[:3])})"
        )
        self._shrink_padding(graph_module, change)
        return graph_module, change

    def _shrink_padding(self, graph_module: torch.fx.GraphModule, change: Change) -> None:
        """Our reference models pad inputs to a multiple of 2**depth: lower that multiple."""
        factor = 2**self.levels
        for node in graph_module.graph.nodes:
            if node.op == "call_function" and node.target is pad_to_multiple and isinstance(node.args[1], int):
                if node.args[1] % factor == 0:
                    node.args = (node.args[0], node.args[1] // factor)
                    change.notes.append(f"input padding multiple lowered to {node.args[1]}")
        graph_module.recompile()

    def _flatten(
        self,
        model: nn.Module,
        graph_module: torch.fx.GraphModule,
        levels: dict[torch.fx.Node, int],
        region: set[torch.fx.Node],
        keep: int,
    ) -> tuple[nn.Module, Change]:
        change = Change()
        plan = []
        graph_changed = False  # a functional resize rescaled: only the graph holds that change
        for node in graph_module.graph.nodes:
            if node not in region and not any(i in region for i in node.all_input_nodes):
                continue
            input_level = max((levels[i] for i in node.all_input_nodes if i in levels), default=None)
            if input_level is None or node not in levels:
                continue
            if levels[node] < input_level:
                if node not in region:
                    # It leaves the flattened levels: it now starts from the kept level.
                    reason = rescale(graph_module, node, 2 ** (input_level - keep))
                    if reason is None:
                        graph_changed |= node.op == "call_function"
                        continue
                    raise TransformError(
                        f"{self.name}: stride_to_dilation cannot keep shapes: {where(node)} up-samples out of the "
                        f"flattened levels and {reason}; in an encoder-decoder, cut the levels instead "
                        "(stride_to_dilation=false)"
                    )
                raise TransformError(
                    f"{self.name}: stride_to_dilation cannot keep shapes: {where(node)} up-samples inside the "
                    "flattened levels (an encoder-decoder there); cut them instead (stride_to_dilation=false)"
                )
            module = module_of(graph_module, node)
            if levels[node] > input_level:
                if not isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                    raise TransformError(
                        f"{self.name}: stride_to_dilation cannot remove the down-sampling at {where(node)}; "
                        "only Conv2d, MaxPool2d and AvgPool2d modules can be given stride 1"
                    )
                plan.append(("stride", node, module, input_level))
            elif isinstance(module, nn.Conv2d) and max(module.kernel_size) > 1 and input_level > keep:
                plan.append(("dilate", node, module, input_level))
        for action, node, module, input_level in plan:
            rate = module.dilation[0] * 2 ** (input_level - keep) if isinstance(module, nn.Conv2d) else 1
            if action == "stride" and not isinstance(module, nn.Conv2d):
                replacement = stride_one_pool(module)
                replace_submodule(model, node.target, replacement)
                replace_submodule(graph_module, node.target, replacement)
                change.changed.append(node.target)
                continue
            if action == "stride":
                module.stride = (1, 1)
            if rate > 1 or action == "dilate":
                reason = set_dilation(module, rate)
                if reason:
                    raise TransformError(f"{self.name}: layer {node.target!r} {reason}")
            change.changed.append(node.target)
            change.counterparts[node.target] = None  # it now sees another resolution: nothing to compare with
        change.notes.append(f"levels {keep + 1}..{keep + self.levels} flattened: stride 1, dilation x2 per level")
        if graph_changed:
            graph_module.recompile()
            return graph_module, change
        return model, change
