"""The block bootstrap of a test strip's score (experiments/benchmarks/strip_noise.py): bands, their confusion
matrices, and the interval over resampled bands."""

import numpy as np
import pytest
from conftest import benchmark_script

NAMES = ("background", "building")  # two classes: the score is the building IoU


@pytest.fixture(scope="module")
def noise():
    yield from benchmark_script("strip_noise")


def test_bands_cut_the_long_side_and_their_confusions_add_up_to_the_whole_strip_without_ignored_pixels(noise):
    generator = np.random.default_rng(0)
    labels = generator.integers(0, 2, (90, 18))
    labels[0, 0] = 255  # ignored: counted nowhere
    predicted = generator.integers(0, 2, (90, 18))
    bands = noise.band_confusions(predicted, labels, 2, 9)
    assert bands.shape == (9, 2, 2)
    assert bands[0].sum() == 10 * 18 - 1 and all(band.sum() == 10 * 18 for band in bands[1:])
    kept = labels != 255
    whole = np.array([[np.sum((labels == t) & (predicted == p) & kept) for p in range(2)] for t in range(2)])
    assert (bands.sum(axis=0) == whole).all()
    assert noise.band_confusions(predicted.T, labels.T, 2, 9).shape == (9, 2, 2)  # a wide strip: cut across its width


def test_the_interval_is_a_point_for_alike_bands_and_spreads_for_unlike_ones(noise):
    alike = np.stack([np.array([[90, 2], [3, 5]])] * 10)
    found = noise.block_bootstrap(alike, noise.score_of(NAMES), resamples=200)
    assert found["low"] == found["high"] == pytest.approx(found["score"]) == pytest.approx(5 / 10)
    unlike = np.stack([np.array([[90, 0], [0, 10]])] * 5 + [np.array([[90, 5], [5, 0]])] * 5)
    found = noise.block_bootstrap(unlike, noise.score_of(NAMES), resamples=500)
    assert found["low"] < found["score"] < found["high"]
    assert found["score"] == pytest.approx(50 / 100)
    assert found["high"] - found["low"] > 0.2


def test_a_paired_interval_reads_both_networks_on_the_same_drawn_bands(noise):
    generator = np.random.default_rng(1)
    base = np.stack([np.array([[900, 20], [int(count), 60]]) for count in generator.integers(10, 80, 10)])
    better = base.copy()
    better[:, 1, 1] += 10  # ten more building pixels found in every band, the same bands: never worse
    found = noise.paired_band_interval([better, better], [base, base], noise.score_of(NAMES), resamples=300)
    whole = 100 * (noise.score_of(NAMES)(better.sum(axis=0)) - noise.score_of(NAMES)(base.sum(axis=0)))
    assert found["mean"] == pytest.approx(whole)
    assert 0 < found["low"] < found["mean"] < found["high"]
    alone = noise.block_bootstrap(base, noise.score_of(NAMES), resamples=300)  # one network's score moves more than the pair
    assert found["high"] - found["low"] < 100 * (alone["high"] - alone["low"])


def test_the_bands_of_a_network_add_up_to_its_test_evaluation(noise):
    from compressor.data import SpacenetSampleConfig
    from compressor.models import micronet
    from compressor.train.config import TrainConfig
    from compressor.train.evaluation import evaluate

    data = SpacenetSampleConfig(patch_size=32, val_fraction=0.2, test_fraction=0.2, guard=32).build()
    network = micronet(in_channels=data.in_channels, num_classes=data.num_classes, base_width=4).train()
    config = TrainConfig(eval_window=256)
    bands = noise.test_bands(network, data, config, blocks=7)
    assert bands.shape == (7, data.num_classes, data.num_classes) and network.training  # its mode handed back
    assert (bands.sum(axis=0) == np.asarray(evaluate(network, data, config, split="test").confusion)).all()


def test_a_wide_strip_is_cut_across_its_width_into_equal_bands(noise):
    labels = np.zeros((18, 90), dtype=np.uint8)
    labels[:, :10] = 1  # the first band's columns only
    bands = noise.band_confusions(labels, labels, 2, 9)
    assert [int(band[1, 1]) for band in bands] == [180] + [0] * 8  # 10 columns x 18 rows each


def test_the_paired_interval_averages_over_the_pairs_and_says_when_the_class_is_missing(noise):
    base = np.stack([np.array([[900, 20], [40, 60]])] * 10)
    first, second = base.copy(), base.copy()
    first[:, 1, 1] += 20
    second[:, 1, 1] -= 10  # one seed better, one worse: the mean, not the first pair
    found = noise.paired_band_interval([first, second], [base, base], noise.score_of(NAMES), resamples=50)
    iou = noise.score_of(NAMES)
    expected = 100 * ((iou(first.sum(axis=0)) - iou(base.sum(axis=0))) + (iou(second.sum(axis=0)) - iou(base.sum(axis=0)))) / 2
    assert found["mean"] == pytest.approx(expected) and found["low"] == pytest.approx(found["high"])  # alike bands
    empty = np.stack([np.array([[900, 0], [0, 0]])] * 9 + [np.array([[900, 0], [0, 5]])])  # the class in one band
    spread = noise.block_bootstrap(empty, noise.score_of(NAMES), resamples=200)
    assert spread["nan_draws"] > 10 and np.isnan(spread["low"]) and np.isnan(spread["high"])


def test_the_parents_bands_are_kept_in_its_record_only_when_they_add_up_and_never_over_other_bands(noise, tmp_path):
    import json

    bands = np.stack([np.array([[80, 2], [3, 5 + index]]) for index in range(10)])
    record = tmp_path / "parent-p0.json"
    record.write_text(json.dumps({"job": "parent-p0", "test": {"confusion": bands.sum(axis=0).tolist()}}))
    wrong = bands.copy()
    wrong[0, 1, 1] += 1
    with pytest.raises(SystemExit, match="do not add up"):
        noise.keep_bands(record, wrong)
    assert "test_bands" not in json.loads(record.read_text())
    assert "kept" in noise.keep_bands(record, bands)
    kept = json.loads(record.read_text())
    assert kept["test_bands"] == bands.tolist() and kept["job"] == "parent-p0"
    assert "already" in noise.keep_bands(record, bands)
    other = bands.copy()
    other[[0, 1]] = other[[1, 0]]  # the same sum, other bands
    with pytest.raises(SystemExit, match="other test bands"):
        noise.keep_bands(record, other)
    assert json.loads(record.read_text())["test_bands"] == bands.tolist()


@pytest.mark.parametrize("shape", ["one band", "a 2-D matrix", "other classes", "floats"])
def test_bands_not_shaped_as_every_job_keeps_them_are_refused_and_the_record_is_unchanged(noise, tmp_path, shape):
    import json

    bands = np.stack([np.array([[80, 2], [3, 5 + index]]) for index in range(10)])
    whole = bands.sum(axis=0)
    record = tmp_path / "parent-p0.json"
    record.write_text(json.dumps({"job": "parent-p0", "test": {"confusion": whole.tolist()}}))
    wrong = {"one band": whole[None], "a 2-D matrix": whole, "floats": bands.astype(float),
             "other classes": np.stack([np.pad(band, ((0, 1), (0, 1))) for band in bands])}[shape]
    with pytest.raises(SystemExit, match="not 10 integer confusion matrices"):
        noise.keep_bands(record, wrong)
    assert "test_bands" not in json.loads(record.read_text())
    record.write_text(json.dumps({"job": "parent-p0"}))
    with pytest.raises(SystemExit, match="no test confusion matrix"):
        noise.keep_bands(record, bands)
