"""Feature distillation at the boundaries a recipe leaves intact (FitNets-style hints): where they
are, a tap that records a network's outputs there, and the class-balanced relative error between
a student's and its teacher's features, added to a training loss (``distill.feature_weight``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compressor.outputs import model_output
from compressor.transforms.boundaries import changed_points, eval_mode, shared_boundaries

__all__ = ["FeatureHints", "FeatureTap", "hint_points", "pixel_weights", "weights_of", "balanced_weights", "relative_mse", "device_of"]


def hint_points(teacher: nn.Module, student: nn.Module, images: torch.Tensor) -> list[str]:
    """The boundaries feature distillation compares: the changed blocks (see :func:`reconstruct`)."""
    return changed_points(teacher, student, shared_boundaries(teacher, student, images[:1]), "block")


@dataclass(frozen=True)
class FeatureHints:
    """Feature distillation (FitNets' hints) at the blocks a student changed: the mean relative
    squared error between its tensors and the teacher's there, each position weighted as
    :func:`pixel_weights` says (by the class the teacher predicts), added to a training loss.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> teacher = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), nn.Conv2d(4, 2, 1))
        >>> student = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()), teacher[1])
        >>> hints = FeatureHints.between(student, teacher, torch.zeros(1, 3, 8, 8))
        >>> hints.points
        ('0',)
        >>> images = torch.randn(2, 3, 8, 8)
        >>> with FeatureHints.tap(hints, student) as ours:
        ...     _ = student(images)
        >>> with torch.no_grad(), FeatureHints.tap(hints, teacher) as theirs:
        ...     logits = teacher(images)
        >>> float(hints.loss(ours, theirs, logits).detach()) > 0
        True
    """

    points: tuple[str, ...]

    @classmethod
    def between(cls, student: nn.Module, teacher: nn.Module, example: torch.Tensor) -> FeatureHints | None:
        """The hints between ``student`` and ``teacher`` (None where they share no changed block)."""
        points = hint_points(teacher, student, example)
        return cls(tuple(points)) if points else None

    @staticmethod
    @contextmanager
    def tap(hints: FeatureHints | None, model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
        """Inside the block, ``model``'s tensors at the hint points are kept in the dict it yields."""
        if hints is None:
            yield {}
            return
        with FeatureTap(model, list(hints.points)) as tap:
            yield tap.outputs

    def loss(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        """The mean over the points both networks produced of the weighted relative squared error;
        ``logits`` (the teacher's output) give each position its weight."""
        weights = balanced_weights(logits.argmax(dim=1)) if logits.ndim == 4 else None
        terms = [relative_mse(student[name], teacher[name].detach(), weights)
                 for name in self.points if name in student and name in teacher and student[name].shape == teacher[name].shape]
        return torch.stack(terms).mean() if terms else logits.new_zeros(())


class FeatureTap:
    """A context that keeps the output tensor (with its graph) of each named module of ``model``."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.model, self.names = model, names
        self.outputs: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}  # how many times each module ran in the block (its last output is kept)
        self._handles: list = []

    def __enter__(self) -> FeatureTap:
        self.outputs.clear()
        self.calls.clear()
        for name in self.names:
            self._handles.append(self.model.get_submodule(name).register_forward_hook(self._hook_for(name)))
        return self

    def __exit__(self, *_exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook_for(self, name: str):
        def hook(_module: nn.Module, _args: tuple, output: object) -> None:
            self.calls[name] = self.calls.get(name, 0) + 1
            if isinstance(output, torch.Tensor):
                self.outputs[name] = output
        return hook


def relative_mse(output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``||output - target||^2 / ||target||^2`` (the square of the relative error), each position
    weighted by ``weights`` (``(N, 1, H, W)`` pixel weights, averaged down to the tensor's size)
    when given and the tensor is a feature map."""
    output, target = output.float(), target.float()  # bf16 features under autocast: the error in float32
    squares, reference = (output - target).pow(2), target.pow(2)
    if weights is not None and output.ndim == 4:
        pooled = F.adaptive_avg_pool2d(weights, output.shape[-2:])
        squares, reference = squares * pooled, reference * pooled
    return squares.sum() / reference.sum().clamp_min(1e-12)


@torch.no_grad()
def pixel_weights(teacher: nn.Module, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor | None:
    """``(N, 1, H, W)`` weights that give each class the teacher predicts the same total weight
    (inverse frequency of its predicted class, mean 1), so that a rare class (buildings: a few
    percent of the pixels) counts as much as the background; None when the output is not a map."""
    images = images.to(device_of(teacher, images.device))
    with eval_mode(teacher):
        return weights_of([model_output(teacher, batch) for batch in images.split(batch_size)])


def weights_of(logits: list[torch.Tensor]) -> torch.Tensor | None:
    """:func:`pixel_weights` from the teacher's output already at hand, batch by batch."""
    predicted = torch.cat([batch.argmax(dim=1) for batch in logits])
    return balanced_weights(predicted) if predicted.ndim == 3 else None


def balanced_weights(predicted: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` inverse-frequency weights of the classes in ``predicted`` ``(N, H, W)``, mean 1."""
    counts = torch.bincount(predicted.flatten()).double()
    present = counts > 0
    per_class = torch.zeros_like(counts)
    per_class[present] = predicted.numel() / (counts[present] * int(present.sum()))
    return per_class[predicted].to(torch.float32).unsqueeze(1)


def device_of(model: nn.Module, default: torch.device) -> torch.device:
    return next((parameter.device for parameter in model.parameters()), default)
