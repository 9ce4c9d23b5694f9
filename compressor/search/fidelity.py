"""Multi-fidelity for multi-objective studies: successive halving on Pareto rank.

Optuna's pruners refuse multi-objective studies, so the rule is ours: after a rung (a
fraction of the training), a trial's intermediate metric and its fixed cost (params,
FLOPs... whichever are objectives) are ranked by non-dominated sorting among every
trial that reached the same rung. It goes on only if fewer than ``keep_fraction`` of
them rank strictly better; otherwise it is stopped there. Until ``min_trials`` others
reached the rung, nothing is stopped.

With three objectives most of a rung's trials share the first front, and a rule on the
front alone stops almost none of them (a quickstart search stopped 1 to 2 of 11). Ranked by
``contribution`` (``search.rung_ranking``), the members of one front are ordered further by
the share of the front's hypervolume that each alone adds (each on the study's own axes,
:func:`~compressor.study.hypervolume_shares`), as in hypervolume-based selection
(SMS-EMOA) and multi-objective successive halving: a trial that only just escapes domination
counts for little.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from compressor.study import hypervolume, nondominated_ranks

__all__ = ["rung_key", "should_stop", "contributions"]


def rung_key(fraction: float) -> str:
    """How a rung is keyed in trial records: ``'0.111'``."""
    return f"{fraction:.3f}"


def should_stop(
    candidate: Sequence[float],
    others: Sequence[Sequence[float]],
    directions: Sequence[str],
    *,
    keep_fraction: float,
    min_trials: int,
    shares: np.ndarray | None = None,
) -> bool:
    """True if ``candidate`` ranks outside the best ``keep_fraction`` of the rung.

    Args:
        candidate: the trial's objective values at the rung (metric, then its costs).
        others: the same for every other trial that reached the rung.
        directions: ``maximize``/``minimize`` per objective.
        keep_fraction: share of the rung's trials that go on.
        min_trials: fewer others than this: never stop.
        shares: with ``contribution`` ranking, the same points (candidate first) on the
            hypervolume's axes, every column maximized from 0; None ranks by the front alone.

    Example:
        >>> directions = ["maximize", "minimize"]
        >>> rung = [[0.30, 100], [0.28, 100], [0.25, 100]]
        >>> should_stop([0.10, 100], rung, directions, keep_fraction=1/3, min_trials=3)
        True
        >>> should_stop([0.10, 50], rung, directions, keep_fraction=1/3, min_trials=3)
        False

        On one front, by what each adds: the candidate only just escapes domination.

        >>> front = [[0.30, 100], [0.20, 50], [0.10, 20]]
        >>> shares = np.array([[0.29, 0.31], [0.30, 0.30], [0.20, 0.50], [0.10, 0.80]])  # candidate first
        >>> should_stop([0.29, 99], front, directions, keep_fraction=1/2, min_trials=3)
        False
        >>> should_stop([0.29, 99], front, directions, keep_fraction=1/2, min_trials=3, shares=shares)
        True
    """
    if len(others) < min_trials:
        return False
    ranks = nondominated_ranks([list(candidate), *map(list, others)], directions)
    better = ranks[1:] < ranks[0]
    if shares is not None:
        same = np.flatnonzero(ranks == ranks[0])  # the candidate's front, the candidate first
        added = contributions(np.asarray(shares, dtype=float)[same])
        better[same[1:] - 1] |= added[1:] > added[0]
    return int(better.sum()) >= math.ceil(keep_fraction * (len(others) + 1))


def contributions(shares: np.ndarray) -> np.ndarray:
    """What each point alone adds to the hypervolume of ``shares`` (every column maximized from 0).

    Example (the third point is dominated by the second, and nearly covers it):
        >>> contributions(np.array([[0.5, 0.2], [0.2, 0.5], [0.19, 0.49]])).round(3).tolist()
        [0.06, 0.005, 0.0]
    """
    maximize = ["maximize"] * shares.shape[1]
    origin = [0.0] * shares.shape[1]
    whole = hypervolume(shares, maximize, origin)
    return np.array([whole - hypervolume(np.delete(shares, index, axis=0), maximize, origin)
                     for index in range(len(shares))])
