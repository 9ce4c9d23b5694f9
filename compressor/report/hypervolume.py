"""The hypervolume of a study's feasible front after each trial: how the search progressed."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd

from compressor.study import (
    StudySnapshot,
    directions,
    hypervolume_reference,
    nondominated_ranks,
    point,
    read_study,
    study_hypervolume,
)

__all__ = ["hypervolume_frame"]


def hypervolume_frame(study: optuna.Study | StudySnapshot) -> pd.DataFrame:
    """The hypervolume of the feasible Pareto front after each finished trial, by trial number.

    Each cost is read on a log axis down from its reference value (see :func:`hypervolume_reference`
    and :func:`~compressor.study.study_hypervolume`), so the number reads as "the metric times the
    share of the log box dominated".

    Columns: ``number``, ``status``, ``hypervolume``, ``front_size`` (distinct points on the
    front so far), ``feasible_complete`` (how many so far), ``wall_seconds``, ``train_seconds`` and
    ``train_steps`` (cumulative compute spent up to and including that trial: the optimizer steps the
    trials trained, a repeat of a finished recipe none; empty for a study that did not record them).
    """
    snapshot = read_study(study)
    objectives = snapshot.objectives
    reference = hypervolume_reference(snapshot)
    signs = directions(objectives)
    points: list[list[float]] = []
    rows = []
    wall = train = 0.0
    steps: int | None = 0  # None once a trained trial did not record its steps (a study made before)
    for record in snapshot.finished:
        wall += record.wall_seconds or 0.0
        train += record.train_seconds or 0.0
        steps = None if steps is None or (record.trained and record.steps is None and record.duplicate_of is None) \
            else steps + (record.steps or 0)
        if record.pareto_candidate(snapshot.info.threshold):
            values = point(record, objectives)
            if not any(math.isnan(value) for value in values):
                points.append(values)
        array = np.asarray(points, dtype=float).reshape(-1, len(objectives))
        front_size = len(np.unique(array[nondominated_ranks(array, signs) == 0], axis=0)) if len(array) else 0
        rows.append({
            "number": record.number,
            "status": record.status,
            "hypervolume": study_hypervolume(array, objectives, reference),
            "front_size": front_size,
            "feasible_complete": len(points),
            "wall_seconds": wall,
            "train_seconds": train,
            "train_steps": steps,
        })
    columns = ["number", "status", "hypervolume", "front_size", "feasible_complete", "wall_seconds", "train_seconds",
               "train_steps"]
    return pd.DataFrame(rows, columns=columns)
