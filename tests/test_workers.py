"""Workers on one study: dead processes of this host, retries that wait, a recipe two processes draw at once.

Real Optuna studies on SQLite files. Another process is a real one (``sleep``) whose identity a
running trial records; a dead one is such a process killed (and reaped) or one that exited.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from search_helpers import tiny_experiment

from compressor.candidates.setup import prepare
from compressor.pipeline import run_search
from compressor.search.runner import TrialRunner
from compressor.search.study import open_search_study
from compressor.search.twins import WAITS_FOR_KEY, wait_for_twin
from compressor.study.liveness import PROCESS_KEY, others_running, process_identity

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize"),  # ask()
    pytest.mark.timeout(120),
]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def experiment(run_dir: Path, n_trials: int):
    """The tiny search; no budget and no reference but its own network: no seconds spent measuring either."""
    return tiny_experiment(run_dir, ("budget={}",), n_trials=n_trials, references=["base"])


@pytest.fixture
def processes():
    """``start()`` runs a process that sleeps (another worker, alive until killed); all are ended after the test."""
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        started.append(subprocess.Popen(["sleep", "120"]))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def identity(pid: int) -> dict:
    """What a trial run by process ``pid`` of this host records (its start time unknown: the pid decides)."""
    return {**process_identity(), "pid": pid, "started": None}


def dead_identity() -> dict:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return identity(child.pid)


def kill(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()  # reaped: a zombie still answers to its pid


def sqlite_study(tmp_path: Path, name: str = "s") -> optuna.Study:
    return optuna.create_study(study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}", load_if_exists=True,
                               directions=["maximize", "minimize"])


def running_trial(study: optuna.Study, who: dict | None, digest: str | None = None) -> optuna.Trial:
    trial = study.ask()
    if who is not None:
        trial.set_user_attr(PROCESS_KEY, who)
    if digest is not None:
        trial.set_user_attr("recipe_hash", digest)
    return trial


def finish(study: optuna.Study, trial: optuna.Trial, metric: float = 0.5) -> None:
    """What the runner leaves on a trained trial."""
    for key, value in {"status": "complete", "metric": metric, "params": 1000, "flops": 2000, "feasible": True}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, [metric, 1000] if len(study.directions) == 2 else [metric, 1000, 2000])


class Waiter(threading.Thread):
    """``wait_for_twin`` for ``trial`` in a thread of its own (as another process's trial would)."""

    def __init__(self, trial: optuna.Trial, digest: str, **kwargs) -> None:
        super().__init__(daemon=True)
        self.trial, self.digest, self.kwargs = trial, digest, kwargs
        self.lines: list[str] = []
        self.result: object = "not returned"

    def run(self) -> None:
        self.result = wait_for_twin(self.trial, self.digest, echo=self.lines.append, **self.kwargs)

    def returned(self, timeout: float) -> bool:
        self.join(timeout)
        return not self.is_alive()


# -- a dead process on this host is never "still running elsewhere" ------------------------------------------


def test_only_live_processes_of_other_trials_count_as_running(tmp_path, processes):
    study = sqlite_study(tmp_path)
    alive = processes()
    running_trial(study, identity(alive.pid))
    running_trial(study, dead_identity())
    running_trial(study, {"host": platform.node() + "-elsewhere", "pid": 812, "started": None})
    running_trial(study, process_identity())  # this very process
    assert others_running(study) == [f"trial 0 (pid {alive.pid} on this host)",
                                     f"trial 2 (pid 812 on {platform.node()}-elsewhere)"]


def test_a_search_that_ends_beside_a_live_worker_says_so_and_leaves_the_confirmation_for_later(tmp_path, processes):
    """The search reaches its target while another live process of this host still runs a trial: it says
    which trial runs where, and does not confirm a front that trial may still change."""
    run_search(experiment(tmp_path, n_trials=1), echo=lambda line: None)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'search.db'}")
    worker = processes()
    running_trial(study, identity(worker.pid))
    lines: list[str] = []
    confirming = tiny_experiment(tmp_path, ("budget={}", "search.confirm.top=1", "search.confirm.seeds=1"),
                                 n_trials=2, references=["base"])
    run_search(confirming, echo=lines.append)
    (said,) = [line for line in lines if line.startswith("still running in another process: ")]
    assert said.startswith(f"still running in another process: trial 1 (pid {worker.pid} on this host) ")
    assert any(line.startswith("not confirming yet: a trial is still running") for line in lines), lines
    assert study.trials[1].state == TrialState.RUNNING  # a live worker's trial is left to it


