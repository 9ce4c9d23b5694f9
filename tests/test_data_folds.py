"""Spatial k-fold validation on one scene: fold_regions, and the SpaceNet sample's folds and fold.

The SpaceNet tests use the small tile wheel of ``test_data_spacenet`` (pixel value =
row * WIDTH + col), so nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_data_spacenet import HEIGHT, WIDTH, tile_wheel  # noqa: F401 (a fixture, used through `tile`)

from compressor.data import (
    DataError,
    Normalization,
    PatchDataset,
    Scene,
    SpacenetSampleConfig,
    TileSource,
    fold_regions,
    read_tile,
    split_regions,
)
from compressor.errors import ConfigError
from compressor.experiment import Experiment, baseline_key, load_experiment, to_data

KEYS_BEFORE_FOLDS = ["name", "patch_size", "stride", "val_fraction", "val_side", "guard"]


@pytest.fixture
def tile(request) -> tuple[Path, TileSource]:
    """``(cache, source)`` of the small tile wheel of ``test_data_spacenet``, already in the cache."""
    cache, source, _, _ = request.getfixturevalue("tile_wheel")
    return cache, source


def _positions(height: int, width: int) -> Scene:
    """A scene whose pixel value is its position (row * width + col)."""
    return Scene("tile", np.arange(height * width).reshape(height, width, 1), np.zeros((height, width), dtype=np.uint8))


def _coords(scene: Scene, shape: tuple[int, int], axis: int) -> np.ndarray:
    """The sorted distinct coordinates along ``axis`` (0: rows, 1: columns) of a view of a positions scene."""
    return np.unique(np.unravel_index(scene.image.ravel(), shape)[axis])


@pytest.mark.parametrize("side", ["right", "bottom"])
@pytest.mark.parametrize("fold", [0, 1, 2])
def test_fold_regions_are_disjoint_guarded_and_cover_the_scene(side, fold):
    height, width, guard = 61, 92, 5
    scene = _positions(height, width)
    train, val = fold_regions(scene, folds=3, fold=fold, guard=guard, side=side)
    axis = 1 if side == "right" else 0
    across = height if axis == 1 else width
    assert len(train) == (2 if fold == 1 else 1)
    assert val.name == f"tile[val fold {fold}/3]"
    assert [part.name for part in train] == {0: ["tile[train-b]"], 1: ["tile[train-a]", "tile[train-b]"], 2: ["tile[train-a]"]}[fold]
    val_coords = _coords(val, (height, width), axis)
    assert val.image.size == len(val_coords) * across  # a full strip across the scene
    pixels = [set(val.image.ravel().tolist())]
    for part in train:
        part_coords = _coords(part, (height, width), axis)
        assert part.image.size == len(part_coords) * across
        gap = val_coords.min() - part_coords.max() if part.name.endswith("[train-a]") else part_coords.min() - val_coords.max()
        assert gap - 1 == guard  # exactly `guard` pixels between the training part and the validation strip
        pixels.append(set(part.image.ravel().tolist()))
    assert sum(len(group) for group in pixels) == len(set().union(*pixels))  # disjoint
    assert len(set().union(*pixels)) + guard * across * len(train) == height * width  # with the guards: the whole scene


@pytest.mark.parametrize("side", ["right", "bottom"])
def test_the_validation_strips_of_all_folds_tile_the_scene(side):
    height, width = 61, 92
    scene = _positions(height, width)
    strips = [fold_regions(scene, folds=3, fold=fold, guard=7, side=side)[1] for fold in range(3)]
    validated = np.concatenate([strip.image.ravel() for strip in strips])
    np.testing.assert_array_equal(np.sort(validated), np.arange(height * width))  # each pixel exactly once
    lengths = [strip.width if side == "right" else strip.height for strip in strips]
    assert max(lengths) - min(lengths) <= 1


def test_without_a_guard_training_and_validation_are_the_whole_scene():
    scene = _positions(20, 50)
    train, val = fold_regions(scene, folds=4, fold=2, guard=0)
    assert sum(part.width for part in train) + val.width == 50
    assert [part.width for part in train] == [25, 12] and val.width == 13  # boundaries 0, 12 (12.5), 25, 38 (37.5), 50


def test_left_and_top_cut_the_same_strips_as_right_and_bottom():
    scene = _positions(30, 40)
    for first, second in (("right", "left"), ("bottom", "top")):
        (a_train, a_val), (b_train, b_val) = (fold_regions(scene, folds=3, fold=1, guard=2, side=side) for side in (first, second))
        np.testing.assert_array_equal(a_val.image, b_val.image)
        assert [part.image.tolist() for part in a_train] == [part.image.tolist() for part in b_train]


@pytest.mark.parametrize(
    ("width", "folds", "fold", "guard", "message"),
    [
        (90, 1, 0, 0, "tile: folds must be at least 2, got 1"),
        (90, 3, 3, 0, r"tile: fold must be in 0\.\.2, got 3"),
        (90, 3, -1, 0, r"tile: fold must be in 0\.\.2, got -1"),
        (90, 3, 0, -1, "tile: guard must be >= 0, got -1"),
        (30, 3, 1, 10, r"tile: fold 1 of 3 leaves no training pixels in train-a"),
        (30, 3, 1, 11, r"tile: fold 1 of 3 leaves no training pixels in train-a"),
        (30, 2, 0, 15, r"tile: fold 0 of 2 leaves no training pixels in train-b"),
        (2, 3, 1, 0, "tile: cannot cut 2 pixels into 3 strips"),
    ],
)
def test_fold_regions_refuses_bad_arguments_naming_the_scene(width, folds, fold, guard, message):
    with pytest.raises(DataError, match=message) as error:
        fold_regions(_positions(10, width), folds=folds, fold=fold, guard=guard)
    assert "\n" not in str(error.value)


def test_an_end_strip_drops_only_the_empty_side():
    scene = _positions(10, 30)
    (only,), val = fold_regions(scene, folds=3, fold=0, guard=19)  # a 10 px strip, 19 px guard, 1 px left
    assert only.name == "tile[train-b]" and only.width == 1 and val.width == 10
    (only,), val = fold_regions(scene, folds=3, fold=2, guard=19)
    assert only.name == "tile[train-a]" and only.width == 1 and val.width == 10
    with pytest.raises(DataError, match="tile: fold 0 of 3 leaves no training pixels in train-b"):
        fold_regions(scene, folds=3, fold=0, guard=20)


def test_a_middle_fold_trains_on_both_sides_of_the_strip(tile):
    cache, source = tile
    data = SpacenetSampleConfig(patch_size=16, folds=3, fold=1, guard=8).build(cache_dir=cache, source=source, download=False)
    (val,) = data.val
    first, second = data.train.scenes
    val_columns = np.unique(val.image % WIDTH)
    assert val_columns.tolist() == list(range(50, 100)) and val.height == HEIGHT  # a third of the width
    assert np.unique(first.image % WIDTH).tolist() == list(range(0, 42))
    assert np.unique(second.image % WIDTH).tolist() == list(range(108, 150))
    assert data.normalization == Normalization.fit([first.image, second.image])
    expected = PatchDataset([first, second], patch_size=16, stride=4, normalization=data.normalization)
    assert len(data.train) == len(expected) and {index for index, _, _ in data.train.windows} == {0, 1}
    assert "fold 1 of 3 (strips numbered from the left): val strip 50x120, train 2 parts 42x120, 42x120" in data.description


@pytest.mark.parametrize(("side", "fold"), [("right", 2), ("bottom", 2), ("left", 0), ("top", 0)])
def test_the_default_fold_is_the_strip_on_val_side(tile, side, fold):
    cache, source = tile
    config = SpacenetSampleConfig(patch_size=16, folds=3, val_side=side, guard=8)
    assert config.resolved_fold == fold and config.fold is None
    data = config.build(cache_dir=cache, source=source, download=False)
    (val,) = data.val
    (train,) = data.train.scenes
    coordinate = (lambda image: image % WIDTH) if side in ("right", "left") else (lambda image: image // WIDTH)
    length = WIDTH if side in ("right", "left") else HEIGHT
    val_coords = np.unique(coordinate(val.image))
    train_coords = np.unique(coordinate(train.image))
    if fold == 0:
        assert val_coords.min() == 0 and train_coords.max() == length - 1
    else:
        assert val_coords.max() == length - 1 and train_coords.min() == 0
    assert len(val_coords) == round(length / 3)
    assert "train 1 part " in data.description


@pytest.mark.parametrize("folds", [0, 1])
def test_without_folds_the_data_is_what_it_was(tile, folds):
    cache, source = tile
    default = SpacenetSampleConfig()
    config = SpacenetSampleConfig(folds=folds)
    assert config == default and config.resolved_fold is None
    data = config.build(cache_dir=cache, source=source, download=False)
    # What build() did before folds existed.
    tile = read_tile(source, cache_dir=cache, download=False)
    train, val = split_regions(tile, val_fraction=0.3, guard=32, side="right")
    normalization = Normalization.fit([train.image])
    patches = PatchDataset([train], patch_size=64, stride=16, normalization=normalization)
    (built_val,) = data.val
    (built_train,) = data.train.scenes
    np.testing.assert_array_equal(built_val.image, val.image)
    np.testing.assert_array_equal(built_train.image, train.image)
    assert built_val.name == val.name and built_train.name == train.name
    assert data.normalization == normalization and data.train.windows == patches.windows
    assert data.description == (
        f"SpaceNet sample tile {WIDTH}x{HEIGHT} (solaris 1.0): train {train.width}x{train.height} "
        f"({len(patches)} patches of 64), val {val.width}x{val.height} on the right, guard 32 px"
    )


def test_a_training_part_smaller_than_a_patch_is_named(tile):
    cache, source = tile
    config = SpacenetSampleConfig(patch_size=48, folds=3, fold=1, guard=8)
    with pytest.raises(DataError, match=r"\[train-a\]: fold 1 of 3 leaves a training part of 42x120, smaller than "
                                         r"data.patch_size 48; use fewer data.folds") as error:
        config.build(cache_dir=cache, source=source, download=False)
    assert "\n" not in str(error.value)


def test_fold_settings_stay_out_of_the_keys_at_their_defaults():
    assert list(to_data(SpacenetSampleConfig())) == KEYS_BEFORE_FOLDS
    assert list(to_data(SpacenetSampleConfig(folds=1))) == KEYS_BEFORE_FOLDS
    assert list(to_data(SpacenetSampleConfig(folds=3))) == [*KEYS_BEFORE_FOLDS, "folds"]
    assert to_data(SpacenetSampleConfig(folds=3, fold=1))["fold"] == 1
    experiment = load_experiment("experiments/quickstart.yaml")
    assert list(to_data(experiment.data)) == KEYS_BEFORE_FOLDS
    assert list(experiment.to_dict()["data"]) == KEYS_BEFORE_FOLDS
    key = baseline_key(experiment, "unet")
    assert baseline_key(dataclasses.replace(experiment, data=dataclasses.replace(experiment.data, folds=1)), "unet") == key
    assert baseline_key(dataclasses.replace(experiment, data=SpacenetSampleConfig(**to_data(experiment.data))), "unet") == key
    with_folds = dataclasses.replace(experiment, data=dataclasses.replace(experiment.data, folds=3))
    other_fold = dataclasses.replace(experiment, data=dataclasses.replace(experiment.data, folds=3, fold=0))
    assert len({key, baseline_key(with_folds, "unet"), baseline_key(other_fold, "unet")}) == 3


@pytest.mark.parametrize("data", [{}, {"folds": 3}, {"folds": 4, "fold": 1, "val_side": "top"}])
def test_fold_settings_load_back(data):
    experiment = Experiment.from_dict({"data": {"name": "spacenet_sample", **data}})
    assert Experiment.from_dict(experiment.to_dict()) == experiment


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"fold": 2}, "experiment: data.fold needs data.folds >= 2, got data.folds=0"),
        ({"folds": 1, "fold": 0}, "experiment: data.fold needs data.folds >= 2, got data.folds=1"),
        ({"folds": -1}, "experiment: data.folds must be >= 0 (0: one split by data.val_fraction), got -1"),
        ({"folds": 3, "fold": 3}, "experiment: data.fold must be in 0..2 for data.folds=3, got 3"),
        ({"folds": 3, "fold": -1}, "experiment: data.fold must be in 0..2 for data.folds=3, got -1"),
        ({"folds": "three"}, "experiment: data.folds: expected"),
    ],
)
def test_bad_fold_settings_are_config_errors(data, message):
    with pytest.raises(ConfigError) as error:
        Experiment.from_dict({"data": {"name": "spacenet_sample", **data}})
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
