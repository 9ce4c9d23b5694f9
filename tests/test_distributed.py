"""Several search processes on one study, and workers killed in the middle of a trial.

Real processes (``python -m compressor ...``), real training on the tiny synthetic experiment
of ``search_helpers``, real storages: a PostgreSQL server (``COMPRESSOR_TEST_POSTGRES_URL``,
started by ``.ci/run``; the tests marked ``postgres`` skip without it, or fail with
``COMPRESSOR_REQUIRE_POSTGRES=1``) and the default SQLite
file. Every process runs under a time limit, so a hung worker fails the test instead of CI.
"""

from __future__ import annotations

import csv
import hashlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import cli_env
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from search_helpers import tiny_experiment_data

from compressor.search import front
from compressor.study import study_info, trial_records

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

STUDY = "tiny"
TRIAL_LINE = re.compile(r"^trial (\d+)/(\d+)\s+(\w+)", re.MULTILINE)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_INTERVAL, GRACE_PERIOD = 1, 3


def write_experiment(tmp_path: Path, *, steps: int = 9, **search) -> Path:
    """The tiny experiment with ``train.steps`` set, ``search`` settings and no budget.

    Without a budget every candidate is trained, and the search skips the check of the space's
    smallest candidate against the budget (seconds of pruning per process).
    """
    data = tiny_experiment_data(tmp_path / "run", **search)
    data["train"]["steps"] = steps
    data["budget"] = {}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Process:
    """``python -m compressor ARGS`` in the background, its output in files (no pipe can fill up)."""

    def __init__(self, folder: Path, name: str, *args: str) -> None:
        self.name = name
        self.out, self.err = folder / f"{name}.out", folder / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.popen = subprocess.Popen([sys.executable, "-m", "compressor", *args], stdout=out, stderr=err, env=cli_env())

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def trials(self) -> list[int]:
        """The numbers of the trials this process ran, from its line per trial."""
        return [int(number) for number, _, _ in TRIAL_LINE.findall(self.stdout)]

    def finish(self, timeout: float) -> None:
        """Waits for a clean exit (code 0)."""
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.name} still running after {timeout} s\n{self.stdout}\n{self.stderr}") from None
        assert self.popen.returncode == 0, f"{self.name} exited {self.popen.returncode}\n{self.stdout}\n{self.stderr}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=30)


