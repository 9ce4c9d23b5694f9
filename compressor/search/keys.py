"""What identifies a study's settings: the key a resumed search, a worker and a joining process must match."""

from __future__ import annotations

import dataclasses
from typing import Any

from compressor.candidates.parents import file_sha256
from compressor.errors import ConfigError, StudyMismatchError
from compressor.experiment import Experiment, to_data, train_key

__all__ = ["experiment_key", "check_joinable", "with_search"]


def experiment_key(experiment: Experiment) -> dict[str, Any]:
    """What must not change when a study is resumed: data, model, training, cost, budget, space."""
    # The evaluations' precision as the section sets it, not as it resolves: a study made before build version 9
    # with train.precision bf16 keeps its key (it scores in fp32 by its version), and a set eval_precision also
    # says how the candidates are scored (else as their fine-tuning's precision, which the finetune key holds).
    train = {key: value for key, value in train_key(experiment.train).items() if key != "eval_precision"}
    if experiment.train.eval_precision is not None:
        train["eval_precision"] = experiment.train.eval_precision
    search = to_data(experiment.search)
    key = {
        "data": to_data(experiment.data), "train": train, "cost": to_data(experiment.cost),
        "budget": to_data(experiment.budget),
        "search": {key: search[key] for key in ("space", "model", "objectives", "metric")},
    }
    if experiment.search.parent:  # the file's content, wherever it lies
        key["search"]["parent_sha256"] = file_sha256(experiment.search.parent)
    if experiment.search.init != "random":  # studies made before inheritance existed keep their key
        key["search"]["init"] = experiment.search.init
        key["finetune"] = to_data(experiment.finetune)
    return key


def check_joinable(study: Any, info: Any, experiment: Experiment) -> None:
    """Refuses to join a study whose stored settings disagree with each other, before any work: its
    key must be the one its experiment gives (a worker then builds what the search built), and a
    study whose candidates inherit must name the parent file they inherit from (a worker never
    trains one).

    Raises:
        StudyMismatchError: the key differs.
        ConfigError: an inheriting study without a parent.
    """
    stored = study.user_attrs.get("experiment_key")
    key = experiment_key(experiment)
    if stored != key:
        changed = sorted(part for part in key if key[part] != (stored or {}).get(part)) or ["its"]
        raise StudyMismatchError(f"study {study.study_name!r}: its stored experiment does not give its stored key "
                                 f"({', '.join(changed)} settings differ); it was not written by compressor search")
    if experiment.search.init != "random" and not info.parent:
        raise ConfigError(f"study {study.study_name!r}: its candidates inherit (search.init: "
                          f"{experiment.search.init}) but it names no parent weights file to inherit from")


def with_search(experiment: Experiment, **changes: Any) -> Experiment:
    """``experiment`` with some ``search`` settings replaced (None values are left alone)."""
    changes = {key: value for key, value in changes.items() if value is not None}
    return dataclasses.replace(experiment, search=dataclasses.replace(experiment.search, **changes))
