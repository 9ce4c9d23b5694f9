"""Training and evaluation of a segmentation model on :class:`~compressor.data.SegmentationData`.

The default recipe is made to train from scratch on a CPU budget: AdamW with a linear
warm-up then a cosine decay, cross-entropy with class weights plus a soft Dice loss
(both matter when buildings are 4% of the pixels), random flips and 90-degree rotations,
gradient clipping. Evaluation covers every pixel of the validation scenes with an
overlapping sliding window (probabilities averaged where windows overlap), never random
crops. Runs are deterministic for a given seed, thread count and device (on a GPU, cuDNN and
PyTorch are asked for their deterministic kernels while training: see :func:`deterministic_kernels`).

Intermediate evaluations at chosen steps or fractions of the run feed a callback that
can stop training early: the search prunes weak candidates through it.

By idea: :mod:`.config` (the recipe's settings), :mod:`.losses`, :mod:`.determinism` (seeds,
devices, deterministic kernels), :mod:`.loop` (:func:`train`), :mod:`.evaluation` and
:mod:`.checkpoints`.
"""

from __future__ import annotations

from compressor.train.checkpoints import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from compressor.train.config import DistillConfig, TrainConfig
from compressor.train.determinism import deterministic_kernels, resolve_device, seed_everything
from compressor.train.evaluation import evaluate, predict_scene, scene_share, window_corners
from compressor.train.loop import (
    Callback,
    StopTraining,
    TrainingError,
    TrainResult,
    evaluation_steps,
    reestimate_batchnorm,
    train,
)
from compressor.train.losses import (
    class_weights,
    dice_loss,
    distillation_loss,
    summed_cross_entropy,
    weighted_cross_entropy,
)

__all__ = ["DistillConfig", "TrainConfig", "class_weights", "weighted_cross_entropy", "summed_cross_entropy", "dice_loss", "distillation_loss", "seed_everything", "resolve_device", "deterministic_kernels", "TrainingError", "StopTraining", "Callback", "TrainResult", "evaluation_steps", "train", "reestimate_batchnorm", "predict_scene", "evaluate", "window_corners", "scene_share", "CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "load_weights"]
