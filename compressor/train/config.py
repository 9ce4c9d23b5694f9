"""How a model is trained: the ``train:`` section of an experiment (:class:`TrainConfig`) and distillation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from compressor.errors import ConfigError

__all__ = ["DistillConfig", "TrainConfig"]


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
        feature_weight: weight of feature distillation: the mean relative squared error
            between the student's and the teacher's tensors at the blocks the student
            changed (the boundaries both networks share; see
            :func:`compressor.transforms.feature_hints.hint_points`), added to the loss
            (0: none).
    """

    teacher: str | None = None
    weight: float = 0.5
    temperature: float = 2.0
    feature_weight: float = 0.0

    omit_when_default = ("feature_weight",)

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"train.distill.weight must be >= 0, got {self.weight}")
        if not self.temperature > 0:
            raise ConfigError(f"train.distill.temperature must be > 0, got {self.temperature}")
        if self.feature_weight < 0:
            raise ConfigError(f"train.distill.feature_weight must be >= 0, got {self.feature_weight}")

    @property
    def active(self) -> bool:
        return self.teacher is not None and self.weight > 0


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train (the ``train:`` section of an experiment).

    Attributes:
        steps: optimizer steps, or ``auto``: train until the validation score stops
            improving (``patience`` evaluations every ``eval_every`` steps without a gain of
            more than ``min_delta``), at most ``max_steps``, and keep the best weights seen.
        batch_size: patches per step.
        optimizer: ``adamw`` or ``sgd`` (with Nesterov momentum).
        lr: peak learning rate.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        momentum: SGD momentum.
        schedule: ``cosine`` (decay to 0 after the warm-up), ``constant``, or ``plateau``
            (with ``steps: auto``: constant after the warm-up, times 0.3 each time
            ``lr_patience`` evaluations pass without a gain; what suits a run of unknown length).
        warmup_fraction: share of the steps (of ``max_steps`` with ``steps: auto``) spent
            ramping the learning rate up linearly.
        dice_weight: weight of the soft Dice loss added to the cross-entropy.
        class_weights: ``auto`` (inverse square root of the class frequencies in the
            training patches), ``none``, or one weight per class.
        augment: random flips and 90-degree rotations of training patches.
        grad_clip: maximum gradient norm (null: no clipping).
        seed: seeds the model's initialization (when the caller builds it after
            :func:`seed_everything`), the patch order and the augmentations.
        threads: torch CPU threads while training: ``auto`` (the default: the cores no
            other program keeps busy, at most those this process may use, read again about
            once a trial, see :mod:`compressor.threads`), a count, or null (leave as is).
        device: ``auto`` (a GPU when present), ``cpu``, ``cuda``, ``cuda:1``...
        eval_window: side of the sliding window used for evaluation.
        eval_overlap: overlap of neighbouring evaluation windows in pixels.
        eval_batch_size: windows per forward pass during evaluation.
        progress: show a progress bar (on a terminal).
        bn_reestimate: before the first step, batches of training patches run through the
            model (no gradient) to re-estimate every batch norm's running statistics from
            scratch; what a transformed network with inherited norms needs (0: none).
        distill: distillation from a teacher (:class:`DistillConfig`).
        max_steps: with ``steps: auto``, the most optimizer steps.
        patience: with ``steps: auto``, evaluations without a gain before training stops.
        eval_every: with ``steps: auto``, optimizer steps between validation evaluations.
        min_delta: with ``steps: auto``, the least rise of the validation score that counts
            as a gain.
        lr_patience: with the ``plateau`` schedule, evaluations without a gain before each drop
            of the rate (null: ``patience // 2``; with an even patience a run then stops one drop after its last gain).
            Below half of ``patience`` the rate drops more than once before the run stops: a
            noisy run then ends at a rate well under the one it learned at, as a network trained
            to convergence does (2 drops: 0.09x).
        smoothing: with ``steps: auto``, how many of the latest evaluations the rule averages
            before it compares (1: each on its own); for a noisy validation curve, where a few
            unlucky evaluations otherwise stop a network still learning. The weights kept are
            those at the best mean (one lucky evaluation is not the best network).
        precision: the training's forward passes: ``fp32`` (the default), ``bf16`` (autocast:
            convolutions in bfloat16, weights, optimizer and losses in float32), or ``auto``
            (bf16 where the hardware runs it, see :mod:`compressor.train.precision`).
        eval_precision: the evaluations' forward passes: null (the default) as ``precision``,
            or ``fp32``, ``bf16``, ``auto`` whatever the training ran in. bf16 evaluates a
            candidate 1.7-1.9x faster on a CPU that runs it; the quickstart's trials scored -0.06
            [-0.18, +0.05] points from fp32 (paired; BENCHMARKS.md, "Evaluation in the training's
            precision"); ``fp32`` for scores read in full precision.

    The six ``steps: auto`` settings, ``precision`` and ``eval_precision`` are left out of the plain
    data while at their defaults, so results stored before they existed keep their keys.
    """

    omit_when_default: ClassVar[tuple[str, ...]] = ("max_steps", "patience", "eval_every", "min_delta", "smoothing",
                                                    "lr_patience", "precision", "eval_precision")

    steps: int | Literal["auto"] = 200
    batch_size: int = 8
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: Literal["cosine", "constant", "plateau"] = "cosine"
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
    max_steps: int = 5000
    patience: int = 6
    eval_every: int = 100
    min_delta: float = 0.001
    smoothing: int = 1
    lr_patience: int | None = None
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    eval_precision: Literal["fp32", "bf16", "auto"] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.steps, str) and self.steps != "auto":
            raise ConfigError(f"train.steps must be a number of steps or 'auto', got {self.steps!r}")
        for key in ("steps", "batch_size", "eval_window", "eval_batch_size", "max_steps", "patience", "eval_every",
                    "smoothing"):
            value = getattr(self, key)
            if not isinstance(value, str) and value < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {value}")
        if self.min_delta < 0:
            raise ConfigError(f"train.min_delta must be >= 0, got {self.min_delta}")
        if self.lr_patience is not None and not 1 <= self.lr_patience <= self.patience:
            raise ConfigError(f"train.lr_patience must be in [1, train.patience = {self.patience}] evaluations "
                              f"(or null: half the patience), got {self.lr_patience}")
        if self.auto and self.schedule == "cosine":
            raise ConfigError(
                "train.steps: auto needs train.schedule: plateau (or constant); a cosine decays over a known "
                "number of steps"
            )
        if not self.auto and self.schedule == "plateau":
            raise ConfigError("train.schedule: plateau needs train.steps: auto (it lowers the rate when "
                              "validation stops improving)")
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
        for key in ("precision", "eval_precision"):
            value = getattr(self, key)
            if value not in ("fp32", "bf16", "auto") and not (key == "eval_precision" and value is None):
                raise ConfigError(f"train.{key} must be fp32, bf16 or auto{' (or null: as train.precision)' if key == 'eval_precision' else ''}, "
                                  f"got {value!r}")

    def with_steps(self, steps: int | str) -> TrainConfig:
        """This recipe for ``steps`` (a count or ``auto``), with a schedule that fits it: a cosine
        becomes ``plateau`` for ``auto``, ``plateau`` becomes a cosine for a count.

        Example:
            >>> TrainConfig().with_steps("auto").schedule, TrainConfig(steps="auto", schedule="plateau").with_steps(50).schedule
            ('plateau', 'cosine')
        """
        schedule = self.schedule
        if steps == "auto" and schedule == "cosine":
            schedule = "plateau"
        elif steps != "auto" and schedule == "plateau":
            schedule = "cosine"
        return dataclasses.replace(self, steps=steps, schedule=schedule)

    @property
    def evaluation_precision(self) -> str:
        """The precision evaluations run in: ``eval_precision``, or ``precision`` where that is null
        (``auto`` is resolved on the device by :func:`~compressor.train.precision.resolve_precision`)."""
        return self.eval_precision or self.precision

    @property
    def auto(self) -> bool:
        """Whether training runs until validation stops improving (``steps: auto``)."""
        return self.steps == "auto"

    @property
    def step_limit(self) -> int:
        """The most optimizer steps: ``steps``, or ``max_steps`` with ``steps: auto``."""
        return self.max_steps if self.auto else int(self.steps)
