"""One search trial, from sampled choices to stored record: the study's objective function."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping

import optuna
from optuna.trial import TrialState

from compressor.bounds import shown
from compressor.candidates.setup import SearchSetup, start_candidate, start_metrics
from compressor.errors import CompressorError, RunFailedError, first_line, is_wrapped_interrupt, typed_line
from compressor.metrics import SegmentationMetrics
from compressor.search.fidelity import rung_key, should_stop
from compressor.search.twins import wait_for_twin
from compressor.search.weights import WeightStore
from compressor.study import (
    TrialRecord,
    front,
    hypervolume_reference,
    hypervolume_shares,
    objective_values,
    trial_records,
)
from compressor.study.liveness import PROCESS_KEY, process_identity
from compressor.threads import torch_threads
from compressor.train import train
from compressor.train.determinism import resolve_device
from compressor.train.precision import resolve_precision

__all__ = ["TrialFailed", "TrialRunner"]


class TrialFailed(CompressorError):
    """A trial that failed for a stated reason (refused recipe, failed training); the search goes on."""


class TrialRunner:
    """The objective: sample a recipe, build and cost it, train it if feasible, record everything.

    * Cost is measured before training; an infeasible candidate is recorded with its
      constraint values and never trained (its metric value is 0).
    * A recipe already finished in the study (same hash) is not trained again: its
      result is copied and the trial says which one it duplicates. One that another live
      process is training now is waited for (every ``twin_poll`` s, at most ``twin_wait`` s),
      then reused the same way (:mod:`.twins`).
    * After each rung the trial may be stopped (:func:`~compressor.search.fidelity.should_stop`);
      it then ends PRUNED with the metric it reached.
    * A finished trial that lands on the Pareto front keeps its weights.
    """

    twin_poll = 1.0  # seconds between looks at the study while a twin trains the same recipe
    twin_wait = 3600.0  # the longest wait for it; then the recipe is trained here too

    def __init__(self, setup: SearchSetup, weights: WeightStore) -> None:
        self.setup = setup
        self.weights = weights

    def __call__(self, trial: optuna.Trial) -> list[float]:
        # The whole trial, building and costing included, with the training's thread count.
        with torch_threads(self.setup.experiment.train.threads):
            try:
                return self._run(trial)
            except OSError as error:  # a read-only folder, a full disk: no later trial would fare better
                raise _cannot_go_on(trial, error) from None

    def _run(self, trial: optuna.Trial) -> list[float]:
        setup = self.setup
        started = time.perf_counter()
        trial.set_user_attr(PROCESS_KEY, process_identity())  # a run on this host can tell if it died
        record = TrialRecord(number=trial.number, status="running", timing={})
        clock = _Phases(record.timing)
        try:
            with clock("sample"):
                recipe = setup.space(trial, setup.context)
        except CompressorError as error:
            return self._fail(trial, record, started, f"the space gave no recipe: {error}")
        record.recipe = recipe.to_data()["transforms"]
        record.recipe_hash = recipe.hash()
        record.recipe_short = setup.space.describe(trial.params, recipe)
        with clock("sample"):  # a twin training the same recipe elsewhere is waited for
            twin = wait_for_twin(trial, record.recipe_hash, echo=setup.echo, poll=self.twin_poll,
                                 max_wait=self.twin_wait)
        if twin is not None:
            return self._reuse(trial, record, twin, started)
        outside = _outside_the_space(trial)
        if outside:  # an enqueued trial's fixed value: Optuna takes it with a warning
            return self._fail(trial, record, started, f"parameter {outside} is outside the space's range; not built")
        try:
            with clock("build"):
                network = setup.build(recipe, sampled=True)
            with clock("cost"):
                cost = setup.measure(network)
        except CompressorError as error:
            return self._fail(trial, record, started, str(error))
        except RuntimeError as error:  # torch refusing the candidate (shapes, memory): this trial fails, not the search
            _reraise_interrupt(error)
            return self._fail(trial, record, started, f"building the candidate failed: {typed_line(error)}")
        check = setup.budget.check(cost)
        record.build_seconds = round(time.perf_counter() - started, 3)
        record.params, record.flops = cost.params, cost.flops
        record.latency_ms, record.activation_bytes = cost.latency_ms, cost.activation_bytes
        record.constraints, record.feasible = check.constraints, check.feasible
        _set_constraints(trial, {limit.name: limit.constraint for limit in check.limits})
        if not check.feasible:
            record.status, record.metric = "infeasible", 0.0
            self._save(trial, record, started)
            return setup.values(0.0, cost)
        if setup.config.rungs and setup.config.rung_share < 1:  # stored now: a worker beside it reads it at a rung
            record.rung_share = setup.config.rung_share
        with clock("store"):
            self._save(trial, record, started)

        def at_rung(step: int, metrics: SegmentationMetrics) -> bool:
            rung = setup.config.rungs[min(len(record.rung_metrics), len(setup.config.rungs) - 1)]
            value = setup.metric(metrics)
            record.rung_metrics[rung_key(rung)] = value
            trial.set_user_attr("rung_metrics", dict(record.rung_metrics))
            return not self._stop_at(trial, rung_key(rung), setup.values(value, cost))

        try:
            with clock("calibrate"):
                start = start_candidate(setup, network)
            record.start_error, record.starts_close, record.reconstruct_seconds = start.error, start.close, start.seconds
            with clock("evaluate"):
                inherited = start_metrics(setup, network)
            result = train(
                network, setup.data, setup.start_config, evaluate_at=list(setup.config.rungs),
                callback=at_rung, description=f"trial {trial.number}", teacher=setup.teacher,
                evaluate_at_share=setup.config.rung_share, start=inherited,
            )
        except CompressorError as error:
            return self._fail(trial, record, started, str(error))
        except RuntimeError as error:  # out of memory and the like: this trial fails, the search goes on
            _reraise_interrupt(error)
            return self._fail(trial, record, started, f"training failed: {typed_line(error)}")
        record.metric = setup.metric(result.metrics)
        record.metrics = result.metrics.to_dict()
        scoring = setup.start_config
        record.scored_in = resolve_precision(scoring.evaluation_precision, resolve_device(scoring.device))
        record.curve = [[step, round(setup.metric(metrics), 5)] for step, metrics in result.history]
        # a run that ended by itself (its steps done, or its plateau with steps: auto) is complete
        record.fidelity = round(result.steps_done / setup.train_config.step_limit, 4) if result.stopped_early else 1.0
        record.train_seconds = round(result.train_seconds, 3)
        record.steps = result.steps_done
        record.timing["train"] = round(result.train_seconds, 3)  # the evaluations inside train() are their own phase
        record.timing["evaluate"] = round(record.timing.get("evaluate", 0.0) + result.eval_seconds, 3)
        values = setup.values(record.metric, cost)
        if result.stopped_early:
            record.status = "stopped"
            self._save(trial, record, started)
            raise optuna.TrialPruned(f"stopped at {record.fidelity:.0%} of its training")
        record.status = "complete"
        with clock("store"):
            if self._on_front(trial, record):
                record.weights = self.weights.keep(trial, network.cpu())
        self._save(trial, record, started)
        return values

    # -- pieces ---------------------------------------------------------------------------

    def _save(self, trial: optuna.Trial, record: TrialRecord, started: float) -> None:
        record.wall_seconds = round(time.perf_counter() - started, 3)
        if record.timing is not None:
            record.timing["total"] = record.wall_seconds
        for key, value in record.to_attrs().items():
            trial.set_user_attr(key, value)

    def _fail(self, trial: optuna.Trial, record: TrialRecord, started: float, reason: str) -> list[float]:
        record.status, record.failure = "failed", reason
        self._save(trial, record, started)
        raise TrialFailed(reason)

    def _reuse(
        self, trial: optuna.Trial, record: TrialRecord, twin: optuna.trial.FrozenTrial, started: float
    ) -> list[float]:
        copied = TrialRecord.from_trial(twin)
        for key in TrialRecord.STORED:
            if key not in ("recipe_short", "weights", "wall_seconds", "build_seconds", "train_seconds", "timing",
                           "steps"):
                setattr(record, key, getattr(copied, key))
        record.duplicate_of = copied.duplicate_of if copied.duplicate_of is not None else twin.number
        _set_constraints(trial, twin.constraints)  # what Optuna's own view (best_trials, samplers) reads
        self._save(trial, record, started)
        if twin.state == TrialState.PRUNED:
            raise optuna.TrialPruned(f"same recipe as trial {record.duplicate_of}, which was stopped")
        return list(twin.values)

    def _stop_at(self, trial: optuna.Trial, key: str, point: list[float]) -> bool:
        """Whether the trial stops at rung ``key`` with objective values ``point``: ranked against the
        other trials that reached the rung reading the same share of the windows (a study resumed
        after ``search.rung_share`` changed compares like with like)."""
        config = self.setup.config
        share = config.rung_share if config.rung_share < 1 else None  # as TrialRecord.rung_share stores it
        others = []
        for other in trial.study.get_trials(deepcopy=False):
            metric = other.user_attrs.get("rung_metrics", {}).get(key)
            if other.number == trial.number or metric is None or other.user_attrs.get("duplicate_of") is not None:
                continue
            if other.user_attrs.get("rung_share") != share:
                continue
            others.append(objective_values(metric, other.user_attrs, config.objectives))
        shares = None
        if config.rung_ranking == "contribution" and len(others) >= config.min_trials_at_rung:
            shares = hypervolume_shares([point, *others], config.objectives, hypervolume_reference(trial.study))
        return should_stop(
            point, others, self.setup.directions, keep_fraction=config.keep_fraction,
            min_trials=config.min_trials_at_rung, shares=shares,
        )

    def _on_front(self, trial: optuna.Trial, record: TrialRecord) -> bool:
        """True if the finished ``record`` is on the study's front (:func:`compressor.study.front`)."""
        records = [other for other in trial_records(trial.study) if other.number != record.number]
        kept = front([*records, record], self.setup.config.objectives, self.setup.floor.threshold)
        return any(member.number == record.number for member in kept)


