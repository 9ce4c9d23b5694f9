"""``generic``: a space for any network, drawn from the transforms that apply to it.

Each transform is first tried alone on the base network (once per study); only those
that do not refuse it become choices; ``skip_fusion`` after a cut is optional (the cut may
take every concatenation with it). Choices (Optuna parameter names), where they apply:
``levels_removed`` (0..the most levels ``downsample_depth`` can cut, up to 3), ``skip``
(``concat``/``add``), ``conv`` (``standard``/``separable``/``fire`` on every k x k conv), ``fire_squeeze``, ``fire_share3x3``, ``dilation``,
``prune`` (0..0.9). A combination can still be refused (a pair that does not compose on
that network); that trial fails with the reason and the search goes on.
"""

from __future__ import annotations

from typing import Any

import optuna

from compressor.transforms import Recipe
from search_spaces.base import SearchContext, register_space
from search_spaces.unet_family import DILATIONS, PRUNE_STEPS

__all__ = ["generic", "applicable"]

MAX_LEVELS_REMOVED = 3


def applicable(context: SearchContext) -> dict[str, Any]:
    """What applies to the base network: ``levels`` (how many can be cut) and a flag per transform."""
    levels = 0
    while levels < MAX_LEVELS_REMOVED and context.applies("downsample_depth", levels=levels + 1):
        levels += 1
    return {
        "levels": levels,
        "skip_fusion": context.applies("skip_fusion"),
        "separable": context.applies("separable"),
        "fire": context.applies("fire"),
        "dilation": context.applies("dilation", rates=[1, 2]),
        "prune": context.applies("prune", ratio=0.3),
    }


def _convs(found: dict[str, Any]) -> list[str]:
    return ["standard"] + [kind for kind in ("separable", "fire") if found[kind]]


def _smallest(context: SearchContext) -> dict[str, Any]:
    found = applicable(context)
    convs = _convs(found)
    return {
        "levels_removed": found["levels"], "skip": "add", "conv": convs[-1],
        "fire_squeeze": 0.125, "fire_share3x3": 0.25, "dilation": "none", "prune": 0.9,
    }


@register_space("generic", smallest=_smallest)
def generic(trial: optuna.trial.BaseTrial, context: SearchContext) -> Recipe:
    """Any network: the transforms that apply to it, in the paper's order, with their parameters."""
    found = applicable(context)
    steps: list[tuple[str, dict[str, Any]]] = []
    if found["levels"]:
        removed = trial.suggest_int("levels_removed", 0, found["levels"])
        if removed:
            steps.append(("downsample_depth", {"levels": removed}))
    if found["skip_fusion"] and trial.suggest_categorical("skip", ["concat", "add"]) == "add":
        # The cut may take every concatenation with it (a shallow U-Net keeps none): then skip it.
        steps.append(("skip_fusion", {"optional": True} if steps else {}))
    convs = _convs(found)
    if len(convs) > 1:
        conv = trial.suggest_categorical("conv", convs)
        if conv != "standard":
            params: dict[str, Any] = {}
            if conv == "fire":
                params["squeeze_ratio"] = trial.suggest_categorical("fire_squeeze", [0.125, 0.25, 0.5])
                params["expand3x3_share"] = trial.suggest_categorical("fire_share3x3", [0.25, 0.5, 0.75])
            steps.append((conv, params))
    if found["dilation"]:
        rates = DILATIONS[trial.suggest_categorical("dilation", list(DILATIONS))]
        if rates:
            steps.append(("dilation", {"rates": rates}))
    if found["prune"]:
        ratio = trial.suggest_float("prune", 0.0, 0.9, step=0.1)
        if ratio > 0:
            steps.append(("prune", {"ratio": round(ratio, 2), "steps": PRUNE_STEPS}))
    return Recipe.of(steps)
