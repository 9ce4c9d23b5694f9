"""A study read once: its settings and every trial, so what is computed from it agrees with itself.

A report or a confirmation on a study that is still running reads it once; trials that had
not finished then are counted but take part in nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from compressor.references import REFERENCE_LABELS
from compressor.study.records import StudyInfo, TrialRecord, study_info, trial_records

__all__ = ["StudySnapshot", "read_study", "REFERENCE_LABELS", "reference_label", "base_label"]



@dataclass
class StudySnapshot:
    """A study read once: its settings, every trial as a record, and Optuna's own trials.

    Attributes:
        study_name: the study's name.
        info: the search settings stored on the study.
        records: every trial (running ones included), by number.
        trials: Optuna's frozen trials, in the same order as ``records``.
        user_attrs: the study's user attributes as stored (``machine`` is read from there if
            the search put it there).
        derived: what readers computed from the snapshot once (a confirmation, read by the
            report's tables), by their own keys.
    """

    study_name: str
    info: StudyInfo
    records: list[TrialRecord]
    trials: list[FrozenTrial]
    user_attrs: dict[str, Any] = field(default_factory=dict)
    derived: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> list[TrialRecord]:
        """The records of the trials that are over (everything but ``running``)."""
        return [record for record in self.records if record.status != "running"]

    @property
    def objectives(self) -> list[str]:
        """The study's objectives (``metric``, ``params``, ``flops``, ``latency_ms``) in value order."""
        return list(self.info.objectives) or ["metric", "params"]

    @property
    def unet(self) -> dict[str, float | None]:
        """U-Net's reference costs and metric, ``{}`` when the search stored none."""
        return dict(self.info.references.get("unet") or {})

    @property
    def ratio_reference(self) -> dict[str, Any]:
        """The reference the ratios are against (U-Net, or the search's own base network)."""
        return dict(self.info.references.get(self.info.ratio_to) or {})

    @property
    def ratio_label(self) -> str:
        """How that reference is named in headers: ``U-Net``, or the base network's name."""
        return reference_label(self.info.ratio_to, self.info.references)


def base_label(model: str, *, trained_file: bool = False) -> str:
    """The search's own base network in tables: ``Unet (base)`` for ``segmentation_models_pytorch:Unet``,
    ``Unet (trained)`` when it is a model file the user trained (``search.parent``)."""
    return f"{model.rpartition(':')[2]} ({'trained' if trained_file else 'base'})"


def reference_label(name: str, references: dict[str, dict[str, Any]]) -> str:
    """``U-Net``, ``Micro-Net``, or the label a search stored (its own base network's name)."""
    return REFERENCE_LABELS.get(name) or str((references.get(name) or {}).get("label") or name)


def read_study(study: optuna.Study | StudySnapshot) -> StudySnapshot:
    """Reads ``study`` once (a snapshot is returned as it is).

    Raises:
        compressor.errors.ConfigError: the study was not made by ``compressor search``.
    """
    if isinstance(study, StudySnapshot):
        return study
    info = study_info(study)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda trial: trial.number)
    records = trial_records(trials)
    return StudySnapshot(
        study_name=study.study_name, info=info, records=records, trials=trials, user_attrs=dict(study.user_attrs)
    )
