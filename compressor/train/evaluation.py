"""Evaluation on whole validation scenes: an overlapping sliding window, probabilities averaged."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from compressor.data.base import Scene, SegmentationData
from compressor.data.tiling import window_starts
from compressor.errors import ConfigError, first_line
from compressor.metrics import ConfusionMatrix, SegmentationMetrics
from compressor.outputs import model_output
from compressor.train.config import TrainConfig

__all__ = ["predict_scene", "evaluate"]


def forward_checked(model: nn.Module, images: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The first forward pass, with a clear error if the model does not fit the data."""
    try:
        logits = model_output(model, images)
    except RuntimeError as error:
        first = first_line(error)
        raise ConfigError(f"the model cannot run on a batch of shape {tuple(images.shape)}: {first}") from None
    expected = (images.shape[0], num_classes, *images.shape[2:])
    if tuple(logits.shape) != expected:
        raise ConfigError(
            f"the model maps input {tuple(images.shape)} to {tuple(logits.shape)}; "
            f"training needs {expected} (one logit map per class, same height and width)"
        )
    return logits


@torch.inference_mode()
def predict_scene(
    model: nn.Module,
    scene: Scene,
    data: SegmentationData,
    *,
    window: int = 256,
    overlap: int = 32,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Class probabilities for every pixel of ``scene``, ``(classes, H, W)`` float32.

    Windows of ``window`` pixels (smaller for a smaller scene) cover the scene with
    ``overlap`` pixels shared between neighbours; the last row and column of windows
    are aligned with the border. Where windows overlap their probabilities are averaged.
    The model is run as it is (call ``model.eval()`` first).
    """
    height, width = min(window, scene.height), min(window, scene.width)
    stride_y, stride_x = max(1, height - overlap), max(1, width - overlap)
    corners = [
        (top, left)
        for top in window_starts(scene.height, height, stride_y)
        for left in window_starts(scene.width, width, stride_x)
    ]
    total = np.zeros((data.num_classes, scene.height, scene.width), dtype=np.float32)
    hits = np.zeros((scene.height, scene.width), dtype=np.float32)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start:start + batch_size]
        windows = np.stack([data.normalization(scene.read(top, left, height, width)[0]) for top, left in chunk])
        probabilities = model_output(model, torch.from_numpy(windows).to(device)).float().softmax(dim=1).cpu().numpy()
        for (top, left), probability in zip(chunk, probabilities):
            total[:, top:top + height, left:left + width] += probability
            hits[top:top + height, left:left + width] += 1
    return total / hits


def evaluate(
    model: nn.Module, data: SegmentationData, config: TrainConfig | None = None, *, split: str = "val"
) -> SegmentationMetrics:
    """Metrics of ``model`` over every labelled pixel of every scene of ``split`` (sliding window).

    ``split`` is ``val`` (what training and search choose by) or ``test`` (the held-out
    region, for reported numbers only). The model is evaluated in eval mode and returned
    to the mode it was in.

    Raises:
        DataError: ``split="test"`` on data without a test region.
    """
    config = config or TrainConfig()
    scenes = data.scenes(split)
    device = next((parameter.device for parameter in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(data.num_classes)
    try:
        for scene in scenes:
            probabilities = predict_scene(
                model, scene, data, window=config.eval_window, overlap=config.eval_overlap,
                batch_size=config.eval_batch_size, device=device,
            )
            matrix.update(probabilities.argmax(axis=0), scene.class_indices())
    finally:
        model.train(was_training)
    return matrix.compute(data.class_names)
