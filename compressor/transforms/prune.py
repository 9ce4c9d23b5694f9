"""``prune``: structured channel pruning through torch-pruning's dependency graph."""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch_pruning as tp
from torch import nn

from compressor.annotations import network_name
from compressor.errors import ConfigError, typed_line
from compressor.transforms.base import Change, TransformError, register_transform
from compressor.transforms.deadline import DeadlineExceeded, deadline
from compressor.transforms.pruning_support import pruning_compatibility
from compressor.transforms.selection import LayerTransform
from compressor.transforms.shapes import run_hooked

__all__ = ["Prune"]

_PRUNABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


@register_transform("prune")
class Prune(LayerTransform):
    """Removes whole channels until params (or FLOPs) fall by ``ratio``.

    torch-pruning's dependency graph keeps every coupled layer consistent (skips,
    concatenations, norms). Channels go in ``steps`` rounds of growing channel
    sparsity until the target is met. With ``scope="uniform"`` every layer loses the
    same share of channels: a width multiplier. The output head (the last layer that
    runs) and every layer outside the selection are never pruned.

    Args:
        ratio: share of the target metric to remove, in [0, 1): 0.5 halves the params.
        target: "params" or "flops" (torch-pruning's MAC count during the rounds).
        scope: "global" (channels ranked across layers) or "uniform" (same share per layer).
        importance: "lamp" (the default: Lee et al.'s layer-adaptive magnitude score, each
            channel's squared norm over the sum of those at least as large in its layer, so
            global ranking cannot empty a pathway), "l1" or "l2" (smallest norm first,
            ranked across layers as they are), or "random".
        round_to: keep channel counts multiples of this (hardware-friendly), or null.
        steps: number of pruning rounds (more: closer to the target).
        max_layer_ratio: at most this share of any one layer's channels is removed.
        seed: seed of the random importance.
        time_limit: seconds the pruning may take before it is refused (0: no limit), not counting
            the time the process was stopped (Ctrl-Z, SIGSTOP).
            torch-pruning's grouping of coupled channels can run for hours on some graphs
            (segmentation_models_pytorch's MAnet: over 10 minutes at 64x64); the limit holds
            in the main thread, which is where the CLI and searches run.
        widths: replay a pruning: the output width to leave each named layer at (what
            :meth:`replay` recorded), instead of ranking channels by ``ratio``; the trailing
            channels go, through the same dependency graph. A saved model is rebuilt so.
    """

    example = {"ratio": 0.3}
    refuses = {"grouped-conv": r"torch-pruning cannot narrow"}
    search_order = 50
    #: torch-pruning rounds in a search: fewer is faster, the ratio lands within a few percent
    SEARCH_STEPS = 8

    @classmethod
    def suggest(cls, trial, applicability, steps):
        ratio = trial.suggest_float("prune", 0.0, 0.9, step=0.1)
        return {"ratio": round(ratio, 2), "steps": cls.SEARCH_STEPS} if ratio > 0 else None

    @classmethod
    def smallest(cls, applicability):
        return {"prune": 0.9}

    @classmethod
    def unchanged(cls, applicability):
        return {"prune": 0.0}

    layer_types = _PRUNABLE
    omit_when_default = ("time_limit", "widths")

    def __init__(
        self,
        *,
        ratio: float = 0.5,
        target: Literal["params", "flops"] = "params",
        scope: Literal["global", "uniform"] = "global",
        importance: Literal["lamp", "l1", "l2", "random"] = "lamp",
        round_to: int | None = None,
        steps: int = 20,
        max_layer_ratio: float = 0.95,
        seed: int = 0,
        time_limit: float = 120.0,
        widths: dict[str, int] | None = None,
        **selection,
    ) -> None:
        super().__init__(**selection)
        if time_limit < 0:
            raise ConfigError(f"prune: time_limit must be >= 0 seconds, got {time_limit}")
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(f"prune: ratio must be in [0, 1), got {ratio}")
        if steps < 1 or not 0.0 < max_layer_ratio < 1.0:
            raise ConfigError("prune: steps must be >= 1 and max_layer_ratio in (0, 1)")
        if round_to is not None and round_to < 1:
            raise ConfigError(f"prune: round_to must be >= 1 or null, got {round_to}")
        self.ratio, self.target, self.scope = ratio, target, scope
        self.importance, self.round_to, self.steps = importance, round_to, steps
        self.max_layer_ratio, self.seed, self.time_limit = max_layer_ratio, seed, time_limit
        self.widths = dict(widths) if widths is not None else None

    def replay(self, model: nn.Module) -> dict[str, Any]:
        return {"widths": {name: _width(module)[1] for name, module in model.named_modules()
                           if isinstance(module, _PRUNABLE)}}

    def transform(self, model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, Change]:
        if self.widths is not None:
            return self._to_widths(model, example_input)
        if not any(_is_grouped(module) for module in model.modules()):
            return self._prune(model, example_input, {})
        untouched = copy.deepcopy(model)
        try:
            return self._prune(model, example_input, {})
        except _TorchPruningFailed as failure:  # on grouped convs: again, with them and what is coupled to them kept
            try:
                with deadline(self.time_limit):
                    grouped = _grouped_and_coupled(untouched, example_input)
            except (Exception, DeadlineExceeded):  # noqa: BLE001 - torch-pruning's graph fails too: the first failure
                raise failure from None
            return self._prune(untouched, example_input, grouped)

    def _prune(
        self, model: nn.Module, example_input: torch.Tensor, grouped: dict[nn.Module, str]
    ) -> tuple[nn.Module, Change]:
        """Prunes by ``ratio``, leaving the layers of ``grouped`` (layer -> why) as they are."""
        change = Change()
        selected = self.selected(model)
        heads, stems = _boundary_layers(model, example_input)
        heads |= {stem for stem in stems if stem.groups > 1}  # a depthwise stem's channels are the image's
        candidates = [(name, module) for name, module in selected if module not in heads and module not in grouped]
        for name, module in selected:
            if module in heads:
                change.skipped[name] = "makes the output or is a grouped conv reading the input (protected)"
            elif module in grouped:
                change.skipped[name] = grouped[module]
        if not candidates:
            self.require_changes(model, change)
        if self.ratio == 0.0:
            raise TransformError("prune: ratio 0 removes nothing; drop the step instead")
        chosen = {id(module) for _, module in candidates}
        ignored = [m for m in model.modules() if isinstance(m, _PRUNABLE) and id(m) not in chosen]
        before_widths = {name: _width(module) for name, module in candidates}
        start = self._metric(model, example_input)
        goal = start * (1.0 - self.ratio)
        reached = start
        with torch.random.fork_rng(devices=[]), pruning_compatibility(model) as forward_fn:
            torch.manual_seed(self.seed)
            try:
                with deadline(self.time_limit):
                    pruner = tp.pruner.MetaPruner(
                        model, example_input,
                        importance=_importance(self.importance),
                        global_pruning=self.scope == "global",
                        pruning_ratio=self.max_layer_ratio,
                        max_pruning_ratio=self.max_layer_ratio,
                        iterative_steps=self.steps,
                        ignored_layers=ignored,
                        round_to=self.round_to,
                        forward_fn=forward_fn,
                    )
                    for _ in range(self.steps):
                        pruner.step()
                        reached = self._metric(model, example_input)
                        if reached <= goal:
                            break
            except (TransformError, ConfigError):
                raise
            except DeadlineExceeded:
                raise TransformError(
                    f"prune: torch-pruning did not finish grouping the coupled channels of {network_name(model)} "
                    f"within time_limit {self.time_limit:g} s (its grouping explodes on some graphs); narrow the "
                    "selection with include=/exclude=, or raise time_limit"
                ) from None
            except Exception as error:  # noqa: BLE001 - torch-pruning's own failures
                raise _TorchPruningFailed(
                    f"prune: torch-pruning cannot prune {network_name(model)}: {typed_line(error)}"
                    + _grouped_hint(model)
                ) from error
        for name, module in candidates:
            if _width(module) != before_widths[name]:
                change.changed.append(name)
        change.notes.append(
            f"{self.target} {start:,.0f} -> {reached:,.0f} ({1 - reached / start:.1%} removed; asked {self.ratio:.1%})"
        )
        self.require_changes(model, change)
        return model, change

    def _to_widths(self, model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, Change]:
        """Prunes the trailing output channels of each named layer down to its recorded width."""
        change = Change()
        layers = dict(model.named_modules())
        unknown = sorted(set(self.widths) - (set(layers) - {""}))
        if unknown:
            raise TransformError(f"prune: widths name layers {network_name(model)} does not have: {unknown[:3]}")
        with pruning_compatibility(model) as forward_fn:
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, forward_fn=forward_fn)
            for name, width in self.widths.items():
                layer = layers[name]
                pruner = graph.get_pruner_of_module(layer)
                if not isinstance(layer, _PRUNABLE) or pruner is None:
                    raise TransformError(f"prune: widths name layer {name!r}, a {type(layer).__name__}, which "
                                         "prune does not narrow")
                current = _width(layer)[1]
                if current == width:
                    continue
                if not 0 < width < current:
                    raise TransformError(f"prune: layer {name!r} has {current} output channels, cannot leave {width}")
                group = graph.get_pruning_group(layer, pruner.prune_out_channels, idxs=list(range(width, current)))
                group.prune()
                change.changed.append(name)
        self.require_changes(model, change)
        return model, change

    def _metric(self, model: nn.Module, example_input: torch.Tensor) -> float:
        if self.target == "params":
            return float(sum(p.numel() for p in model.parameters()))
        was_training = model.training
        model.eval()
        try:
            macs, _ = tp.utils.count_ops_and_params(model, example_input)
        finally:
            model.train(was_training)
        return float(macs)


