"""Experiment files: typed sections loaded from YAML, and the runs an experiment defines.

By idea: :mod:`.typed` (plain data to typed sections and back), :mod:`.config` (the sections and
the file), :mod:`.runs` (training one model of an experiment) and :mod:`.baselines` (reference
and parent models trained once and stored).

An experiment file has the sections of :class:`Experiment`; each section is a frozen
dataclass, loaded by one generic function that checks every key against the dataclass's
fields and type hints, so a new section is one new field. Unknown keys and wrong types
are :class:`~compressor.errors.ConfigError` naming the file and the dotted key::

    experiments/x.yaml: train.lr: expected number, got 'fast'

Example:
    >>> experiment = Experiment.from_dict({"name": "demo", "data": {"name": "synthetic"}, "train": {"steps": 5}})
    >>> experiment.data.kind, experiment.train.steps, experiment.model.name, experiment.run_path.as_posix()
    ('synthetic', 5, 'micronet', 'runs/demo')"""

from __future__ import annotations

from compressor.experiment.baselines import (
    BASELINE_MODELS,
    BaselineRecord,
    TrainedNetwork,
    baseline_key,
    baseline_path,
    ensure_baselines,
    ensure_parent,
    is_reference_model,
    load_baselines,
    resolve_teacher,
    train_key,
    without_finetuning,
)
from compressor.experiment.config import CostConfig, Experiment, ModelConfig, apply_overrides, load_experiment
from compressor.experiment.distilled import train_model  # the teacher found (runs.train_model takes it)
from compressor.experiment.runs import TrainedModel, model_label
from compressor.experiment.typed import from_data, to_data

__all__ = ["from_data", "to_data", "ModelConfig", "CostConfig", "Experiment", "load_experiment", "apply_overrides", "TrainedModel", "model_label", "train_model", "BASELINE_MODELS", "BaselineRecord", "train_key", "without_finetuning", "baseline_key", "baseline_path", "load_baselines", "ensure_baselines", "TrainedNetwork", "is_reference_model", "ensure_parent", "resolve_teacher"]
