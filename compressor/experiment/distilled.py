"""``compressor.train_model``: one model of an experiment trained, its distillation teacher found.

:func:`compressor.experiment.runs.train_model` takes the teacher it is given (the baselines are
trained by it, so it cannot look them up); this is the same with the teacher that
``train.distill.teacher`` names resolved first when distillation is on and none is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from compressor.experiment import runs
from compressor.experiment.baselines import resolve_teacher
from compressor.experiment.config import Experiment

__all__ = ["train_model"]


def train_model(
    experiment: Experiment, *, teacher: nn.Module | None = None, cache_dir: str | Path | None = None, **options: Any
) -> runs.TrainedModel:
    """:func:`compressor.experiment.runs.train_model` (same arguments), with the teacher
    ``train.distill.teacher`` names (:func:`~compressor.experiment.resolve_teacher`: a stored
    baseline, trained now if missing, or a model file) when distillation is on and none is given."""
    if teacher is None and experiment.train.distill.active:
        teacher = resolve_teacher(experiment, cache_dir=cache_dir)
    return runs.train_model(experiment, teacher=teacher, cache_dir=cache_dir, **options)
