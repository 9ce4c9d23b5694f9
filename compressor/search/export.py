"""``compressor export``: a trial's model rebuilt from its recipe, with its kept weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from compressor.candidates.builder import CandidateBuilder, Init
from compressor.candidates.parents import check_parent_unchanged, load_parent
from compressor.candidates.setup import calibration_count
from compressor.candidates.stored import building_study, stored_experiment
from compressor.candidates.versions import build_version
from compressor.errors import ConfigError
from compressor.experiment import ModelConfig
from compressor.finetune import calibration_batches
from compressor.references import REFERENCE_MODELS
from compressor.saving import save_model
from compressor.search.weights import WeightStore
from compressor.study import StudyInfo, TrialRecord, load_study, study_info
from compressor.transforms import Recipe

__all__ = ["ExportedTrial", "export_trial", "rebuild_trial"]


@dataclass
class ExportedTrial:
    record: TrialRecord
    model: nn.Module
    recipe: Recipe
    trained: bool
    info: StudyInfo
    path: Path | None = None


def rebuild_trial(
    storage_url: str, study_name: str, number: int, *, untrained: bool = False, cache_dir: str | Path | None = None,
    trust: bool = False,
) -> ExportedTrial:
    """The model of trial ``number``: the base network and recipe the search used, and its weights.

    ``untrained`` skips the trial's kept weights: the candidate as it started (from random
    weights, or, in a study whose candidates inherit, from its parent's). Without ``trust`` the
    study is data (:mod:`compressor.candidates.stored`): its network is built under the policy of
    model files, its paths checked.

    Raises:
        ConfigError: no such study or trial; a trial without a recipe (it failed before
            sampling one); weights that were not kept (unless ``untrained``).
    """
    study = load_study(storage_url, study_name)
    info = study_info(study)
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise ConfigError(f"study {study_name!r} has no trial {number} (trials 0..{max(trials, default=-1)})")
    record = TrialRecord.from_trial(trials[number])
    if record.recipe_hash == "":
        raise ConfigError(f"trial {number} has no recipe ({record.status}: {record.failure or 'not sampled'})")
    experiment = stored_experiment(study_name, info, trust=trust)
    model_config = ModelConfig(name=info.model, args={
        key: value for key, value in info.model_args.items() if key not in ("in_channels", "num_classes")
    } if info.model in REFERENCE_MODELS else dict(info.model_args),
        output=experiment.model.output if experiment.model.name == info.model else None)
    in_channels = int(info.input_shape[1])
    num_classes = int(info.model_args.get("num_classes", 2))
    recipe = Recipe.from_data(record.recipe, source=f"trial {number}'s recipe")
    base = None
    with building_study(study_name, info, trust=trust):
        if info.init != "random":  # pruning ranked the parent's trained channels: the same parent gives the same widths
            check_parent_unchanged(study, info)
            base = load_parent(model_config, info.parent, in_channels=in_channels, num_classes=num_classes,
                               trust=trust).model
        calibration = None
        if base is not None:  # calibrated weights steer pruning: the same images as the search's (prepare)
            calibration = calibration_batches(
                experiment.data.build(cache_dir=cache_dir), calibration_count(experiment),
                batch_size=experiment.train.batch_size, seed=experiment.train.seed,
            )
        builder = CandidateBuilder(experiment, model_config, in_channels=in_channels, num_classes=num_classes, base=base,
                                   init=Init(info.init), calibration=calibration,
                                   build_version=build_version(study.user_attrs))
        model = builder.build(recipe)
    trained = not untrained
    if trained:
        state = WeightStore(info.artifacts, create=False).load(record.weights, number)
        model.load_state_dict(state, strict=True)
    return ExportedTrial(record=record, model=model.eval(), recipe=recipe, trained=trained, info=info)


def export_trial(
    storage_url: str, study_name: str, number: int, out: str | Path, *, untrained: bool = False, trust: bool = False,
) -> ExportedTrial:
    """Rebuilds trial ``number`` (:func:`rebuild_trial`) and saves it with :func:`compressor.save_model`."""
    exported = rebuild_trial(storage_url, study_name, number, untrained=untrained, trust=trust)
    info, record = exported.info, exported.record
    exported.path = save_model(
        out, exported.model, recipe=exported.recipe, base=info.model, input_shape=tuple(info.input_shape),
        metadata={
            "study": study_name, "trial": number, "trained": exported.trained, "metric": record.metric,
            "metric_name": info.metric_label, "metrics": record.metrics, "params": record.params,
            "flops": record.flops, "model_args": info.model_args,
            **({"scored_in": _scored_in(record)} if exported.trained and _scored_in(record) else {}),
        },
    )
    return exported


def _scored_in(record: TrialRecord) -> str | None:
    """The precision a trial's metrics were taken in: as it recorded it, fp32 for a trial stored before trials
    recorded it (every evaluation was fp32 then), None for a value no compressor writes (a study is data)."""
    if record.scored_in is None:
        return "fp32"
    return record.scored_in if record.scored_in in ("bf16", "fp32") else None