def wait_for(predicate, timeout: float, what: str, *processes: Process) -> None:
    """Polls ``predicate``; fails early if one of ``processes`` exited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for process in processes:
            if process.popen.poll() is not None:
                raise AssertionError(f"{process.name} exited {process.popen.returncode} while waiting for {what}\n"
                                     f"{process.stdout}\n{process.stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def open_study(url: str) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=url)


def close(study: optuna.Study) -> None:
    engine = getattr(getattr(study._storage, "_backend", study._storage), "engine", None)
    if engine is not None:
        engine.dispose()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kept_weights(study: optuna.Study) -> dict[int, str]:
    """Trial number -> sha256 of its weights file, for the trials whose kept weights exist."""
    folder = Path(study_info(study).artifacts)
    return {record.number: digest(folder / record.weights) for record in trial_records(study)
            if record.weights and (folder / record.weights).is_file()}


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_a_search_and_a_worker_share_one_postgresql_study(postgres_storage_url, tmp_path, cli):
    url, target = postgres_storage_url, 4
    config = write_experiment(tmp_path, n_trials=target)
    search = Process(tmp_path, "search", "search", str(config), "--storage", url)
    processes = [search]
    try:
        # The worker joins as soon as the study exists with its settings (before that, it is refused):
        # the search prints this line right after creating it.
        wait_for(lambda: f"study '{STUDY}' in {url}" in search.stdout, 120, "the search to create the study", search)
        # Seeded (a worker's sampler is unseeded by default) so both draw known, trainable recipes.
        processes.append(Process(tmp_path, "worker", "worker", "--storage", url, "--study", STUDY, "--seed", "1"))
        for process in processes:
            process.finish(timeout=240)
    finally:
        for process in processes:
            process.stop()
    worker = processes[1]

    study = open_study(url)
    try:
        trials = study.get_trials(deepcopy=False)
        numbers = sorted(trial.number for trial in trials)
        # Every trial recorded once: numbers unique and gapless, each run by exactly one of the two
        # processes, and both processes really ran trials.
        assert numbers == list(range(len(trials)))
        ran = {"search": search.trials(), "worker": worker.trials()}
        assert ran["search"] and ran["worker"], ran
        assert sorted(ran["search"] + ran["worker"]) == numbers, ran
        assert all(trial.state in FINISHED for trial in trials), [(t.number, t.state) for t in trials]
        # The target: the study stops at `target` finished trials, except that a process already
        # in a trial when the other reached the target finishes it (each process stops after the
        # trial that sees the target reached): at most one more trial per extra worker.
        finished = sorted(trials, key=lambda trial: trial.datetime_complete)
        late = [trial.number for trial in finished[target:]]
        assert target <= len(finished) <= target + 1
        for name, own in ran.items():
            assert [number for number in own if number in late] in ([], own[-1:]), (name, own, late)

        # Weights are kept for exactly the Pareto front, though two processes discard dominated ones.
        records = trial_records(study)
        on_front = {record.number for record in front(records, study_info(study).objectives)}
        assert set(kept_weights(study)) == on_front
    finally:
        close(study)

    report = cli("report", "--study", STUDY, "--storage", url, "--out", str(tmp_path / "report"), timeout=240)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "index.html").is_file()
    with (tmp_path / "report" / "pareto.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert rows and {int(row["number"]) for row in rows} == on_front
    assert f"report: {tmp_path / 'report' / 'index.html'}" in report.stdout


@pytest.mark.postgres
@pytest.mark.timeout(400)
def test_four_processes_on_one_postgresql_study_lose_and_repeat_no_trial(postgres_storage_url, tmp_path):
    """Load: a search and three workers on one study, short trials. Every trial is numbered once and
    finished; the target is met, overshot by at most one trial per extra process (3), since each
    process stops after the trial in which it sees the target reached."""
    url, target, workers = postgres_storage_url, 8, 3
    config = write_experiment(tmp_path, n_trials=target)
    search = Process(tmp_path, "search", "search", str(config), "--storage", url)
    processes = [search]
    try:
        wait_for(lambda: f"study '{STUDY}' in {url}" in search.stdout, 120, "the search to create the study", search)
        for seed in range(1, workers + 1):
            processes.append(Process(tmp_path, f"worker{seed}", "worker", "--storage", url, "--study", STUDY,
                                     "--seed", str(seed)))
        for process in processes:
            process.finish(timeout=300)
    finally:
        for process in processes:
            process.stop()

    study = open_study(url)
    try:
        trials = study.get_trials(deepcopy=False)
        numbers = sorted(trial.number for trial in trials)
        assert numbers == list(range(len(trials)))  # no duplicate number, no gap
        ran = [process.trials() for process in processes]
        assert sorted(number for own in ran for number in own) == numbers  # each trial run by one process
        assert sum(1 for own in ran if own) >= 2, ran  # they really ran together
        assert all(trial.state in FINISHED for trial in trials), [(t.number, t.state) for t in trials]  # none lost
        finished = len([trial for trial in trials if trial.state in FINISHED])
        assert target <= finished <= target + workers, (finished, ran)
    finally:
        close(study)


def storage_url(request, kind: str) -> str | None:
    """The ``--storage`` of a kill test: a fresh PostgreSQL database, or None for the default SQLite file."""
    if kind == "postgres":
        return request.getfixturevalue("postgres_storage_url")
    return None


@pytest.mark.timeout(300)
# On SQLite, test_kill_9_then_the_same_command_at_once_recovers_the_trial_without_waiting_for_heartbeats
# covers the same recovery in the default run; this one (the heartbeat path) is slow there.
@pytest.mark.parametrize("kind", [pytest.param("sqlite", marks=pytest.mark.slow),
                                  pytest.param("postgres", marks=pytest.mark.postgres)])
def test_kill_9_in_a_trial_then_the_same_command_fails_and_retries_it(kind, request, tmp_path):
    """kill -9 while a trial trains; restarted, the heartbeat marks it failed and it is run again."""
    target = 3
    config = write_experiment(tmp_path, steps=12, n_trials=target, heartbeat_interval=HEARTBEAT_INTERVAL,
                              grace_period=GRACE_PERIOD)
    given = storage_url(request, kind)
    url = given or f"sqlite:///{tmp_path / 'run' / 'search.db'}"
    command = ["search", str(config), *(["--storage", given] if given else [])]

    first = Process(tmp_path, "first", *command)
    try:
        wait_for(lambda: f"study '{STUDY}' in" in first.stdout, 120, "the study", first)
        study = open_study(url)

        def training() -> bool:
            # A finished trial with kept weights, and another one inside its training (cost measured,
            # feasible, not finished).
            trials = study.get_trials(deepcopy=False)
            return (any(t.state == TrialState.COMPLETE and t.user_attrs.get("weights") for t in trials)
                    and any(t.state == TrialState.RUNNING and t.user_attrs.get("feasible") for t in trials))

        wait_for(training, 180, "a trial in training after a finished one", first)
        first.popen.send_signal(signal.SIGKILL)
        first.popen.wait(timeout=30)
        killed_at = time.monotonic()
    finally:
        first.stop()
    assert first.popen.returncode == -signal.SIGKILL

    try:
        before = study.get_trials(deepcopy=True)
        (dead,) = [trial for trial in before if trial.state == TrialState.RUNNING]
        done = {trial.number: (trial.values, trial.user_attrs) for trial in before if trial.state in FINISHED}
        weights = kept_weights(study)
        assert weights and set(weights) <= set(done)
    finally:
        close(study)

    # Restart after the grace period (a restart takes longer than that anyway; waiting makes it certain).
    time.sleep(max(0.0, killed_at + GRACE_PERIOD + HEARTBEAT_INTERVAL - time.monotonic()))
    second = Process(tmp_path, "second", *command)
    try:
        second.finish(timeout=240)
    finally:
        second.stop()

    study = open_study(url)
    try:
        trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
        records = {record.number: record for record in trial_records(study)}
        # The dead trial: failed by the heartbeat, with the reason the report shows.
        assert trials[dead.number].state == TrialState.FAIL
        assert records[dead.number].failure == "the worker stopped during the trial (interrupted or killed)"
        # Retried once, first thing, with the same choices, and finished this time.
        retries = [trial for trial in trials.values() if trial.number > dead.number
                   and RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) is not None]
        assert [trial.number for trial in retries] == [dead.number + 1] == second.trials()[:1]
        (retry,) = retries
        assert retry.system_attrs["failed_trial"] == dead.number
        assert RetryHeartbeatStaleTrialCallback.retry_history(retry) == [dead.number]
        assert retry.params == dead.params and retry.state in FINISHED
        assert records[retry.number].recipe_hash == dead.user_attrs["recipe_hash"]
        assert records[retry.number].status == "complete" and records[retry.number].failure is None
        # Nothing finished before the kill was lost or changed, and the study reached its target.
        assert {number: (trials[number].values, trials[number].user_attrs) for number in done} == done
        assert len([trial for trial in trials.values() if trial.state in FINISHED]) == target
        assert [trial.number for trial in trials.values() if trial.state not in FINISHED] == [dead.number]
        # Kept weights: byte for byte the same for the trials still on the Pareto front; a trial a
        # later one dominates loses them, by design.
        on_front = {record.number for record in front(list(records.values()), study_info(study).objectives)}
        after = kept_weights(study)
        assert set(after) == on_front
        still_on_front = {number: sha for number, sha in weights.items() if number in on_front}
        assert still_on_front  # the paper's recipe (trial 0) has the best metric: it stays on the front
        assert {number: after[number] for number in still_on_front} == still_on_front
    finally:
        close(study)


def test_weights_a_running_trial_of_another_worker_just_kept_are_not_discarded(tmp_path, monkeypatch):
    """The weights clean-up after each trial sees the other workers' trials too."""
    from torch import nn

    from compressor.search import _discard_dominated_weights
    from compressor.search.weights import WeightStore

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    store = WeightStore(tmp_path / "artifacts")

    def trial_with_weights(metric, values=None):
        """A trial as the runner leaves it: complete, in budget, its metric and weights stored; told if ``values``."""
        trial = study.ask()
        weights = store.keep(trial, nn.Linear(2, 2))
        for key, value in {"status": "complete", "feasible": True, "metric": metric, "weights": weights}.items():
            trial.set_user_attr(key, value)
        if values is not None:
            study.tell(trial, values)
        return weights

    best_weights = trial_with_weights(0.9, [0.9, 10, 10])
    worse_weights = trial_with_weights(0.1, [0.1, 20, 20])
    # smaller than every other one, but it learned nothing: no front trial
    nothing_weights = trial_with_weights(0.0, [0.0, 1, 1])
    # Another worker's trial: its runner stored "complete" and its weights, Optuna is not told yet.
    running_weights = trial_with_weights(0.5)

    _discard_dominated_weights(study, store, ["metric", "params", "flops"])
    assert store.has(best_weights) and store.has(running_weights) and not store.has(worse_weights)
    assert not store.has(nothing_weights)

    # Two workers discarding the same dominated weights: the second finds them gone, and goes on.
    monkeypatch.setattr(store, "has", lambda artifact_id: True)
    store.discard(worse_weights)


