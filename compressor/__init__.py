"""compressor: neural architecture miniaturization for segmentation networks.

The public API is re-exported here; everything else is an implementation detail.
"""

from __future__ import annotations

__version__ = "0.1.0"

from compressor.budget import Budget, BudgetCheck
from compressor.compress import CompressResult, compress
from compressor.cost import Cost, measure
from compressor.errors import CompressorError, ConfigError, ModelLoadError
from compressor.experiment import Experiment, ensure_baselines, load_experiment, train_model
from compressor.metrics import SegmentationMetrics
from compressor.models import MODELS, build_model, micronet, unet
from compressor.saving import SavedModel, load_model, load_saved, save_model
from compressor.train import StopTraining, TrainConfig, TrainingError, TrainResult, evaluate
from compressor.transforms import (
    TRANSFORMS,
    Recipe,
    Transform,
    TransformError,
    TransformRecord,
    apply,
    register_transform,
)

__all__ = [
    "__version__",
    "Budget",
    "BudgetCheck",
    "compress",
    "CompressResult",
    "Cost",
    "measure",
    "CompressorError",
    "ConfigError",
    "ModelLoadError",
    "MODELS",
    "build_model",
    "unet",
    "micronet",
    "SavedModel",
    "save_model",
    "load_model",
    "load_saved",
    "TRANSFORMS",
    "Recipe",
    "Transform",
    "TransformError",
    "TransformRecord",
    "apply",
    "register_transform",
    "Experiment",
    "load_experiment",
    "train_model",
    "ensure_baselines",
    "SegmentationMetrics",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "StopTraining",
    "evaluate",
]
