"""Pareto dominance and non-dominated ranks of small point sets.

Points are rows of objective values with a direction per column (``"maximize"`` or
``"minimize"``); internally everything is turned into minimization (on a copy).

Example:
    >>> points = [[0.30, 500], [0.25, 200], [0.20, 300], [0.30, 500]]
    >>> pareto_mask(points, ["maximize", "minimize"]).tolist()
    [True, True, False, True]
    >>> nondominated_ranks(points, ["maximize", "minimize"]).tolist()
    [0, 0, 1, 0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["as_minimization", "dominates", "pareto_mask", "nondominated_ranks"]


def as_minimization(points: Sequence[Sequence[float]] | np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """A float copy of ``points`` with maximized columns negated (the input is left alone)."""
    array = np.array(points, dtype=float).reshape(-1, len(directions))
    for column, direction in enumerate(directions):
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        if direction == "maximize":
            array[:, column] = -array[:, column]
    return array


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True if ``a`` is no worse than ``b`` in every objective and better in at least one."""
    first, second = as_minimization([a, b], directions)
    return bool(np.all(first <= second) and np.any(first < second))


def pareto_mask(points: Sequence[Sequence[float]] | np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """A boolean per point: True if no other point dominates it (duplicates are all kept)."""
    return nondominated_ranks(points, directions) == 0


def nondominated_ranks(points: Sequence[Sequence[float]] | np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """The non-dominated sorting rank of each point: 0 for the front, 1 for the front without it, ...

    Points with a NaN anywhere get the last rank + 1 (they take part in nothing).
    """
    array = as_minimization(points, directions)
    count = len(array)
    ranks = np.full(count, -1, dtype=int)
    valid = ~np.isnan(array).any(axis=1)
    if count == 0:
        return ranks
    # dominated_by[i, j]: j dominates i
    no_worse = np.all(array[None, :, :] <= array[:, None, :], axis=2)
    better = np.any(array[None, :, :] < array[:, None, :], axis=2)
    dominated_by = no_worse & better & valid[None, :] & valid[:, None]
    remaining = valid.copy()
    rank = 0
    while remaining.any():
        front = remaining & ~(dominated_by & remaining[None, :]).any(axis=1)
        ranks[front] = rank
        remaining &= ~front
        rank += 1
    ranks[~valid] = rank
    return ranks
