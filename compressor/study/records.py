"""A study's records: how a search stores its settings and trials on Optuna, and how they are read back.

Everything a report, an export or a resumed search needs lives in the Optuna storage
itself (SQLite, PostgreSQL...), as study and trial user attributes with plain JSON
values, so any point of a report can be rebuilt from the study alone.

Study attributes (:class:`StudyInfo`): the resolved experiment, the space, the base
model, the objectives, the metric, the budget, the reference models' costs and scores,
and where weights are kept.

Trial attributes (:class:`TrialRecord`): the recipe, its measured cost, the constraint
values, the metrics, the fidelity reached, the times, a status and a failure reason.

Statuses:
    ``complete``: trained to the end; the trial is COMPLETE with the objective values.
    ``infeasible``: outside the budget, never trained; COMPLETE (the sampler sees its
    constraint values), with the worst possible metric as its value.
    ``stopped``: stopped at a rung by the multi-fidelity rule; Optuna state PRUNED.
    ``failed``: the recipe was refused or training failed; Optuna state FAIL.
    ``running``: not finished yet (or its worker died and the heartbeat has not noticed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from compressor.latency import LatencyConfig

__all__ = [
    "FORMAT",
    "STATUSES",
    "TIMING_PHASES",
    "StudyInfo",
    "TrialRecord",
    "trial_records",
    "study_info",
]

FORMAT = 1
#: the phases of a trial's :attr:`TrialRecord.timing`, in the order they run
TIMING_PHASES = ("sample", "build", "cost", "calibrate", "train", "evaluate", "store")
STATUSES = ("complete", "infeasible", "stopped", "failed", "running")

@dataclass
class StudyInfo:
    """What a search stored on its study (``study.user_attrs``).

    Attributes:
        experiment: the resolved experiment (plain data; :meth:`Experiment.from_dict` rebuilds it).
        space: the search space's name.
        model: the base model's name (``unet`` or an import path).
        objectives: objective names in the order of the trial values.
        metric: the metric's key (``score``, ``miou``, ``accuracy``, ``mean_f1``, ``iou:<class>``).
        metric_label: how to print it (``building IoU``).
        budget: the limits (``max_params``, ``max_flops``, ``max_latency_ms``; None when unset).
        references: per reference model (``unet``, ``micronet``, ``base``: the search's own
            base network): ``params``, ``flops``, ``latency_ms`` and ``metric`` (None until
            that reference is trained), and for ``base`` its ``label``.
        input_shape: the shape costs were measured at.
        artifacts: the folder where Pareto-front weights are kept.
        model_args: the base network's builder arguments (channels and classes included).
        init: ``random``, ``inherit`` or ``distill`` (``search.init``).
        parent: the stored weights of the trained parent candidates start from (``""``
            when they start from random weights).
        floor: what a candidate must beat (:meth:`compressor.floor.Floor.to_dict`: the best
            constant prediction on the validation pixels and the margin); ``{}`` in studies
            stored before it existed, which keep the old rule (metric above 0).
        parent_subject: which reference is the search's base network as trained for it (``base``,
            or ``unet`` when the search ran on U-Net as its baseline is trained); ``""`` in a
            study stored before it was kept (then derived from ``references`` and ``model``).
        ratio_to: the reference the report's ratios (x times smaller) are against:
            ``unet``, or ``base`` for a search on another network.
        recipe_legend: how to read the recipes' short lines (the space's ``legend``; ``""``: none, or
            a study stored before it was kept).
    """

    experiment: dict[str, Any]
    space: str
    model: str
    objectives: list[str]
    metric: str = "score"
    metric_label: str = "score"
    budget: dict[str, float | None] = field(default_factory=dict)
    references: dict[str, dict[str, float | None]] = field(default_factory=dict)
    input_shape: list[int] = field(default_factory=list)
    artifacts: str = ""
    model_args: dict[str, Any] = field(default_factory=dict)
    init: str = "random"
    parent: str = ""
    floor: dict[str, Any] = field(default_factory=dict)
    ratio_to: str = "unet"
    parent_subject: str = ""
    recipe_legend: str = ""

    @property
    def threshold(self) -> float:
        """A Pareto candidate's metric must be above this (see :attr:`floor`)."""
        from compressor.floor import Floor

        return Floor.from_dict(self.floor).threshold

    @property
    def latency(self) -> LatencyConfig | None:
        """How the study timed latency: its ``cost.latency`` section, the input size filled in from
        ``cost.input_size``; None without that section."""
        from compressor.errors import ConfigError, first_line
        from compressor.latency import LatencyConfig  # torch: only when asked

        cost = (self.experiment or {}).get("cost") or {}
        section = cost.get("latency")
        if not section:
            return None
        if not isinstance(section, dict) or not isinstance(cost, dict):
            raise ConfigError(f"the study's cost.latency is not a mapping: {str(section)[:60]!r}")
        try:
            return LatencyConfig(**{**section, "input_size": section.get("input_size") or cost.get("input_size")})
        except TypeError as error:  # a key LatencyConfig does not have
            raise ConfigError(f"the study's cost.latency is not valid: {first_line(error)}") from None

    def to_attrs(self) -> dict[str, Any]:
        return {"compressor_format": FORMAT, **{name: getattr(self, name) for name in self.__dataclass_fields__}}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StudyInfo:
        return cls(**{name: attrs[name] for name in cls.__dataclass_fields__ if name in attrs})


