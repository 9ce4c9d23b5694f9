"""Datasets: the real SpaceNet sample tile, synthetic aerial scenes, and image/mask folders.

Each kind registers its configuration class in :data:`DATASETS` under the name used in
an experiment's ``data:`` section; ``config.build()`` returns a :class:`SegmentationData`.

Example:
    >>> from compressor.data import DATASETS
    >>> DATASETS.names()
    ['folder', 'spacenet_sample', 'synthetic']
"""

from __future__ import annotations

from compressor.data.base import (
    DATASETS,
    DataConfig,
    DataError,
    Normalization,
    Scene,
    SegmentationData,
    register_dataset,
)
from compressor.data.cache import CACHE_ENV, PinnedWheel, cache_dir, fetch_wheel
from compressor.data.folder import PRESETS, FolderConfig
from compressor.data.spacenet import SOLARIS_SAMPLE, SpacenetSampleConfig, TileSource, read_tile
from compressor.data.synthetic import LABEL_SETS, SyntheticConfig, synthesize_scene
from compressor.data.tiling import PatchDataset, fold_regions, grid_windows, split_regions, window_starts

__all__ = [
    "DATASETS",
    "DataConfig",
    "DataError",
    "Normalization",
    "Scene",
    "SegmentationData",
    "register_dataset",
    "CACHE_ENV",
    "PinnedWheel",
    "cache_dir",
    "fetch_wheel",
    "FolderConfig",
    "PRESETS",
    "SpacenetSampleConfig",
    "TileSource",
    "SOLARIS_SAMPLE",
    "read_tile",
    "SyntheticConfig",
    "LABEL_SETS",
    "synthesize_scene",
    "PatchDataset",
    "grid_windows",
    "split_regions",
    "fold_regions",
    "window_starts",
]
