"""The shapes data takes on its way to training: scenes, normalization, the dataset bundle.

A :class:`Scene` is one labelled image held at its native dtype (possibly memory-mapped),
read window by window. A :class:`SegmentationData` bundles what training needs: a
map-style dataset of training patches and whole validation scenes, evaluated with a
sliding window. Every dataset kind (``spacenet_sample``, ``synthetic``, ``folder``)
registers a :class:`DataConfig` subclass in :data:`DATASETS` whose ``build()`` makes one.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from compressor.errors import CompressorError
from compressor.metrics import IGNORE_INDEX  # unlabelled pixels: the loss and the metrics leave them out
from compressor.registry import Registry

__all__ = [
    "IGNORE_INDEX",
    "DATASETS",
    "DataConfig",
    "DataError",
    "Normalization",
    "Scene",
    "SegmentationData",
    "register_dataset",
    "class_index_decoder",
    "release",
]


class DataError(CompressorError):
    """Data cannot be found, read, verified or used (the message names the file)."""


MaskDecoder = Callable[[np.ndarray, str], np.ndarray]
"""Turns a raw mask window into class indices (uint8); the ``str`` names the scene for errors."""


def class_index_decoder(num_classes: int, *, ignore: int | None = None) -> MaskDecoder:
    """A decoder for masks that already hold class indices ``0 .. num_classes - 1`` (and ``ignore``, if given).

    Example:
        >>> decode = class_index_decoder(2)
        >>> decode(np.array([[0, 1]]), "a.png").tolist()
        [[0, 1]]
        >>> class_index_decoder(2, ignore=IGNORE_INDEX)(np.array([[1, 255]]), "a.png").tolist()
        [[1, 255]]
    """

    def decode(raw: np.ndarray, where: str) -> np.ndarray:
        if raw.ndim != 2:
            raise DataError(f"{where}: expected a single-channel mask of class indices, got shape {raw.shape}")
        bad = raw >= num_classes
        if ignore is not None:
            bad &= raw != ignore
        if raw.size and bad.any():
            values = sorted(int(value) for value in np.unique(raw[bad])[:5])
            raise DataError(f"{where}: mask values {values} are not class indices below {num_classes}")
        return raw.astype(np.uint8, copy=False)

    return decode


@dataclass(frozen=True)
class Scene:
    """One image and its aligned labels, at native dtype.

    Attributes:
        name: where the scene came from (a file name, ``tile[val]``), used in errors.
        image: ``(H, W, C)`` array of any numeric dtype; may be a ``numpy.memmap``.
        labels: the raw mask, ``(H, W)`` or ``(H, W, 3)`` for RGB palettes.
        decode: turns a raw label window into class indices.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    decode: MaskDecoder = field(default=class_index_decoder(256), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.image.ndim != 3:
            raise DataError(f"{self.name}: expected an (H, W, C) image, got shape {self.image.shape}")
        if self.labels.shape[:2] != self.image.shape[:2]:
            raise DataError(
                f"{self.name}: image is {_size(self.image)} but its mask is {_size(self.labels)}"
            )

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def channels(self) -> int:
        return int(self.image.shape[2])

    def crop(self, top: int, left: int, height: int, width: int, *, name: str | None = None) -> Scene:
        """A view of a rectangle of this scene (no copy)."""
        window = (slice(top, top + height), slice(left, left + width))
        return Scene(name or self.name, self.image[window], self.labels[window], self.decode)

    def read(self, top: int, left: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw image window ``(h, w, C)`` and its class indices ``(h, w)`` (uint8), as copies;
        a memory-mapped file's pages are let go after (:func:`release`)."""
        window = (slice(top, top + height), slice(left, left + width))
        image, labels = np.array(self.image[window]), self.decode(np.array(self.labels[window]), self.name)
        release(self.image, self.labels)
        return image, labels

    def class_indices(self) -> np.ndarray:
        """The whole mask as class indices."""
        labels = self.decode(np.array(self.labels), self.name)
        release(self.labels)
        return labels


def release(*arrays: np.ndarray) -> None:
    """Unmaps the pages of memory-mapped ``arrays`` from this process (they stay in the page cache).

    Reading a window of a memory-mapped tile maps far more than the window: the kernel reads ahead
    (8 MB here) and maps whole large folios, so without this a process that samples patches from
    36 Inria tiles of 75 MB comes to hold most of them in its resident memory. The arrays stay
    valid: a later read maps again what it touches. Arrays in memory are left alone.
    """
    for array in arrays:
        mapping = getattr(array, "_mmap", None)  # numpy.memmap and its views share their mmap
        if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mapping.madvise(mmap.MADV_DONTNEED)


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"


@dataclass(frozen=True)
class Normalization:
    """Per-channel clipping then standardization: ``(clip(x, low, high) - mean) / std``.

    Clipping at robust percentiles keeps a few very bright pixels (common in 16-bit
    satellite imagery) from squashing everything else towards zero.

    Example:
        >>> norm = Normalization(low=(0.0,), high=(10.0,), mean=(5.0,), std=(2.0,))
        >>> norm(np.array([[[1.0], [99.0]]])).tolist()
        [[[-2.0, 2.5]]]
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(
        cls,
        images: Sequence[np.ndarray],
        *,
        percentiles: tuple[float, float] = (0.5, 99.5),
        max_samples: int = 1_000_000,
    ) -> Normalization:
        """Estimates the clip range and statistics from ``(H, W, C)`` images.

        At most ``max_samples`` pixels are read, evenly strided over every image, so this
        stays cheap on memory-mapped 5000x5000 tiles.
        """
        if not images:
            raise DataError("cannot fit a normalization without any image")
        total = sum(image.shape[0] * image.shape[1] for image in images)
        step = max(1, int(np.ceil(np.sqrt(total / max_samples))))
        parts = []
        for image in images:
            parts.append(np.array(image[::step, ::step]).reshape(-1, image.shape[2]))
            release(image)
        samples = np.concatenate(parts).astype(np.float64)
        low, high = np.percentile(samples, percentiles, axis=0)
        clipped = np.clip(samples, low, high)
        mean, std = clipped.mean(axis=0), clipped.std(axis=0)
        std = np.where(std > 1e-6, std, 1.0)
        return cls(*(tuple(float(v) for v in values) for values in (low, high, mean, std)))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, C)`` raw pixels -> ``(C, H, W)`` float32, normalized."""
        pixels = image.astype(np.float32, copy=False)
        low, high, mean, std = (np.asarray(values, dtype=np.float32) for values in (self.low, self.high, self.mean, self.std))
        normalized = (np.clip(pixels, low, high) - mean) / std
        return np.ascontiguousarray(normalized.transpose(2, 0, 1))

    def to_dict(self) -> dict[str, list[float]]:
        return {key: list(getattr(self, key)) for key in ("low", "high", "mean", "std")}


@dataclass(frozen=True)
class SegmentationData:
    """Everything training and evaluation need from a dataset.

    Attributes:
        name: the dataset kind (``spacenet_sample``, ``synthetic``, ``folder``).
        class_names: one name per class index.
        in_channels: image channels.
        train: map-style dataset; item ``i`` is ``(image (C, P, P) float32, mask (P, P)
            int64)``, the same for the same ``i`` every time.
        val: whole validation scenes, evaluated with a sliding window.
        normalization: applied to training patches; apply it to validation windows too.
        description: one line for logs and reports.
        test: whole test scenes, for the numbers reported at the end only (empty: the data
            has no test region).
    """

    name: str
    class_names: tuple[str, ...]
    in_channels: int
    train: Dataset
    val: tuple[Scene, ...]
    normalization: Normalization
    description: str = ""
    test: tuple[Scene, ...] = ()

    def scenes(self, split: str) -> tuple[Scene, ...]:
        """The whole scenes of ``split`` (``val`` or ``test``).

        Raises:
            DataError: ``test`` asked of data without a test region, or an unknown split.
        """
        if split == "val":
            return self.val
        if split == "test":
            if not self.test:
                raise DataError(f"data {self.name!r} has no test region; set data.test_fraction (e.g. 0.2)")
            return self.test
        raise DataError(f"unknown split {split!r}; expected 'val' or 'test'")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_frequencies(self, *, max_patches: int = 64) -> np.ndarray:
        """Share of each class among the pixels of up to ``max_patches`` evenly spaced training patches."""
        count = len(self.train)
        indices = np.unique(np.linspace(0, count - 1, num=min(count, max_patches)).astype(int))
        totals = np.zeros(self.num_classes, dtype=np.float64)
        for index in indices:
            mask = self.train[int(index)][1]
            totals += np.bincount(mask.reshape(-1).numpy(), minlength=self.num_classes)[: self.num_classes]
        return totals / max(totals.sum(), 1.0)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Base of every dataset's configuration (the ``data:`` section of an experiment).

    Subclasses are frozen keyword-only dataclasses registered with
    :func:`register_dataset`; ``name`` picks the subclass. Fields named in
    ``omit_when_default`` are left out of the configuration's plain data
    (:func:`compressor.experiment.to_data`) while at their default, so a field added later
    does not change the keys that stored baselines and studies were saved under.
    """

    kind: ClassVar[str] = ""
    omit_when_default: ClassVar[tuple[str, ...]] = ()
    name: str = ""
    patch_size: int = 64

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.kind)
        if self.patch_size < 8:
            raise DataError(f"data.patch_size must be at least 8, got {self.patch_size}")

    def build(self, *, cache_dir: str | Path | None = None) -> SegmentationData:
        """Loads or generates the data."""
        raise NotImplementedError

    @classmethod
    def subclass_for(cls, raw: dict[str, Any]) -> type[DataConfig]:
        """The registered configuration class named by ``raw["name"]``."""
        if "name" not in raw:
            raise DataError(f"missing required key (one of {', '.join(DATASETS.names())})")
        return DATASETS.get(str(raw["name"]))


DATASETS: Registry[type[DataConfig]] = Registry("dataset", entry_points="compressor.datasets")


def register_dataset(config_class: type[DataConfig]) -> type[DataConfig]:
    """Class decorator: registers a :class:`DataConfig` subclass under its ``kind``."""
    DATASETS.register(config_class.kind)(config_class)
    return config_class


def as_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalized ``(C, H, W)`` image and a class-index mask as training tensors."""
    return torch.from_numpy(image), torch.from_numpy(mask.astype(np.int64))
