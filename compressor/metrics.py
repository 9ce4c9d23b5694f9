"""Segmentation metrics from a confusion matrix: per-class IoU and F1, mIoU, overall accuracy.

Everything is computed from one integer confusion matrix accumulated over whole
validation scenes, so the numbers are exact pixel counts, not averages of per-batch scores.
Unlabelled pixels (:data:`IGNORE_INDEX` in the target) are counted nowhere.
A class that appears neither in the labels nor in the predictions has no IoU or F1
(``nan``); means skip it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from compressor.errors import ConfigError
from compressor.tables import format_table

IGNORE_INDEX = 255
"""The class index of unlabelled pixels (the same as :data:`compressor.data.base.IGNORE_INDEX`)."""

__all__ = ["IGNORE_INDEX", "ConfusionMatrix", "SegmentationMetrics", "metric_value", "constant_metrics"]


class ConfusionMatrix:
    """Counts of (true class, predicted class) pixel pairs.

    Example:
        >>> matrix = ConfusionMatrix(2)
        >>> matrix.update(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 1], [0, 1]]))
        >>> matrix.counts.tolist()
        [[1, 1], [0, 2]]
        >>> matrix.update(torch.tensor([1, 0]), torch.tensor([IGNORE_INDEX, 1]))  # the unlabelled pixel is left out
        >>> matrix.counts.tolist()
        [[1, 1], [1, 2]]
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ConfigError(f"metrics need at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Adds a batch of predicted and true class indices (any equal shapes)."""
        prediction = torch.as_tensor(prediction).reshape(-1).long().cpu()
        target = torch.as_tensor(target).reshape(-1).long().cpu()
        if prediction.shape != target.shape:
            raise ValueError(f"prediction has {prediction.numel()} pixels, target {target.numel()}")
        labelled = target != IGNORE_INDEX
        if not bool(labelled.all()):
            prediction, target = prediction[labelled], target[labelled]
        pairs = target * self.num_classes + prediction
        counts = torch.bincount(pairs, minlength=self.num_classes**2)
        self.counts += counts.numpy().reshape(self.num_classes, self.num_classes)

    def compute(self, class_names: Sequence[str] | None = None) -> SegmentationMetrics:
        """The metrics of everything added so far."""
        names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(self.num_classes))
        return SegmentationMetrics.from_confusion(self.counts, names)


