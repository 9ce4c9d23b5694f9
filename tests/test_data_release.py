"""Reads of memory-mapped scenes return copies and let the mapped pages go (see BENCHMARKS.md,
"Data at full scale", for the memory this keeps flat); the data stays right afterwards."""

from __future__ import annotations

import numpy as np
import tifffile

from compressor.data import FolderConfig
from compressor.data.base import Normalization, Scene, class_index_decoder, release
from compressor.data.readers import read_array


def test_windows_of_a_mapped_tile_are_copies_and_stay_right_after_release(tmp_path):
    rng = np.random.default_rng(0)
    image, mask = rng.integers(0, 255, (300, 200, 3), dtype=np.uint8), rng.integers(0, 2, (300, 200), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", image)
    tifffile.imwrite(tmp_path / "m.tif", mask)
    mapped, mapped_mask = read_array(tmp_path / "a.tif"), read_array(tmp_path / "m.tif")
    assert isinstance(mapped, np.memmap) and isinstance(mapped_mask, np.memmap)
    scene = Scene("a", mapped, mapped_mask, class_index_decoder(2)).crop(10, 20, 200, 150)
    window, labels = scene.read(5, 7, 64, 32)
    assert not np.shares_memory(window, mapped) and not np.shares_memory(labels, mapped_mask)
    release(mapped, mapped_mask)  # again: reading on works from the page cache
    assert np.array_equal(window, image[15:79, 27:59]) and np.array_equal(labels, mask[15:79, 27:59])
    assert np.array_equal(scene.read(0, 0, 200, 150)[0], image[10:210, 20:170])
    assert np.array_equal(scene.class_indices(), mask[10:210, 20:170])
    release(np.zeros(3))  # an array in memory: nothing to do


def test_the_normalization_of_mapped_tiles_equals_that_of_the_same_pixels_in_memory(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 4000, (120, 90, 3), dtype=np.uint16) for _ in range(3)]
    for index, image in enumerate(images):
        tifffile.imwrite(tmp_path / f"{index}.tif", image)
    mapped = [read_array(tmp_path / f"{index}.tif") for index in range(3)]
    assert Normalization.fit(mapped, max_samples=2000) == Normalization.fit(images, max_samples=2000)


def test_an_inria_folder_builds_from_mapped_tiles(tmp_path):
    rng = np.random.default_rng(2)
    for name in ("austin1", "austin6", "austin7"):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "gt").mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / "images" / f"{name}.tif", rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
        tifffile.imwrite(tmp_path / "gt" / f"{name}.tif", (rng.random((96, 96)) < 0.3).astype(np.uint8) * 255)
    data = FolderConfig(root=str(tmp_path), preset="inria", patch_size=32).build()
    assert [scene.name.rpartition("/")[2] for scene in data.val] == ["austin1.tif"] and len(data.train) == 2 * 9
    assert all(isinstance(scene.image, np.memmap) for scene in data.train.scenes)
    image, mask = data.train[0]
    assert image.shape == (3, 32, 32) and set(mask.unique().tolist()) <= {0, 1}


def _mapped_file_kib() -> int:
    """This process's resident memory mapped from files, in KiB: ``RssFile`` + ``RssShmem`` of
    /proc/self/status (a file on tmpfs, as /tmp is on some systems, counts as shared memory)."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status if line.startswith(("RssFile:", "RssShmem:")))
    return sum(int(value.split()[0]) for value in fields.values())


def test_random_windows_of_a_large_mapped_tile_leave_the_resident_memory_flat(tmp_path):
    """The claim behind Inria-scale data (BENCHMARKS, "Data at full scale"): sampling patches maps
    pages, and :func:`release` lets them go. 400 random 64x64 windows of a 48 MB tile hold about
    60 MB of file-backed memory without it (the kernel's read-ahead maps far more than a window),
    which the same reads without release show here first, so that the measure is known to see it."""
    rng = np.random.default_rng(3)
    side = 4000
    tifffile.imwrite(tmp_path / "big.tif", rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "big_mask.tif", np.zeros((side, side), dtype=np.uint8))
    corners = [(int(top), int(left)) for top, left in rng.integers(0, side - 64, (400, 2))]

    unreleased = read_array(tmp_path / "big.tif")
    before = _mapped_file_kib()
    windows = [np.array(unreleased[top:top + 64, left:left + 64]) for top, left in corners]
    kept_mib = (_mapped_file_kib() - before) / 1024
    release(unreleased)
    assert kept_mib > 30, f"plain reads kept only {kept_mib:.0f} MiB mapped: this measure cannot see the pages"

    scene = Scene("big", read_array(tmp_path / "big.tif"), read_array(tmp_path / "big_mask.tif"), class_index_decoder(2))
    assert isinstance(scene.image, np.memmap)
    before = _mapped_file_kib()
    for (top, left), window in zip(corners, windows):
        assert np.array_equal(scene.read(top, left, 64, 64)[0], window)
    grown_mib = (_mapped_file_kib() - before) / 1024
    assert grown_mib < 12, f"reading 400 windows kept {grown_mib:.0f} MiB of the tile mapped"