class _Phases:
    """``with phases("build"): ...`` adds the block's seconds to ``timing["build"]``."""

    def __init__(self, timing: dict[str, float]) -> None:
        self.timing = timing

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.timing[phase] = round(self.timing.get(phase, 0.0) + time.perf_counter() - began, 3)


def _cannot_go_on(trial: optuna.Trial, error: OSError) -> RunFailedError:
    """The error that ends the search when a trial cannot write (its weights, a file): the trial is
    recorded failed with the reason first (Optuna then marks it FAIL), as far as the storage still takes it."""
    if isinstance(error, CompressorError):  # a WriteError: its message names the file
        reason = str(error)
    elif error.filename is not None and error.strerror:
        reason = f"{error.filename}: {error.strerror}"
    else:
        reason = first_line(error)
    try:
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("failure", reason)
    except Exception:  # noqa: BLE001 - the study may sit on the full disk too: it stays as Optuna leaves it
        pass
    return RunFailedError(f"trial {trial.number} failed and the search stopped: {reason}")




def _reraise_interrupt(error: RuntimeError) -> None:
    """A Ctrl-C that torch wrapped in a RuntimeError (a Python callback interrupted in C++) is still a Ctrl-C."""
    if is_wrapped_interrupt(error):
        raise KeyboardInterrupt from error