def test_workers_killed_on_this_host_are_failed_and_their_retries_run_or_are_said_to_wait(tmp_path, processes):
    """A worker killed while a search runs is failed at the search's end, never "still running elsewhere";
    a dead trial found once the target is reached is failed and its retry said to wait (and the advice
    given works); one found before it is run again, as said."""
    url = f"sqlite:///{tmp_path / 'search.db'}"  # the tiny experiment's default storage (run_dir = tmp_path)
    run_search(experiment(tmp_path, n_trials=1), echo=lambda line: None)  # trial 0, trained
    study = optuna.load_study(study_name="tiny", storage=url)
    paper = study.trials[0]

    def workers_trial(who: dict) -> int:
        """A trial another process runs, with the choices of trial 0 (so its retry reuses trial 0's result)."""
        study.add_trial(optuna.trial.create_trial(state=TrialState.RUNNING, params=paper.params,
                                                  distributions=paper.distributions, user_attrs={PROCESS_KEY: who}))
        return study.trials[-1].number

    # 1. A live worker of this host is in trial 1; it is killed while the search runs (trial 2).
    worker = processes()
    killed = workers_trial(identity(worker.pid))
    study.enqueue_trial(paper.params)  # the search's own trial: reuses trial 0's result (no training)
    lines: list[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        if line.startswith("1 finished trials in the study"):  # the search is under way
            kill(worker)

    run_search(experiment(tmp_path, n_trials=2), echo=echo)
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    assert trials[killed].state == TrialState.FAIL
    (retry,) = [t for t in trials.values() if t.system_attrs.get("retry_history") == [killed]]
    assert retry.state == TrialState.WAITING
    assert not [line for line in lines if "still running" in line], lines
    assert (f"trial {killed} was running in a process on this host that is gone: failed; its retry waits in the study "
            "(the target is reached): run with a higher --n-trials to run it") in lines

    # 2. A rerun once the target is reached: a worker that died meanwhile is failed, its retry said to
    #    wait, and so is the earlier retry; nothing says "run again".
    dead = workers_trial(dead_identity())
    lines = []
    run_search(experiment(tmp_path, n_trials=2), echo=lines.append)
    assert (f"trial {dead} was running in a process on this host that is gone: failed; its retry waits in the study "
            "(the target is reached): run with a higher --n-trials to run it") in lines
    assert (f"trial {retry.number}, the retry of failed trial {killed}, waits in the study (the target is reached): "
            "run with a higher --n-trials to run it") in lines
    assert not [line for line in lines if "run again" in line], lines
    waiting = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
    assert len(waiting) == 2

    # 3. With room in the target, a dead trial is "run again", and is; the waiting retries run too.
    late = workers_trial(dead_identity())
    lines = []
    run_search(experiment(tmp_path, n_trials=5), echo=lines.append)
    assert f"trial {late} was running in a process on this host that is gone: failed, and run again" in lines
    assert not [line for line in lines if "waits" in line], lines
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    retried = [t for t in trials.values() if t.system_attrs.get("retry_history")]
    assert sorted(t.system_attrs["retry_history"][-1] for t in retried) == [killed, dead, late]
    assert all(t.state in FINISHED and t.user_attrs["duplicate_of"] == 0 for t in retried), \
        [(t.number, t.state) for t in retried]
    assert not [t for t in trials.values() if t.state in (TrialState.WAITING, TrialState.RUNNING)]


def test_the_retry_of_a_trial_killed_after_its_building_stores_its_own_constraints_without_a_warning(tmp_path):
    """A trial killed after its building holds its constraint values, which Optuna copies into its retry;
    the retry's own measure counts (a latency measured again can differ; here the first run's value is
    made stale), with no warning from Optuna."""
    budgeted = tiny_experiment(tmp_path, n_trials=1, references=["base"])  # budget: params <= 60k
    run_search(budgeted, echo=lambda line: None)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'search.db'}")
    paper = study.trials[0]
    assert set(paper.constraints) == {"params"}
    built = {f"constraints:{name}": value + 5.0 for name, value in paper.constraints.items()}  # stale: over budget
    study.add_trial(optuna.trial.create_trial(state=TrialState.RUNNING, params=paper.params, system_attrs=built,
                                              distributions=paper.distributions,
                                              user_attrs={PROCESS_KEY: dead_identity()}))
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        run_search(tiny_experiment(tmp_path, n_trials=2, references=["base"]), echo=lambda line: None)
    assert not [str(w.message) for w in warned if "constraint" in str(w.message)]
    (retry,) = [t for t in study.get_trials(deepcopy=False) if t.system_attrs.get("retry_history") == [1]]
    assert retry.state == TrialState.COMPLETE and retry.constraints == paper.constraints


# -- a recipe another live process is training is waited for, not trained twice --------------------------


