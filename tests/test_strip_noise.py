"""The block bootstrap of a test strip's score (experiments/benchmarks/strip_noise.py): bands, their confusion
matrices, and the interval over resampled bands."""

import numpy as np
import pytest
from conftest import benchmark_script


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
    found = noise.block_bootstrap(alike, noise.iou_of(1), resamples=200)
    assert found["low"] == found["high"] == pytest.approx(found["score"]) == pytest.approx(5 / 10)
    unlike = np.stack([np.array([[90, 0], [0, 10]])] * 5 + [np.array([[90, 5], [5, 0]])] * 5)
    found = noise.block_bootstrap(unlike, noise.iou_of(1), resamples=500)
    assert found["low"] < found["score"] < found["high"]
    assert found["score"] == pytest.approx(50 / 100)
    assert found["high"] - found["low"] > 0.2