def _outside_the_space(trial: optuna.Trial) -> str | None:
    """The first parameter of ``trial`` outside its distribution, as ``name=value``, or None. A trial enqueued in
    the study (by anyone who can write its storage) fixes values Optuna takes even out of range."""
    for name, value in trial.params.items():
        distribution = trial.distributions.get(name)
        if isinstance(distribution, optuna.distributions.CategoricalDistribution):
            inside = value in distribution.choices
        elif isinstance(distribution, (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution)):
            inside = isinstance(value, (int, float)) and distribution.low <= value <= distribution.high
        else:
            inside = True
        if not inside:
            return f"{name}={shown(value)}"
    return None


def _set_constraints(trial: optuna.Trial, values: Mapping[str, float]) -> None:
    """Sets the trial's constraint values (what Optuna's samplers read, <= 0 feasible). The retry of a
    trial whose process died carries its first run's (Optuna copies them into it), which
    ``Trial.set_constraint`` keeps, warning: a held value that this run measured otherwise (a latency,
    measured again, maybe on another host) is written over in the storage, an equal one left."""
    held = trial.constraints
    for name, value in values.items():
        if name not in held:
            trial.set_constraint(name, value)
        elif held[name] != float(value):  # the key is Optuna's own (Trial.set_constraint's)
            trial.storage.set_trial_system_attr(trial._trial_id, f"constraints:{name}", float(value))
