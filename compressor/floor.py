"""The floor a candidate must clear to count as a model: the best constant prediction, plus a margin.

A network that predicts one class everywhere scores more than 0 on most metrics: on the
SpaceNet tile, "building everywhere" has a building IoU equal to the building share of the
validation pixels (3.2% on the quickstart's strip), and "background everywhere" an mIoU of 0.48. A front that admits anything above 0 lists
such networks as the smallest good models. So a candidate is on the Pareto front, keeps
its weights and counts as confirmed only if its metric beats every constant prediction on
the same validation pixels by ``margin`` (``search.min_gain``).

Example:
    >>> floor = Floor.from_counts([900, 100], ("background", "building"), "score", margin=0.02)
    >>> floor.constant_class, round(floor.constant, 3), round(floor.threshold, 3)
    ('building', 0.1, 0.12)
    >>> floor.passes(0.11), floor.passes(0.13)
    (False, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compressor.data.base import SegmentationData
from compressor.metrics import constant_metrics, metric_value

__all__ = ["Floor", "validation_class_counts"]


@dataclass(frozen=True)
class Floor:
    """The best constant prediction's metric and the margin a candidate must add to it.

    Attributes:
        constant: the metric of the best constant prediction on the validation pixels.
        constant_class: the class it predicts everywhere.
        margin: how much more a candidate needs (``search.min_gain``).
    """

    constant: float = 0.0
    constant_class: str = ""
    margin: float = 0.0

    @property
    def threshold(self) -> float:
        """A candidate's metric must be strictly above this."""
        return self.constant + self.margin

    def passes(self, metric: float | None) -> bool:
        return metric is not None and metric == metric and metric > self.threshold

    @classmethod
    def from_counts(
        cls, class_counts: Sequence[int], class_names: Sequence[str], metric: str, *, margin: float
    ) -> Floor:
        """The floor of ``metric`` on pixels with these true class counts."""
        scores = {name: metric_value(found, metric) for name, found in constant_metrics(class_counts, class_names).items()}
        best = max(scores, key=lambda name: scores[name])
        return cls(constant=scores[best], constant_class=best, margin=margin)

    @classmethod
    def of_data(cls, data: SegmentationData, metric: str, *, margin: float) -> Floor:
        """The floor of ``metric`` on ``data``'s validation scenes."""
        return cls.from_counts(validation_class_counts(data), data.class_names, metric, margin=margin)

    @classmethod
    def by_rule(cls, rule: str, data: SegmentationData, metric: str, *, margin: float) -> Floor:
        """The floor ``search.floor`` names: ``constant`` (:meth:`of_data`) or ``zero`` (a metric above 0)."""
        return cls.of_data(data, metric, margin=margin) if rule == "constant" else cls()

    def describe(self, label: str) -> str:
        """``all building scores building IoU 0.041; a model needs more than 0.061 (margin 0.020)``
        (``""`` for the zero floor)."""
        if self.is_zero:
            return ""
        if not self.constant_class:
            return f"a model needs {label} above {self.threshold:.3f}"
        return (f"all {self.constant_class} scores {label} {self.constant:.3f}; a model needs more than "
                f"{self.threshold:.3f} (margin {self.margin:.3f})")

    @property
    def is_zero(self) -> bool:
        """The old rule: a metric above 0 (no constant prediction measured, no margin)."""
        return not self.constant_class and self.constant == 0 and self.margin == 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ``{}`` for the zero floor (as studies stored before floors existed hold it)."""
        if self.is_zero:
            return {}
        return {"constant": self.constant, "constant_class": self.constant_class, "margin": self.margin}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Floor:
        """A stored floor; a study stored before floors existed gets the old rule (metric above 0)."""
        if not data:
            return cls()
        return cls(float(data.get("constant", 0.0)), str(data.get("constant_class", "")), float(data.get("margin", 0.0)))


def validation_class_counts(data: SegmentationData) -> np.ndarray:
    """How many validation pixels each class has, over every validation scene."""
    counts = np.zeros(data.num_classes, dtype=np.int64)
    for scene in data.val:
        counts += np.bincount(scene.class_indices().reshape(-1), minlength=data.num_classes)[: data.num_classes]
    return counts
