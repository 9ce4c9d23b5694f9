"""Models trained once per experiment and stored: the reference baselines (U-Net, Micro-Net) and the
trained parents candidates inherit from, each reused while the settings that made it are unchanged."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from compressor.data.base import SegmentationData
from compressor.errors import ConfigError
from compressor.experiment.config import Experiment, ModelConfig
from compressor.experiment.runs import train_model
from compressor.experiment.typed import to_data
from compressor.io import atomic_write_text
from compressor.models import MODELS
from compressor.references import REFERENCE_MODELS
from compressor.train import (
    TrainConfig,
    load_checkpoint,
    save_checkpoint,
)

__all__ = ["BASELINE_MODELS", "BaselineRecord", "train_key", "without_finetuning", "baseline_key", "baseline_path", "load_baselines", "ensure_baselines", "TrainedNetwork", "is_reference_model", "ensure_parent", "resolve_teacher"]


log = logging.getLogger(__name__)


BASELINE_MODELS = REFERENCE_MODELS  # the references are trained as baselines


_BASELINE_FORMAT = 1


@dataclass
class BaselineRecord:
    """A baseline's stored result: a reference model trained with the experiment's data and training settings.

    Attributes:
        model: the registered model name.
        key: :func:`baseline_key` of the settings it was trained with.
        metrics: :meth:`SegmentationMetrics.to_dict` of its final evaluation.
        cost: :meth:`Cost.to_dict` at the experiment's cost input size.
        steps: optimizer steps trained.
        train_seconds: wall time of the optimizer steps.
        wall_seconds: wall time of training, evaluation and costing together.
        path: the JSON file it is stored in; the trained weights are beside it
            (:attr:`weights_path`, a weights-only checkpoint).
        reused: True if it was read back rather than trained now.
        history: every validation evaluation of its training, ``{"step": ..., **metrics}``
            (its learning curve; empty for results stored before it was kept).
    """

    model: str
    key: str
    metrics: dict[str, Any]
    cost: dict[str, Any]
    steps: int
    train_seconds: float
    wall_seconds: float
    path: Path
    reused: bool = False
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def weights_path(self) -> Path:
        """``<run_dir>/baselines/<model>.pt``: its trained weights (see :func:`load_checkpoint`)."""
        return self.path.with_suffix(".pt")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "key": self.key, "metrics": self.metrics, "cost": self.cost, "steps": self.steps,
            "train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: Path) -> BaselineRecord:
        fields = ("model", "key", "metrics", "cost", "steps", "train_seconds", "wall_seconds")
        history = (data.get("train") or {}).get("history") or []
        return cls(**{name: data[name] for name in fields}, path=path, reused=True, history=list(history))


def train_key(config: TrainConfig) -> dict[str, Any]:
    """The training settings that change a result, as plain data (what baselines and studies are keyed by).

    Threads, progress bars and the device change how fast, not what, and are left out; so
    are settings at the value that means "off" (no batch-norm re-estimation, no
    distillation, evaluations in fp32), so results stored before those settings existed keep their keys.
    The evaluations' precision is keyed as it resolves from ``precision`` and ``eval_precision``: a result
    scored in bf16 is another result than one scored in fp32, which every stored one before it was.
    """
    settings = {key: value for key, value in to_data(config).items() if key not in ("threads", "progress", "device")}
    if not config.bn_reestimate:
        settings.pop("bn_reestimate")
    if not config.distill.active:
        settings.pop("distill")
    settings.pop("eval_precision", None)
    if config.evaluation_precision != "fp32":  # scored in bf16: results stored before that were scored in fp32
        settings["eval_precision"] = config.evaluation_precision
    return settings


def without_finetuning(experiment: Experiment) -> Experiment:
    """``experiment`` trained plainly: no distillation, no batch-norm re-estimation (how references are trained)."""
    if not experiment.train.distill.active and not experiment.train.bn_reestimate:
        return experiment
    plain = dataclasses.replace(experiment.train, bn_reestimate=0, distill=type(experiment.train.distill)())
    return dataclasses.replace(experiment, train=plain)


def baseline_key(experiment: Experiment, model: str) -> str:
    """A hash of everything that changes a baseline's result: data, model, training, cost.

    Threads, progress bars and the device do not enter it: they change how fast, not what.
    Nor does distillation or batch-norm re-estimation: references are trained plainly
    (:func:`without_finetuning`). Nor does how latency is timed (``cost.latency``): it changes
    no weight, and a search times its references again anyway.
    """
    train_settings = train_key(without_finetuning(experiment).train)
    material = {
        "format": _BASELINE_FORMAT,
        "data": to_data(experiment.data),
        "model": to_data(ModelConfig(name=model)),
        "train": train_settings,
        "cost": {key: value for key, value in to_data(experiment.cost).items() if key != "latency"},
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def baseline_path(experiment: Experiment, model: str) -> Path:
    """``<run_dir>/baselines/<model>.json``."""
    return experiment.run_path / "baselines" / f"{model}.json"


def load_baselines(experiment: Experiment, models: Sequence[str] = BASELINE_MODELS) -> dict[str, BaselineRecord]:
    """The stored baselines whose key matches the experiment as it is now (stale or unreadable ones are left out)."""
    found = {}
    for model in models:
        path = baseline_path(experiment, model)
        try:
            record = BaselineRecord.from_dict(json.loads(path.read_text()), path=path)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if record.key == baseline_key(experiment, model):
            found[model] = record
    return found


def ensure_baselines(
    experiment: Experiment,
    *,
    models: Sequence[str] = BASELINE_MODELS,
    force: bool = False,
    cache_dir: str | Path | None = None,
    need_weights: bool = False,
) -> list[BaselineRecord]:
    """Trains the reference models with the experiment's data and training settings, unless already stored.

    Each result goes to ``<run_dir>/baselines/<model>.json`` (written atomically) with a
    :func:`baseline_key`; a stored result with the current key is reused, one with
    another key (the data, training or cost settings changed) is retrained. References are
    trained without the experiment's distillation or batch-norm re-estimation. The trained
    weights go beside it (``<model>.pt``); with ``need_weights`` a stored result whose
    weights are missing (stored by an older version) is retrained. The resolved experiment
    is written to ``<run_dir>/baselines/config.yaml``.

    Returns:
        One record per model, in order; ``reused`` tells which were not retrained.

    Raises:
        ConfigError: a model name that is not registered.
    """
    for model in models:
        if model not in MODELS:
            raise ConfigError(f"baseline model {model!r} is not registered; valid: {', '.join(MODELS.names())}")
    experiment = without_finetuning(experiment)  # a reference distilled from itself would mean nothing
    stored = {} if force else load_baselines(experiment, models)
    if need_weights:
        stored = {model: record for model, record in stored.items() if record.weights_path.is_file()}
    records = []
    data = None
    for model in models:
        if model in stored:
            log.info("baseline %s: settings unchanged, reusing %s", model, stored[model].path)
            records.append(stored[model])
            continue
        data = data or experiment.data.build(cache_dir=cache_dir)
        log.info("baseline %s: training %s steps (once; stored in %s)", model, experiment.train.steps,
                 baseline_path(experiment, model))
        started = time.perf_counter()
        trained = train_model(experiment, model=ModelConfig(name=model), data=data, test=False)
        log.info("baseline %s: %s in %.0f s", model, trained.result.metrics.summary(), time.perf_counter() - started)
        run = trained.result.to_dict()
        record = BaselineRecord(
            model=model, key=baseline_key(experiment, model), metrics=trained.result.metrics.to_dict(),
            cost=trained.cost.to_dict(modules=False), steps=trained.result.steps_done,
            train_seconds=round(trained.result.train_seconds, 3), wall_seconds=round(time.perf_counter() - started, 3),
            path=baseline_path(experiment, model), history=run["history"],
        )
        payload = {**record.to_dict(), "experiment": experiment.name, "train": run}
        save_checkpoint(record.weights_path, trained.model, step=trained.result.steps_done,
                        metrics=trained.result.metrics, extra={"model": model, "key": record.key})
        atomic_write_text(record.path, json.dumps(payload, indent=2) + "\n")
        records.append(record)
    experiment.save(experiment.run_path / "baselines" / "config.yaml")
    return records


@dataclass
class TrainedNetwork:
    """A trained network a search holds: the parent candidates inherit their weights from (and may
    distill from), the base network trained as the study's reference, or a distillation teacher.

    Attributes:
        model: the trained network (CPU, eval mode).
        model_config: what it was built from.
        weights_path: its stored weights (a weights-only checkpoint).
        metrics: its final evaluation, as stored.
        steps: optimizer steps it was trained for (with ``steps: auto``, until its plateau).
        reused: True if it was read back rather than trained now.
        from_file: a model file the user trained (``search.parent``), not one the search trained;
            ``metrics`` are then its evaluation on the search's data.
    """

    model: nn.Module
    model_config: ModelConfig
    weights_path: Path
    metrics: dict[str, Any]
    steps: int
    reused: bool
    from_file: bool = False


def is_reference_model(model_config: ModelConfig) -> bool:
    """True if ``model_config`` is a registered baseline model built with its default arguments."""
    extra = {key: value for key, value in model_config.args.items() if not (key == "norm" and value == "batch")}
    return model_config.name in BASELINE_MODELS and not extra


def ensure_parent(
    experiment: Experiment,
    model_config: ModelConfig,
    *,
    steps: int | None = None,
    data: SegmentationData | None = None,
    cache_dir: str | Path | None = None,
) -> TrainedNetwork:
    """The base network trained with the experiment's recipe for ``steps``, trained once and stored.

    With the ``train:`` section's own steps and a reference model (``unet``, ``micronet``)
    the parent is that stored baseline (:func:`ensure_baselines`), so a search that trains
    its baselines anyway trains nothing more. Otherwise it goes to
    ``<run_dir>/parents/<label>-<key>.pt`` and ``.json``, keyed like a baseline (data,
    training, model and its arguments).
    """
    steps = steps or experiment.train.steps
    plain = without_finetuning(experiment)
    settings = dataclasses.replace(plain, train=plain.train.with_steps(steps))
    if steps == experiment.train.steps and is_reference_model(model_config):
        (record,) = ensure_baselines(experiment, models=[model_config.name], cache_dir=cache_dir, need_weights=True)
        path, metrics, reused, done = record.weights_path, record.metrics, record.reused, record.steps
    else:
        material = {"key": baseline_key(settings, model_config.name), "model": to_data(model_config)}
        key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]
        path = settings.run_path / "parents" / f"{model_config.label}-{key}.pt"
        reused = path.is_file()
        if reused:
            stored = load_checkpoint(path)
            metrics, done = stored.metrics or {}, stored.step
        else:
            log.info("parent %s: training %s steps (once; stored in %s)", model_config.name, steps, path)
            trained = train_model(settings, model=model_config, data=data, cache_dir=cache_dir, test=False)
            metrics, done = trained.result.metrics.to_dict(), trained.result.steps_done
            save_checkpoint(path, trained.model, step=trained.result.steps_done, metrics=trained.result.metrics,
                            extra={"model": to_data(model_config), "key": key})
            log.info("parent %s: %s", model_config.name, trained.result.metrics.summary())
    data = data or experiment.data.build(cache_dir=cache_dir)
    network = model_config.build(in_channels=data.in_channels, num_classes=data.num_classes)
    load_checkpoint(path, network)
    return TrainedNetwork(model=network.eval(), model_config=model_config, weights_path=path, metrics=metrics or {},
                  steps=done if done is not None else steps, reused=reused)


def resolve_teacher(
    experiment: Experiment, spec: str | None = None, *, parent: nn.Module | None = None,
    cache_dir: str | Path | None = None,
) -> nn.Module:
    """The distillation teacher ``spec`` (default: ``train.distill.teacher``) names, as a module.

    ``parent``: the given parent network; ``unet``/``micronet``: the experiment's stored
    baseline (trained now if missing); anything else: a model file saved by compressor.

    Raises:
        ConfigError: ``parent`` without a parent (outside a search or ``compress``), or a
            model file that cannot be read.
    """
    from compressor.saving import load_model

    spec = spec or experiment.train.distill.teacher
    if spec == "parent":
        if parent is None:
            raise ConfigError(
                "train.distill.teacher: 'parent' is the network a candidate was transformed from; it exists in "
                "compressor compress and in a search with search.init: distill, not here; name a baseline "
                "(unet, micronet) or a model file"
            )
        return parent
    if spec in BASELINE_MODELS:
        return ensure_parent(experiment, ModelConfig(name=spec), cache_dir=cache_dir).model
    if spec is None:
        raise ConfigError("no distillation teacher given (train.distill.teacher)")
    return load_model(spec).eval()
