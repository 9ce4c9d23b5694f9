"""A study's objectives: what each is called, which way is better, and how a trial's value is read.

The metric is maximized; the costs (``params``, ``flops``, ``latency_ms``) are minimized.
Objective values are stored on Optuna trials in the order the study lists them.

Example:
    >>> directions(["metric", "params"])
    ['maximize', 'minimize']
    >>> objective_label("flops", "building IoU"), objective_label("metric", "building IoU")
    ('FLOPs', 'building IoU')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compressor.budget import COST_LIMITS

__all__ = ["Objective", "OBJECTIVES", "COSTS", "directions", "objective_label", "objective_values"]


@dataclass(frozen=True)
class Objective:
    """One objective: its name (as in ``search.objectives``), direction and label on a page."""

    name: str
    direction: str
    label: str


OBJECTIVES: dict[str, Objective] = {
    objective.name: objective for objective in (
        Objective("metric", "maximize", "metric"),
        Objective("params", "minimize", "parameters"),
        Objective("flops", "minimize", "FLOPs"),
        Objective("latency_ms", "minimize", "latency"),
    )
}
#: the minimized objectives: the costs a budget limits (:data:`compressor.budget.COST_LIMITS`)
COSTS = tuple(COST_LIMITS)


def directions(names: Sequence[str]) -> list[str]:
    """Optuna's direction of each objective in ``names``."""
    return [OBJECTIVES[name].direction for name in names]


def objective_label(name: str, metric_label: str) -> str:
    """How an objective is named on a page: the metric by its own label (``building IoU``)."""
    if name == "metric":
        return metric_label
    return OBJECTIVES[name].label if name in OBJECTIVES else name


def objective_values(metric: float | None, costs: Mapping[str, Any], names: Sequence[str]) -> list[float]:
    """The values of ``names`` for a candidate with ``metric`` and ``costs`` (NaN where unknown)."""
    values = []
    for name in names:
        value = metric if name == "metric" else costs.get(name)
        values.append(float("nan") if value is None else float(value))
    return values
