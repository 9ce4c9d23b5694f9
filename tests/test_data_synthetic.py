"""Synthetic aerial scenes: deterministic, any size, consistent labels, fast."""

from __future__ import annotations

import time

import numpy as np
import pytest

from compressor.data import LABEL_SETS, DataError, SyntheticConfig, synthesize_scene


def test_the_same_seed_gives_the_same_scene_and_another_seed_another():
    first_image, first_mask = synthesize_scene(96, 80, seed=7)
    second_image, second_mask = synthesize_scene(96, 80, seed=7)
    np.testing.assert_array_equal(first_image, second_image)
    np.testing.assert_array_equal(first_mask, second_mask)
    assert not np.array_equal(first_image, synthesize_scene(96, 80, seed=8)[0])


@pytest.mark.parametrize(("height", "width"), [(17, 200), (64, 64), (300, 45)])
def test_any_size(height, width):
    image, mask = synthesize_scene(height, width, seed=1)
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert mask.shape == (height, width) and mask.dtype == np.uint8


def test_binary_labels_are_the_buildings_of_the_multiclass_labels():
    image_binary, binary = synthesize_scene(128, 128, seed=3, labels="binary")
    image_multi, multi = synthesize_scene(128, 128, seed=3, labels="multiclass")
    np.testing.assert_array_equal(image_binary, image_multi)
    building = LABEL_SETS["multiclass"].index("building")
    np.testing.assert_array_equal(binary, (multi == building).astype(np.uint8))


def test_scenes_hold_every_class_in_plausible_shares():
    masks = np.stack([synthesize_scene(256, 256, seed=seed)[1] for seed in range(8)])
    shares = np.bincount(masks.ravel(), minlength=6) / masks.size
    assert len(LABEL_SETS["multiclass"]) >= 5 and masks.max() == len(LABEL_SETS["multiclass"]) - 1
    assert (shares > 0.01).all(), shares
    building = shares[LABEL_SETS["multiclass"].index("building")]
    assert 0.02 < building < 0.3


def test_buildings_look_different_from_their_surroundings():
    """The labels describe the pixels: roofs differ in colour from the ground around them."""
    image, mask = synthesize_scene(256, 256, seed=5, labels="binary")
    roofs = image[mask == 1].astype(float).mean(axis=0)
    ground = image[mask == 0].astype(float).mean(axis=0)
    assert np.abs(roofs - ground).max() > 15


def test_shadows_fall_on_one_side_of_the_buildings():
    """With one sun per scene, the ground next to buildings is darker on one side than the other."""
    directions = [(0, 4), (0, -4), (4, 0), (-4, 0), (3, 3), (3, -3), (-3, 3), (-3, -3)]
    ratios = []
    for seed in range(6):
        image, mask = synthesize_scene(256, 256, seed=seed, labels="binary")
        brightness = image.astype(float).sum(axis=2)
        building = mask == 1
        sides = [brightness[np.roll(building, shift, axis=(0, 1)) & ~building].mean() for shift in directions]
        ratios.append(min(sides) / max(sides))
    assert np.median(ratios) < 0.8, ratios


def test_a_256_scene_takes_well_under_50_ms():
    synthesize_scene(256, 256, seed=0)
    times = []
    for seed in range(5):
        started = time.perf_counter()
        synthesize_scene(256, 256, seed=seed)
        times.append(time.perf_counter() - started)
    assert min(times) < 0.05, times


def test_unknown_label_set_is_an_error():
    with pytest.raises(DataError, match="unknown synthetic label set 'rgb'"):
        synthesize_scene(32, 32, seed=0, labels="rgb")


def test_dataset_splits_use_separate_seed_streams():
    config = SyntheticConfig(labels="multiclass", patch_size=32, train_images=20, val_images=2, val_size=64, seed=4)
    data = config.build()
    again = config.build()
    assert len(data.train) == 20 and data.num_classes == 6 and data.in_channels == 3
    np.testing.assert_array_equal(data.val[0].image, again.val[0].image)
    assert np.array_equal(data.train[3][0].numpy(), again.train[3][0].numpy())
    # A validation scene is not a training scene generated at another size.
    train_like, _ = synthesize_scene(64, 64, seed=(4, 0, 0), labels="multiclass")
    assert not np.array_equal(train_like, data.val[0].image)
    other = SyntheticConfig(patch_size=32, val_images=1, val_size=64, seed=5).build()
    assert not np.array_equal(other.val[0].image, data.val[0].image)
    with pytest.raises(IndexError):
        data.train[20]
