"""Running a confirmation: the plan, a queue of jobs on Optuna's storage, and each job's training.

A *job* trains one model (a front trial's recipe, or one of the study's references: the user's
own network, U-Net, Micro-Net) on one *repeat* (a seed, a fold) exactly as the search trained it
(the same base network, recipe, inheritance, fine-tuning and evaluation), only with that seed and
fold. With inheritance the parent of a repeat is the base network trained on that repeat (its own
reference result on it), or, for a search from a trained file, that file on every repeat.

The jobs are trials of a companion study ``<study>.confirm`` in the same storage, enqueued
once: any number of processes (``compressor confirm`` on several machines sharing a
PostgreSQL storage) take them one at a time (Optuna hands a waiting trial to one process
only), heartbeats mark the job of a process that died as failed and re-enqueue it, and a
rerun enqueues whatever has no result yet. Results go to the search's own study, one user
attribute per job (:func:`~compressor.confirm.results.result_key`), so the report reads
them from the study alone.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from compressor.candidates.parents import check_parent_unchanged
from compressor.candidates.setup import SearchSetup, prepare, scored_as_built, start_candidate, start_metrics
from compressor.candidates.stored import building_study, stored_experiment
from compressor.candidates.versions import build_version
from compressor.confirm.plan import check_trials, choose_top, describe_repeats, merge_plan, plan_repeats
from compressor.confirm.results import Confirmation, read_confirmation
from compressor.confirm.subjects import (
    PLAN_KEY,
    RESULT_PREFIX,
    Repeat,
    is_control,
    parent_subject,
    reference_subjects,
    result_key,
    study_control,
    subject_label,
    subject_of,
    trial_of,
)
from compressor.errors import CompressorError, NothingToRepeatError, first_line
from compressor.experiment import BASELINE_MODELS, Experiment, ensure_baselines, ensure_parent
from compressor.floor import Floor
from compressor.heap import frozen_heap
from compressor.metrics import SegmentationMetrics, metric_value
from compressor.search_config import ConfirmConfig
from compressor.study import (
    StudyInfo,
    TrialRecord,
    open_storage,
    study_info,
    trial_records,
)
from compressor.study.liveness import PROCESS_KEY, fail_dead_trials, process_identity
from compressor.threads import torch_threads
from compressor.train import seed_everything, train
from compressor.transforms import Recipe

__all__ = ["run_confirmation", "choose_top", "plan_repeats", "queue_name"]  # the plan re-exported

PARENT_POLL_SECONDS = 5.0


class _NoJob(CompressorError):
    """A queue trial with nothing to do: it carries no job, or another process has the same job."""


class _JobFailed(CompressorError):
    """A job that failed for a reason that may not recur (a reference that did not train, out of
    memory): nothing is stored, and the next run retries it."""


def queue_name(study_name: str) -> str:
    """``<study>.confirm``: the companion study whose trials are the confirmation jobs."""
    return f"{study_name}.confirm"


def run_confirmation(
    study: optuna.Study, storage_url: str, *, config: ConfirmConfig | None = None, trials: Sequence[int] = (),
    cache_dir: str | Path | None = None, threads: int | None = None, echo: Callable[[str], None] = print,
    trust: bool = False,
) -> Confirmation | None:
    """Confirms a finished search's front: plans the jobs, runs them (with any other process
    doing the same), and returns what the stored results say.

    Args:
        study: the search's study.
        storage_url: its storage (the job queue lives there too).
        config: how many trials, seeds, folds (default: the study's ``search.confirm``).
        trials: confirm these trial numbers instead of the ``top`` of the front.
        threads: torch CPU threads (default: the experiment's).
        trust: build the study's network and use its paths as stored; without it the study is
            data (:mod:`compressor.candidates.stored`).

    Raises:
        ConfigError: nothing to repeat, a trial that is not a finished candidate, folds without k-fold data.
    """
    info = study_info(study)
    experiment = stored_experiment(study.study_name, info, trust=trust, threads=threads)
    check_parent_unchanged(study, info)
    config = config or experiment.search.confirm
    records = trial_records(study)
    subjects = [subject_of(number) for number in (check_trials(records, info, trials) if trials
                                                   else choose_top(study, config.top))]
    repeats, own = plan_repeats(experiment, config)
    if not repeats:
        raise NothingToRepeatError("nothing to repeat: no further seed and no fold asked for")
    if not subjects:  # the references on further seeds judge no candidate: not worth their training
        echo(f"no trial of study {study.study_name!r} is on the front (finished, in budget, above the floor): "
             "nothing to confirm")
        return read_confirmation(study.user_attrs, info, records)
    plan = merge_plan(study.user_attrs.get(PLAN_KEY), subjects, repeats, own, config.budgets)
    study.set_user_attr(PLAN_KEY, plan)
    # References first, every repeat: a candidate inheriting on repeat r needs its parent trained on r.
    references = reference_subjects(info)
    controls = [study_control(info, study.user_attrs)] if info.init != "random" else []
    jobs = [{"subject": subject, "seed": seed, "fold": fold}
            for subject in [*references, *controls, *subjects] for seed, fold in repeats]
    queue = _open_queue(storage_url, study.study_name, experiment)
    _fail_dead_jobs(queue, experiment.search.max_retry)
    pending = _enqueue_missing(queue, study, jobs)
    done = len(jobs) - pending
    models = ", ".join(subject_label(subject, info) for subject in [*references, *controls, *subjects])
    echo(f"confirming {models} on {len(repeats)} repeats ({describe_repeats(repeats)}; the search's own run, "
         f"{describe_repeats([own])}, is not counted): {len(jobs)} jobs, {done} done, {pending} to run")
    runner = _JobRunner(study, info, experiment, records, queue, cache_dir=cache_dir, echo=echo,
                        keys={_job_key(job) for job in jobs}, trust=trust)
    with torch_threads(experiment.train.threads), building_study(study.study_name, info, trust=trust):
        _work(queue, runner, experiment.search.max_retry)
    running = {_job_key(trial.user_attrs["job"]) for trial in queue.get_trials(
        deepcopy=False, states=(TrialState.RUNNING,)) if trial.user_attrs.get("job")}
    failed = [job for job in jobs if _job_key(job) not in study.user_attrs and _job_key(job) not in running]
    if failed:
        named = ", ".join(f"{subject_label(job['subject'], info)} {describe_repeats([(job['seed'], job['fold'])])}"
                          for job in failed[:4])
        echo(f"{len(failed)} jobs failed and have no result ({named}{', ...' if len(failed) > 4 else ''}); "
             "the same command again retries them")
    if running:
        echo(f"{len(running)} jobs are still running in other processes; run `compressor report` again when they end")
    return read_confirmation(study.user_attrs, info, trial_records(study))



def _open_queue(storage_url: str, study_name: str, experiment: Experiment) -> optuna.Study:
    config = experiment.search
    storage = open_storage(storage_url, heartbeat_interval=config.heartbeat_interval,
                           grace_period=config.grace_period, max_retry=config.max_retry)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=storage, study_name=queue_name(study_name), direction="maximize",
                               sampler=optuna.samplers.RandomSampler(seed=0), load_if_exists=True)


def _job_key(job: dict[str, Any]) -> str:
    return result_key(job["subject"], job["seed"], job["fold"])


def _enqueue_missing(queue: optuna.Study, study: optuna.Study, jobs: list[dict[str, Any]]) -> int:
    """Enqueues each job that has no result and is not waiting or running; returns how many lack a result."""
    results = {key for key in study.user_attrs if key.startswith(RESULT_PREFIX)}
    queued = {_job_key(trial.user_attrs["job"]) for trial in queue.get_trials(
        deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)) if trial.user_attrs.get("job")}
    missing = 0
    for job in jobs:
        key = _job_key(job)
        if key in results:
            continue
        missing += 1
        if key not in queued:
            queue.enqueue_trial({}, user_attrs={"job": job})
    return missing


def _fail_dead_jobs(queue: optuna.Study, max_retry: int) -> None:
    """Jobs of processes that are gone (on this host) or stopped beating: failed, and enqueued
    again if retries are left."""
    fail_dead_trials(queue, max_retry=max_retry)
    with warnings.catch_warnings():  # "experimental" in Optuna since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(queue)


def _work(queue: optuna.Study, runner: _JobRunner, max_retry: int) -> None:
    """Takes waiting jobs one at a time until none is left (jobs running elsewhere are theirs)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with frozen_heap():  # the collection after each job walks what the job made
        while True:
            _fail_dead_jobs(queue, max_retry)
            if not queue.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return
            queue.optimize(runner, n_trials=1, catch=(_NoJob, _JobFailed), gc_after_trial=True)


class _JobRunner:
    """The objective of the queue study: run the job a trial carries, store its result on the study."""

    def __init__(self, study: optuna.Study, info: StudyInfo, experiment: Experiment, records: Sequence[TrialRecord],
                 queue: optuna.Study, *, cache_dir: str | Path | None, echo: Callable[[str], None],
                 keys: set[str], trust: bool = False) -> None:
        self.study, self.info, self.experiment, self.queue = study, info, experiment, queue
        self.records = {record.number: record for record in records}
        self.cache_dir, self.echo, self.keys, self.trust = cache_dir, echo, keys, trust
        self.study_attrs = dict(study.user_attrs)
        self.setups: dict[Repeat, SearchSetup] = {}
        self.constants: dict[Repeat, float] = {}

    def __call__(self, trial: optuna.Trial) -> float:
        job = trial.user_attrs.get("job")
        if not job:
            raise _NoJob("no job left for this trial")
        trial.set_user_attr(PROCESS_KEY, process_identity())
        key = _job_key(job)
        if key in self.study.user_attrs:  # another process did it (a retried job that was not dead)
            return float(self.study.user_attrs[key].get("metric") or 0.0)
        if self._taken_elsewhere(trial.number, key):
            raise _NoJob(f"{key} is another process's job")
        started = time.perf_counter()
        repeat = (int(job["seed"]), job["fold"])
        result: dict[str, Any] = {**job, "trial": None, "failure": None, "host": platform.node(), "pid": os.getpid()}
        what = f"{self._label(job['subject'])} {describe_repeats([repeat])}"
        candidate = job["subject"].startswith("trial-")
        try:
            result["constant"] = self._constant(repeat)
            if is_control(job["subject"]):
                result.update(self._fine_tuned_parent(repeat))
            elif not candidate:
                result.update(self._reference(job["subject"], repeat))
            else:
                result.update(self._candidate(trial_of(job["subject"]), repeat))
        except CompressorError as error:
            if not candidate or "constant" not in result:  # not the recipe's doing: retried
                self.echo(f"confirm: {what} failed: {first_line(error)}")
                raise _JobFailed(first_line(error)) from None
            # A recipe that does not train on this seed (a NaN loss...) is a result: it scores 0.
            result.update(metric=0.0, failure=first_line(error))
        except RuntimeError as error:  # out of memory and the like: not a property of the recipe; retried later
            if "KeyboardInterrupt" in str(error):
                raise KeyboardInterrupt from error
            self.echo(f"confirm: {what} failed: {first_line(error)}")
            raise _JobFailed(first_line(error)) from None
        result["seconds"] = round(time.perf_counter() - started, 3)
        self.study.set_user_attr(_job_key(job), result)
        trial.set_user_attr("result", {key: value for key, value in result.items() if key != "metrics"})
        finished = len(self.keys & set(self.study.user_attrs))
        search = self._search_metric(job["subject"])
        outcome = f"failed: {result['failure']}" if result["failure"] else f"{self.info.metric_label} {result['metric']:.3f}"
        self.echo(f"confirm {finished}/{len(self.keys)}  {self._label(job['subject']):<10} {describe_repeats([repeat]):<14} {outcome}"
                  + (f" (search: {search:.3f})" if search is not None else "") + f"  {result['seconds']:.0f} s")
        return float(result["metric"])

    def _taken_elsewhere(self, number: int, key: str) -> bool:
        """Another queue trial with the same job, begun before this one, is running or done (two
        processes that planned at the same moment both enqueued it: the first one runs it)."""
        return any(
            other.number < number and other.user_attrs.get("job") and _job_key(other.user_attrs["job"]) == key
            for other in self.queue.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))
        )

    def _label(self, subject: str) -> str:
        return subject_label(subject, self.info)

    def _wait_for_parent(self, repeat: Repeat) -> None:
        """With inheritance, a candidate's parent on a repeat is the base network trained on it (its
        reference job): wait while another process trains it, rather than train it a second time beside it."""
        key = result_key(parent_subject(self.info), *repeat)
        while key not in self.study.user_attrs and any(
            trial.user_attrs.get("job") and _job_key(trial.user_attrs["job"]) == key
            for trial in self.queue.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        ):
            time.sleep(PARENT_POLL_SECONDS)

    def _search_metric(self, subject: str) -> float | None:
        if is_control(subject):
            return None
        if not subject.startswith("trial-"):
            return (self.info.references.get(subject) or {}).get("metric")
        return self.records[trial_of(subject)].metric

    def _variant(self, repeat: Repeat) -> Experiment:
        """The experiment with this repeat's seed and fold; its results go under ``<run_dir>/seed<S>[-fold<F>]``."""
        seed, fold = repeat
        experiment = self.experiment
        own_fold = getattr(experiment.data, "resolved_fold", None)
        # The search's own fold keeps the data section as written (its stored baselines keep their keys).
        data = experiment.data if fold == own_fold else dataclasses.replace(experiment.data, fold=fold)
        if (seed, fold) == (experiment.train.seed, own_fold):
            return experiment
        folder = f"seed{seed}" + ("" if fold is None else f"-fold{fold}")
        return dataclasses.replace(experiment, data=data, train=dataclasses.replace(experiment.train, seed=seed),
                                   run_dir=str(experiment.run_path / folder))

    def _setup(self, repeat: Repeat) -> SearchSetup:
        if repeat not in self.setups:
            setup = prepare(self._variant(repeat), cache_dir=self.cache_dir, echo=lambda line: None, check_budget=False,
                            parent_weights=self.info.parent or None if self.experiment.search.parent else None,
                            trust=self.trust, build_version=build_version(self.study_attrs))
            self.setups[repeat] = setup
        return self.setups[repeat]

    def _reference(self, name: str, repeat: Repeat) -> dict[str, Any]:
        """A reference on this repeat: U-Net or Micro-Net trained as their baselines are; ``base``
        (the search's own network) trained with the experiment's recipe as the search trained it,
        or, when the search started from a trained file, that file evaluated on this repeat's data."""
        variant = scored_as_built(self._variant(repeat), build_version(self.study_attrs))  # scored as its trials are
        if name in BASELINE_MODELS:
            (record,) = ensure_baselines(variant, models=[name], cache_dir=self.cache_dir, need_weights=True)
            metrics = SegmentationMetrics.from_dict(record.metrics)
            return {"metric": metric_value(metrics, self.info.metric), "metrics": record.metrics,
                    "params": record.cost.get("params")}
        setup = self._setup(repeat)
        if setup.parent is not None and setup.parent.from_file:  # evaluated on this repeat's data by prepare
            metrics, network = SegmentationMetrics.from_dict(setup.parent.metrics), setup.parent.model
        else:
            base = ensure_parent(variant, setup.model_config, steps=variant.train.steps, data=setup.data,
                                 cache_dir=self.cache_dir)
            metrics, network = SegmentationMetrics.from_dict(base.metrics), base.model
        return {"metric": setup.metric(metrics), "metrics": metrics.to_dict(),
                "params": sum(parameter.numel() for parameter in network.parameters())}

    def _constant(self, repeat: Repeat) -> float:
        """The best constant prediction's metric on this repeat's validation pixels (0 under ``floor: zero``),
        computed once per repeat."""
        if not self.info.floor:
            return 0.0
        if repeat not in self.constants:
            if repeat in self.setups:
                self.constants[repeat] = self.setups[repeat].floor.constant
            else:
                data = self._variant(repeat).data.build(cache_dir=self.cache_dir)
                self.constants[repeat] = Floor.of_data(data, self.info.metric, margin=0.0).constant
        return self.constants[repeat]

    def _fine_tuned_parent(self, repeat: Repeat) -> dict[str, Any]:
        """The control: the parent itself (no transform) fine-tuned exactly as a candidate is."""
        self._wait_for_parent(repeat)
        setup = self._setup(repeat)
        seed_everything(setup.experiment.train.seed)
        network = copy.deepcopy(setup.context.model)
        start_candidate(setup, network)  # started as a candidate is: batch norms re-estimated, the start counted
        result = train(network, setup.data, setup.start_config, teacher=setup.teacher, start=start_metrics(setup, network),
                       description=f"confirm {self._label(study_control(self.info, self.study_attrs))} seed {repeat[0]}")
        return {"metric": setup.metric(result.metrics), "metrics": result.metrics.to_dict(),
                "params": sum(parameter.numel() for parameter in network.parameters())}

    def _candidate(self, number: int, repeat: Repeat) -> dict[str, Any]:
        record = self.records[number]
        if self.info.init != "random":
            self._wait_for_parent(repeat)
        setup = self._setup(repeat)
        recipe = Recipe.from_data(record.recipe, source=f"trial {number}'s recipe")
        network = setup.build(recipe)
        seed, fold = repeat
        start_candidate(setup, network)
        result = train(network, setup.data, setup.start_config, teacher=setup.teacher, start=start_metrics(setup, network),
                       description=f"confirm trial {number} seed {seed}" + ("" if fold is None else f" fold {fold}"))
        return {"trial": number, "metric": setup.metric(result.metrics), "metrics": result.metrics.to_dict(),
                "params": sum(parameter.numel() for parameter in network.parameters()),
                "constant": setup.floor.constant}
