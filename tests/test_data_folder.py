"""Image/mask folders: formats, presets (Inria, ISPRS), pairing and size errors, tiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from compressor.data import DataError, FolderConfig, Scene, grid_windows, split_regions, window_starts
from compressor.data.folder import ISPRS_PALETTE

RNG = np.random.default_rng(0)


def _rgb(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, array)
    else:
        Image.fromarray(array).save(path)


def _index_dataset(root: Path, names: list[str], size: tuple[int, int] = (40, 50), suffix: str = ".png") -> dict:
    masks = {}
    for name in names:
        _write(root / "images" / f"{name}{suffix}", _rgb(*size))
        mask = RNG.integers(0, 3, size, dtype=np.uint8)
        _write(root / "masks" / f"{name}.png", mask)
        masks[name] = mask
    return masks


def test_index_masks_from_png_pairs_and_grid_patches(tmp_path):
    masks = _index_dataset(tmp_path, ["a", "b", "c", "d", "e"])
    config = FolderConfig(root=str(tmp_path), classes=["x", "y", "z"], patch_size=16, stride=16, val_fraction=0.2)
    data = config.build()
    assert data.class_names == ("x", "y", "z") and data.in_channels == 3
    assert [Path(scene.name).stem for scene in data.val] == ["e"]
    # 40x50 with 16-pixel patches at stride 16: rows 0,16,24 and columns 0,16,32,34.
    assert len(data.train) == 4 * 3 * 4
    image, mask = data.train[1]
    np.testing.assert_array_equal(mask.numpy(), masks["a"][0:16, 16:32])
    assert image.shape == (3, 16, 16)
    np.testing.assert_array_equal(data.val[0].class_indices(), masks["e"])


def test_jpeg_and_tiff_images_are_read(tmp_path):
    for name, suffix in (("a", ".jpg"), ("b", ".tif"), ("c", ".jpeg")):
        _write(tmp_path / "images" / f"{name}{suffix}", _rgb(32, 32))
        _write(tmp_path / "masks" / f"{name}.tif", np.zeros((32, 32), dtype=np.uint8))
    data = FolderConfig(root=str(tmp_path), patch_size=32, val_fraction=0.3).build()
    assert len(data.train) == 2 and len(data.val) == 1


def test_uncompressed_tiffs_are_memory_mapped(tmp_path):
    _write(tmp_path / "images" / "a.tif", _rgb(64, 64))
    _write(tmp_path / "images" / "b.tif", _rgb(64, 64))
    for name in "ab":
        _write(tmp_path / "masks" / f"{name}.tif", np.ones((64, 64), dtype=np.uint8))
    data = FolderConfig(root=str(tmp_path), patch_size=32).build()
    assert isinstance(data.train.scenes[0].image, np.memmap)


def test_inria_preset_reads_gt_255_and_uses_the_usual_validation_tiles(tmp_path):
    for name in ("austin1", "austin6", "austin15", "chicago5", "chicago7"):
        _write(tmp_path / "images" / f"{name}.tif", _rgb(48, 48))
        gt = np.zeros((48, 48), dtype=np.uint8)
        gt[:10] = 255
        _write(tmp_path / "gt" / f"{name}.tif", gt)
    data = FolderConfig(root=str(tmp_path), preset="inria", patch_size=16).build()
    assert [Path(scene.name).stem for scene in data.val] == ["austin1", "chicago5"]
    assert [Path(scene.name).stem for scene in data.train.scenes] == ["austin15", "austin6", "chicago7"]
    assert data.class_names == ("background", "building")
    labels = data.val[0].class_indices()
    assert labels[:10].min() == 1 and labels[10:].max() == 0


@pytest.mark.parametrize("preset", ["isprs_vaihingen", "isprs_potsdam"])
def test_isprs_presets_decode_the_palette(tmp_path, preset):
    palette = np.array(ISPRS_PALETTE, dtype=np.uint8)
    images, masks, image_suffix, mask_suffix = (
        ("top", "gts_for_participants", "", "") if preset == "isprs_vaihingen"
        else ("2_Ortho_RGB", "5_Labels_all", "_RGB", "_label")
    )
    expected = {}
    for area in ("area1", "area2", "area3"):
        labels = RNG.integers(0, 6, (32, 40))
        _write(tmp_path / images / f"top_{area}{image_suffix}.tif", _rgb(32, 40))
        _write(tmp_path / masks / f"top_{area}{mask_suffix}.tif", palette[labels])
        expected[area] = labels
    data = FolderConfig(root=str(tmp_path), preset=preset, patch_size=16, val_names=["*area2"]).build()
    assert data.num_classes == 6 and data.class_names[1] == "building"
    np.testing.assert_array_equal(data.val[0].class_indices(), expected["area2"])


def test_a_colour_outside_the_palette_is_named(tmp_path):
    palette = np.array(ISPRS_PALETTE, dtype=np.uint8)
    for name in "ab":
        mask = palette[np.zeros((32, 32), dtype=int)]
        _write(tmp_path / "top" / f"{name}.png", _rgb(32, 32))
        if name == "b":
            mask[0, 0] = (0, 0, 0)
        _write(tmp_path / "gts_for_participants" / f"{name}.png", mask)
    data = FolderConfig(root=str(tmp_path), preset="isprs_vaihingen", patch_size=32, val_names=["a"]).build()
    with pytest.raises(DataError, match=r"b.png: mask colours not in the palette: \(0, 0, 0\) x1"):
        data.train[0]


def test_names_that_do_not_pair_up_are_listed(tmp_path):
    for name in ("a", "b", "c"):
        _write(tmp_path / "images" / f"{name}.png", _rgb(8, 8))
    for name in ("a", "b", "d", "e"):
        _write(tmp_path / "masks" / f"{name}.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match=r"names do not pair up \(1 images without a mask: c; 2 masks without an image: d, e\)"):
        FolderConfig(root=str(tmp_path)).build()


def test_sizes_that_differ_are_listed(tmp_path):
    for index in range(7):
        _write(tmp_path / "images" / f"t{index}.png", _rgb(20, 30))
        _write(tmp_path / "masks" / f"t{index}.png", np.zeros((20, 30 if index < 1 else 31), dtype=np.uint8))
    with pytest.raises(DataError) as error:
        FolderConfig(root=str(tmp_path), patch_size=8).build()
    message = str(error.value)
    assert message.startswith("6 image/mask pairs differ in size: t1 (image 30x20, mask 31x20)")
    assert "t5 (image 30x20, mask 31x20), ... (1 more)" in message


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"root": "{root}/nowhere"}, "nowhere/images: folder not found"),
        ({"root": "{root}", "val_names": ["zzz*"]}, "leaves no validation file"),
        ({"root": "{root}", "val_names": ["*"]}, "leaves no training file"),
        ({"root": "{root}", "classes": ["only"]}, "need at least 2 classes"),
        ({"root": "{root}", "mask_values": [0, 1, 2]}, "data.mask_values: 3 entries for 2 classes"),
        ({"root": "{root}", "patch_size": 64}, "smaller than patch_size 64"),
        ({"root": ""}, "data.root: the dataset folder is required"),
    ],
)
def test_bad_settings_are_named(tmp_path, config, message):
    _index_dataset(tmp_path, ["a", "b"], size=(32, 32))
    config = {key: value.format(root=tmp_path) if isinstance(value, str) else value for key, value in config.items()}
    with pytest.raises(DataError, match=message):
        FolderConfig(**config).build()


def test_mask_values_out_of_range_are_named(tmp_path):
    _index_dataset(tmp_path, ["a", "b"], size=(32, 32))  # values 0..2 but only 2 classes
    data = FolderConfig(root=str(tmp_path), patch_size=32).build()
    with pytest.raises(DataError, match=r"a.png: mask values \[2\] are not class indices below 2"):
        data.train[0]


def test_window_starts_cover_everything_and_stay_inside():
    for length, window, stride in [(100, 32, 32), (100, 32, 7), (32, 32, 8), (33, 32, 100)]:
        starts = window_starts(length, window, stride)
        covered = np.zeros(length, dtype=bool)
        for start in starts:
            assert 0 <= start and start + window <= length
            covered[start:start + window] = True
        assert covered.all() and starts == sorted(set(starts))
    assert len(grid_windows(100, 33, 32, 32)) == 4 * 2


@pytest.mark.parametrize("side", ["right", "left", "top", "bottom"])
def test_split_regions_are_disjoint_and_separated_by_the_guard(side):
    height, width = 60, 90
    positions = np.arange(height * width).reshape(height, width, 1)
    scene = Scene("tile", positions, np.zeros((height, width), dtype=np.uint8))
    train, val = split_regions(scene, val_fraction=0.3, guard=5, side=side)
    train_pixels, val_pixels = set(train.image.ravel()), set(val.image.ravel())
    assert not train_pixels & val_pixels
    assert len(train_pixels) + len(val_pixels) + 5 * (height if side in ("left", "right") else width) == height * width
    axis = 1 if side in ("left", "right") else 0
    train_coords = np.unravel_index(sorted(train_pixels), (height, width))[axis]
    val_coords = np.unravel_index(sorted(val_pixels), (height, width))[axis]
    gap = val_coords.min() - train_coords.max() if side in ("right", "bottom") else train_coords.min() - val_coords.max()
    assert gap == 6