@pytest.mark.timeout(400)
# Slow-marked on SQLite (`pytest -m slow`); CI runs it on PostgreSQL.
@pytest.mark.parametrize("kind", [pytest.param("sqlite", marks=pytest.mark.slow),
                                  pytest.param("postgres", marks=pytest.mark.postgres)])
def test_confirmation_jobs_of_a_killed_process_are_retried_and_two_processes_share_the_rest(kind, request, tmp_path):
    url = storage_url(request, kind) or f"sqlite:///{tmp_path / 'run' / 'search.db'}"
    config = write_experiment(tmp_path, n_trials=3, heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE_PERIOD)
    search = Process(tmp_path, "search", "search", str(config), "--storage", url)
    search.finish(timeout=240)
    confirm = ("confirm", "--study", STUDY, "--storage", url, "--top", "1", "--seeds", "2", "--threads", "1")
    killed = Process(tmp_path, "killed", *confirm)
    queue_name = f"{STUDY}.confirm"

    def running_job() -> str | None:
        try:
            queue = optuna.load_study(study_name=queue_name, storage=url)
        except KeyError:
            return None
        try:
            running = [t for t in queue.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.user_attrs.get("job")]
            return running[0].user_attrs["job"]["subject"] if running else None
        finally:
            close(queue)

    processes = [killed]
    try:
        wait_for(lambda: running_job() is not None, 240, "a confirmation job to start", killed)
        killed.popen.send_signal(signal.SIGKILL)
        killed.popen.wait(timeout=30)
        time.sleep(GRACE_PERIOD + 1)  # its heartbeat is now older than the grace period: the job is dead
        processes = [Process(tmp_path, f"confirm{index}", *confirm) for index in (1, 2)]
        for process in processes:
            process.finish(timeout=300)
    finally:
        for process in [killed, *processes]:
            process.stop()

    study = open_study(url)
    queue = optuna.load_study(study_name=queue_name, storage=url)
    try:
        subjects = study.user_attrs["confirm_plan"]["subjects"]
        expected = {f"confirm/{subject}/{seed}/-" for subject in ["unet", "micronet", *subjects] for seed in (1, 2)}
        assert {key for key in study.user_attrs if key.startswith("confirm/")} == expected
        # The killed process's job failed by its heartbeat and ran again; every job ran once to the end.
        assert any(trial.state == TrialState.FAIL for trial in queue.trials)
        done = [trial.user_attrs["result"] for trial in queue.trials if trial.state == TrialState.COMPLETE
                and "result" in trial.user_attrs]
        keys = [f"confirm/{entry['subject']}/{entry['seed']}/-" for entry in done]
        assert sorted(keys) == sorted(expected)
    finally:
        close(study)
        close(queue)