def test_a_search_waits_for_the_recipe_another_live_process_trains_and_reuses_its_result(
    tmp_path, processes, monkeypatch
):
    monkeypatch.setattr(TrialRunner, "twin_poll", 0.05)
    tiny = experiment(tmp_path, n_trials=1)
    setup = prepare(tiny, echo=lambda line: None)
    study = open_search_study(setup, sampler_seed=0)  # the study as a search makes it: trial 0 (the paper's recipe) queued
    other = processes()
    twin = study.ask()  # another process's trial draws the paper's recipe ...
    twin.set_user_attr(PROCESS_KEY, identity(other.pid))
    digest = setup.space(twin, setup.context).hash()
    twin.set_user_attr("recipe_hash", digest)  # ... and is training it
    study.enqueue_trial(twin.params)  # the search draws it too
    finished_at: list[float] = []

    def other_finishes() -> None:
        finish(study, twin, metric=0.25)
        finished_at.append(time.monotonic())

    timer = threading.Timer(0.5, other_finishes)
    lines: list[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        if " waits for trial " in line:  # the other process finishes half a second later
            timer.start()

    try:
        result = run_search(tiny, echo=echo)
    finally:
        timer.cancel()
    (record,) = [record for record in result.records if record.number != twin.number]
    assert (f"trial {record.number} waits for trial {twin.number}, which runs the same recipe "
            f"(pid {other.pid} on this host), to reuse its result") in lines
    assert finished_at  # the other process finished while the search waited
    assert record.status == "complete" and record.duplicate_of == twin.number
    assert record.metric == 0.25 and record.train_seconds is None  # its result, not a training of our own
    assert record.wall_seconds >= 0.5
    assert f"(same recipe as trial {twin.number})" in next(line for line in lines if line.startswith(f"trial {record.number}/"))
    assert study.trials[record.number].user_attrs[WAITS_FOR_KEY] is None  # not waiting any more


def test_a_twin_whose_process_dies_is_not_waited_for_any_longer(tmp_path, processes):
    study = sqlite_study(tmp_path)
    other = processes()
    twin = running_trial(study, identity(other.pid), "h")
    ours = running_trial(study, process_identity())
    waiter = Waiter(ours, "h", poll=0.05)
    waiter.start()
    assert not waiter.returned(0.5)  # waiting
    assert study.trials[ours.number].user_attrs[WAITS_FOR_KEY] == twin.number
    kill(other)
    assert waiter.returned(5)
    assert waiter.result is None  # trains it itself
    assert waiter.lines[-1] == (f"trial {ours.number} trains the recipe itself: trial {twin.number} ended without a "
                                "result (it failed, or its process is gone)")
    assert study.trials[ours.number].user_attrs[WAITS_FOR_KEY] is None


def test_a_twin_that_fails_is_not_waited_for_and_a_dead_one_is_not_waited_for_at_all(tmp_path, processes):
    study = sqlite_study(tmp_path)
    running_trial(study, dead_identity(), "h")  # a dead process of this host: no wait
    ours = running_trial(study, process_identity())
    assert wait_for_twin(ours, "h", echo=pytest.fail, poll=0.05) is None
    other = processes()
    failing = running_trial(study, identity(other.pid), "g")
    waiter = Waiter(running_trial(study, process_identity()), "g", poll=0.05)
    waiter.start()
    assert not waiter.returned(0.3)
    study.tell(failing, state=TrialState.FAIL)
    assert waiter.returned(5) and waiter.result is None


def test_a_twin_of_another_host_is_waited_for_until_its_heartbeat_stops(tmp_path):
    storage = RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    twin = running_trial(study, {"host": platform.node() + "-elsewhere", "pid": 812, "started": None}, "h")
    storage.record_heartbeat(twin._trial_id)  # its last heartbeat; then that host goes silent
    ours = running_trial(study, process_identity())
    started = time.monotonic()
    waiter = Waiter(ours, "h", poll=0.1)
    waiter.start()
    assert waiter.returned(15)
    assert waiter.result is None and time.monotonic() - started >= 1.5  # waited, then its heartbeat failed it
    assert study.trials[twin.number].state == TrialState.FAIL


def test_the_wait_is_bounded(tmp_path, processes):
    study = sqlite_study(tmp_path)
    other = processes()
    twin = running_trial(study, identity(other.pid), "h")
    ours = running_trial(study, process_identity())
    lines: list[str] = []
    assert wait_for_twin(ours, "h", echo=lines.append, poll=0.05, max_wait=0.3) is None
    assert lines[-1] == (f"trial {ours.number}: trial {twin.number}, which runs the same recipe, has not finished "
                         "in 0 s: training it here too")


def test_two_processes_drawing_one_recipe_at_once_train_it_once(tmp_path, processes):
    """Both claim the recipe at about the same moment: one trains, the other waits and reuses its result."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    sqlite_study(tmp_path)
    for round_ in range(4):
        digest = f"recipe-{round_}"
        waiters = []
        for _ in range(2):
            study = optuna.load_study(study_name="s", storage=url)  # each process has its own
            trial = running_trial(study, identity(processes().pid))
            waiters.append(Waiter(trial, digest, poll=0.02))
        for waiter in waiters:
            waiter.start()
        deadline = time.monotonic() + 10
        while not any(not waiter.is_alive() for waiter in waiters) and time.monotonic() < deadline:
            time.sleep(0.01)
        trainers = [waiter for waiter in waiters if not waiter.is_alive()]
        assert len(trainers) == 1 and trainers[0].result is None, round_
        (trainer,) = trainers
        (other,) = [waiter for waiter in waiters if waiter is not trainer]
        assert not other.returned(0.3)  # still waiting while the first trains
        finish(trainer.trial.study, trainer.trial)
        assert other.returned(5)
        assert other.result.number == trainer.trial.number
