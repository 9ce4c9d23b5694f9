"""Experiment files: typed sections loaded from YAML, and the runs an experiment defines.

An experiment file has the sections of :class:`Experiment`; each section is a frozen
dataclass, loaded by one generic function that checks every key against the dataclass's
fields and type hints, so a new section is one new field. Unknown keys and wrong types
are :class:`~compressor.errors.ConfigError` naming the file and the dotted key::

    experiments/x.yaml: train.lr: expected number, got 'fast'

Example:
    >>> experiment = Experiment.from_dict({"name": "demo", "data": {"name": "synthetic"}, "train": {"steps": 5}})
    >>> experiment.data.kind, experiment.train.steps, experiment.model.name, experiment.run_path.as_posix()
    ('synthetic', 5, 'micronet', 'runs/demo')
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import re
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from compressor.budget import Budget
from compressor.cost import Cost, measure
from compressor.data.base import DataConfig, SegmentationData
from compressor.data.spacenet import SpacenetSampleConfig
from compressor.errors import CompressorError, ConfigError
from compressor.finetune import FinetuneConfig
from compressor.io import atomic_write_text
from compressor.keyvalue import parse_pair
from compressor.models import MODELS, build_model
from compressor.outputs import declare_output
from compressor.saving import save_model
from compressor.schema import check_value
from compressor.search_config import SearchConfig
from compressor.train import (
    Callback,
    TrainConfig,
    TrainResult,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    train,
)

__all__ = [
    "Experiment",
    "ModelConfig",
    "CostConfig",
    "load_experiment",
    "from_data",
    "to_data",
    "apply_overrides",
    "TrainedModel",
    "model_label",
    "train_model",
    "BASELINE_MODELS",
    "BaselineRecord",
    "baseline_key",
    "baseline_path",
    "ensure_baselines",
    "load_baselines",
    "ensure_parent",
    "resolve_teacher",
    "train_key",
    "without_finetuning",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The model to train (the ``model:`` section).

    Attributes:
        name: ``unet``, ``micronet`` or an import path ``package.module:callable``.
        args: keyword arguments of the builder. For the built-in models ``norm``
            defaults to ``batch`` (what makes training from scratch on a CPU budget
            work), and ``in_channels`` and ``num_classes`` come from the data.
        output: for a model returning a dict or tuple, the key or index of the
            segmentation (None: ``out``, or the only tensor); see :mod:`compressor.outputs`.
    """

    omit_when_default = ("output",)

    name: str = "micronet"
    args: dict[str, Any] = field(default_factory=dict)
    output: str | int | None = None

    def builder_args(self, *, in_channels: int, num_classes: int) -> dict[str, Any]:
        """The keyword arguments the builder gets.

        A builder given by import path gets ``args`` as they are: it may not take
        ``in_channels`` or ``num_classes``, so give them in ``args`` if it does.

        Example:
            >>> ModelConfig(name="unet").builder_args(in_channels=1, num_classes=2)
            {'in_channels': 1, 'num_classes': 2, 'norm': 'batch'}
        """
        if self.name not in MODELS:
            return dict(self.args)
        return {"in_channels": in_channels, "num_classes": num_classes, "norm": "batch", **self.args}

    def build(self, *, in_channels: int, num_classes: int) -> nn.Module:
        """Builds the model for data with ``in_channels`` and ``num_classes``."""
        model = build_model(self.name, self.builder_args(in_channels=in_channels, num_classes=num_classes))
        return declare_output(model, self.output)

    @property
    def label(self) -> str:
        """A file-name-safe label: ``micronet``, ``mypkg.nets-build``."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-") or "model"


@dataclass(frozen=True, kw_only=True)
class CostConfig:
    """How costs are measured (the ``cost:`` section).

    Attributes:
        input_size: side of the square input that params, FLOPs and latency are
            measured at (FLOPs grow with it; budgets refer to it).
        latency_runs: forward passes timed for the median latency (0: not timed).
    """

    input_size: int = 224
    latency_runs: int = 0


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """One experiment file.

    Attributes:
        name: the experiment's name (default: the file name without suffix).
        run_dir: where results go (default: ``runs/<name>``, relative to the working folder).
        data: the dataset; ``name`` picks the kind (``spacenet_sample``, ``synthetic``, ``folder``).
        model: the model to train.
        train: the training recipe.
        budget: limits on params, FLOPs and latency.
        cost: how costs are measured.
        search: what ``compressor search`` explores, and how.
        finetune: how a network with inherited weights is fine-tuned (``compressor
            compress``, and a search with ``search.init: inherit`` or ``distill``).
    """

    name: str = ""
    run_dir: str = ""
    data: DataConfig = field(default_factory=SpacenetSampleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    budget: Budget = field(default_factory=Budget)
    cost: CostConfig = field(default_factory=CostConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, source: str = "experiment") -> Experiment:
        """Builds and validates an experiment from plain data; errors start with ``source``."""
        return from_data(cls, dict(data or {}), where="", source=source)

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name or 'experiment'}")

    def cost_input_shape(self, in_channels: int) -> tuple[int, int, int, int]:
        return (1, in_channels, self.cost.input_size, self.cost.input_size)

    def to_dict(self) -> dict[str, Any]:
        """The resolved experiment as plain data (every default filled in)."""
        return to_data(self)

    def save(self, path: str | Path) -> Path:
        """Writes the resolved experiment as YAML, atomically."""
        return atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_experiment(path: str | Path, *, overrides: Sequence[str] = ()) -> Experiment:
    """Reads and validates an experiment file.

    Args:
        path: the YAML file.
        overrides: ``dotted.key=value`` strings applied on top (values read as YAML),
            e.g. ``train.steps=50``.

    Raises:
        ConfigError: the file cannot be read or parsed, or a key is unknown, missing or
            of the wrong type (naming the file and the dotted key).
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{source}: cannot read experiment file: {error.strerror or error}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{line}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides, source=source)
    raw.setdefault("name", path.stem)
    return Experiment.from_dict(raw, source=source)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], *, source: str = "experiment") -> dict[str, Any]:
    """Sets ``dotted.key=value`` pairs in a copy of nested plain data (values read as YAML).

    Example:
        >>> apply_overrides({"train": {"lr": 0.1}}, ["train.steps=5", "model.args.norm=null"])
        {'train': {'lr': 0.1, 'steps': 5}, 'model': {'args': {'norm': None}}}
    """
    result = copy.deepcopy(raw)
    for override in overrides:
        key, value = parse_pair(override, what=f"{source}: override", form="section.key=value")
        parts = [part.strip() for part in key.split(".")]
        if not all(parts):
            raise ConfigError(f"{source}: override {override!r} must look like section.key=value")
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{source}: override {override!r}: {part!r} is not a section")
        target[parts[-1]] = value
    return result


