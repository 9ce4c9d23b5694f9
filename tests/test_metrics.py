"""Metrics on hand-made masks, checked against hand counts and against MONAI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.metrics import compute_iou

from compressor.metrics import ConfusionMatrix, SegmentationMetrics

TARGET = np.array(
    [
        [0, 0, 0, 0],
        [0, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 2, 2],
    ]
)
PREDICTION = np.array(
    [
        [0, 0, 0, 1],
        [0, 1, 1, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 2],
    ]
)


def _metrics(prediction=PREDICTION, target=TARGET, classes=("ground", "building", "road")) -> SegmentationMetrics:
    matrix = ConfusionMatrix(len(classes))
    matrix.update(torch.as_tensor(prediction), torch.as_tensor(target))
    return matrix.compute(classes)


def test_hand_counted_scores():
    metrics = _metrics()
    # building: TP 3 (1,1),(1,2),(2,2); FP 1 (0,3); FN 1 (2,1) -> IoU 3/5, F1 6/8.
    # ground: TP 9, FP 2 ((2,1),(3,2)), FN 1 ((0,3)) -> IoU 9/12. road: TP 1, FN 1 -> IoU 1/2.
    assert metrics.iou == pytest.approx((9 / 12, 3 / 5, 1 / 2))
    assert metrics.f1 == pytest.approx((18 / 21, 6 / 8, 2 / 3))
    assert metrics.miou == pytest.approx((9 / 12 + 3 / 5 + 1 / 2) / 3)
    assert metrics.accuracy == pytest.approx(13 / 16)
    assert metrics.pixels == 16
    assert metrics.confusion[2] == (1, 0, 1)  # the missed road pixel went to ground


def test_counts_accumulate_over_batches():
    whole = _metrics()
    matrix = ConfusionMatrix(3)
    matrix.update(PREDICTION[:2], TARGET[:2])
    matrix.update(PREDICTION[2:], TARGET[2:])
    assert matrix.compute(("ground", "building", "road")) == whole


def test_two_classes_report_the_foreground_iou_as_score():
    target = np.array([[0, 1, 1, 1]])
    prediction = np.array([[1, 1, 1, 0]])
    metrics = _metrics(prediction, target, ("background", "building"))
    assert metrics.score == metrics.iou_of("building") == pytest.approx(2 / 4)
    assert metrics.score_name == "building IoU"
    assert _metrics().score == _metrics().miou  # three classes: the mIoU


def test_a_class_absent_everywhere_has_no_score_and_is_left_out_of_means():
    metrics = _metrics(np.array([[0, 1]]), np.array([[0, 1]]), ("a", "b", "c"))
    assert math.isnan(metrics.iou[2]) and math.isnan(metrics.f1[2])
    assert metrics.miou == 1.0 and metrics.mean_f1 == 1.0
    data = metrics.to_dict()
    assert data["iou"]["c"] is None
    assert SegmentationMetrics.from_dict(data).iou[:2] == (1.0, 1.0)


def test_all_background_prediction_scores_zero_on_buildings():
    target = np.zeros((10, 10), dtype=int)
    target[2:4, 2:6] = 1
    metrics = _metrics(np.zeros_like(target), target, ("background", "building"))
    assert metrics.iou == pytest.approx((92 / 100, 0.0))
    assert metrics.accuracy == pytest.approx(0.92)


def test_agrees_with_monai_on_random_masks():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (1, 37, 23), generator=generator)
    prediction = torch.where(torch.rand(target.shape, generator=generator) < 0.6, target, torch.randint(0, 4, target.shape, generator=generator))
    metrics = _metrics(prediction, target, ("a", "b", "c", "d"))
    one_hot = lambda labels: F.one_hot(labels, 4).permute(0, 3, 1, 2).float()  # noqa: E731
    expected = compute_iou(one_hot(prediction), one_hot(target))[0]
    assert metrics.iou == pytest.approx(expected.tolist(), abs=1e-6)


def test_round_trip_and_table():
    metrics = _metrics()
    assert SegmentationMetrics.from_dict(metrics.to_dict()) == metrics
    table = metrics.table()
    assert "building  0.600  0.750" in table and "overall accuracy: 0.812" in table
