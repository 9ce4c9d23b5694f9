"""Multi-fidelity for multi-objective studies: successive halving on Pareto rank.

Optuna's pruners refuse multi-objective studies, so the rule is ours: after a rung (a
fraction of the training), a trial's intermediate metric and its fixed cost (params,
FLOPs... whichever are objectives) are ranked by non-dominated sorting among every
trial that reached the same rung. It goes on only if fewer than ``keep_fraction`` of
them rank strictly better; otherwise it is stopped there. Until ``min_trials`` others
reached the rung, nothing is stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from compressor.study import nondominated_ranks

__all__ = ["rung_key", "should_stop"]


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
) -> bool:
    """True if ``candidate`` ranks outside the best ``keep_fraction`` of the rung.

    Args:
        candidate: the trial's objective values at the rung (metric, then its costs).
        others: the same for every other trial that reached the rung.
        directions: ``maximize``/``minimize`` per objective.
        keep_fraction: share of the rung's trials that go on.
        min_trials: fewer others than this: never stop.

    Example:
        >>> directions = ["maximize", "minimize"]
        >>> rung = [[0.30, 100], [0.28, 100], [0.25, 100]]
        >>> should_stop([0.10, 100], rung, directions, keep_fraction=1/3, min_trials=3)
        True
        >>> should_stop([0.10, 50], rung, directions, keep_fraction=1/3, min_trials=3)
        False
    """
    if len(others) < min_trials:
        return False
    ranks = nondominated_ranks([list(candidate), *map(list, others)], directions)
    better = int((ranks[1:] < ranks[0]).sum())
    return better >= math.ceil(keep_fraction * (len(others) + 1))
