"""Everything a search process needs before its first trial, built once per process."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from compressor.budget import Budget
from compressor.candidates.builder import CandidateBuilder, Init, candidate_example
from compressor.candidates.parents import load_parent, load_parent_file, shown_path
from compressor.candidates.versions import (
    BUILD_VERSION,
    COUNTS_START,
    EVALUATES_IN_PRECISION,
    LSTSQ_CHOOSES_NORMS,
    RECONSTRUCTS_IN_PRECISION,
    as_built_for,
)
from compressor.cost import Cost, measure
from compressor.data.base import SegmentationData
from compressor.errors import BudgetError, ClassCountError, ConfigError
from compressor.experiment import (
    BASELINE_MODELS,
    Experiment,
    ModelConfig,
    TrainedNetwork,
    ensure_parent,
    is_reference_model,
)
from compressor.finetune import calibration_batches
from compressor.floor import Floor
from compressor.latency import LatencyConfig
from compressor.metrics import SegmentationMetrics, metric_value
from compressor.outputs import check_fits
from compressor.references import REFERENCE_MODELS
from compressor.search_config import SearchConfig
from compressor.spaces import SPACES, SearchContext, SearchSpace
from compressor.study import base_label, default_storage_url, directions, objective_values, sqlite_path
from compressor.study.storage import check_lasting
from compressor.threads import torch_threads
from compressor.train import (
    TrainConfig,
    deterministic_kernels,
    evaluate,
    reestimate_batchnorm,
    resolve_device,
    seed_everything,
)
from compressor.train.precision import resolve_precision
from compressor.transforms import Recipe
from compressor.transforms.reconstruct import output_gap, reconstruct, teacher_logits
from compressor.units import format_count

__all__ = [
    "SearchSetup", "prepare", "metric_value", "metric_label", "base_model_config", "Start",
    "start_candidate", "start_metrics", "study_location", "scored_as_built",
]


@dataclass
class SearchSetup:
    """A search's settings resolved, its data built and its base network ready: everything a
    process needs to build, start and judge the study's candidates, made once by :func:`prepare`.

    Attributes:
        init: how candidates start (the parent exists exactly when ``init.inherits``).
        build_version: the rules the study's recipes are built by (:mod:`.versions`).
        floor: the study's floor (the one it was made with, for a study that exists).
    """

    experiment: Experiment
    config: SearchConfig
    space: SearchSpace
    model_config: ModelConfig
    data: SegmentationData
    context: SearchContext
    input_shape: tuple[int, int, int, int]
    latency_runs: int
    storage_url: str
    study_name: str
    artifacts: Path
    init: Init
    floor: Floor
    echo: Callable[[str], None] = print
    parent: TrainedNetwork | None = None
    calibration: list[torch.Tensor] | None = None
    build_version: int = BUILD_VERSION
    latency: LatencyConfig | None = None

    _parent_logits: list[torch.Tensor] | None = field(default=None, init=False, repr=False)

    def parent_logits(self, device: torch.device) -> list[torch.Tensor] | None:
        """The parent's output on the calibration patches, run on ``device`` (the candidates'; a copy
        of the parent there: :func:`teacher_logits`), computed at the first call and kept: every
        candidate's start error compares with it, the parent unchanged."""
        if self.parent is None or not self.calibration:
            return None
        if self._parent_logits is None or self._parent_logits[0].device != device:
            self._parent_logits = teacher_logits(self.parent.model, torch.cat(self.calibration),
                                                 self.train_config.batch_size, device=device)
        return self._parent_logits

    @property
    def train_config(self) -> TrainConfig:
        """How candidates are trained: the ``train:`` section, or the fine-tuning one when they inherit."""
        experiment = scored_as_built(self.experiment, self.build_version)  # a study made before scores in fp32
        if not self.init.inherits:
            return experiment.train
        return experiment.finetune.train_config(experiment.train, distill=self.init.distills)

    @property
    def start_config(self) -> TrainConfig:
        """:attr:`train_config` for a candidate whose batch norms were re-estimated before (when it inherits)."""
        config = self.train_config
        return dataclasses.replace(config, bn_reestimate=0) if self.init.inherits else config

    @property
    def teacher(self) -> nn.Module | None:
        """The distillation teacher (the parent) when ``init`` is ``distill``."""
        return self.parent.model if self.parent is not None and self.init.distills else None

    @property
    def budget(self) -> Budget:
        return self.experiment.budget

    @property
    def directions(self) -> list[str]:
        return directions(self.config.objectives)

    @functools.cached_property
    def builder(self) -> CandidateBuilder:
        """How this study builds its candidates (:class:`CandidateBuilder`; one for the process, which keeps
        what every build reads the same)."""
        return CandidateBuilder(
            self.experiment, self.model_config, in_channels=self.data.in_channels, num_classes=self.data.num_classes,
            base=self.context.model, init=self.init, calibration=self.calibration, build_version=self.build_version,
        )

    def build(self, recipe: Recipe, *, sampled: bool = False) -> nn.Module:
        """The candidate of ``recipe`` exactly as this study builds it: a search trial, its
        confirmation and the budget check all go through here (and ``compressor export`` through
        the same :class:`CandidateBuilder`). ``sampled``: :meth:`CandidateBuilder.build`."""
        return self.builder.build(recipe, sampled=sampled)

    def measure(self, network: nn.Module) -> Cost:
        return measure(network, self.input_shape, latency_runs=self.latency_runs, latency=self.latency)

    def metric(self, metrics: SegmentationMetrics) -> float:
        return metric_value(metrics, self.config.metric)

    def values(self, metric: float, cost: Cost) -> list[float]:
        """The objective values of a candidate, in the study's order."""
        return objective_values(metric, cost.to_dict(modules=False), self.config.objectives)

    @property
    def references(self) -> list[str]:
        """The reference models, ratios against the first (``search.references`` resolved).

        ``base`` is the search's own base network; when that is U-Net or Micro-Net it is
        that reference already, and is named so.
        """
        names = self.config.references
        if names is None:  # the project's references are trained for a user's network only when asked
            ours = self.model_config.name in BASELINE_MODELS and not self.config.parent
            names = list(REFERENCE_MODELS) if ours else ["base"]
        # the base is that reference, as trained for it (a trained file is the user's own, whatever it holds)
        resolved = [self.parent_subject if name == "base" else name for name in names]
        return list(dict.fromkeys(resolved))

    @property
    def parent_subject(self) -> str:
        """The reference that is this search's base network as trained for it: U-Net or Micro-Net
        when the base is that baseline, else ``base`` (the user's network, or a trained file)."""
        same = is_reference_model(self.model_config) and not self.config.parent
        return self.model_config.name if same else "base"

    @property
    def base_label(self) -> str:
        """The base network's short name in tables: ``Unet (base)`` for
        ``segmentation_models_pytorch:Unet``, ``unet (base)`` for a U-Net of other widths,
        ``Unet (trained)`` for a search from a trained file (``search.parent``)."""
        return base_label(self.model_config.name, trained_file=bool(self.config.parent))


