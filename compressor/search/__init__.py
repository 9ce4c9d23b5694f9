"""The search: Optuna explores transform recipes under budgets; multi-objective, multi-fidelity, resumable.

:func:`run_trials` starts or resumes the study an experiment describes and runs its trials;
:func:`join_trials` adds a worker to a running study (another process or machine, same
storage); :func:`export_trial` rebuilds a trial's model from its recipe and kept weights. A
search that ends with a confirmation is :func:`compressor.pipeline.run_search` (the search
never imports the confirmation, nor the confirmation the search).
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from compressor.candidates.setup import SearchSetup, prepare, scored_as_built, study_location
from compressor.candidates.stored import building_study, stored_experiment
from compressor.candidates.versions import build_version
from compressor.experiment import BASELINE_MODELS, Experiment, TrainedNetwork, ensure_baselines, ensure_parent
from compressor.floor import Floor
from compressor.heap import frozen_heap
from compressor.metrics import SegmentationMetrics
from compressor.search.export import export_trial, rebuild_trial
from compressor.search.keys import check_joinable, with_search
from compressor.search.progress import trial_line
from compressor.search.runner import TrialFailed, TrialRunner
from compressor.search.study import open_search_study, references
from compressor.search.weights import WeightStore
from compressor.search_config import ConfirmConfig
from compressor.study import (
    StudyInfo,
    TrialRecord,
    default_storage_url,
    front,
    load_study,
    open_storage,
    study_info,
    trial_records,
)
from compressor.study.liveness import fail_dead_trials, others_running, retries
from compressor.study.storage import stored_attrs, writes_to

__all__ = [
    "SearchResult", "run_trials", "join_trials", "export_trial", "rebuild_trial", "with_search", "default_storage_url",
    "load_study", "open_storage", "front",
]

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class SearchResult:
    """What a search run left in its study.

    Attributes:
        confirm: the study's confirmation settings (``search.confirm`` as the study stores them).
        running_elsewhere: trials still running in other processes when this one ended (the
            front is not final: no confirmation yet).
        own_network: the study stores the network of the experiment this process was given (the
            user's own, trusted as their Python is), so its confirmation may build it as the search did.
        confirmation: the confirmation that followed, when :func:`compressor.pipeline.run_search`
            ran one (a :class:`compressor.confirm.Confirmation`).
    """

    study: optuna.Study
    storage_url: str
    records: list[TrialRecord]
    front: list[TrialRecord]
    seconds: float
    confirm: ConfirmConfig
    running_elsewhere: tuple[str, ...] = ()
    own_network: bool = False
    confirmation: Any = None

    @property
    def study_name(self) -> str:
        return self.study.study_name


def run_trials(
    experiment: Experiment, *, cache_dir: str | Path | None = None, echo: Callable[[str], None] = print,
    trust: bool = False,
) -> SearchResult:
    """Starts (or resumes) the search ``experiment.search`` describes and runs its trials to its target.

    Steps: build the data and the base network; refuse a budget the space cannot meet;
    open the study (a new one stores the settings and enqueues the space's starting
    points; an existing one must have been made with the same settings); train the
    reference models once if asked; run trials until the study holds ``n_trials``
    finished ones or ``timeout`` seconds have passed since the first trial (the baselines'
    and parent's training does not count; the first 3 trials run whatever the time; a trial
    already running then finishes). Ctrl-C leaves every finished
    trial in the study. ``trust`` loads a ``search.parent`` file whose builder is the file's own code.

    Raises:
        CompressorError: bad settings, an impossible budget, a study made with other settings.
    """
    started = time.perf_counter()
    attrs = stored_attrs(*study_location(experiment))  # a study made by an earlier version: build as it did
    setup = prepare(experiment, cache_dir=cache_dir, echo=echo, trust=trust, build_version=build_version(attrs),
                    floor=_study_floor(attrs))
    study = open_search_study(setup, sampler_seed=setup.config.seed, resumed=True)
    echo(f"study {setup.study_name!r} in {setup.storage_url}: space {setup.space.name}, model {setup.model_config.name}, "
         f"budget {setup.budget.describe()}, objectives {', '.join(setup.config.objectives)}")
    said_waiting = _recover_dead_trials(setup, study)
    base = setup.parent if setup.parent is not None and setup.parent.from_file else None  # evaluated already
    if setup.config.baselines:
        builtin = [name for name in setup.references if name in BASELINE_MODELS]
        if builtin:
            ensure_baselines(scored_as_built(experiment, setup.build_version), models=builtin, cache_dir=cache_dir)
        if "base" in setup.references and base is None:
            base = _train_base_reference(setup, cache_dir=cache_dir)
    study.set_user_attr("references", references(setup, base))
    study.set_user_attr("machine", machine())
    _optimize(setup, study, time.perf_counter())  # the time limit is the search's: the set-up above is not counted
    return _result(setup, study, started, said_waiting=said_waiting)


def _train_base_reference(setup: SearchSetup, *, cache_dir: str | Path | None) -> TrainedNetwork:
    """The search's own base network trained with the experiment's recipe (once; stored), as U-Net is."""
    base = ensure_parent(scored_as_built(setup.experiment, setup.build_version), setup.model_config,
                         steps=setup.experiment.train.steps, data=setup.data, cache_dir=cache_dir)
    summary = SegmentationMetrics.from_dict(base.metrics).summary() if base.metrics else "no metrics stored"
    setup.echo(f"reference {setup.model_config.name} ({base.steps} steps, "
               f"{'stored' if base.reused else 'trained now'}: {base.weights_path}): {summary}")
    return base


def join_trials(
    storage_url: str, study_name: str, *, n_trials: int | None = None, timeout: float | None = None,
    seed: int | None = None, threads: int | None = None, cache_dir: str | Path | None = None,
    echo: Callable[[str], None] = print, trust: bool = False,
) -> SearchResult:
    """Joins a study made by :func:`run_trials` as one more worker, until the study's target.

    Args:
        storage_url: the study's storage (for several machines, a PostgreSQL URL).
        study_name: its name.
        n_trials: the study's target (default: the one it was created with).
        timeout: seconds after which this worker starts no new trial.
        seed: this worker's sampler seed (default: random, so workers do not repeat each other).
        threads: torch CPU threads of this worker.
        trust: build the study's network and use its paths as stored, whatever they are; without
            it the study is data (:mod:`compressor.candidates.stored`).
    """
    started = time.perf_counter()
    study = load_study(storage_url, study_name)
    info = study_info(study)
    experiment = stored_experiment(study_name, info, trust=trust, threads=threads)
    experiment = with_search(experiment, storage=storage_url, study=study_name, n_trials=n_trials, timeout=timeout)
    check_joinable(study, info, experiment)  # before anything is trained or written
    with building_study(study_name, info, trust=trust):
        setup = prepare(experiment, cache_dir=cache_dir, echo=echo, check_budget=False,
                        parent_weights=info.parent or None, trust=trust, build_version=build_version(study.user_attrs),
                        floor=_study_floor(study.user_attrs))
    study = open_search_study(setup, sampler_seed=seed, create=False)
    echo(f"worker joined study {study_name!r} in {storage_url}")
    said_waiting = _recover_dead_trials(setup, study)
    _optimize(setup, study, time.perf_counter(), first_trials=0)  # a worker's limit: its own trials, from its first
    return _result(setup, study, started, said_waiting=said_waiting)


def _recover_dead_trials(setup: SearchSetup, study: optuna.Study, *, then_runs: bool = True) -> set[int]:
    """Fails and retries the running trials whose process on this host is gone (see :mod:`.liveness`),
    and says so, with what becomes of each retry: run by this process (``then_runs``: trials follow,
    and the retry is within the study's target), run by another one, or left waiting (and why).
    Returns the failed trials whose retry it said waits."""
    dead = fail_dead_trials(study, max_retry=setup.config.max_retry)
    if not dead:
        return set()
    retried = retries(study)
    queue = [trial.number for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
    room = setup.config.n_trials - len(study.get_trials(deepcopy=False, states=COUNTED))
    fates: dict[str, list[int]] = {}
    waiting = set()
    for number in dead:
        retry = retried.get(number)
        if retry is None:
            fate = ("failed (search.max_retry is 0: not run again)" if not setup.config.max_retry else
                    f"failed, not run again (retried search.max_retry={setup.config.max_retry} times already)")
        elif retry.state != TrialState.WAITING or (then_runs and queue.index(retry.number) < room):
            fate = "failed, and run again"  # next by this process, or another process took it already
        else:
            fate = f"failed; {_why_waiting(room, then_runs=then_runs, what='its retry')}"
            waiting.add(number)
        fates.setdefault(fate, []).append(number)
    for fate, numbers in fates.items():
        setup.echo(f"trial {', '.join(map(str, numbers))} was running in a process on this host that is gone: {fate}")
    return waiting


def _why_waiting(room: int, *, then_runs: bool, what: str) -> str:
    """``its retry waits in the study (the target is reached): run with a higher --n-trials to run it``."""
    if room <= 0:
        reason, advice = "the target is reached", "run with a higher --n-trials to run it"
    elif then_runs:
        reason, advice = "the trials queued before it reach the target", "run with a higher --n-trials to run it"
    else:
        reason, advice = "this run ended before it", "run the search or a worker again to run it"
    return f"{what} waits in the study ({reason}): {advice}"


def _study_floor(attrs: Mapping[str, Any] | None) -> Floor | None:
    """The floor a study was made with stays its floor (None: a new study, which takes
    ``search.floor``'s rule): a study made before floors existed keeps the old rule (a metric
    above 0) when resumed, so no trial leaves its front and no weights are discarded; a changed
    ``search.min_gain`` applies to new studies only."""
    return None if attrs is None else Floor.from_dict(attrs.get("floor"))


def _made_from(setup: SearchSetup, study: optuna.Study) -> bool:
    """True if the study stores the network of the experiment this process was given (the user's
    own, trusted as their Python is): its confirmation builds it as the search did."""
    info = study_info(study)
    own = setup.experiment.to_dict()
    stored = info.experiment if isinstance(info.experiment, dict) else {}
    return (stored.get("model") == own["model"] and (stored.get("search") or {}).get("model") == own["search"]["model"]
            and (stored.get("run_dir"), stored.get("name")) == (own["run_dir"], own["name"])
            and info.artifacts in ("", str(setup.artifacts))
            and info.parent in ("", str(setup.parent.weights_path.resolve()) if setup.parent else ""))


def machine() -> dict[str, object]:
    """Where the search ran, for the report's header."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__}


#: trials a study holds before a time limit can stop it (the space's starting points come first)
FIRST_TRIALS = 3


def _optimize(setup: SearchSetup, study: optuna.Study, started: float, *, first_trials: int = FIRST_TRIALS) -> None:
    """Runs trials until the study holds ``n_trials`` finished ones, or ``search.timeout`` seconds
    after ``started`` (the first trial: references and parents, trained once, are not counted). The
    time limit lets this process run its first trials until the study holds ``first_trials``
    (the space's starting points first; a failed one uses a turn, so a failing start never loops):
    a search on a busy machine still shows a front. A worker passes 0: its limit is its own."""
    config = setup.config
    info = StudyInfo.from_attrs(study.user_attrs)
    weights = WeightStore(info.artifacts or setup.artifacts)
    done = len(study.get_trials(deepcopy=False, states=COUNTED))
    if done >= config.n_trials:
        setup.echo(f"the study already holds {done} finished trials (target {config.n_trials}); nothing to run")
        return
    first = max(0, min(config.n_trials, first_trials) - done) if config.timeout is not None else 0
    setup.echo(f"{done} finished trials in the study; running until {config.n_trials}"
               + (f" or for {config.timeout:.0f} s" + (f" (the first {first} whatever the time)" if first else "")
                  if config.timeout is not None else ""))
    failures = 0

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal failures
        record = TrialRecord.from_trial(trial)
        setup.echo(trial_line(record, metric_label=info.metric_label, target=config.n_trials))
        _discard_dominated_weights(study, weights, config.objectives, setup.floor.threshold)
        if interrupted.is_set():  # a library swallowed the KeyboardInterrupt: stop between trials
            raise KeyboardInterrupt
        failures += record.status == "failed"
        if len(study.get_trials(deepcopy=False, states=COUNTED)) >= config.n_trials:
            study.stop()
        elif failures >= max(5, config.n_trials):
            setup.echo(f"stopping: {failures} trials failed in this run")
            study.stop()

    # ERROR: Optuna would log every failed trial with its traceback; the search prints its own
    # line per trial, with the reason of a failure, and an unexpected error propagates anyway.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    interrupted = threading.Event()
    runner = TrialRunner(setup, weights)
    # writes_to: a read-only or full storage is one line; frozen_heap: a cheap collection after each trial
    with _remember_ctrl_c(interrupted), writes_to(setup.storage_url), frozen_heap():
        if first:  # the first ones whatever the time; study.stop() in after_trial ends the call early too
            study.optimize(runner, n_trials=first, catch=(TrialFailed,), callbacks=[after_trial], gc_after_trial=True)
        if len(study.get_trials(deepcopy=False, states=COUNTED)) >= config.n_trials or failures >= max(5, config.n_trials):
            return
        timeout = None if config.timeout is None else config.timeout - (time.perf_counter() - started)
        if timeout is not None and timeout <= 0:
            setup.echo(f"the {config.timeout:.0f} s time limit of the search is spent")
            return
        study.optimize(runner, timeout=timeout, catch=(TrialFailed,), callbacks=[after_trial], gc_after_trial=True)


@contextlib.contextmanager
def _remember_ctrl_c(interrupted: threading.Event) -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as usual and is also remembered.

    Code deep inside a trial (tracing, C++ callbacks) can turn the interrupt into another
    error or drop it; the remembered flag still stops the search at the next trial's end.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_ctrl_c(signum: int, frame: object) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _discard_dominated_weights(
    study: optuna.Study, weights: WeightStore, objectives: list[str], threshold: float = 0.0
) -> None:
    records = trial_records(study)
    kept = {record.number for record in front(records, objectives, threshold)}
    for record in records:
        # A trial still running (in another worker) may have stored its weights just before it
        # is told complete: it is not dominated yet, only unfinished.
        if record.weights and record.number not in kept and record.status != "running":
            weights.discard(record.weights)


def _result(setup: SearchSetup, study: optuna.Study, started: float, *, said_waiting: Iterable[int] = ()) -> SearchResult:
    # A process on this host that died while this one ran (a worker killed meanwhile) runs nothing:
    # its trial is failed now, never reported as running elsewhere; retries left waiting are said to wait.
    said_waiting = {*said_waiting, *_recover_dead_trials(setup, study, then_runs=False)}
    room = setup.config.n_trials - len(study.get_trials(deepcopy=False, states=COUNTED))
    for failed, retry in sorted(retries(study).items()):
        if retry.state == TrialState.WAITING and failed not in said_waiting:
            setup.echo(_why_waiting(room, then_runs=False,
                                    what=f"trial {retry.number}, the retry of failed trial {failed},"))
    others = others_running(study)
    if others:
        setup.echo(f"still running in another process: {', '.join(others)} (another worker; if its process died on "
                   f"another host, its heartbeat fails it {setup.config.grace_period} s after it stopped)")
    records = trial_records(study)
    info = study_info(study)
    return SearchResult(
        study=study, storage_url=setup.storage_url, records=records, front=front(records, info.objectives, info.threshold),
        seconds=time.perf_counter() - started, confirm=setup.config.confirm, running_elsewhere=tuple(others),
        own_network=_made_from(setup, study),
    )

