"""How a study's recipes are built, by the version of compressor that made the study.

The transforms changed their defaults three times, how a trial starts and fine-tunes twice, and how
it is scored once; a study keeps the rules it was made with, so its trials rebuild (export,
confirmation) and resume as they were trained. A new study stores
:data:`BUILD_VERSION`; older ones are read by the attributes they had:

1. before weight inheritance (no ``init`` attribute): ``skip_fusion`` started from the mean of
   the kernel halves even from scratch, ``prune`` ranked channels by L1 norm, ``dilation``
   overwrote the rates a network already had;
2. with inheritance, before ``dilation`` kept existing rates (no :data:`KEEPS_RATES`);
3. before ``fire`` kept the layers that make the output (``head``; the same networks wherever
   that layer is a 1x1 conv, as on the project's U-Net);
4. before a candidate's fine-tuning to the plateau (``finetune.steps: auto``) counted its start
   (the same networks; what a trial hands back differs, :data:`COUNTS_START`);
5. before a reconstruction (``finetune.reconstruct``) ran in the fine-tuning's precision
   (:data:`RECONSTRUCTS_IN_PRECISION`: in fp32 whatever ``finetune.precision`` said);
6. before ``lstsq`` kept the batch norms as its solve left them where re-estimating them all took the
   output further from the parent (:data:`LSTSQ_CHOOSES_NORMS`: always re-estimated);
7. before ``downsample_depth`` refused to cut every level of a network (``all_levels``; the same
   networks wherever a recipe leaves a level, as on the project's U-Net);
8. before a candidate's evaluations ran in its fine-tuning's precision (:data:`EVALUATES_IN_PRECISION`:
   in fp32 whatever ``finetune.precision`` said, and so its parent and references: :func:`.setup.scored_as_built`;
   the same networks, the quickstart's trials' scores -0.06 [-0.18, +0.05] points from fp32's);
9. now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compressor.errors import StudyMismatchError
from compressor.transforms import Recipe, TransformSpec

__all__ = ["BUILD_VERSION", "COUNTS_START", "RECONSTRUCTS_IN_PRECISION", "LSTSQ_CHOOSES_NORMS", "REFUSES_ALL_LEVELS",
           "EVALUATES_IN_PRECISION", "VERSION_KEY", "KEEPS_RATES", "build_version", "as_built_for",
           "as_built_before_inheritance", "version_attrs"]

#: How this version of compressor builds recipes.
BUILD_VERSION = 9
#: The first version whose inheriting candidates, fine-tuned to the plateau, count the network they start
#: from as the evaluation at step 0 (a study made before keeps its trials' rule: no two rules in one study).
COUNTS_START = 5
#: The first version whose candidates are reconstructed in their fine-tuning's precision (bf16 autocast where
#: ``finetune.precision`` says so; before, always fp32).
RECONSTRUCTS_IN_PRECISION = 6
#: The first version whose ``lstsq`` reconstruction keeps the batch norms as its solve left them when that is
#: closer to the parent than all of them re-estimated (``reconstruct(..., choose_norms=True)``).
LSTSQ_CHOOSES_NORMS = 7
#: The first version whose ``downsample_depth`` refuses to cut every level unless a recipe says ``all_levels``.
REFUSES_ALL_LEVELS = 8
#: The first version whose candidates are evaluated in their training's precision (``train.eval_precision``, null:
#: as ``finetune.precision``); a study made before evaluates its trials in fp32 (one rule in one study).
EVALUATES_IN_PRECISION = 9
#: The study attribute that holds it.
VERSION_KEY = "build_version"
#: The attribute of version 2 studies made after ``dilation`` kept existing rates (stored still,
#: so an older compressor reading a new study keeps them too).
KEEPS_RATES = "dilation_keeps_rates"

#: what each version before the current one set where a recipe says nothing
_ALL_LEVELS = {"downsample_depth": {"all_levels": True}}
_LEGACY: dict[int, dict[str, dict[str, Any]]] = {
    1: {"skip_fusion": {"init": "inherit"}, "prune": {"importance": "l1"}, "dilation": {"overwrite": True},
        "fire": {"head": True}, **_ALL_LEVELS},
    2: {"dilation": {"overwrite": True}, "fire": {"head": True}, **_ALL_LEVELS},
    3: {"fire": {"head": True}, **_ALL_LEVELS},
    4: _ALL_LEVELS, 5: _ALL_LEVELS, 6: _ALL_LEVELS, 7: _ALL_LEVELS,
}


def build_version(attrs: Mapping[str, Any] | None) -> int:
    """The version whose rules built the recipes of the study whose user attributes are ``attrs``
    (None: a study not made yet, built as now).

    Raises:
        StudyMismatchError: the study was made by a newer compressor, whose rules this one does not know.
    """
    if attrs is None:
        return BUILD_VERSION
    if VERSION_KEY in attrs:
        version = int(attrs[VERSION_KEY])
        if version > BUILD_VERSION:  # its rules are not known here: trials added or rebuilt now would differ
            raise StudyMismatchError(
                f"the study was made by a newer compressor (build version {version}; this one builds version "
                f"{BUILD_VERSION}): upgrade compressor to resume, join, confirm or export it")
        return version
    if "init" not in attrs:
        return 1
    return 3 if KEEPS_RATES in attrs else 2


def version_attrs() -> dict[str, Any]:
    """What a new study stores to say how its recipes are built."""
    return {VERSION_KEY: BUILD_VERSION, KEEPS_RATES: True}


def as_built_for(recipe: Recipe, version: int) -> Recipe:
    """``recipe`` as version ``version`` built it (:func:`build_version`); a parameter the recipe sets
    itself is kept, and a recipe the old rules do not touch is returned as it is."""
    legacy = _LEGACY.get(version, {})
    if not any(step.name in legacy for step in recipe.steps):
        return recipe
    return Recipe.of([
        TransformSpec(step.name, {**legacy.get(step.name, {}), **step.params}, step.optional) for step in recipe.steps
    ])


def as_built_before_inheritance(recipe: Recipe) -> Recipe:
    """``recipe`` as a study made before weight inheritance built it (version 1)."""
    return as_built_for(recipe, 1)