def metric_label(key: str, class_names: tuple[str, ...]) -> str:
    """``building IoU``, ``mIoU``, ``accuracy``..."""
    if key == "score":
        return f"{class_names[1]} IoU" if len(class_names) == 2 else "mIoU"
    if key.startswith("iou:"):
        return f"{key[4:]} IoU"
    return {"miou": "mIoU", "mean_f1": "mean F1"}.get(key, key)


def base_model_config(experiment: Experiment, space: SearchSpace, model: str | None = None) -> ModelConfig:
    """The base network: ``model`` if given, else the space's, else the experiment's.

    The experiment's builder arguments (and declared output) carry over when it names the
    same network.
    """
    name = model or space.model or experiment.model.name
    if name == experiment.model.name:
        return dataclasses.replace(experiment.model, args=dict(experiment.model.args))
    return ModelConfig(name=name)


@dataclass(frozen=True)
class Start:
    """How a candidate that inherits starts its fine-tuning (:func:`start_candidate`).

    Attributes:
        error: its output error against the parent (relative, on the calibration patches),
            after any reconstruction; None: not measured (from scratch).
        close: whether ``error`` is within ``finetune.max_start_error``.
        seconds: the reconstruction's time (None: none ran).
    """

    error: float | None = None
    close: bool | None = None
    seconds: float | None = None


