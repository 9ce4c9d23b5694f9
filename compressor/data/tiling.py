"""Cutting scenes: window grids, train/validation regions with a guard band, patch datasets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch.utils.data import Dataset

from compressor.data.base import DataError, Normalization, Scene, as_tensors

__all__ = ["window_starts", "grid_windows", "hold_out", "split_regions", "fold_regions", "PatchDataset", "Side"]

Side = Literal["right", "left", "bottom", "top"]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``[0, length)``; the last one ends at ``length``.

    Example:
        >>> window_starts(10, 4, 4)
        [0, 4, 6]
        >>> window_starts(3, 4, 2)
        [0]
    """
    if window >= length:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def grid_windows(height: int, width: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``(top, left)`` of every window of a grid covering a ``height x width`` image."""
    return [(top, left) for top in window_starts(height, window, stride) for left in window_starts(width, window, stride)]


def hold_out(scene: Scene, *, fraction: float, guard: int, side: Side = "right") -> tuple[Scene, Scene]:
    """Sets aside the strip of ``fraction`` of ``scene`` on ``side`` as a test region, ``guard`` pixels from the rest.

    The test region is cut first, so that validation and training, however they are then
    split, never come within ``guard`` pixels of it.

    Returns:
        ``(rest, test)``, views of ``scene``; ``rest`` keeps the scene's name, ``test`` is
        ``<name>[test]``.

    Raises:
        DataError: ``fraction`` not in (0, 1), ``guard < 0``, or either part would be empty.

    Example:
        >>> import numpy as np
        >>> rest, test = hold_out(Scene("t", np.zeros((100, 200, 1)), np.zeros((100, 200))), fraction=0.2, guard=10)
        >>> rest.width, test.width, rest.name, test.name
        (150, 40, 't', 't[test]')
    """
    return _two_strips(scene, fraction, guard, side, roles=("", "test"))


def split_regions(
    scene: Scene, *, val_fraction: float, guard: int, side: Side = "right"
) -> tuple[Scene, Scene]:
    """Splits a scene into disjoint train and validation regions separated by a guard band.

    The validation region is the strip of ``val_fraction`` of the scene on ``side``; the
    ``guard`` pixels next to it belong to neither, so no training patch shares pixels (or
    the receptive field right across the border) with validation.

    Returns:
        ``(train, val)`` scenes, views of ``scene``.

    Raises:
        DataError: if either region would be empty.

    Example:
        >>> import numpy as np
        >>> image, labels = np.zeros((100, 200, 1)), np.zeros((100, 200))
        >>> train, val = split_regions(Scene("t", image, labels), val_fraction=0.25, guard=10)
        >>> train.width, val.width
        (140, 50)
    """
    return _two_strips(scene, val_fraction, guard, side, roles=("train", "val"))


def _two_strips(scene: Scene, fraction: float, guard: int, side: Side, *, roles: tuple[str, str]) -> tuple[Scene, Scene]:
    """The rest and the strip of ``fraction`` on ``side``, ``guard`` pixels apart, named ``<name>[<role>]``."""
    kept, strip_role = roles
    if not 0 < fraction < 1:
        raise DataError(f"{scene.name}: the {strip_role} fraction must be between 0 and 1, got {fraction}")
    if guard < 0:
        raise DataError(f"guard must be >= 0, got {guard}")
    horizontal = side in ("right", "left")
    length = scene.width if horizontal else scene.height
    strip_length = int(round(length * fraction))
    kept_length = length - strip_length - guard
    if strip_length < 1 or kept_length < 1:
        raise DataError(
            f"{scene.name}: cannot split {length} pixels into {strip_role} {fraction:.0%} and a guard band of {guard}"
        )
    strip_start = length - strip_length if side in ("right", "bottom") else 0
    kept_start = 0 if side in ("right", "bottom") else strip_length + guard

    def strip(start: int, size: int, role: str) -> Scene:
        name = f"{scene.name}[{role}]" if role else scene.name
        if horizontal:
            return scene.crop(0, start, scene.height, size, name=name)
        return scene.crop(start, 0, size, scene.width, name=name)

    return strip(kept_start, kept_length, kept), strip(strip_start, strip_length, strip_role)


def fold_regions(
    scene: Scene, *, folds: int, fold: int, guard: int, side: Side = "right"
) -> tuple[list[Scene], Scene]:
    """Spatial k-fold on one scene: strip ``fold`` of ``folds`` equal strips is validation.

    The strips run across the width for ``side`` ``right``/``left`` (vertical strips,
    numbered from the left) and across the height for ``bottom``/``top`` (horizontal
    strips, numbered from the top); strip ``i`` spans ``round(length * i / folds)`` to
    ``round(length * (i + 1) / folds)``, so the strips of all folds tile the scene and
    each pixel is validated in exactly one fold. Training is the rest of the scene on
    either side of the strip, less ``guard`` pixels next to it on each side: one part
    for an end strip, two for a middle one.

    Args:
        scene: the scene to cut.
        folds: number of strips, at least 2.
        fold: the validation strip, ``0 .. folds - 1``.
        guard: pixels on each side of the validation strip that belong to neither region.
        side: only the axis it implies matters.

    Returns:
        ``(train, val)``: the training parts (``<name>[train-a]`` before the strip,
        ``<name>[train-b]`` after it) and the strip (``<name>[val fold 1/3]``), views of
        ``scene``.

    Raises:
        DataError: ``folds < 2``, ``fold`` out of range, ``guard < 0``, or a region would
            be empty.

    Example:
        >>> import numpy as np
        >>> scene = Scene("t", np.zeros((100, 300, 1)), np.zeros((100, 300)))
        >>> train, val = fold_regions(scene, folds=3, fold=1, guard=10)
        >>> [(part.name, part.width) for part in train], (val.name, val.width)
        ([('t[train-a]', 90), ('t[train-b]', 90)], ('t[val fold 1/3]', 100))
    """
    if folds < 2:
        raise DataError(f"{scene.name}: folds must be at least 2, got {folds}")
    if not 0 <= fold < folds:
        raise DataError(f"{scene.name}: fold must be in 0..{folds - 1}, got {fold}")
    if guard < 0:
        raise DataError(f"{scene.name}: guard must be >= 0, got {guard}")
    horizontal = side in ("right", "left")
    length = scene.width if horizontal else scene.height
    val_start, val_end = (int(round(length * index / folds)) for index in (fold, fold + 1))
    if val_end <= val_start:
        raise DataError(f"{scene.name}: cannot cut {length} pixels into {folds} strips")
    parts = {"train-a": (0, val_start - guard), "train-b": (val_end + guard, length)}
    if fold == 0:
        del parts["train-a"]
    if fold == folds - 1:
        del parts["train-b"]
    for role, (start, end) in parts.items():
        if end <= start:
            raise DataError(
                f"{scene.name}: fold {fold} of {folds} leaves no training pixels in {role} "
                f"({length} pixels, strips of about {length // folds}, guard {guard})"
            )

    def strip(start: int, end: int, role: str) -> Scene:
        name = f"{scene.name}[{role}]"
        if horizontal:
            return scene.crop(0, start, scene.height, end - start, name=name)
        return scene.crop(start, 0, end - start, scene.width, name=name)

    train = [strip(start, end, role) for role, (start, end) in parts.items()]
    return train, strip(val_start, val_end, f"val fold {fold}/{folds}")

class PatchDataset(Dataset):
    """Square patches on a grid over scenes: item ``i`` is a normalized image and its mask.

    Args:
        scenes: the scenes to cut; each must be at least ``patch_size`` on both sides.
        patch_size: side of a patch in pixels.
        stride: distance between neighbouring patches (``< patch_size`` overlaps them);
            the last patch of a row or column is aligned with the border.
        normalization: applied to every image patch.

    Raises:
        DataError: a scene smaller than a patch, or no scene at all.
    """

    def __init__(
        self, scenes: Sequence[Scene], *, patch_size: int, stride: int, normalization: Normalization
    ) -> None:
        if not scenes:
            raise DataError("no training scene to cut patches from")
        if stride < 1:
            raise DataError(f"stride must be >= 1, got {stride}")
        for scene in scenes:
            if scene.height < patch_size or scene.width < patch_size:
                raise DataError(
                    f"{scene.name}: {scene.width}x{scene.height} is smaller than patch_size {patch_size}"
                )
        self.scenes = tuple(scenes)
        self.patch_size = patch_size
        self.normalization = normalization
        self.windows = [
            (index, top, left)
            for index, scene in enumerate(self.scenes)
            for top, left in grid_windows(scene.height, scene.width, patch_size, stride)
        ]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        scene_index, top, left = self.windows[index]
        image, mask = self.scenes[scene_index].read(top, left, self.patch_size, self.patch_size)
        return as_tensors(self.normalization(image), mask)
