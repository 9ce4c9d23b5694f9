"""Procedural aerial scenes: ground, water, trees, roads, buildings with shadows.

Scenes are generated on the fly, deterministically from a seed, at any size, with
vectorized numpy (a 256x256 scene takes a few milliseconds). Every feature has a size in
pixels, not a fraction of the scene, so a 64x64 training patch looks like a crop of a
512x512 validation scene. Labels come in two sets: ``binary`` (background, building) and
``multiclass`` (background, building, road, low vegetation, tree, water).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from compressor.data.base import (
    DataConfig,
    DataError,
    Normalization,
    Scene,
    SegmentationData,
    as_tensors,
    register_dataset,
)

__all__ = ["LABEL_SETS", "SyntheticConfig", "SyntheticPatches", "synthesize_scene"]

GROUND, BUILDING, ROAD, LOW_VEGETATION, TREE, WATER = range(6)
MULTICLASS = ("background", "building", "road", "low_vegetation", "tree", "water")
LABEL_SETS: dict[str, tuple[str, ...]] = {"binary": ("background", "building"), "multiclass": MULTICLASS}

_ROOF_COLOURS = np.array(
    [[168, 82, 62], [150, 150, 152], [78, 78, 84], [214, 212, 204], [122, 94, 72], [92, 112, 128]], dtype=np.float32
)
_MAX_BUILDING_HEIGHT = 12


def synthesize_scene(
    height: int, width: int, *, seed: int | Sequence[int], labels: str = "multiclass"
) -> tuple[np.ndarray, np.ndarray]:
    """Generates one aerial scene.

    Args:
        height: rows in pixels.
        width: columns in pixels.
        seed: an int or a sequence of ints (``numpy.random.SeedSequence`` entropy); the
            same seed gives the same scene.
        labels: ``"binary"`` or ``"multiclass"`` (see :data:`LABEL_SETS`).

    Returns:
        ``(image, mask)``: ``(H, W, 3)`` uint8 RGB and ``(H, W)`` uint8 class indices.

    Example:
        >>> image, mask = synthesize_scene(64, 96, seed=3, labels="binary")
        >>> image.shape, mask.shape, image.dtype, set(np.unique(mask)) <= {0, 1}
        ((64, 96, 3), (64, 96), dtype('uint8'), True)
        >>> bool((synthesize_scene(64, 96, seed=3)[0] == image).all())
        True
    """
    if labels not in LABEL_SETS:
        raise DataError(f"unknown synthetic label set {labels!r}; valid: {', '.join(LABEL_SETS)}")
    if height < 1 or width < 1:
        raise DataError(f"a synthetic scene needs a positive size, got {width}x{height}")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    scene = _Canvas(rng, height, width)
    scene.ground()
    scene.water()
    scene.trees()
    scene.roads()
    scene.buildings()
    image = scene.finish()
    mask = scene.classes if labels == "multiclass" else (scene.classes == BUILDING).astype(np.uint8)
    return image, mask


class _Canvas:
    """Layers painted in order; each writes colour and class where it lies on top."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng = rng
        self.height, self.width = height, width
        self.rows, self.cols = np.mgrid[0:height, 0:width].astype(np.float32)
        self.image = np.zeros((height, width, 3), dtype=np.float32)
        self.classes = np.full((height, width), GROUND, dtype=np.uint8)
        self.heights = np.zeros((height, width), dtype=np.float32)
        # One street orientation and one sun direction per scene, as in a real town.
        self.street_angle = rng.uniform(0, np.pi)
        sun = rng.uniform(0, 2 * np.pi)
        self.sun = (np.sin(sun), np.cos(sun))
        self.urban = rng.uniform(0.15, 1.0)
        self.grain = self.noise(4)  # fine surface texture shared by every layer

    def noise(self, cell: float, octaves: int = 1) -> np.ndarray:
        """Smooth value noise in [0, 1] with features about ``cell`` pixels wide."""
        total = np.zeros((self.height, self.width), dtype=np.float32)
        weight_sum = 0.0
        for octave in range(octaves):
            size, weight = cell / 2**octave, 0.5**octave
            grid = self.rng.random((int(self.height / size) + 3, int(self.width / size) + 3), dtype=np.float32)
            row_index, row_weight = _interpolation(self.height, size, self.rng)
            col_index, col_weight = _interpolation(self.width, size, self.rng)
            # Columns first on the small grid, then whole rows: row gathers are contiguous copies.
            cols = grid[:, col_index] * (1 - col_weight) + grid[:, col_index + 1] * col_weight
            total += weight * (cols[row_index] * (1 - row_weight)[:, None] + cols[row_index + 1] * row_weight[:, None])
            weight_sum += weight
        return total / weight_sum

    def paint(self, where: np.ndarray, colour: np.ndarray, texture: np.ndarray, label: int) -> None:
        self.image[where] = colour * texture[where][:, None]
        self.classes[where] = label

    def ground(self) -> None:
        soil = np.array([148, 124, 96], dtype=np.float32) * self.rng.uniform(0.85, 1.1, 3).astype(np.float32)
        grass = np.array([96, 128, 66], dtype=np.float32) * self.rng.uniform(0.85, 1.1, 3).astype(np.float32)
        field = self.noise(48, octaves=3)
        grass_share = self.rng.uniform(0.2, 0.8)
        is_grass = field < np.quantile(field, grass_share)
        texture = 0.85 + 0.15 * self.noise(12) + 0.15 * self.grain
        self.image[:] = np.where(is_grass[..., None], grass, soil) * texture[..., None]
        self.classes[is_grass] = LOW_VEGETATION

    def water(self) -> None:
        if self.rng.random() > 0.35:
            return
        field = self.noise(160, octaves=2)
        where = field > self.rng.uniform(0.55, 0.7)
        colour = np.array([38, 64, 92], dtype=np.float32) * self.rng.uniform(0.8, 1.2)
        self.paint(where, colour, 0.92 + 0.16 * self.grain, WATER)

    def trees(self) -> None:
        density = self.noise(64, octaves=2)
        crowns = self.noise(5, octaves=2)
        cover = self.rng.uniform(0.15, 0.8)
        where = (density > 1 - cover) & (crowns > 0.45) & (self.classes != WATER)
        colour = np.array([44, 82, 40], dtype=np.float32) * self.rng.uniform(0.85, 1.15)
        self.paint(where, colour, 0.6 + 0.7 * crowns, TREE)

    def roads(self) -> None:
        count = self.rng.poisson(self.height * self.width / 160**2 * (0.5 + self.urban)) + (self.rng.random() < 0.6)
        for _ in range(count):
            angle = self.street_angle + (np.pi / 2 if self.rng.random() < 0.5 else 0) + self.rng.normal(0, 0.05)
            centre_row, centre_col = self.rng.uniform(0, self.height), self.rng.uniform(0, self.width)
            distance = np.abs((self.cols - centre_col) * np.sin(angle) - (self.rows - centre_row) * np.cos(angle))
            half_width = self.rng.uniform(2.5, 6.0)
            grey = self.rng.uniform(95, 135)
            colour = np.array([grey, grey, grey * 1.03], dtype=np.float32)
            self.paint(distance <= half_width, colour, 0.95 + 0.1 * self.grain, ROAD)

    def buildings(self) -> None:
        attempts = self.rng.poisson(self.height * self.width / 700 * self.urban)
        blocked = (self.classes == ROAD) | (self.classes == WATER)
        for _ in range(attempts):
            self._place_building(blocked)
        self._shadows()

    def _place_building(self, blocked: np.ndarray) -> None:
        """Places one building unless it would touch a road, water or another building."""
        rng = self.rng
        half_length = rng.uniform(4, 16)
        half_depth = rng.uniform(3, max(3.5, half_length * 0.9))
        angle = self.street_angle + rng.normal(0, 0.08) if rng.random() < 0.75 else rng.uniform(0, np.pi)
        centre_row, centre_col = rng.uniform(0, self.height), rng.uniform(0, self.width)
        if blocked[int(centre_row), int(centre_col)]:
            return
        reach = int(np.ceil(np.hypot(half_length, half_depth))) + 2
        top, left = max(0, int(centre_row) - reach), max(0, int(centre_col) - reach)
        bottom, right = min(self.height, int(centre_row) + reach + 1), min(self.width, int(centre_col) + reach + 1)
        if bottom <= top or right <= left:
            return
        rows, cols = self.rows[top:bottom, left:right] - centre_row, self.cols[top:bottom, left:right] - centre_col
        along = cols * np.cos(angle) + rows * np.sin(angle)
        across = -cols * np.sin(angle) + rows * np.cos(angle)
        footprint = (np.abs(along) <= half_length) & (np.abs(across) <= half_depth)
        if rng.random() < 0.3:  # an L-shaped wing
            footprint |= (np.abs(along - half_length * 0.5) <= half_length * 0.5) & (np.abs(across - half_depth * 1.5) <= half_depth)
        taken = blocked[top:bottom, left:right]
        if not footprint.any() or (footprint & taken).any():
            return
        colour = _ROOF_COLOURS[rng.integers(len(_ROOF_COLOURS))] * rng.uniform(0.85, 1.15, 3).astype(np.float32)
        if rng.random() < 0.6:  # a gable roof: one slope lit, the other in shade
            shade = np.where(across >= 0, 1.12, 0.82)
        else:  # a flat roof with a darker parapet
            shade = np.where((np.abs(along) > half_length - 1.2) | (np.abs(across) > half_depth - 1.2), 0.8, 1.0)
        shade = shade * (0.97 + 0.06 * rng.random(shade.shape))
        image = self.image[top:bottom, left:right]
        image[footprint] = colour * shade[footprint][:, None]
        self.classes[top:bottom, left:right][footprint] = BUILDING
        taken |= footprint
        self.heights[top:bottom, left:right][footprint] = rng.uniform(3, _MAX_BUILDING_HEIGHT)

    def _shadows(self) -> None:
        """A pixel is in shadow if a building ``s`` steps towards the sun is taller than ``s``."""
        shadow = np.zeros((self.height, self.width), dtype=bool)
        for step in range(1, _MAX_BUILDING_HEIGHT + 1):
            shift_row, shift_col = round(step * self.sun[0]), round(step * self.sun[1])
            shifted = _shift(self.heights, shift_row, shift_col)
            shadow |= shifted >= step
        shadow &= self.classes != BUILDING
        self.image[shadow] *= 0.45

    def finish(self) -> np.ndarray:
        """Slight blur (the sensor's point spread), a global exposure, and pixel noise."""
        padded = np.pad(self.image, ((1, 1), (1, 1), (0, 0)), mode="edge")
        blurred = (
            4 * padded[1:-1, 1:-1]
            + padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        ) / 8
        exposure = self.rng.uniform(0.8, 1.2)
        noisy = blurred * exposure + 4 * self.rng.standard_normal(blurred.shape, dtype=np.float32)
        return np.clip(noisy, 0, 255).astype(np.uint8)


