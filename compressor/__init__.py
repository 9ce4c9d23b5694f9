"""compressor: neural architecture miniaturization for segmentation networks.

The public API is re-exported here, and imported on first use: ``import compressor.errors``
(or the CLI's ``--help``) loads that module alone, not torch-pruning, fvcore and the rest.
Everything else is an implementation detail; docs/architecture.md shows the layers.
"""

from __future__ import annotations

from compressor.lazy import lazy_exports

__version__ = "0.1.0"

#: each public name and the module it lives in
_PUBLIC = {
    "Budget": "compressor.budget", "BudgetCheck": "compressor.budget",
    "compress": "compressor.compression", "CompressResult": "compressor.compression",
    "Cost": "compressor.cost", "measure": "compressor.cost",
    "CompressorError": "compressor.errors", "ConfigError": "compressor.errors", "ModelLoadError": "compressor.errors",
    "Experiment": "compressor.experiment", "ensure_baselines": "compressor.experiment",
    "load_experiment": "compressor.experiment", "train_model": "compressor.experiment",
    "SegmentationMetrics": "compressor.metrics",
    "MODELS": "compressor.models", "build_model": "compressor.models", "micronet": "compressor.models",
    "unet": "compressor.models",
    "SavedModel": "compressor.saving", "load_model": "compressor.saving", "load_saved": "compressor.saving",
    "save_model": "compressor.saving",
    "StopTraining": "compressor.train", "TrainConfig": "compressor.train", "TrainingError": "compressor.train",
    "TrainResult": "compressor.train", "evaluate": "compressor.train",
    "TRANSFORMS": "compressor.transforms", "Recipe": "compressor.transforms", "Transform": "compressor.transforms",
    "TransformError": "compressor.transforms", "TransformRecord": "compressor.transforms",
    "apply": "compressor.transforms", "register_transform": "compressor.transforms",
}

__all__ = ["__version__", *_PUBLIC]

__getattr__, __dir__ = lazy_exports(globals(), _PUBLIC)
