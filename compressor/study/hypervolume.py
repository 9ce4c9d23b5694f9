"""The hypervolume of a point set: the volume it dominates inside a reference box.

Exact, by slicing along the last objective (each slice is the hypervolume of the points
at or below it in one dimension fewer); in two dimensions a sweep. Quadratic and more in
the number of front points, which is tens here; the tests check it against the
inclusion-exclusion of the boxes.

Example:
    >>> hypervolume([[0.5, 0.5], [0.2, 0.1]], ["maximize", "minimize"], [0.0, 1.0])
    0.33
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import optuna

from compressor.study.pareto import as_minimization, pareto_mask
from compressor.study.snapshot import StudySnapshot, read_study

__all__ = ["hypervolume", "hypervolume_reference", "hypervolume_shares", "study_hypervolume", "log_share",
           "HYPERVOLUME_MARGIN",
           "HYPERVOLUME_DECADES"]

HYPERVOLUME_MARGIN = 1.1
#: a study's hypervolume reads each cost on a log axis from its reference down to this many decades
#: below it: each tenfold reduction is a fifth of the axis, and 100,000 times smaller fills it
#: (341 params below 1.1x the 31M-param U-Net: nothing that learns is that small)
HYPERVOLUME_DECADES = 5


def hypervolume(
    points: Sequence[Sequence[float]] | np.ndarray, directions: Sequence[str], reference: Sequence[float]
) -> float:
    """The volume dominated by ``points`` and bounded by ``reference`` (0 for no point or none better).

    ``reference`` is in the objectives' own units and directions (for a maximized metric, a
    value below every point's, such as 0; for a minimized cost, a value above every point's).
    Points not strictly better than the reference in every objective add nothing.
    """
    array = as_minimization(points, directions)
    bound = as_minimization([reference], directions)[0]
    array = array[~np.isnan(array).any(axis=1)]
    array = array[np.all(array < bound, axis=1)]
    if len(array) == 0:
        return 0.0
    front = np.unique(array[pareto_mask(array, ["minimize"] * len(bound))], axis=0)
    return round(float(_volume(front, bound)), 12)


def _volume(points: np.ndarray, bound: np.ndarray) -> float:
    """The volume of the union of the boxes ``[point, bound]`` (minimization, every point inside)."""
    if points.shape[1] == 1:
        return float(bound[0] - points[:, 0].min())
    if points.shape[1] == 2:
        ordered = points[np.lexsort((points[:, 1], points[:, 0]))]
        area, lowest = 0.0, bound[1]
        edges = np.append(ordered[1:, 0], bound[0])
        for (x, y), right in zip(ordered, edges):
            lowest = min(lowest, y)
            area += (right - x) * (bound[1] - lowest)
        return float(area)
    ordered = points[np.argsort(points[:, -1], kind="stable")]
    tops = np.append(ordered[1:, -1], bound[-1])
    volume = 0.0
    for index, top in enumerate(tops):
        depth = top - ordered[index, -1]
        if depth > 0:
            volume += depth * _volume(ordered[: index + 1, :-1], bound[:-1])
    return float(volume)


def hypervolume_reference(study: optuna.Study | StudySnapshot) -> dict[str, float]:
    """The reference point a study's hypervolume is measured against, per objective, in its own units.

    The metric's is 0; a cost's is :data:`HYPERVOLUME_MARGIN` (1.1) times the study's
    reference's (the one its ratios are against: U-Net, or the user's own network), or 1.1
    times the largest value any finished trial measured when that reference has none for it
    (1.0 if none did).
    """
    snapshot = read_study(study)
    unet = snapshot.ratio_reference
    reference = {}
    for name in snapshot.objectives:
        if name == "metric":
            reference[name] = 0.0
            continue
        base = unet.get(name)
        if base is None:
            seen = [getattr(record, name) for record in snapshot.finished if getattr(record, name) is not None]
            base = max(seen) if seen else 1.0
        reference[name] = HYPERVOLUME_MARGIN * float(base)
    return reference


def study_hypervolume(
    points: Sequence[Sequence[float]] | np.ndarray, objectives: Sequence[str], reference: dict[str, float],
    *, decades: float = HYPERVOLUME_DECADES,
) -> float:
    """The hypervolume a study's report and confirmation measure: ``points`` (objective values in
    the study's units and order), the metric's reference at 0, each cost read on a log axis by
    :func:`log_share` (the share of ``decades`` decades below its ``reference`` value,
    :func:`hypervolume_reference`, that it dominates). The number reads as "the metric times the
    share of the log box dominated"; unlike a linear box, it does not saturate when every
    candidate is hundreds of times smaller than the reference: 10x smaller is a fifth of an
    axis, 100x two fifths, 1000x three fifths.

    Example:
        >>> study_hypervolume([[0.5, 10.0]], ["metric", "params"], {"metric": 0.0, "params": 100.0})
        0.1
    """
    shares = hypervolume_shares(points, objectives, reference, decades=decades)
    # every share is maximized: the metric from 0, a cost's share of its axis from 0
    return hypervolume(shares, ["maximize"] * len(objectives), [0.0] * len(objectives))


def hypervolume_shares(
    points: Sequence[Sequence[float]] | np.ndarray, objectives: Sequence[str], reference: dict[str, float],
    *, decades: float = HYPERVOLUME_DECADES,
) -> np.ndarray:
    """``points`` on the axes :func:`study_hypervolume` measures: the metric as it is, each cost as its
    :func:`log_share`; every column is maximized from 0.

    Example:
        >>> hypervolume_shares([[0.5, 10.0]], ["metric", "params"], {"metric": 0.0, "params": 100.0}).tolist()
        [[0.5, 0.2]]
    """
    array = np.asarray(points, dtype=float).reshape(-1, len(objectives))
    if not len(array):
        return array
    return np.stack([array[:, index] if name == "metric" else log_share(array[:, index], reference[name], decades)
                     for index, name in enumerate(objectives)], axis=1)


def log_share(values: np.ndarray | float, reference: float, decades: float = HYPERVOLUME_DECADES) -> np.ndarray:
    """How much of a log axis from ``reference`` down to ``reference / 10**decades`` a cost dominates:
    ``log10(reference / value) / decades``, 0 at the reference (or above it), 1 at the bottom (or below);
    NaN where the value is unknown or the reference is 0 (no axis: the point adds nothing).

    Example:
        >>> log_share(np.array([100.0, 10.0, 0.001, 0.0, 200.0]), 100.0).tolist()
        [0.0, 0.2, 1.0, 1.0, 0.0]
    """
    values = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.log10(reference / np.maximum(values, 0.0)) / decades
    return np.where(np.isnan(values), np.nan, np.clip(share, 0.0, 1.0))
