"""The ``search:`` section of an experiment: what to search, for how long, and how."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from compressor.errors import CompressorError, ConfigError

__all__ = ["SearchConfig", "ConfirmConfig", "OBJECTIVES", "METRICS"]

OBJECTIVES = ("metric", "params", "flops", "latency_ms")
#: other names accepted in ``search.objectives``
OBJECTIVE_ALIASES = {"latency": "latency_ms"}
METRICS = ("score", "miou", "mean_f1", "accuracy")


@dataclass(frozen=True, kw_only=True)
class ConfirmConfig:
    """The confirmation of a finished search's front (``search.confirm``; ``compressor confirm``).

    Attributes:
        top: how many front trials to retrain (those adding most to the front's hypervolume);
            0 confirms nothing.
        seeds: further training seeds, after the search's own (seed s: s+1 .. s+seeds). The
            run the search picked on is not counted: picking on it flatters the winners.
        folds: with a k-fold data section (``data.folds``), also every other fold, for
            each of those seeds and for the search's own seed.
        budgets: parameter budgets (``1M``, ``300k``) the report states a claim for: the best
            confirmed model within each; empty: the study's ``max_params``.
    """

    top: int = 0
    seeds: int = 0
    folds: bool = False
    budgets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from compressor.units import parse_count

        if self.top < 0 or self.seeds < 0:
            raise ConfigError(f"search.confirm: top and seeds must be >= 0, got top {self.top}, seeds {self.seeds}")
        for budget in self.budgets:
            try:
                parse_count(budget)
            except (ValueError, CompressorError) as error:
                raise ConfigError(f"search.confirm.budgets: {budget!r} is not a parameter count ({error})") from None

    @property
    def active(self) -> bool:
        return self.top > 0 and (self.seeds > 0 or self.folds)


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """How to search (the ``search:`` section of an experiment; CLI options override it).

    Attributes:
        space: the registered search space (``unet_family``, ``generic``).
        model: the base network (default: the space's own, else the experiment's ``model``).
        objectives: any of ``metric`` (maximized), ``params``, ``flops``, ``latency``
            (``latency_ms``, measured as ``cost.latency`` says; minimized), in this order in the trial values. ``[metric]`` alone is a
            single-objective search; the budget still constrains it.
        metric: ``score`` (the foreground IoU of a two-class problem, else the mIoU),
            ``miou``, ``mean_f1``, ``accuracy`` or ``iou:<class name>``.
        n_trials: trials the study should hold (finished and stopped ones; a resumed
            search counts those already there).
        timeout: seconds of searching after which no new trial starts, counted from the first
            trial (the references and the parent, trained once, are not counted); the running
            one finishes, and a study is never stopped before it holds 3 finished trials, the
            space's starting points first (null: no limit).
        sampler: ``tpe`` (default), ``nsga2``, ``gp`` (Optuna's Gaussian-process sampler:
            multi-objective with constraints; needs scipy, ``pip install 'compressor[gp]'``)
            or ``random``.
        seed: the sampler's seed.
        rungs: fractions of the training after which a trial may be stopped (empty: never).
        keep_fraction: share of the trials at a rung that go on (by Pareto rank); 1/3
            keeps the best third, as successive halving with eta 3.
        rung_ranking: how a rung ranks its trials: ``front`` (non-dominated sorting alone: a
            trial on the first front always goes on) or ``contribution`` (within a front, by
            the share of the front's hypervolume each alone adds; see
            :mod:`compressor.search.fidelity`).
        min_trials_at_rung: no trial is stopped at a rung that fewer other trials reached.
        rung_share: the share of each validation scene's sliding windows a rung's evaluation
            reads (a fixed subsample, the same for every trial; the final evaluation reads
            them all): rungs only rank trials against each other. How well a share ranks them
            depends on how many windows a scene has (BENCHMARKS, "Rung evaluations on a share
            of the windows"): on 8 windows a scene, 0.5 ranked 12 quickstart candidates as the
            whole did (Spearman 0.99, the same stops) for half the time; on 4, not (Spearman
            0.75-0.86, other stops). Hence 1 (every window) by default.
        baselines: train the references first with the same recipe (once; stored); false:
            none is trained, their sizes are still shown.
        references: the reference models trained beside the search and drawn with its
            front: any of ``base`` (the search's own base network, e.g. the user's), ``unet``
            and ``micronet``; the ratios (x times smaller), differences and claims are against
            the first. None: ``[unet, micronet]`` for the project's networks, ``[base]`` for
            another one (the project's references are trained only when asked).
        parent: a trained model file (saved by ``compressor train``, ``compress``, ``export``;
            loaded under the model-file policy) the candidates inherit from, instead of a
            parent the search trains: its network is the base, and it is never retrained.
            Needs ``init`` ``inherit`` or ``distill``.
        study: the study's name (default: the experiment's name).
        storage: an Optuna storage URL (default: ``sqlite:///<run_dir>/search.db``).
        heartbeat_interval: seconds between a running trial's heartbeats.
        grace_period: seconds without a heartbeat after which a trial counts as dead.
        max_retry: how often a dead worker's trial is retried.
        init: how candidates start: ``random`` (the base network untrained, new layers
            initialized by PyTorch, trained from scratch), ``inherit`` (a transformed copy
            of the base network trained once as the *parent*, each new layer the closest
            approximation of the trained layer it replaces, fine-tuned with the
            ``finetune:`` section), or ``distill`` (as ``inherit``, the parent also the
            distillation teacher).
        floor: what a candidate must beat to be on the front, keep its weights, or count
            as confirmed: ``constant`` (the best constant prediction, one class everywhere,
            on the validation pixels, plus ``min_gain``; see :mod:`compressor.floor`) or
            ``zero`` (a metric above 0, the rule of studies made before floors existed).
        min_gain: the margin over the best constant prediction.
        confirm: retrain the front's best trials and the references on further seeds
            (and folds) once the search is done (:class:`ConfirmConfig`).
    """

    omit_when_default = ("references", "parent", "rung_share", "rung_ranking")

    space: str = "unet_family"
    model: str | None = None
    objectives: list[str] = field(default_factory=lambda: ["metric", "params", "flops"])
    metric: str = "score"
    n_trials: int = 20
    timeout: float | None = None
    sampler: Literal["tpe", "nsga2", "gp", "random"] = "tpe"
    seed: int = 0
    rungs: list[float] = field(default_factory=lambda: [1 / 9, 1 / 3])
    keep_fraction: float = 1 / 3
    rung_ranking: Literal["front", "contribution"] = "front"
    min_trials_at_rung: int = 3
    rung_share: float = 1.0
    baselines: bool = True
    references: list[Literal["base", "unet", "micronet"]] | None = None
    study: str = ""
    storage: str = ""
    heartbeat_interval: int = 30
    grace_period: int = 120
    max_retry: int = 2
    init: Literal["random", "inherit", "distill"] = "random"
    parent: str | None = None
    floor: Literal["constant", "zero"] = "constant"
    min_gain: float = 0.02
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)

    def __post_init__(self) -> None:
        if self.parent is not None:
            if self.init == "random":
                raise ConfigError(f"search.parent ({self.parent}) is a trained network for the candidates to inherit "
                                  "from: set search.init to inherit or distill (--init inherit)")
            if self.confirm.folds:
                raise ConfigError(f"search.confirm.folds with search.parent ({self.parent}): the file was trained on one "
                                  "split, and other folds would validate it on pixels it may have trained on; "
                                  "confirm a search from a file over seeds")
            # where it lies, whatever folder a worker, an export or a confirmation runs in
            object.__setattr__(self, "parent", str(Path(self.parent).resolve()))
        if self.references is not None and (not self.references or len(set(self.references)) != len(self.references)):
            raise ConfigError(f"search.references must name each of base, unet, micronet at most once, got {self.references}")
        if not 0 <= self.min_gain < 1:
            raise ConfigError(f"search.min_gain must be in [0, 1), got {self.min_gain}")
        # ``latency`` is the name people use; trial values and tables keep the stored name
        object.__setattr__(self, "objectives", [OBJECTIVE_ALIASES.get(name, name) for name in self.objectives])
        if not self.objectives or "metric" not in self.objectives:
            raise ConfigError(f"search.objectives must include 'metric', got {self.objectives}")
        unknown = [name for name in self.objectives if name not in OBJECTIVES]
        if unknown:
            raise ConfigError(f"search.objectives: unknown objective {unknown[0]!r}; valid: {', '.join(OBJECTIVES)}")
        if len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(f"search.objectives: repeated objective in {self.objectives}")
        if self.metric not in METRICS and not self.metric.startswith("iou:"):
            raise ConfigError(f"search.metric: unknown metric {self.metric!r}; valid: {', '.join(METRICS)}, iou:<class>")
        if self.n_trials < 1:
            raise ConfigError(f"search.n_trials must be >= 1, got {self.n_trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"search.timeout must be > 0 seconds, got {self.timeout}")
        if any(not 0 < rung < 1 for rung in self.rungs) or sorted(self.rungs) != list(self.rungs):
            raise ConfigError(f"search.rungs must be increasing fractions in (0, 1), got {self.rungs}")
        if not 0 < self.rung_share <= 1:
            raise ConfigError(f"search.rung_share must be in (0, 1], got {self.rung_share}")
        if not 0 < self.keep_fraction <= 1:
            raise ConfigError(f"search.keep_fraction must be in (0, 1], got {self.keep_fraction}")
        for key in ("min_trials_at_rung", "heartbeat_interval", "grace_period", "max_retry"):
            if getattr(self, key) < (0 if key in ("max_retry", "min_trials_at_rung") else 1):
                raise ConfigError(f"search.{key} must be >= 1, got {getattr(self, key)}")
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(
                f"search.grace_period ({self.grace_period}) must be longer than search.heartbeat_interval "
                f"({self.heartbeat_interval})"
            )
