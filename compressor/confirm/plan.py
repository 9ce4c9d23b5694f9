"""What a confirmation runs: the front's trials that add most to its hypervolume, the repeats
(further seeds, folds) and the plan stored on the study, merged with what an earlier run planned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from compressor.confirm.subjects import Repeat
from compressor.errors import ConfigError
from compressor.experiment import Experiment
from compressor.search_config import ConfirmConfig
from compressor.study import (
    StudyInfo,
    TrialRecord,
    front,
    hypervolume_reference,
    point,
    read_study,
    study_hypervolume,
)

__all__ = ["choose_top", "plan_repeats", "describe_repeats", "check_trials", "merge_plan"]


def choose_top(study: optuna.Study, top: int) -> list[int]:
    """The ``top`` front trials that add most to the front's hypervolume, largest contribution
    first; costs read as the report's hypervolume reads them (:func:`~compressor.study.study_hypervolume`:
    a log axis down from 1.1 times U-Net's, the metric from 0)."""
    snapshot = read_study(study)
    members = front(snapshot.records, snapshot.objectives, snapshot.info.threshold)
    reference, names = hypervolume_reference(snapshot), snapshot.objectives
    points = [point(record, names) for record in members]
    whole = study_hypervolume(points, names, reference)
    gains = [whole - study_hypervolume(points[:index] + points[index + 1:], names, reference)
             for index in range(len(points))]
    ranked = sorted(range(len(members)), key=lambda index: (-gains[index], -(members[index].metric or 0.0)))
    return [members[index].number for index in ranked[:top]]


def plan_repeats(experiment: Experiment, config: ConfirmConfig) -> tuple[list[Repeat], Repeat]:
    """The repeats to run and the search's own (seed, fold), which is not among them.

    Seeds: the search's seed ``s`` and ``s+1 .. s+seeds``; folds: every fold of a k-fold data
    section with ``folds``, else the search's. The search's own pair is left out.

    Raises:
        ConfigError: ``folds`` without a k-fold data section.
    """
    seed = experiment.train.seed
    fold = getattr(experiment.data, "resolved_fold", None)
    count = getattr(experiment.data, "folds", 0) or 0
    if config.folds and count < 2:
        raise ConfigError("search.confirm.folds needs data.folds >= 2 (k-fold validation on the spacenet_sample tile)")
    folds: list[int | None] = list(range(count)) if config.folds else [fold]
    own = (seed, fold)
    repeats = [(s, f) for s in range(seed, seed + config.seeds + 1) for f in folds if (s, f) != own]
    return repeats, own


def describe_repeats(repeats: Sequence[Repeat]) -> str:
    return ", ".join(f"seed {seed}" + ("" if fold is None else f" fold {fold}") for seed, fold in repeats)


def check_trials(records: Sequence[TrialRecord], info: StudyInfo, numbers: Sequence[int]) -> list[int]:
    by_number = {record.number: record for record in records}
    for number in numbers:
        record = by_number.get(number)
        if record is None or record.status != "complete" or record.feasible is False or not record.recipe:
            state = "no such trial" if record is None else f"{record.status}"
            raise ConfigError(f"trial {number} cannot be confirmed ({state}): give trials that finished inside the budget")
    return list(dict.fromkeys(numbers))


def merge_plan(stored: Any, subjects: list[str], repeats: list[Repeat], own: Repeat,
                budgets: list[str]) -> dict[str, Any]:
    stored = stored or {}
    known = [tuple(repeat) for repeat in stored.get("repeats", [])]
    return {
        "subjects": list(dict.fromkeys([*stored.get("subjects", []), *subjects])),
        "repeats": [list(repeat) for repeat in dict.fromkeys([*known, *repeats])],
        "search_repeat": list(own),
        "budgets": list(budgets or stored.get("budgets", [])),
    }
