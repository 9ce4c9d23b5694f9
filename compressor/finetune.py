"""Fine-tuning a transformed network that inherited its weights: the ``finetune:`` section.

A network that starts from a trained parent's weights wants other settings than one
trained from scratch: a lower learning rate without warm-up (the weights are already
good; a from-scratch rate wipes them out), batch-norm statistics re-estimated on the new
network before anything else, and the parent as a distillation teacher. The section says
how, and :meth:`FinetuneConfig.train_config` turns the experiment's ``train:`` section
into the fine-tuning one (data, batch size, augmentation, loss and evaluation unchanged).

Example:
    >>> from compressor.train import TrainConfig
    >>> config = FinetuneConfig(lr=3e-4).train_config(TrainConfig(steps=120), distill=True)
    >>> config.steps, config.lr, config.warmup_fraction, config.distill.teacher
    (120, 0.0003, 0.0, 'parent')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from compressor.data.base import SegmentationData
from compressor.errors import ConfigError
from compressor.train import DistillConfig, TrainConfig
from compressor.train.precision import PRECISIONS
from compressor.transforms import TRANSFORMS, Recipe, TransformSpec
from compressor.transforms.reconstruct import METHODS, SOURCES

__all__ = ["FinetuneConfig", "calibration_batches", "with_calibration"]


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """How a network with inherited weights is fine-tuned (the ``finetune:`` section).

    Attributes:
        steps: optimizer steps, or ``auto`` (until validation stops improving, see
            :class:`~compressor.train.TrainConfig`; null: the ``train:`` section's).
        lr: peak learning rate (null: the ``train:`` section's).
        warmup_fraction: share of the steps spent warming up.
        bn_reestimate: batches of training patches that re-estimate every batch norm's
            statistics before the first step (a norm inside a replacement, as ``fire``'s
            ``norm`` or ``separable``'s ``mid_norm``, then normalizes too: inheritance is
            closest without inner norms, the transforms' default).
        calibrate: batches of training patches on which every transform refits the layers
            it changed by least squares (0: weights inherited from the parent alone).
        distill_weight: weight of the distillation term when distilling from the parent.
        temperature: distillation temperature.
        parent_steps: optimizer steps of the parent a search fine-tunes from (trained once
            and stored; null: the ``train:`` section's; the parent of a reference model built
            with its default arguments is then the stored baseline itself).
        reconstruct: before fine-tuning, train the parts the recipe changed to give the
            parent's tensors there, on unlabelled training patches (see
            :mod:`compressor.transforms.reconstruct`): ``hints`` (the whole network towards
            the parent's tensors at every changed block and its output), ``block`` (each
            changed block on its own), ``layer`` (each changed layer on its own), ``lstsq`` (each
            changed layer's last convolutions solved in closed form, layer after layer: no Adam), ``none``;
            null: ``hints`` in ``compressor compress``, ``none`` in a search (where it would
            cost every candidate its time).
        reconstruct_steps: Adam steps of the reconstruction (per point for ``layer`` and ``block``; ``lstsq`` takes none).
        reconstruct_batches: batches of training patches it runs on.
        reconstruct_source: where a point's input comes from for ``layer`` and ``block``:
            ``student`` (its own tensor, after the points before it) or ``teacher``.
        feature_weight: weight of feature distillation while fine-tuning: the relative
            squared error between the network's and the parent's tensors at the changed
            blocks (0: none; needs distillation from the parent).
        max_start_error: a network whose output error against the parent (relative and
            class-balanced, on the calibration patches, after any reconstruction) is above
            this "does not start close": compress and the search's trial say so. At 1.0 the
            student's output is no nearer the parent's than an all-zero output; measured on
            the building tile, students that started at 0.45-0.73 fine-tuned to their
            parent's score or above, and a fire student at 1.11 to IoU 0.
        precision: the fine-tuning's forward passes (``fp32``, ``bf16`` or ``auto``, as
            ``train.precision``; null: the ``train:`` section's), and the reconstruction's in ``compress`` and
            a search (the student's passes while it trains; every error it reports, in fp32; a study made
            before build version 6 reconstructs in fp32 still), and the evaluations' unless
            ``train.eval_precision`` says otherwise (a study made before build version 9 evaluates in
            fp32). The parent and the references are scored by the ``train:`` section (fp32 by default),
            so a candidate's difference to them holds the two precisions' gap (-0.06 [-0.18, +0.05] points
            on the quickstart's trials); ``train.eval_precision`` set scores every network alike. A
            search's parent and references train by the ``train:`` section, so ``bf16`` here speeds the
            inheriting candidates alone (with ``search.init: random`` candidates train by the ``train:``
            section too).
    """

    steps: int | Literal["auto"] | None = None
    lr: float | None = 3e-4
    warmup_fraction: float = 0.0
    bn_reestimate: int = 16
    calibrate: int = 0
    distill_weight: float = 0.5
    temperature: float = 2.0
    parent_steps: int | None = None
    reconstruct: str | None = None
    reconstruct_steps: int = 300
    reconstruct_batches: int = 32
    reconstruct_source: str = "student"
    feature_weight: float = 0.0
    max_start_error: float = 1.0
    precision: Literal["fp32", "bf16", "auto"] | None = None

    #: left out of the plain data (and so of a study's key) while at their defaults
    omit_when_default = ("reconstruct", "reconstruct_steps", "reconstruct_batches", "reconstruct_source",
                         "feature_weight", "max_start_error", "precision")

    def __post_init__(self) -> None:
        if isinstance(self.steps, str) and self.steps != "auto":
            raise ConfigError(f"finetune.steps must be a number of steps, 'auto' or null, got {self.steps!r}")
        for key in ("steps", "parent_steps"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str) and value < 1:
                raise ConfigError(f"finetune.{key} must be >= 1 or null, got {value}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"finetune.lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"finetune.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        for key in ("bn_reestimate", "calibrate"):
            if getattr(self, key) < 0:
                raise ConfigError(f"finetune.{key} must be >= 0 batches, got {getattr(self, key)}")
        DistillConfig(weight=self.distill_weight, temperature=self.temperature)  # same checks
        if self.reconstruct is not None and self.reconstruct not in METHODS:
            raise ConfigError(f"finetune.reconstruct must be one of {', '.join(METHODS)} or null, got {self.reconstruct!r}")
        if self.reconstruct_source not in SOURCES:
            raise ConfigError(f"finetune.reconstruct_source must be one of {', '.join(SOURCES)}, got {self.reconstruct_source!r}")
        for key in ("reconstruct_steps", "reconstruct_batches"):
            if getattr(self, key) < 1:
                raise ConfigError(f"finetune.{key} must be >= 1, got {getattr(self, key)}")
        if self.feature_weight < 0:
            raise ConfigError(f"finetune.feature_weight must be >= 0, got {self.feature_weight}")
        if not self.max_start_error > 0:
            raise ConfigError(f"finetune.max_start_error must be > 0, got {self.max_start_error}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"finetune.precision must be one of {', '.join(PRECISIONS)} or null, got {self.precision!r}")

    def reconstruction(self, default: str) -> str:
        """The reconstruction method to run: this section's, else the command's ``default``."""
        return self.reconstruct if self.reconstruct is not None else default

    def train_config(self, train: TrainConfig, *, distill: bool) -> TrainConfig:
        """``train`` with this section's steps, rate, warm-up and batch-norm re-estimation,
        and distillation from the parent if ``distill``."""
        return dataclasses.replace(
            train.with_steps(self.steps or train.steps),  # a schedule that fits the steps
            lr=self.lr if self.lr is not None else train.lr,
            warmup_fraction=self.warmup_fraction,
            bn_reestimate=self.bn_reestimate,
            precision=self.precision or train.precision,
            distill=DistillConfig(
                teacher="parent" if distill else None, weight=self.distill_weight, temperature=self.temperature,
                feature_weight=self.feature_weight if distill else 0.0,
            ),
        )


def calibration_batches(data: SegmentationData, count: int, *, batch_size: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` batches of training patches (images only), drawn with their own seeded generator."""
    generator = torch.Generator().manual_seed(seed + 104729)
    batches = []
    for _ in range(count):
        indices = torch.randint(0, len(data.train), (batch_size,), generator=generator).tolist()
        batches.append(torch.stack([data.train[index][0] for index in indices]))
    return batches


def with_calibration(recipe: Recipe, batches: int) -> Recipe:
    """``recipe`` with ``calibrate: batches`` on every step that takes it and does not set it."""
    if not batches:
        return recipe
    steps = []
    for step in recipe.steps:
        takes = any(parameter.name == "calibrate" for parameter in TRANSFORMS.get(step.name).parameters())
        steps.append(TransformSpec(step.name, {**step.params, "calibrate": batches}, step.optional)
                     if takes and "calibrate" not in step.params else step)
    return Recipe.of(steps)