@dataclass
class TrialRecord:
    """One trial as the search stored it (``trial.user_attrs`` plus Optuna's state).

    Attributes:
        number: Optuna's trial number.
        status: one of :data:`STATUSES`.
        recipe: the recipe as plain data (``Recipe.from_data`` rebuilds it).
        recipe_short: the recipe in one short line.
        recipe_hash: the recipe's stable hash (equal recipes are trained once).
        params, flops, latency_ms, activation_bytes: the candidate's cost, measured before training.
        feasible: inside the budget.
        constraints: Optuna's constraint values (<= 0 feasible), one per limit.
        metric: the study's metric: final, or at the rung where the trial stopped.
        metrics: every final (or last) metric, as ``SegmentationMetrics.to_dict``.
        fidelity: the fraction of the training reached (1.0 complete, 0.0 untrained).
        rung_metrics: the metric at each rung reached, keyed by the fraction as text.
        build_seconds: time to draw the recipe, apply it and measure the candidate's cost.
        train_seconds: optimizer time; wall_seconds: the whole trial.
        steps: optimizer steps it trained (a repeat of a finished recipe trained none of its own).
        failure: why it failed (or ``None``).
        weights: the artifact id of its kept weights (Pareto-front trials only) or None.
        duplicate_of: the trial whose result this one reused (same recipe) or None.
        params_dict: Optuna's sampled parameters.
        values: Optuna's objective values (None unless COMPLETE).
        curve: its learning curve, ``[step, metric]`` at each validation evaluation.
        start_error: for a candidate that inherits, its output error against the parent
            (relative, on the calibration patches) when fine-tuning starts, after any
            reconstruction (None: from scratch, or not measured).
        starts_close: whether ``start_error`` is within ``finetune.max_start_error`` (a
            candidate that does not start close learns again more than it keeps).
        reconstruct_seconds: the time its reconstruction took (``finetune.reconstruct``).
        rung_share: the share of the validation windows its rung evaluations read
            (``search.rung_share``; its ``rung_metrics`` and the points of its ``curve`` before the
            last), None: all of them, as before it was recorded.
        timing: where its time went, seconds per phase (:data:`TIMING_PHASES`: ``sample`` the
            recipe (and wait for a twin training it elsewhere), ``build`` the candidate, measure its ``cost``, ``calibrate`` it (batch norms, reconstruction, the
            start error), ``train`` (optimizer steps, data included), ``evaluate`` (the start, when a
            fine-tuning to the plateau counts it, the rungs and the final evaluation), ``store`` (weights and records), and the ``total``); the phases a
            trial did not reach are absent. None for a trial stored before it was recorded.
        scored_in: the precision its evaluations ran in, ``bf16`` (autocast, its fine-tuning's
            precision) or ``fp32``; None for a trial stored before it was recorded (fp32).
    """

    number: int
    status: str
    recipe: list[dict[str, Any]] = field(default_factory=list)
    recipe_short: str = ""
    recipe_hash: str = ""
    params: int | None = None
    flops: int | None = None
    latency_ms: float | None = None
    activation_bytes: int | None = None
    feasible: bool | None = None
    constraints: list[float] = field(default_factory=list)
    metric: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    fidelity: float = 0.0
    rung_metrics: dict[str, float] = field(default_factory=dict)
    build_seconds: float | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    steps: int | None = None
    failure: str | None = None
    weights: str | None = None
    duplicate_of: int | None = None
    params_dict: dict[str, Any] = field(default_factory=dict)
    values: list[float] | None = None
    curve: list[list[float]] = field(default_factory=list)
    start_error: float | None = None
    starts_close: bool | None = None
    reconstruct_seconds: float | None = None
    timing: dict[str, float] | None = None
    rung_share: float | None = None
    scored_in: str | None = None

    # Attributes stored on the Optuna trial; the rest comes from the trial itself.
    STORED = (
        "status", "recipe", "recipe_short", "recipe_hash", "params", "flops", "latency_ms", "activation_bytes",
        "feasible", "constraints", "metric", "metrics", "fidelity", "rung_metrics", "build_seconds", "train_seconds",
        "wall_seconds", "failure", "weights", "duplicate_of", "curve", "start_error", "starts_close",
        "reconstruct_seconds", "timing", "steps", "rung_share", "scored_in",
    )

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialRecord:
        attrs = trial.user_attrs
        stored = {name: attrs[name] for name in cls.STORED if name in attrs}
        status = stored.pop("status", None) or _status_of_state(trial.state)
        if trial.state == TrialState.FAIL:
            status = "failed"  # a worker killed mid-trial leaves "running" behind; the state is the truth
        elif trial.state == TrialState.RUNNING:
            status = "running"
        if status == "failed" and not stored.get("failure"):
            stored["failure"] = "the worker stopped during the trial (interrupted or killed)"
        return cls(
            number=trial.number, status=status, params_dict=dict(trial.params),
            values=list(trial.values) if trial.values is not None else None, **stored,
        )

    def to_attrs(self) -> dict[str, Any]:
        return {name: _json_safe(getattr(self, name)) for name in self.STORED}

    @property
    def trained(self) -> bool:
        return self.status in ("complete", "stopped")

    def pareto_candidate(self, threshold: float = 0.0) -> bool:
        """Finished, inside the budget, and it learned something: its metric is above ``threshold``.

        Only these can be on a Pareto front: a network that learned nothing (all background,
        or one class everywhere) would otherwise sit on the front for being small, which no
        one would ship. The study's threshold is :attr:`StudyInfo.threshold` (the best
        constant prediction plus a margin; 0 for studies stored before it existed).
        """
        return self.status == "complete" and self.feasible is not False and (self.metric or 0.0) > threshold