def start_candidate(setup: SearchSetup, network: nn.Module) -> Start:
    """Readies a built candidate for :attr:`SearchSetup.start_config`: when it inherits, its batch
    norms re-estimated, the reconstruction ``finetune.reconstruct`` asks for (none by default in a
    search), and its output error against the parent measured. A search trial and its
    confirmation go through here, so both start the same."""
    if setup.parent is None:
        return Start()
    settings, config = setup.experiment.finetune, setup.train_config
    method = settings.reconstruction("none")
    device = resolve_device(config.device)
    seconds = None
    with torch_threads(config.threads), deterministic_kernels(device):  # where and as train() did it before
        network.to(device)
        if config.bn_reestimate:
            reestimate_batchnorm(network, setup.data, batches=config.bn_reestimate, batch_size=config.batch_size,
                                 seed=config.seed)
        images = torch.cat(setup.calibration or [])
        if method == "none":
            targets = setup.parent_logits(next((p.device for p in network.parameters()), torch.device("cpu")))
            error = output_gap(setup.parent.model, network, images, config.batch_size, targets=targets)
        else:
            started = time.perf_counter()
            precision = resolve_precision(config.precision, device) if setup.build_version >= RECONSTRUCTS_IN_PRECISION \
                else "fp32"  # a study made before keeps its rule
            error = reconstruct(setup.parent.model, network, images, method=method, source=settings.reconstruct_source,
                                steps=settings.reconstruct_steps, batch_size=config.batch_size, precision=precision,
                                choose_norms=setup.build_version >= LSTSQ_CHOOSES_NORMS).output_error_after
            seconds = round(time.perf_counter() - started, 3)
    if error is None or not math.isfinite(error):
        return Start(seconds=seconds)
    return Start(error=round(error, 6), close=error <= settings.max_start_error, seconds=seconds)


def start_metrics(setup: SearchSetup, network: nn.Module) -> SegmentationMetrics | None:
    """The validation metrics of a candidate readied by :func:`start_candidate`, when its fine-tuning
    counts its start (``finetune.steps: auto`` and an inheriting ``init``): ``train``'s ``start``,
    so a candidate that training makes no better keeps what it inherited, as ``compress`` does.
    None otherwise (a fixed number of steps, from scratch, or a study made before starts were
    counted, whose trials keep one rule: :data:`~.versions.COUNTS_START`), at no cost."""
    config = setup.start_config
    if setup.parent is None or not setup.init.inherits or not config.auto or setup.build_version < COUNTS_START:
        return None
    with torch_threads(config.threads), deterministic_kernels(resolve_device(config.device)):
        return evaluate(network, setup.data, config)


