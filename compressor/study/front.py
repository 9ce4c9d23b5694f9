"""A study's Pareto front, by this project's rules.

Optuna's ``study.best_trials`` is the non-dominated set of the feasible complete trials.
The front here is the same set with two rules added:

- a trial must have learned something: its metric above the study's floor
  (:meth:`~compressor.study.records.TrialRecord.pareto_candidate`), so a network that
  predicts all background is not on the front for being small;
- a trial that repeated another's recipe (``duplicate_of``) is folded into that trial.

Search (which weights to keep), report (tables, plots, hypervolume) and confirmation all
read the front from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from compressor.study.objectives import COSTS, directions, objective_values
from compressor.study.pareto import nondominated_ranks
from compressor.study.records import TrialRecord

__all__ = ["point", "front_ranks", "front", "folded_duplicates"]


def point(record: TrialRecord, objectives: Sequence[str]) -> list[float]:
    """The record's objective values in ``objectives`` order (NaN where unknown).

    Read from the record's metric and costs; where one is missing, from the values Optuna
    was told, when they are the study's objectives (as many).
    """
    values = objective_values(record.metric, {name: getattr(record, name) for name in COSTS}, objectives)
    if any(map(math.isnan, values)) and record.values is not None and len(record.values) == len(objectives):
        return [float(value) for value in record.values]
    return values


def front_ranks(records: Sequence[TrialRecord], objectives: Sequence[str], threshold: float = 0.0) -> dict[int, int]:
    """The non-dominated rank (0: on the front) of every Pareto candidate, by trial number.

    Candidates: :meth:`TrialRecord.pareto_candidate` with ``threshold`` and every objective
    known. A duplicate has its original's values, hence its rank.
    """
    candidates = [record for record in records if record.pareto_candidate(threshold)]
    points = [point(record, objectives) for record in candidates]
    known = [(record, values) for record, values in zip(candidates, points) if not any(map(math.isnan, values))]
    if not known:
        return {}
    ranks = nondominated_ranks([values for _, values in known], directions(objectives))
    return {record.number: int(rank) for (record, _), rank in zip(known, ranks)}


def front(records: Sequence[TrialRecord], objectives: Sequence[str], threshold: float = 0.0) -> list[TrialRecord]:
    """The trials on the front, duplicates folded into their originals, smallest first
    (by params, then metric down, then number)."""
    ranks = front_ranks(records, objectives, threshold)
    on_front = [record for record in records if ranks.get(record.number) == 0]
    numbers = {record.number for record in on_front}
    kept = [record for record in on_front if record.duplicate_of not in numbers]
    return sorted(kept, key=lambda record: (record.params or 0, -(record.metric or 0.0), record.number))


def folded_duplicates(records: Sequence[TrialRecord]) -> dict[int, list[int]]:
    """For each trial others repeated: the numbers of those repeats, in order."""
    folded: dict[int, list[int]] = {}
    for record in sorted(records, key=lambda record: record.number):
        if record.duplicate_of is not None:
            folded.setdefault(record.duplicate_of, []).append(record.number)
    return folded