@pytest.mark.timeout(300)
def test_kill_9_then_the_same_command_at_once_recovers_the_trial_without_waiting_for_heartbeats(tmp_path):
    """The grace period is long (120 s), the rerun immediate: only the process check can fail the dead trial."""
    config = write_experiment(tmp_path, steps=12, n_trials=3, heartbeat_interval=30, grace_period=120)
    url = f"sqlite:///{tmp_path / 'run' / 'search.db'}"
    first = Process(tmp_path, "first", "search", str(config))
    try:
        wait_for(lambda: f"study '{STUDY}' in" in first.stdout, 120, "the study", first)
        study = open_study(url)
        wait_for(lambda: any(t.state == TrialState.RUNNING and t.user_attrs.get("feasible")
                             for t in study.get_trials(deepcopy=False)), 180, "a trial in training", first)
        (dead,) = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        close(study)
        assert dead.user_attrs["process"]["pid"] == first.popen.pid
        first.popen.send_signal(signal.SIGKILL)
        first.popen.wait(timeout=30)
    finally:
        first.stop()
    started = time.monotonic()
    second = Process(tmp_path, "second", "search", str(config))
    try:
        second.finish(timeout=110)  # well inside the grace period
    finally:
        second.stop()
    assert time.monotonic() - started < 120
    assert f"trial {dead.number} was running in a process on this host that is gone: failed, and run again" \
        in second.stdout
    study = open_study(url)
    try:
        trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
        assert trials[dead.number].state == TrialState.FAIL
        (retry,) = [t for t in trials.values() if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == dead.number]
        assert retry.params == dead.params and retry.state in FINISHED
        assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    finally:
        close(study)