def _interpolation(length: int, cell: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``length`` pixels: the grid node before it (spacing ``cell``) and the weight of the next.

    Elementwise on purpose: tiny BLAS matrix products stall when their threads compete
    for two busy cores.
    """
    position = (np.arange(length, dtype=np.float32) + np.float32(rng.uniform(0, cell))) / np.float32(cell)
    index = position.astype(np.intp)
    fraction = position - index
    return index, fraction * fraction * (3 - 2 * fraction)  # smoothstep: no visible grid lines


def _shift(array: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``array`` moved by ``(rows, cols)``, zero-filled: ``out[r, c] = array[r - rows, c - cols]``."""
    out = np.zeros_like(array)
    height, width = array.shape
    if abs(rows) >= height or abs(cols) >= width:
        return out
    out[max(rows, 0):height + min(rows, 0), max(cols, 0):width + min(cols, 0)] = array[
        max(-rows, 0):height + min(-rows, 0), max(-cols, 0):width + min(-cols, 0)
    ]
    return out


class SyntheticPatches(Dataset):
    """``count`` synthetic training scenes of ``patch_size``; item ``i`` is generated from ``(seed, i)``."""

    def __init__(self, *, count: int, patch_size: int, seed: int, labels: str, normalization: Normalization) -> None:
        self.count, self.patch_size, self.seed, self.labels = count, patch_size, seed, labels
        self.normalization = normalization

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        image, mask = synthesize_scene(self.patch_size, self.patch_size, seed=(self.seed, _TRAIN, index), labels=self.labels)
        return as_tensors(self.normalization(image), mask)


_TRAIN, _VAL = 0, 1  # seed streams: training and validation scenes never share a seed


@register_dataset
@dataclass(frozen=True, kw_only=True)
class SyntheticConfig(DataConfig):
    """Generated aerial scenes; nothing to download.

    Attributes:
        labels: ``binary`` (buildings) or ``multiclass`` (6 classes).
        train_images: how many distinct training scenes of ``patch_size`` exist.
        val_images: how many validation scenes.
        val_size: side of a validation scene.
        seed: picks the world; training and validation scenes come from separate streams.

    Example:
        >>> data = SyntheticConfig(labels="binary", patch_size=32, val_images=1, val_size=64).build()
        >>> data.class_names, len(data.val), tuple(data.train[0][0].shape)
        (('background', 'building'), 1, (3, 32, 32))
    """

    kind = "synthetic"
    labels: Literal["binary", "multiclass"] = "binary"
    train_images: int = 10_000
    val_images: int = 4
    val_size: int = 256
    seed: int = 0

    def build(self, *, cache_dir: str | Path | None = None) -> SegmentationData:
        if self.train_images < 1 or self.val_images < 1:
            raise DataError("data.train_images and data.val_images must be >= 1")
        val = tuple(
            Scene(f"synthetic[val {index}]", *synthesize_scene(
                self.val_size, self.val_size, seed=(self.seed, _VAL, index), labels=self.labels))
            for index in range(self.val_images)
        )
        calibration = [
            synthesize_scene(self.patch_size, self.patch_size, seed=(self.seed, _TRAIN, index))[0]
            for index in range(min(16, self.train_images))
        ]
        normalization = Normalization.fit(calibration)
        patches = SyntheticPatches(
            count=self.train_images, patch_size=self.patch_size, seed=self.seed, labels=self.labels,
            normalization=normalization,
        )
        return SegmentationData(
            name=self.kind,
            class_names=LABEL_SETS[self.labels],
            in_channels=3,
            train=patches,
            val=val,
            normalization=normalization,
            description=(
                f"synthetic {self.labels} scenes (seed {self.seed}): {self.train_images} training scenes of "
                f"{self.patch_size}, {self.val_images} validation scenes of {self.val_size}"
            ),
        )