def prepare(
    experiment: Experiment, *, cache_dir: str | Path | None = None, echo: Callable[[str], None] = print,
    check_budget: bool = True,
    parent_weights: str | None = None,
    trust: bool = False,
    build_version: int = BUILD_VERSION,
    floor: Floor | None = None,
) -> SearchSetup:
    """Resolves the search settings, builds the data and the base network, checks the budget.

    With ``search.parent`` (a trained model file) that file's network is the base and the parent,
    evaluated on this data and never retrained; ``trust`` loads a file whose builder is neither
    registered nor a known model package's (:func:`compressor.load_saved`). A setup for a study
    that exists takes what the study was made with: ``parent_weights`` (the parent it stores),
    ``build_version`` (how it builds recipes) and ``floor`` (None: ``search.floor``'s rule on this
    data, said when the study keeps another).

    Raises:
        ConfigError: an unknown space or metric, a model that does not build, an in-memory storage.
        BudgetError: a budget that even the space's smallest candidate exceeds.
    """
    config = experiment.search
    if config.storage:
        check_lasting(config.storage)  # before any data is built or network trained
    space = SPACES.get(config.space)
    from_file = load_parent_file(parent_weights or config.parent, trust=trust) if config.parent else None
    model_config = from_file.model_config if from_file is not None else base_model_config(experiment, space, config.model)
    data = experiment.data.build(cache_dir=cache_dir)
    if config.metric.startswith("iou:") and config.metric[4:] not in data.class_names:
        raise ConfigError(f"search.metric: no class {config.metric[4:]!r}; classes: {', '.join(data.class_names)}")
    seed_everything(experiment.train.seed)
    base = from_file.model if from_file is not None else model_config.build(
        in_channels=data.in_channels, num_classes=data.num_classes)
    if from_file is not None:
        try:
            check_fits(base, data, what=shown_path(config.parent))
        except ClassCountError as error:  # a trained file is not rebuilt for other classes: no builder advice
            raise ConfigError(f"{error}: a trained network fits the data it was trained on; search it with that "
                              "experiment") from None
    else:
        check_fits(base, data, what=f"model {model_config.name}")  # before any training
    parent = None
    if from_file is not None:  # the user's trained network, as it is: evaluated here, never retrained
        metrics = evaluate(from_file.model, data, scored_as_built(experiment, build_version).train)
        parent = dataclasses.replace(from_file, metrics=metrics.to_dict())
        echo(f"parent {shown_path(config.parent)} (a trained file, not retrained): {metrics.summary()}")
    elif config.init != "random":  # a parent exists exactly when candidates inherit (SearchSetup.init)
        if parent_weights:
            parent = load_parent(model_config, parent_weights, in_channels=data.in_channels,
                                 num_classes=data.num_classes)
        else:
            parent = ensure_parent(scored_as_built(experiment, build_version), model_config,
                                   steps=experiment.finetune.parent_steps, data=data,
                                   cache_dir=cache_dir)
            echo(f"parent {model_config.name} ({parent.steps} steps, {'stored' if parent.reused else 'trained now'}: "
                 f"{parent.weights_path}): "
                 f"{SegmentationMetrics.from_dict(parent.metrics).summary() if parent.metrics else ''}")
        base = parent.model
    context = SearchContext(base, candidate_example(experiment, data.in_channels), model_config.name,
                            as_built=functools.partial(as_built_for, version=build_version))
    wants_latency = experiment.budget.needs_latency or "latency_ms" in config.objectives
    storage_url, study_name = study_location(experiment)
    database = sqlite_path(storage_url)
    artifacts = (database.parent if database is not None else experiment.run_path) / "artifacts"
    rule = Floor.by_rule(config.floor, data, config.metric, margin=config.min_gain)
    if floor is not None and floor != rule and not (floor.is_zero and rule.is_zero):
        echo(f"the study keeps the floor it was made with ({floor.describe('the metric') or 'a metric above 0'})")
    setup = SearchSetup(
        experiment=experiment, config=config, space=space, model_config=model_config, data=data, context=context,
        input_shape=experiment.cost_input_shape(data.in_channels),
        latency_runs=max(experiment.cost.latency_runs, 10) if wants_latency else experiment.cost.latency_runs,
        storage_url=storage_url, study_name=study_name, artifacts=artifacts.resolve(), echo=echo, parent=parent,
        init=Init(config.init), build_version=build_version, floor=rule if floor is None else floor,
        calibration=calibration_batches(
            data, calibration_count(experiment), batch_size=experiment.train.batch_size, seed=experiment.train.seed,
        ) if parent is not None else None,
        latency=experiment.cost.latency,
    )
    if check_budget and not experiment.budget.is_empty:
        check_smallest(setup)
    return setup


def scored_as_built(experiment: Experiment, build_version: int) -> Experiment:
    """``experiment`` as a study of ``build_version`` scores its parent and references: a study made before
    build version 9 scored every network in fp32 (``train.eval_precision: fp32`` unless the section sets it), so
    its stored parent and references are found under the keys they were stored with and score as its trials."""
    if build_version >= EVALUATES_IN_PRECISION or experiment.train.eval_precision is not None:
        return experiment
    return dataclasses.replace(experiment, train=dataclasses.replace(experiment.train, eval_precision="fp32"))


def study_location(experiment: Experiment) -> tuple[str, str]:
    """The storage URL and the study name of the search ``experiment`` describes:
    ``search.storage`` (default ``<run folder>/search.db``), ``search.study`` (default the experiment's name)."""
    config = experiment.search
    return config.storage or default_storage_url(experiment.run_path), config.study or experiment.name or "search"


def calibration_count(experiment: Experiment) -> int:
    """Batches of calibration patches a search keeps: what ``finetune.calibrate`` refits on, and
    what the reconstruction runs on when one is asked for (the first ones are the same patches)."""
    settings = experiment.finetune
    return max(1, settings.calibrate, settings.reconstruct_batches if settings.reconstruction("none") != "none" else 0)


def check_smallest(setup: SearchSetup) -> None:
    """Refuses a budget that the space's smallest candidate already exceeds, before any training."""
    choices = setup.space.smallest(setup.context)
    recipe = setup.space.fixed(choices, setup.context)
    network = setup.build(recipe)
    cost = setup.measure(network)
    check = setup.budget.check(cost)
    if not check.feasible:
        raise BudgetError(
            f"no candidate of space {setup.space.name!r} can meet the budget ({setup.budget.describe()}): "
            f"its smallest ({setup.space.describe(choices, recipe)}) has {format_count(cost.params)} params, "
            f"{format_count(cost.flops)} FLOPs at {'x'.join(map(str, setup.input_shape[2:]))}"
            + (f", {cost.latency_ms:.1f} ms" if cost.latency_ms is not None else "")
        )
