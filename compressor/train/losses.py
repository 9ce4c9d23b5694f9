"""The training losses: class-weighted cross-entropy, soft Dice, and distillation from a teacher."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from compressor.errors import ConfigError
from compressor.metrics import IGNORE_INDEX

__all__ = ["class_weights", "weighted_cross_entropy", "summed_cross_entropy", "dice_loss", "distillation_loss"]


def class_weights(frequencies: np.ndarray, setting: str | Sequence[float]) -> torch.Tensor | None:
    """Cross-entropy class weights.

    ``auto`` gives ``1 / sqrt(frequency)``, scaled so the average weight over pixels is 1
    (the loss keeps its usual size); classes never seen get the largest weight seen.

    Example:
        >>> [round(weight, 2) for weight in class_weights(np.array([0.96, 0.04]), "auto").tolist()]
        [0.87, 4.24]
    """
    count = len(frequencies)
    if setting == "none":
        return None
    if setting == "auto":
        seen = frequencies > 0
        weights = np.zeros(count)
        weights[seen] = 1 / np.sqrt(frequencies[seen])
        weights[~seen] = weights[seen].max() if seen.any() else 1.0
        weights /= float((weights * frequencies).sum()) or 1.0
        return torch.tensor(weights, dtype=torch.float32)
    if isinstance(setting, str) or len(setting) != count:
        raise ConfigError(f"train.class_weights: expected 'auto', 'none' or {count} numbers, got {setting!r}")
    if any(weight < 0 for weight in setting):
        raise ConfigError(f"train.class_weights must be >= 0, got {list(setting)}")
    return torch.tensor(list(setting), dtype=torch.float32)


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``F.cross_entropy(logits, target, weight=weights)``, reduced so that it is deterministic on a GPU.

    Unlabelled pixels (:data:`~compressor.metrics.IGNORE_INDEX`) add nothing; a batch with no
    labelled pixel has loss 0 (with a gradient, of zeros).

    PyTorch's weighted 2-d reduction adds with atomics on CUDA (a different sum each run);
    there the loss is :func:`summed_cross_entropy`. On the CPU PyTorch's own reduction is
    kept, so CPU results are unchanged to the bit.
    """
    if not bool((target != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    if weights is None or not logits.is_cuda:
        return F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE_INDEX)
    return summed_cross_entropy(logits, target, weights)


def summed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted cross-entropy as a plain sum: each pixel's loss times its class weight, over the weights' sum.

    Example:
        >>> logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
        >>> weights = torch.tensor([0.2, 1.0, 3.0])
        >>> torch.allclose(summed_cross_entropy(logits, target, weights), F.cross_entropy(logits, target, weight=weights))
        True
    """
    labelled = target != IGNORE_INDEX
    pixel_weights = weights[torch.where(labelled, target, 0)] * labelled
    losses = F.cross_entropy(logits, target, reduction="none", ignore_index=IGNORE_INDEX)
    return (losses * pixel_weights).sum() / pixel_weights.sum()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """``1 -`` the mean over classes of the soft Dice score, pooled over the batch's labelled pixels.

    Example:
        >>> target = torch.tensor([[[0, 1], [1, 1]]])
        >>> perfect = F.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
        >>> round(float(dice_loss(perfect, target)), 4)
        0.0
    """
    labelled = (target != IGNORE_INDEX).unsqueeze(1)
    probabilities = logits.softmax(dim=1) * labelled
    one_hot = F.one_hot(torch.where(labelled.squeeze(1), target, 0), logits.shape[1]).permute(0, 3, 1, 2)
    one_hot = one_hot.to(probabilities.dtype) * labelled
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)
    total = probabilities.sum(dims) + one_hot.sum(dims)
    return 1 - ((2 * intersection + smooth) / (total + smooth)).mean()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Pixel-wise ``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over pixels.

    Example:
        >>> logits = torch.randn(2, 3, 4, 4)
        >>> float(distillation_loss(logits, logits, 2.0)) == 0.0
        True
        >>> float(distillation_loss(logits, -logits, 2.0)) > 0
        True
    """
    log_student = F.log_softmax(student / temperature, dim=1)
    log_teacher = F.log_softmax(teacher.detach() / temperature, dim=1)
    per_pixel = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)
    return per_pixel.mean() * temperature**2
