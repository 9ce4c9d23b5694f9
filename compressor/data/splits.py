"""Spatial splits of one scene into training, validation and test regions (the real tasks' shared settings).

A real task here is one georeferenced scene. It is cut along one axis: first the test strip
(``test_fraction`` of the scene, on ``val_side``), a guard band, then what is left is split
into training and validation as before (one strip of ``val_fraction`` of the scene, or
``folds`` strips of which one is validation), each with its guard band. Validation serves
early stopping and every choice a search makes; the test region serves only the numbers
reported at the end (:func:`compressor.train.evaluation.evaluate` with ``split="test"``).
"""

from __future__ import annotations

from dataclasses import dataclass

from compressor.data.base import DataConfig, DataError, Normalization, Scene, SegmentationData
from compressor.data.tiling import PatchDataset, Side, fold_regions, hold_out, split_regions

__all__ = ["SpatialSplitConfig", "Regions"]


@dataclass(frozen=True)
class Regions:
    """The parts of a scene: training parts, the validation region, the test region (or None)."""

    train: list[Scene]
    val: Scene
    test: Scene | None


@dataclass(frozen=True, kw_only=True)
class SpatialSplitConfig(DataConfig):
    """Cutting one scene into training, validation and test strips with guard bands.

    Attributes:
        stride: distance between training patches (default: a quarter patch, so the few
            objects are seen at many offsets).
        val_fraction: share of the scene's width (or height) kept for validation (unused
            with ``folds >= 2``).
        val_side: which edge the validation (and test) strips lie on; with ``folds >= 2``
            it picks the axis (``right``/``left``: vertical strips numbered from the left;
            ``bottom``/``top``: horizontal strips numbered from the top) and the default
            ``fold``.
        guard: pixels between two regions that belong to neither.
        folds: spatial k-fold validation on what the test strip leaves: ``folds`` equal
            strips, one of which is validation and the rest, less the guard bands, training
            (see :func:`~compressor.data.tiling.fold_regions`). 0 or 1: the single split by
            ``val_fraction`` (1 is stored as 0).
        fold: the validation strip, ``0 .. folds - 1``, with ``folds >= 2`` (default: the
            strip on ``val_side``).
        test_fraction: share of the scene's width (or height) held out for testing, at
            the far end on ``val_side`` (0: no test region).

    ``folds``, ``fold`` and ``test_fraction`` are left out of the plain data while at their
    defaults, so results stored before they existed keep their keys.
    """

    omit_when_default = ("folds", "fold", "test_fraction")
    stride: int | None = None
    val_fraction: float = 0.3
    val_side: Side = "right"
    guard: int = 32
    folds: int = 0
    fold: int | None = None
    test_fraction: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.folds < 0:
            raise DataError(f"data.folds must be >= 0 (0: one split by data.val_fraction), got {self.folds}")
        if self.fold is not None and self.folds < 2:
            raise DataError(f"data.fold needs data.folds >= 2, got data.folds={self.folds}")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise DataError(f"data.fold must be in 0..{self.folds - 1} for data.folds={self.folds}, got {self.fold}")
        if not 0 <= self.test_fraction < 1:
            raise DataError(f"data.test_fraction must be in [0, 1) (0: no test region), got {self.test_fraction}")
        if self.folds < 2 and not 0 < self.val_fraction + self.test_fraction < 1:
            raise DataError(
                f"data.val_fraction ({self.val_fraction}) and data.test_fraction ({self.test_fraction}) "
                f"must leave part of the scene for training"
            )
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

    def regions(self, scene: Scene) -> Regions:
        """The scene cut into training parts, validation and (with ``test_fraction``) test.

        Raises:
            DataError: a region would be empty, or a training part is smaller than a patch.
        """
        rest, test = scene, None
        if self.test_fraction:
            rest, test = hold_out(scene, fraction=self.test_fraction, guard=self.guard, side=self.val_side)
        fold = self.resolved_fold
        if fold is None:
            # val_fraction is a share of the whole scene, not of what the test strip leaves
            share = self.val_fraction if test is None else self.val_fraction * _length(scene, self.val_side) / _length(rest, self.val_side)
            if not 0 < share < 1:
                raise DataError(
                    f"{scene.name}: data.val_fraction {self.val_fraction} leaves no training pixels beside "
                    f"the test strip and the guard bands"
                )
            train, val = split_regions(rest, val_fraction=share, guard=self.guard, side=self.val_side)
            parts = [train]
        else:
            parts, val = fold_regions(rest, folds=self.folds, fold=fold, guard=self.guard, side=self.val_side)
        for part in parts:
            if part.width < self.patch_size or part.height < self.patch_size:
                where = f"fold {fold} of {self.folds}" if fold is not None else "the split"
                raise DataError(
                    f"{part.name}: {where} leaves a training part of {part.width}x{part.height}, smaller than "
                    f"data.patch_size {self.patch_size}; use fewer data.folds, smaller fractions, a smaller "
                    f"data.guard or a smaller data.patch_size"
                )
        return Regions(parts, val, test)

    def patches(self, regions: Regions) -> tuple[PatchDataset, Normalization]:
        """Training patches of the training parts, normalized by statistics of those parts only."""
        normalization = Normalization.fit([part.image for part in regions.train])
        dataset = PatchDataset(regions.train, patch_size=self.patch_size, stride=self.resolved_stride, normalization=normalization)
        return dataset, normalization

    def cut(self, scene: Scene, *, class_names: tuple[str, ...], title: str) -> SegmentationData:
        """The data of ``scene`` cut into its regions: training patches, validation and test scenes;
        ``title`` (where the scene came from) heads the description.

        Raises:
            DataError: a region would be empty, or a training part is smaller than a patch.
        """
        regions = self.regions(scene)
        patches, normalization = self.patches(regions)
        return SegmentationData(
            name=self.kind,
            class_names=class_names,
            in_channels=scene.channels,
            train=patches,
            val=(regions.val,),
            test=() if regions.test is None else (regions.test,),
            normalization=normalization,
            description=f"{title}: {self.describe(regions, len(patches))}",
        )

    def describe(self, regions: Regions, patches: int) -> str:
        """One line: the regions' sizes, the patches, the guard."""
        fold = self.resolved_fold
        test = "" if regions.test is None else f", test {regions.test.width}x{regions.test.height}"
        if fold is None:
            (part,) = regions.train
            return (
                f"train {part.width}x{part.height} ({patches} patches of {self.patch_size}), "
                f"val {regions.val.width}x{regions.val.height}{test} on the {self.val_side}, guard {self.guard} px"
            )
        origin = "left" if self.val_side in ("right", "left") else "top"
        sizes = ", ".join(f"{part.width}x{part.height}" for part in regions.train)
        count = len(regions.train)
        return (
            f"fold {fold} of {self.folds} (strips numbered from the {origin}): val strip "
            f"{regions.val.width}x{regions.val.height}, train {count} part{'s' if count > 1 else ''} {sizes} "
            f"({patches} patches of {self.patch_size}){test}, guard {self.guard} px"
        )


def _length(scene: Scene, side: Side) -> int:
    return scene.width if side in ("right", "left") else scene.height
