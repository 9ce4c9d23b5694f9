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

from compressor.study.objectives import directions
from compressor.study.pareto import as_minimization, pareto_mask
from compressor.study.snapshot import StudySnapshot, read_study

__all__ = ["hypervolume", "hypervolume_reference", "study_hypervolume", "HYPERVOLUME_MARGIN"]

HYPERVOLUME_MARGIN = 1.1


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
    points: Sequence[Sequence[float]] | np.ndarray, objectives: Sequence[str], reference: dict[str, float]
) -> float:
    """The hypervolume a study's report and confirmation measure: ``points`` (objective values in
    the study's units and order) with each cost divided by its ``reference`` value
    (:func:`hypervolume_reference`), the metric's reference at 0, so the number reads as "the
    metric times the share of the reference box dominated".

    Example:
        >>> study_hypervolume([[0.5, 50.0]], ["metric", "params"], {"metric": 0.0, "params": 100.0})
        0.25
    """
    scale = np.array([1.0 if name == "metric" else reference[name] for name in objectives])
    array = np.asarray(points, dtype=float).reshape(-1, len(objectives)) / scale
    return hypervolume(array, directions(objectives), [0.0 if name == "metric" else 1.0 for name in objectives])