def _importance(name: str) -> tp.importance.Importance:
    """torch-pruning's channel ranking for ``name``.

    On a trained U-Net pruned by 90% of its params (quickstart parent, 120 steps), global L1,
    L2, batch-norm-scale and uniform L1 rankings left networks that fine-tuned to building
    IoU 0 (many kept channels never active); LAMP and random rankings fine-tuned to 0.18 and
    0.17 in 60 steps. Hence LAMP by default.
    """
    if name == "random":
        return tp.importance.RandomImportance()
    if name == "lamp":
        return tp.importance.LAMPImportance(p=2)
    return tp.importance.MagnitudeImportance(p=1 if name == "l1" else 2)


class _TorchPruningFailed(TransformError):
    """torch-pruning itself failed on the network (not a refusal of ours)."""


def _is_grouped(module: nn.Module) -> bool:
    """A conv of 2 or more groups that is not depthwise: torch-pruning cannot narrow it reliably."""
    return isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and 1 < module.groups < module.in_channels


def _grouped_and_coupled(model: nn.Module, example_input: torch.Tensor) -> dict[nn.Module, str]:
    """Each grouped conv (not depthwise) and every prunable layer whose channels are coupled to its
    input or output channels (the convs that feed it, through any addition or concatenation, and
    those it feeds), with why it keeps its width. torch-pruning prunes simple grouped convs, but its
    index mapping breaks on some (a concatenation feeding one: an out-of-bounds index), so where it
    fails prune leaves them as they are and prunes the rest of the network."""
    convs = [module for module in model.modules() if _is_grouped(module)]
    if not convs:
        return {}
    names = {module: name for name, module in model.named_modules()}
    kept: dict[nn.Module, str] = {}
    with pruning_compatibility(model) as forward_fn:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, forward_fn=forward_fn)
        for conv in convs:
            why = f"is coupled to the grouped conv {names[conv]} (groups={conv.groups}), which torch-pruning cannot narrow"
            kept.setdefault(conv, f"is a grouped conv (groups={conv.groups}), which torch-pruning cannot narrow")
            for prune_fn in (tp.prune_conv_in_channels, tp.prune_conv_out_channels):
                for dependency, _indices in graph.get_pruning_group(conv, prune_fn, idxs=[0]):
                    for module in (dependency.source.module, dependency.target.module):
                        if isinstance(module, _PRUNABLE):
                            kept.setdefault(module, why)
    return kept


def _grouped_hint(model: nn.Module) -> str:
    grouped = [f"{name} (groups={m.groups})" for name, m in model.named_modules() if _is_grouped(m)]
    if not grouped:
        return ""
    return (
        f"; grouped convs such as {', '.join(grouped[:3])} are pruned unreliably by torch-pruning: "
        "leave them out with exclude=[...]"
    )


def _width(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def _boundary_layers(model: nn.Module, example_input: torch.Tensor) -> tuple[set[nn.Module], set[nn.Module]]:
    """``(heads, stems)``: the last prunable layer to run, which makes the output and must
    keep its width, and the conv layers that read the input image directly."""
    order: list[nn.Module] = []
    stems: set[nn.Module] = set()

    def hook(module: nn.Module, inputs: tuple, _output: object) -> None:
        order.append(module)
        if inputs and inputs[0] is example_input and isinstance(module, nn.Conv2d):
            stems.add(module)

    run_hooked(model, example_input, [m for m in model.modules() if isinstance(m, _PRUNABLE)], hook)
    return ({order[-1]} if order else set()), stems