def _status_of_state(state: TrialState) -> str:
    return {
        TrialState.COMPLETE: "complete", TrialState.PRUNED: "stopped", TrialState.FAIL: "failed",
    }.get(state, "running")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def study_info(study: optuna.Study) -> StudyInfo:
    """The search settings stored on ``study``.

    Raises:
        compressor.errors.ConfigError: the study was not made by ``compressor search``.
    """
    from compressor.errors import ConfigError

    attrs = study.user_attrs
    if attrs.get("compressor_format") != FORMAT:
        raise ConfigError(f"study {study.study_name!r} was not created by `compressor search` (no search settings on it)")
    return StudyInfo.from_attrs(attrs)


def trial_records(
    trials: Iterable[FrozenTrial] | optuna.Study, *, states: Sequence[str] | None = None
) -> list[TrialRecord]:
    """Every trial (or those whose status is in ``states``) as a :class:`TrialRecord`, by number."""
    if isinstance(trials, optuna.Study):
        trials = trials.get_trials(deepcopy=False)
    # A WAITING trial is only enqueued choices (a start point, a retry): not a trial yet.
    records = [TrialRecord.from_trial(trial) for trial in trials if trial.state != TrialState.WAITING]
    if states is not None:
        records = [record for record in records if record.status in states]
    return sorted(records, key=lambda record: record.number)