def from_data(cls: type, raw: Any, *, where: str, source: str) -> Any:
    """Builds the dataclass ``cls`` from plain data, checking keys and types field by field.

    Nested dataclass fields recurse; a class with a ``subclass_for(raw)`` classmethod
    (the ``data:`` section) picks its subclass from the data first; :class:`Budget`
    goes through :meth:`Budget.from_dict`. Validation in ``__post_init__`` that raises
    a :class:`CompressorError` is reported with ``source`` in front.

    Raises:
        ConfigError: ``"<source>: <dotted key>: <problem>"``.
    """
    label = f"{source}: {where}" if where else source
    if cls is Budget:
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"{label}: expected a mapping, got {raw!r}")
        return _construct(lambda: Budget.from_dict(raw), label)
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: expected a mapping, got {raw!r}")
    if hasattr(cls, "subclass_for"):
        base = cls
        cls = _construct(lambda: base.subclass_for(raw), f"{source}: {_join(where, 'name')}")
    hints = typing.get_type_hints(cls)
    fields = {item.name: item for item in dataclasses.fields(cls) if item.init}
    unknown = [key for key in raw if key not in fields]
    if unknown:
        raise ConfigError(
            f"{source}: {_join(where, str(unknown[0]))}: unknown key; valid keys: {', '.join(fields)}"
        )
    values = {}
    for key, value in raw.items():
        annotation = hints[key]
        dotted = _join(where, key)
        if dataclasses.is_dataclass(annotation) or annotation is Budget:
            values[key] = from_data(annotation, value, where=dotted, source=source)
        elif typing.get_origin(annotation) is dict:
            values[key] = _check_mapping(value, annotation, label=f"{source}: {dotted}")
        else:
            values[key] = check_value(value, annotation, where=f"{source}: {dotted}")
    missing = [
        name for name, item in fields.items()
        if name not in values and item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: {_join(where, missing[0])}: missing required key")
    return _construct(lambda: cls(**values), source)


def _construct(make: Callable[[], Any], label: str) -> Any:
    """``make()``, with a user error re-raised as a ``ConfigError`` prefixed by ``label``."""
    try:
        return make()
    except CompressorError as error:
        raise ConfigError(f"{label}: {error}") from None


def _check_mapping(value: Any, annotation: Any, *, label: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{label}: expected a mapping, got {value!r}")
    key_type, value_type = typing.get_args(annotation) or (Any, Any)
    return {
        check_value(key, key_type, where=f"{label} key"): check_value(item, value_type, where=f"{label}.{key}")
        for key, item in value.items()
    }


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def to_data(config: Any) -> Any:
    """Plain YAML/JSON-safe data of a (nested) configuration dataclass.

    A dataclass may name fields in an ``omit_when_default`` class attribute: those are left
    out while equal to their default, so adding a field keeps the keys of stored results.
    """
    if isinstance(config, Budget):
        return config.to_dict()
    if dataclasses.is_dataclass(config):
        omitted = getattr(config, "omit_when_default", ())
        return {
            item.name: to_data(getattr(config, item.name)) for item in dataclasses.fields(config)
            if not (item.name in omitted and getattr(config, item.name) == item.default)
        }
    if isinstance(config, (list, tuple)):
        return [to_data(item) for item in config]
    if isinstance(config, Mapping):
        return {key: to_data(value) for key, value in config.items()}
    return config


@dataclass
class TrainedModel:
    """A model trained by :func:`train_model`, with its cost and where its files went."""

    label: str
    model: nn.Module
    result: TrainResult
    cost: Cost
    output_dir: Path | None
    recipe: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.label,
            "recipe": self.recipe,
            **self.result.to_dict(),
            "cost": self.cost.to_dict(modules=False),
        }


def model_label(model: ModelConfig, recipe: Any = None) -> str:
    """How a trained model is named in results.

    ``micronet``; ``unet+fire`` with a recipe file ``fire.yaml``; ``unet+recipe-<hash>``
    with an in-memory :class:`~compressor.transforms.Recipe`.

    Example:
        >>> model_label(ModelConfig(name="unet"), "recipes/fire.yaml")
        'unet+fire'
    """
    if recipe is None:
        return model.label
    if isinstance(recipe, (str, Path)):
        return f"{model.label}+{Path(recipe).stem}"
    return f"{model.label}+recipe-{recipe.hash()[:8]}"


def train_model(
    experiment: Experiment,
    *,
    model: ModelConfig | None = None,
    recipe: Any = None,
    data: SegmentationData | None = None,
    cache_dir: str | Path | None = None,
    evaluate_at: Sequence[float | int] = (),
    callback: Callback | None = None,
    output_dir: str | Path | None = None,
    label: str | None = None,
) -> TrainedModel:
    """Builds, optionally transforms, trains, evaluates and costs one model of an experiment.

    Args:
        experiment: the experiment.
        model: the model (default: the experiment's ``model`` section).
        recipe: a transform recipe applied to the model before training: a YAML
            file or a :class:`~compressor.transforms.Recipe`.
        data: already built data (default: built from ``experiment.data``).
        cache_dir: the download cache (see :func:`compressor.data.cache_dir`).
        evaluate_at: intermediate evaluations; see :func:`compressor.train.train`.
        callback: called after each intermediate evaluation; may stop training.
        output_dir: where to write ``metrics.json``, ``config.yaml`` and ``model.pt``
            (None: write nothing).
        label: name of the model in results (default: :func:`model_label`).

    Returns:
        The trained model (moved back to the CPU), its result, its cost.

    Raises:
        CompressorError: bad data, model, recipe, or a failed training.
    """
    model_config = model or experiment.model
    loaded_recipe = None
    if recipe is not None:  # read first: a bad recipe fails before any download or training
        from compressor.transforms import Recipe, apply

        loaded_recipe = Recipe.load(recipe) if isinstance(recipe, (str, Path)) else recipe
    data = data or experiment.data.build(cache_dir=cache_dir)
    seed_everything(experiment.train.seed)
    network = model_config.build(in_channels=data.in_channels, num_classes=data.num_classes)
    if loaded_recipe is not None:  # a network trained from scratch: new layers keep PyTorch's initialization
        example = torch.zeros(1, data.in_channels, experiment.data.patch_size, experiment.data.patch_size)
        network, _records = apply(network, loaded_recipe, example, init="random")
    label = label or model_label(model_config, recipe)
    teacher = resolve_teacher(experiment, cache_dir=cache_dir) if experiment.train.distill.active else None
    result = train(
        network, data, experiment.train, evaluate_at=evaluate_at, callback=callback, description=label, teacher=teacher,
    )
    cost = measure(network.cpu(), experiment.cost_input_shape(data.in_channels), latency_runs=experiment.cost.latency_runs)
    recipe_name = None if loaded_recipe is None else (str(recipe) if isinstance(recipe, (str, Path)) else loaded_recipe.short())
    trained = TrainedModel(label, network, result, cost, Path(output_dir) if output_dir else None, recipe_name)
    if output_dir is not None:
        _write_run(trained, experiment, model_config, loaded_recipe)
    return trained


def _write_run(trained: TrainedModel, experiment: Experiment, model_config: ModelConfig, recipe: Any) -> None:
    """``config.yaml`` (the resolved experiment), ``metrics.json``, and ``model.pt`` (:func:`compressor.save_model`)."""
    folder = trained.output_dir
    assert folder is not None
    dataclasses.replace(experiment, model=model_config).save(folder / "config.yaml")
    atomic_write_text(folder / "metrics.json", json.dumps(trained.to_dict(), indent=2) + "\n")
    save_model(
        folder / "model.pt", trained.model, recipe=recipe, base=model_config.name,
        input_shape=trained.cost.input_shape,
        metadata={"model_args": model_config.args, "metrics": trained.result.metrics.to_dict(),
                  "steps": trained.result.steps_done, "experiment": experiment.name},
    )


BASELINE_MODELS = ("unet", "micronet")
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
        return cls(**{name: data[name] for name in fields}, path=path, reused=True)


def train_key(config: TrainConfig) -> dict[str, Any]:
    """The training settings that change a result, as plain data (what baselines and studies are keyed by).

    Threads, progress bars and the device change how fast, not what, and are left out; so
    are settings at the value that means "off" (no batch-norm re-estimation, no
    distillation), so results stored before those settings existed keep their keys.
    """
    settings = {key: value for key, value in to_data(config).items() if key not in ("threads", "progress", "device")}
    if not config.bn_reestimate:
        settings.pop("bn_reestimate")
    if not config.distill.active:
        settings.pop("distill")
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
    (:func:`without_finetuning`).
    """
    train_settings = train_key(without_finetuning(experiment).train)
    material = {
        "format": _BASELINE_FORMAT,
        "data": to_data(experiment.data),
        "model": to_data(ModelConfig(name=model)),
        "train": train_settings,
        "cost": to_data(experiment.cost),
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
        log.info("baseline %s: training %d steps (once; stored in %s)", model, experiment.train.steps,
                 baseline_path(experiment, model))
        started = time.perf_counter()
        trained = train_model(experiment, model=ModelConfig(name=model), data=data)
        log.info("baseline %s: %s in %.0f s", model, trained.result.metrics.summary(), time.perf_counter() - started)
        record = BaselineRecord(
            model=model, key=baseline_key(experiment, model), metrics=trained.result.metrics.to_dict(),
            cost=trained.cost.to_dict(modules=False), steps=trained.result.steps_done,
            train_seconds=round(trained.result.train_seconds, 3), wall_seconds=round(time.perf_counter() - started, 3),
            path=baseline_path(experiment, model),
        )
        payload = {**record.to_dict(), "experiment": experiment.name, "train": trained.result.to_dict()}
        save_checkpoint(record.weights_path, trained.model, step=trained.result.steps_done,
                        metrics=trained.result.metrics, extra={"model": model, "key": record.key})
        atomic_write_text(record.path, json.dumps(payload, indent=2) + "\n")
        records.append(record)
    experiment.save(experiment.run_path / "baselines" / "config.yaml")
    return records


@dataclass
class Parent:
    """A trained network that candidates inherit their weights from (and may distill from).

    Attributes:
        model: the trained network (CPU, eval mode).
        model_config: what it was built from.
        weights_path: its stored weights (a weights-only checkpoint).
        metrics: its final evaluation, as stored.
        steps: optimizer steps it was trained for.
        reused: True if it was read back rather than trained now.
    """

    model: nn.Module
    model_config: ModelConfig
    weights_path: Path
    metrics: dict[str, Any]
    steps: int
    reused: bool


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
) -> Parent:
    """The base network trained with the experiment's recipe for ``steps``, trained once and stored.

    With the ``train:`` section's own steps and a reference model (``unet``, ``micronet``)
    the parent is that stored baseline (:func:`ensure_baselines`), so a search that trains
    its baselines anyway trains nothing more. Otherwise it goes to
    ``<run_dir>/parents/<label>-<key>.pt`` and ``.json``, keyed like a baseline (data,
    training, model and its arguments).
    """
    steps = steps or experiment.train.steps
    plain = without_finetuning(experiment)
    settings = dataclasses.replace(plain, train=dataclasses.replace(plain.train, steps=steps))
    if steps == experiment.train.steps and is_reference_model(model_config):
        (record,) = ensure_baselines(experiment, models=[model_config.name], cache_dir=cache_dir, need_weights=True)
        path, metrics, reused = record.weights_path, record.metrics, record.reused
    else:
        material = {"key": baseline_key(settings, model_config.name), "model": to_data(model_config)}
        key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]
        path = settings.run_path / "parents" / f"{model_config.label}-{key}.pt"
        reused = path.is_file()
        if reused:
            metrics = load_checkpoint(path).metrics or {}
        else:
            log.info("parent %s: training %d steps (once; stored in %s)", model_config.name, steps, path)
            trained = train_model(settings, model=model_config, data=data, cache_dir=cache_dir)
            metrics = trained.result.metrics.to_dict()
            save_checkpoint(path, trained.model, step=steps, metrics=trained.result.metrics,
                            extra={"model": to_data(model_config), "key": key})
            log.info("parent %s: %s", model_config.name, trained.result.metrics.summary())
    data = data or experiment.data.build(cache_dir=cache_dir)
    network = model_config.build(in_channels=data.in_channels, num_classes=data.num_classes)
    load_checkpoint(path, network)
    return Parent(model=network.eval(), model_config=model_config, weights_path=path, metrics=metrics or {},
                  steps=steps, reused=reused)


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
