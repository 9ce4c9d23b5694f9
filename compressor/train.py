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
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from compressor.data.base import Scene, SegmentationData
from compressor.data.tiling import window_starts
from compressor.errors import CompressorError, ConfigError, first_line
from compressor.io import atomic_write
from compressor.metrics import ConfusionMatrix, SegmentationMetrics
from compressor.outputs import model_output
from compressor.threads import torch_threads

__all__ = [
    "TrainConfig",
    "DistillConfig",
    "distillation_loss",
    "reestimate_batchnorm",
    "TrainResult",
    "TrainingError",
    "CheckpointError",
    "StopTraining",
    "Callback",
    "train",
    "evaluate",
    "predict_scene",
    "dice_loss",
    "weighted_cross_entropy",
    "deterministic_kernels",
    "class_weights",
    "seed_everything",
    "resolve_device",
    "evaluation_steps",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "Checkpoint",
]


class TrainingError(CompressorError):
    """Training failed (a non-finite loss or gradient); names the step and the reason."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"training failed at step {step}: {reason}")
        self.step = step
        self.reason = reason


class CheckpointError(CompressorError):
    """A checkpoint cannot be read or does not fit the model."""


class StopTraining(Exception):
    """Raised by a callback to end training now; the last evaluation becomes the result."""


Callback = Callable[[int, SegmentationMetrics], "bool | None"]
"""``callback(step, metrics)``: return False (or raise :class:`StopTraining`) to stop."""


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """Distillation from a teacher (the ``train.distill:`` section).

    The student's loss gets ``weight * T**2 * KL(softmax(teacher / T) || softmax(student / T))``,
    averaged over pixels, added to the task loss (Hinton et al.'s scaling keeps the
    gradient's size independent of ``T``).

    Attributes:
        teacher: ``parent`` (the network a candidate was transformed from), a baseline
            (``unet``, ``micronet``: the experiment's stored baseline), or a model file saved
            by compressor; null: no distillation.
        weight: weight of the distillation term.
        temperature: softening temperature ``T``.
    """

    teacher: str | None = None
    weight: float = 0.5
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"train.distill.weight must be >= 0, got {self.weight}")
        if not self.temperature > 0:
            raise ConfigError(f"train.distill.temperature must be > 0, got {self.temperature}")

    @property
    def active(self) -> bool:
        return self.teacher is not None and self.weight > 0


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train (the ``train:`` section of an experiment).

    Attributes:
        steps: optimizer steps.
        batch_size: patches per step.
        optimizer: ``adamw`` or ``sgd`` (with Nesterov momentum).
        lr: peak learning rate.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        momentum: SGD momentum.
        schedule: ``cosine`` (decay to 0 after the warm-up) or ``constant``.
        warmup_fraction: share of the steps spent ramping the learning rate up linearly.
        dice_weight: weight of the soft Dice loss added to the cross-entropy.
        class_weights: ``auto`` (inverse square root of the class frequencies in the
            training patches), ``none``, or one weight per class.
        augment: random flips and 90-degree rotations of training patches.
        grad_clip: maximum gradient norm (null: no clipping).
        seed: seeds the model's initialization (when the caller builds it after
            :func:`seed_everything`), the patch order and the augmentations.
        threads: torch CPU threads while training: ``auto`` (the default: the cores this
            process may use, see :mod:`compressor.threads`), a count, or null (leave as is).
        device: ``auto`` (a GPU when present), ``cpu``, ``cuda``, ``cuda:1``...
        eval_window: side of the sliding window used for evaluation.
        eval_overlap: overlap of neighbouring evaluation windows in pixels.
        eval_batch_size: windows per forward pass during evaluation.
        progress: show a progress bar (on a terminal).
        bn_reestimate: before the first step, batches of training patches run through the
            model (no gradient) to re-estimate every batch norm's running statistics from
            scratch; what a transformed network with inherited norms needs (0: none).
        distill: distillation from a teacher (:class:`DistillConfig`).
    """

    steps: int = 200
    batch_size: int = 8
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_fraction: float = 0.05
    dice_weight: float = 0.5
    class_weights: Literal["auto", "none"] | list[float] = "auto"
    augment: bool = True
    grad_clip: float | None = 5.0
    seed: int = 0
    threads: int | Literal["auto"] | None = "auto"
    device: str = "auto"
    eval_window: int = 256
    eval_overlap: int = 32
    eval_batch_size: int = 4
    progress: bool = True
    bn_reestimate: int = 0
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "eval_window", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"train.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0 <= self.eval_overlap < self.eval_window:
            raise ConfigError(f"train.eval_overlap must be in [0, eval_window), got {self.eval_overlap}")
        if isinstance(self.threads, int) and self.threads < 1:
            raise ConfigError(f"train.threads must be 'auto' or >= 1, got {self.threads}")
        if self.bn_reestimate < 0:
            raise ConfigError(f"train.bn_reestimate must be >= 0 batches, got {self.bn_reestimate}")


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        metrics: the final evaluation, or the last intermediate one if stopped early.
        steps_done: optimizer steps taken.
        stopped_early: a callback stopped the run.
        history: ``(step, metrics)`` of every evaluation, in order.
        losses: the training loss of every step.
        train_seconds: wall time of the optimizer steps (data and augmentation included).
        eval_seconds: wall time of the evaluations.
        device: where it ran.
        threads: torch CPU threads it ran with.
    """

    metrics: SegmentationMetrics
    steps_done: int
    stopped_early: bool
    history: list[tuple[int, SegmentationMetrics]]
    losses: list[float]
    train_seconds: float
    eval_seconds: float
    device: str
    threads: int

    @property
    def wall_seconds(self) -> float:
        return self.train_seconds + self.eval_seconds

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (the loss curve is kept, 4 significant digits)."""
        return {
            "metrics": self.metrics.to_dict(),
            "steps_done": self.steps_done,
            "stopped_early": self.stopped_early,
            "history": [{"step": step, **metrics.to_dict()} for step, metrics in self.history],
            "losses": [float(f"{loss:.4g}") for loss in self.losses],
            "train_seconds": round(self.train_seconds, 3),
            "eval_seconds": round(self.eval_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "device": self.device,
            "threads": self.threads,
        }


def seed_everything(seed: int) -> None:
    """Seeds torch (CPU and GPUs) and numpy's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first GPU when one is present, else the CPU.

    Raises:
        ConfigError: an unknown device, or a GPU asked for where there is none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} asked for, but no CUDA GPU is available")
    return device


def evaluation_steps(total_steps: int, at: Sequence[float | int]) -> list[int]:
    """Turns fractions of the run (floats in (0, 1)) and step numbers (ints) into sorted steps.

    The last step is always evaluated anyway and is left out.

    Example:
        >>> evaluation_steps(900, [1 / 9, 1 / 3, 450])
        [100, 300, 450]
    """
    steps = set()
    for point in at:
        if isinstance(point, float):
            if not 0 < point < 1:
                raise ConfigError(f"an evaluation fraction must be in (0, 1), got {point}")
            step = max(1, round(point * total_steps))
        else:
            step = int(point)
            if step < 1:
                raise ConfigError(f"an evaluation step must be >= 1, got {point}")
        if step < total_steps:
            steps.add(step)
    return sorted(steps)


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

    PyTorch's weighted 2-d reduction adds with atomics on CUDA (a different sum each run);
    there the loss is :func:`summed_cross_entropy`. On the CPU PyTorch's own reduction is
    kept, so CPU results are unchanged to the bit.
    """
    if weights is None or not logits.is_cuda:
        return F.cross_entropy(logits, target, weight=weights)
    return summed_cross_entropy(logits, target, weights)


def summed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted cross-entropy as a plain sum: each pixel's loss times its class weight, over the weights' sum.

    Example:
        >>> logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
        >>> weights = torch.tensor([0.2, 1.0, 3.0])
        >>> torch.allclose(summed_cross_entropy(logits, target, weights), F.cross_entropy(logits, target, weight=weights))
        True
    """
    pixel_weights = weights[target]
    return (F.cross_entropy(logits, target, reduction="none") * pixel_weights).sum() / pixel_weights.sum()


@contextlib.contextmanager
def deterministic_kernels(device: torch.device) -> Iterator[None]:
    """On a GPU, runs the block with cuDNN's and PyTorch's deterministic kernels, then restores the settings.

    Where an operation has no deterministic CUDA kernel PyTorch warns (``warn_only``) instead
    of failing, unless the caller had asked for the strict mode already. ``CUBLAS_WORKSPACE_CONFIG``
    is set (when unset) so cuBLAS is deterministic too; cuBLAS reads it once, when first used in
    the process, so it stays set afterwards. On the CPU nothing changes.
    """
    if device.type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    cudnn = torch.backends.cudnn
    previous = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn.deterministic, cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=previous[3] if previous[2] else True)
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = previous[0], previous[1]
        torch.use_deterministic_algorithms(previous[2], warn_only=previous[3])


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """``1 -`` the mean over classes of the soft Dice score, pooled over the batch.

    Example:
        >>> target = torch.tensor([[[0, 1], [1, 1]]])
        >>> perfect = F.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
        >>> round(float(dice_loss(perfect, target)), 4)
        0.0
    """
    probabilities = logits.softmax(dim=1)
    one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probabilities.dtype)
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)
    total = probabilities.sum(dims) + one_hot.sum(dims)
    return 1 - ((2 * intersection + smooth) / (total + smooth)).mean()


def train(
    model: nn.Module,
    data: SegmentationData,
    config: TrainConfig | None = None,
    *,
    evaluate_at: Sequence[float | int] = (),
    callback: Callback | None = None,
    checkpoint_path: str | Path | None = None,
    description: str = "train",
    teacher: nn.Module | None = None,
) -> TrainResult:
    """Trains ``model`` in place on ``data`` and evaluates it on the whole validation set.

    Args:
        model: any module mapping ``(N, C, H, W)`` to logits ``(N, classes, H, W)``.
        data: training patches and validation scenes.
        config: the recipe (defaults: :class:`TrainConfig`).
        evaluate_at: extra evaluations during training, as fractions of the run
            (``1 / 9``) or step numbers; see :func:`evaluation_steps`.
        callback: called as ``callback(step, metrics)`` after each of those evaluations;
            returning False or raising :class:`StopTraining` ends the run there.
        checkpoint_path: if given, a checkpoint (weights, optimizer state, step,
            metrics) is written there after every evaluation; see :func:`save_checkpoint`.
        description: label of the progress bar.
        teacher: the model to distill from when ``config.distill`` is active (the caller
            resolves ``config.distill.teacher`` to a module); run in eval mode, never trained.

    Returns:
        A :class:`TrainResult`; the model is left on the training device, in eval mode.

    Raises:
        TrainingError: the loss or the gradient norm stopped being finite.
        ConfigError: the model's output does not fit the data, or the teacher's output does
            not fit the model's (names the shapes); distillation asked for without a teacher.

    Example:
        >>> from compressor.data import SyntheticConfig
        >>> from compressor.models import micronet
        >>> data = SyntheticConfig(patch_size=16, val_images=1, val_size=32).build()
        >>> result = train(micronet(base_width=4, norm="batch"), data,
        ...                TrainConfig(steps=2, batch_size=2, progress=False), evaluate_at=[1])
        >>> [step for step, _ in result.history], result.steps_done
        ([1, 2], 2)
    """
    config = config or TrainConfig()
    device = resolve_device(config.device)
    checkpoints = evaluation_steps(config.steps, evaluate_at)
    distill = config.distill if config.distill.active else None
    if distill is not None and teacher is None:
        raise ConfigError(f"train.distill.teacher is {config.distill.teacher!r} but no teacher model was given")
    with torch_threads(config.threads) as threads, deterministic_kernels(device):
        generator = torch.Generator().manual_seed(config.seed)
        model.to(device).train()
        if distill is not None:
            # The caller's teacher (a search's parent, the base of every candidate) stays where it is.
            here = next((parameter.device for parameter in teacher.parameters()), device)
            teacher = (teacher if here == device else copy.deepcopy(teacher).to(device)).eval()
        if config.bn_reestimate:
            reestimate_batchnorm(model, data, batches=config.bn_reestimate, batch_size=config.batch_size, seed=config.seed)
        weights = class_weights(data.class_frequencies(), config.class_weights)
        weights = None if weights is None else weights.to(device)
        optimizer = _optimizer(model, config)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
        batches = _batches(data, config, generator)
        history: list[tuple[int, SegmentationMetrics]] = []
        losses: list[float] = []
        train_seconds = eval_seconds = 0.0
        stopped = False
        step = 0
        progress = tqdm(total=config.steps, desc=description, unit="step", disable=None if config.progress else True, leave=False)
        try:
            while step < config.steps and not stopped:
                started = time.perf_counter()
                images, masks = next(batches)
                images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
                logits = _forward_checked(model, images, data.num_classes) if step == 0 else model_output(model, images)
                loss = weighted_cross_entropy(logits, masks, weights)
                if config.dice_weight:
                    loss = loss + config.dice_weight * dice_loss(logits, masks)
                if distill is not None:
                    with torch.no_grad():
                        target = _teacher_logits(teacher, images, logits) if step == 0 else model_output(teacher, images)
                    loss = loss + distill.weight * distillation_loss(logits, target, distill.temperature)
                value = float(loss.detach())
                step += 1
                if not math.isfinite(value):
                    raise TrainingError(step, f"the loss is {value}; lower train.lr or check the data")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
                    if not math.isfinite(norm):
                        raise TrainingError(step, f"the gradient norm is {norm}; lower train.lr")
                optimizer.step()
                scheduler.step()
                losses.append(value)
                train_seconds += time.perf_counter() - started
                progress.update()
                if step % 10 == 0 or step == config.steps:
                    progress.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
                if step in checkpoints:
                    started = time.perf_counter()
                    metrics = evaluate(model, data, config)
                    eval_seconds += time.perf_counter() - started
                    history.append((step, metrics))
                    if checkpoint_path is not None:
                        save_checkpoint(checkpoint_path, model, step=step, metrics=metrics, optimizer=optimizer)
                    stopped = _wants_stop(callback, step, metrics)
        finally:
            progress.close()
        if not stopped:
            started = time.perf_counter()
            history.append((step, evaluate(model, data, config)))
            eval_seconds += time.perf_counter() - started
            if checkpoint_path is not None:
                save_checkpoint(checkpoint_path, model, step=step, metrics=history[-1][1], optimizer=optimizer)
        model.eval()
        return TrainResult(
            metrics=history[-1][1], steps_done=step, stopped_early=stopped, history=history, losses=losses,
            train_seconds=train_seconds, eval_seconds=eval_seconds, device=str(device), threads=threads,
        )


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


def _teacher_logits(teacher: nn.Module, images: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """The teacher's first output, with a clear error if it cannot be compared with the student's."""
    try:
        logits = model_output(teacher, images)
    except RuntimeError as error:
        first = first_line(error)
        raise ConfigError(f"the distillation teacher cannot run on a batch of shape {tuple(images.shape)}: {first}") from None
    if logits.shape != student_logits.shape:  # model_output gives a tensor, or says why not
        raise ConfigError(
            f"the distillation teacher maps input {tuple(images.shape)} to {tuple(logits.shape)}, the model being trained to "
            f"{tuple(student_logits.shape)}; they must match (same classes, same height and width)"
        )
    return logits


@torch.no_grad()
def reestimate_batchnorm(
    model: nn.Module, data: SegmentationData, *, batches: int, batch_size: int = 8, seed: int = 0
) -> int:
    """Recomputes every batch norm's running mean and variance from ``batches`` training batches.

    The statistics are reset and averaged over the batches (cumulative, not the usual
    moving average), the weights are not touched, and the model goes back to its mode. The
    patches are drawn with their own generator, so the training that follows sees the same
    batches as without it. Returns the number of batch-norm layers re-estimated.
    """
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches < 1:
        return 0
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    device = next((parameter.device for parameter in model.parameters()), torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed + 7919)
    was_training = model.training
    model.train()
    try:
        for _ in range(batches):
            indices = torch.randint(0, len(data.train), (batch_size,), generator=generator).tolist()
            model(torch.stack([data.train[index][0] for index in indices]).to(device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    return len(norms)


def _wants_stop(callback: Callback | None, step: int, metrics: SegmentationMetrics) -> bool:
    if callback is None:
        return False
    try:
        return callback(step, metrics) is False
    except StopTraining:
        return True


def _forward_checked(model: nn.Module, images: torch.Tensor, num_classes: int) -> torch.Tensor:
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


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


def _schedule(config: TrainConfig) -> Callable[[int], float]:
    warmup = int(config.warmup_fraction * config.steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, config.steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _batches(
    data: SegmentationData, config: TrainConfig, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled full batches; every epoch is a new permutation of the patches."""
    count = len(data.train)
    while True:
        order = torch.randperm(count, generator=generator).tolist()
        for start in range(0, max(count - config.batch_size, 0) + 1, config.batch_size):
            items = [data.train[index] for index in order[start:start + config.batch_size]]
            images = torch.stack([image for image, _ in items])
            masks = torch.stack([mask for _, mask in items])
            if config.augment:
                images, masks = _augment(images, masks, generator)
            yield images, masks


def _augment(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One of the 8 symmetries of the square for each patch: a flip, then 0-3 quarter turns."""
    choices = torch.randint(0, 8, (images.shape[0],), generator=generator).tolist()
    out_images, out_masks = [], []
    for image, mask, choice in zip(images, masks, choices):
        if choice >= 4:
            image, mask = image.flip(-1), mask.flip(-1)
        turns = choice % 4
        out_images.append(torch.rot90(image, turns, dims=(-2, -1)))
        out_masks.append(torch.rot90(mask, turns, dims=(-2, -1)))
    return torch.stack(out_images), torch.stack(out_masks)


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


def evaluate(model: nn.Module, data: SegmentationData, config: TrainConfig | None = None) -> SegmentationMetrics:
    """Metrics of ``model`` over every pixel of every validation scene (sliding window).

    The model is evaluated in eval mode and returned to the mode it was in.
    """
    config = config or TrainConfig()
    device = next((parameter.device for parameter in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(data.num_classes)
    try:
        for scene in data.val:
            probabilities = predict_scene(
                model, scene, data, window=config.eval_window, overlap=config.eval_overlap,
                batch_size=config.eval_batch_size, device=device,
            )
            matrix.update(probabilities.argmax(axis=0), scene.class_indices())
    finally:
        model.train(was_training)
    return matrix.compute(data.class_names)


@dataclass
class Checkpoint:
    """The content of a checkpoint file."""

    state_dict: dict[str, torch.Tensor]
    step: int | None = None
    metrics: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_CHECKPOINT_FORMAT = "compressor-checkpoint-1"


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    step: int | None = None,
    metrics: SegmentationMetrics | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes the model's weights (and optionally the optimizer's state) atomically.

    The file is written next to ``path`` under a temporary name and renamed over it, so
    an interrupted save never leaves a truncated checkpoint. ``extra`` holds plain data
    (the model spec, the recipe) needed to rebuild the model before loading.
    """
    payload = {
        "format": _CHECKPOINT_FORMAT,
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "step": step,
        "metrics": None if metrics is None else metrics.to_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "extra": dict(extra or {}),
    }
    return atomic_write(path, lambda file: torch.save(payload, file))


def load_checkpoint(path: str | Path, model: nn.Module | None = None, *, map_location: str = "cpu") -> Checkpoint:
    """Reads a checkpoint (tensors and plain data only) and loads its weights into ``model``.

    Raises:
        CheckpointError: the file is missing or not a checkpoint, or its weights do not
            fit ``model`` (names the first mismatched keys).
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds on a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a compressor checkpoint")
    checkpoint = Checkpoint(
        state_dict=payload["state_dict"], step=payload.get("step"), metrics=payload.get("metrics"),
        optimizer=payload.get("optimizer"), extra=payload.get("extra") or {},
    )
    if model is not None:
        missing, unexpected = _key_mismatch(model.state_dict(), checkpoint.state_dict)
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        try:
            model.load_state_dict(checkpoint.state_dict)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[-1].strip()
            raise CheckpointError(f"{path}: weights do not fit the model: {first}") from None
    return checkpoint


def load_weights(path: str | Path, model: nn.Module) -> None:
    """Loads weights into ``model`` from a compressor checkpoint or a plain ``state_dict`` file.

    Only tensors and plain data are read (``weights_only``): a weights file cannot run code.

    Raises:
        CheckpointError: the file is missing or unreadable, or its weights belong to another
            architecture (names the first mismatched keys or shapes).
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds on a bad file
        first = first_line(error)
        raise CheckpointError(f"{path}: not a readable weights file (a state_dict or a compressor checkpoint): {first}") from None
    if isinstance(payload, dict) and payload.get("format") == _CHECKPOINT_FORMAT:
        load_checkpoint(path, model)
        return
    if not isinstance(payload, dict) or not all(isinstance(value, torch.Tensor) for value in payload.values()):
        raise CheckpointError(f"{path}: not a state_dict (a mapping of names to tensors) nor a compressor checkpoint")
    missing, unexpected = _key_mismatch(model.state_dict(), payload)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights of another architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    mismatched = [key for key, value in model.state_dict().items() if tuple(value.shape) != tuple(payload[key].shape)]
    if mismatched:
        key = mismatched[0]
        raise CheckpointError(
            f"{path}: weights of another architecture: {key} is {tuple(payload[key].shape)} in the file, "
            f"{tuple(model.state_dict()[key].shape)} in the model ({len(mismatched)} such tensors)"
        )
    model.load_state_dict(payload)


def _key_mismatch(expected: dict[str, Any], given: dict[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