@dataclass(frozen=True)
class SegmentationMetrics:
    """Per-class and mean scores of a segmentation.

    Attributes:
        class_names: one per class index.
        confusion: pixel counts, ``confusion[true][predicted]``.
        iou: per class, ``TP / (TP + FP + FN)``; ``nan`` if the class is nowhere.
        f1: per class, ``2 TP / (2 TP + FP + FN)`` (the Dice score); ``nan`` likewise.
        miou: mean of the defined ``iou`` values.
        mean_f1: mean of the defined ``f1`` values.
        accuracy: share of pixels classified correctly (overall accuracy).
        pixels: how many pixels were counted.

    Example:
        >>> metrics = SegmentationMetrics.from_confusion([[6, 1], [1, 2]], ("background", "building"))
        >>> round(metrics.iou_of("building"), 3), round(metrics.accuracy, 2), round(metrics.f1[1], 3)
        (0.5, 0.8, 0.667)
    """

    class_names: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]
    iou: tuple[float, ...]
    f1: tuple[float, ...]
    miou: float
    mean_f1: float
    accuracy: float
    pixels: int

    @classmethod
    def from_confusion(cls, confusion: Any, class_names: Sequence[str]) -> SegmentationMetrics:
        counts = np.asarray(confusion, dtype=np.int64)
        if counts.shape != (len(class_names), len(class_names)):
            raise ValueError(f"confusion matrix {counts.shape} does not match {len(class_names)} classes")
        true_positive = np.diag(counts).astype(np.float64)
        false_positive = counts.sum(axis=0) - true_positive
        false_negative = counts.sum(axis=1) - true_positive
        union = true_positive + false_positive + false_negative
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, true_positive / union, np.nan)
            f1 = np.where(union > 0, 2 * true_positive / (2 * true_positive + false_positive + false_negative), np.nan)
        total = int(counts.sum())
        return cls(
            class_names=tuple(class_names),
            confusion=tuple(tuple(int(value) for value in row) for row in counts),
            iou=tuple(float(value) for value in iou),
            f1=tuple(float(value) for value in f1),
            miou=_nanmean(iou),
            mean_f1=_nanmean(f1),
            accuracy=float(true_positive.sum() / total) if total else math.nan,
            pixels=total,
        )

    @property
    def score(self) -> float:
        """The headline number: the foreground IoU of a two-class problem, else the mIoU."""
        return self.iou[1] if len(self.class_names) == 2 else self.miou

    @property
    def score_name(self) -> str:
        return f"{self.class_names[1]} IoU" if len(self.class_names) == 2 else "mIoU"

    def iou_of(self, class_name: str) -> float:
        """The IoU of the class called ``class_name``."""
        try:
            return self.iou[self.class_names.index(class_name)]
        except ValueError:
            raise ConfigError(f"no class {class_name!r}; classes: {', '.join(self.class_names)}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data (``nan`` becomes ``None``)."""
        return {
            "score": _plain(self.score),
            "score_name": self.score_name,
            "miou": _plain(self.miou),
            "mean_f1": _plain(self.mean_f1),
            "accuracy": _plain(self.accuracy),
            "pixels": self.pixels,
            "iou": {name: _plain(value) for name, value in zip(self.class_names, self.iou)},
            "f1": {name: _plain(value) for name, value in zip(self.class_names, self.f1)},
            "confusion": [list(row) for row in self.confusion],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentationMetrics:
        """Rebuilds metrics from :meth:`to_dict` output (recomputed from the confusion matrix)."""
        return cls.from_confusion(data["confusion"], list(data["iou"]))

    def table(self) -> str:
        """Per-class IoU and F1, then the means and the overall accuracy."""
        rows = [[name, _decimal(iou), _decimal(f1)] for name, iou, f1 in zip(self.class_names, self.iou, self.f1)]
        rows.append(["mean", _decimal(self.miou), _decimal(self.mean_f1)])
        return format_table(["class", "IoU", "F1"], rows) + f"\noverall accuracy: {_decimal(self.accuracy)}"

    def summary(self) -> str:
        """One line: ``building IoU 0.412, mIoU 0.688, mean F1 0.780, accuracy 0.963``."""
        head = "" if self.score_name == "mIoU" else f"{self.score_name} {self.score:.3f}, "
        return f"{head}mIoU {self.miou:.3f}, mean F1 {self.mean_f1:.3f}, accuracy {self.accuracy:.3f}"


def metric_value(metrics: SegmentationMetrics, key: str) -> float:
    """The metric ``key`` (``score``, ``miou``, ``mean_f1``, ``accuracy``, ``iou:<class>``) of ``metrics``; NaN counts as 0."""
    if key.startswith("iou:"):
        value = metrics.iou_of(key[4:])
    else:
        value = getattr(metrics, key)
    return 0.0 if value != value else float(value)


def constant_metrics(class_counts: Sequence[int], class_names: Sequence[str]) -> dict[str, SegmentationMetrics]:
    """The metrics of predicting one class everywhere, per class, on pixels with these true class counts.

    Example:
        >>> found = constant_metrics([90, 10], ("background", "building"))
        >>> round(found["building"].score, 2), round(found["background"].miou, 2)
        (0.1, 0.45)
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    found = {}
    for index, name in enumerate(class_names):
        confusion = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
        confusion[:, index] = counts
        found[name] = SegmentationMetrics.from_confusion(confusion, class_names)
    return found


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def _plain(value: float) -> float | None:
    return None if math.isnan(value) else value


def _decimal(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"
