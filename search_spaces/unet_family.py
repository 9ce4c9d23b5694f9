"""``unet_family``: the Micro-Net paper's axes on the reference U-Net.

Choices (Optuna parameter names):
    ``levels_removed``: down-sampling levels cut out, 0..3 (Micro-Net: 2 of 4).
    ``skip``: ``concat`` or ``add`` (Micro-Net adds).
    ``conv_L<i>``: the convolution of resolution level ``i`` (0 = full resolution):
        ``standard``, ``separable`` or ``fire``; only the levels left after the cut.
    ``fire_squeeze``, ``fire_share3x3``: the fire modules' squeeze ratio and share of
        3x3 in the expand (when any level uses fire; Micro-Net: 0.25 and 0.5).
    ``dilation``: the cascade of rates in each stage (decoder stages reversed).
    ``prune``: share of the remaining parameters removed by channel pruning, 0..0.9.

Level ``i`` of the reference U-Net (``compressor.models.unet``) is made of the modules
``encoder.<i>`` and ``decoder.<depth - 1 - i>``.

Example:
    >>> import torch
    >>> from compressor.models import unet
    >>> from search_spaces import SPACES
    >>> context = SearchContext(unet(), torch.zeros(1, 3, 64, 64), "unet")
    >>> space = SPACES.get("unet_family")
    >>> [step.name for step in space.fixed(MICRONET_CHOICES, context).steps]
    ['downsample_depth', 'skip_fusion', 'fire', 'dilation']
    >>> space.describe(MICRONET_CHOICES)
    'cut 2, add, convs FFF (fire .25/.5), dil 1-1-2-3'
"""

from __future__ import annotations

from typing import Any

import optuna

from compressor.spaces import SearchContext, register_space
from compressor.transforms import Recipe
from compressor.transforms.dilation import Dilation
from compressor.transforms.prune import Prune

__all__ = ["unet_family", "MICRONET_CHOICES", "DILATIONS"]

DILATIONS = Dilation.CASCADES
CONV_TYPES = ("standard", "separable", "fire")
MAX_LEVELS_REMOVED = 3
PRUNE_STEPS = Prune.SEARCH_STEPS

# The paper's Micro-Net as choices of this space (tried first in a new study).
MICRONET_CHOICES: dict[str, Any] = {
    "levels_removed": 2, "skip": "add", "conv_L0": "fire", "conv_L1": "fire", "conv_L2": "fire",
    "fire_squeeze": 0.25, "fire_share3x3": 0.5, "dilation": "1-1-2-3", "prune": 0.0,
}


def _depth(context: SearchContext) -> int:
    """Down-sampling levels of the base U-Net (4 for the reference)."""
    encoder = getattr(context.model, "encoder", None)
    return len(encoder) - 1 if encoder is not None else 4


def _smallest(context: SearchContext) -> dict[str, Any]:
    levels = _depth(context) + 1 - min(MAX_LEVELS_REMOVED, _depth(context) - 1)
    return {
        "levels_removed": min(MAX_LEVELS_REMOVED, _depth(context) - 1), "skip": "add",
        **{f"conv_L{level}": "fire" for level in range(levels)},
        "fire_squeeze": 0.125, "fire_share3x3": 0.25, "dilation": "none", "prune": 0.9,
    }


def _describe(choices: dict[str, Any]) -> str:
    """A short line for tables: levels cut, skips, one letter per level's conv (S, D for
    depthwise-separable, F), the fire setting, dilation and pruning."""
    letters = {"standard": "S", "separable": "D", "fire": "F"}
    convs = "".join(letters[value] for key, value in sorted(choices.items()) if key.startswith("conv_L"))
    parts = [f"cut {choices.get('levels_removed', 0)}", choices.get("skip", "concat"), f"convs {convs}"]
    if "F" in convs:
        parts[-1] += f" (fire {_decimal(choices['fire_squeeze'])}/{_decimal(choices['fire_share3x3'])})"
    if choices.get("dilation", "none") != "none":
        parts.append(f"dil {choices['dilation']}")
    if choices.get("prune", 0):
        parts.append(f"prune {_decimal(choices['prune'])}")
    return ", ".join(parts)


def _decimal(value: float) -> str:
    return f"{value:g}".removeprefix("0")


def _starts(context: SearchContext) -> list[dict[str, Any]]:
    return [MICRONET_CHOICES] if _depth(context) == 4 else []


#: how to read :func:`_describe`'s lines, under every table of a study of this space
LEGEND = ("recipe: cut N = the N deepest resolution levels removed; add / concat = skips added (as Micro-Net) or "
          "concatenated; convs = one letter per level from the top: S standard, D depthwise-separable, F fire "
          "(fire squeeze ratio / 3x3 share); dil = the dilation rates of a stage's convs; prune = the share of "
          "params pruned")


@register_space("unet_family", smallest=_smallest, starts=_starts, describe=_describe, model="unet", legend=LEGEND)
def unet_family(trial: optuna.trial.BaseTrial, context: SearchContext) -> Recipe:
    """The paper's axes on the reference U-Net: depth, conv type per level, dilation, skips, pruning."""
    depth = _depth(context)
    removed = trial.suggest_int("levels_removed", 0, min(MAX_LEVELS_REMOVED, depth - 1))
    skip = trial.suggest_categorical("skip", ["concat", "add"])
    levels = depth + 1 - removed
    convs = {level: trial.suggest_categorical(f"conv_L{level}", list(CONV_TYPES)) for level in range(levels)}
    steps: list[tuple[str, dict[str, Any]]] = []
    if removed:
        steps.append(("downsample_depth", {"levels": removed}))
    if skip == "add":  # before separable/prune: it needs the concatenations' convs as they were
        steps.append(("skip_fusion", {}))
    for kind in ("separable", "fire"):
        chosen = [level for level in range(levels) if convs[level] == kind]
        if not chosen:
            continue
        include = [pattern for level in chosen for pattern in (f"encoder.{level}.*", f"decoder.{depth - 1 - level}.*")]
        params: dict[str, Any] = {"include": include}
        if kind == "fire":
            params["squeeze_ratio"] = trial.suggest_categorical("fire_squeeze", [0.125, 0.25, 0.5])
            params["expand3x3_share"] = trial.suggest_categorical("fire_share3x3", [0.25, 0.5, 0.75])
        steps.append((kind, params))
    dilation = trial.suggest_categorical("dilation", list(DILATIONS))
    if DILATIONS[dilation]:
        steps.append(("dilation", {"rates": DILATIONS[dilation]}))
    prune = trial.suggest_float("prune", 0.0, 0.9, step=0.1)
    if prune > 0:
        steps.append(("prune", {"ratio": round(prune, 2), "steps": PRUNE_STEPS}))
    return Recipe.of(steps)
