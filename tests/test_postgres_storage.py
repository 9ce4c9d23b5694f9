"""compressor's study storage (:func:`compressor.study.open_storage`: Optuna's RDBStorage with
heartbeats and retries) on a real PostgreSQL server, shared by worker processes.

The server comes from ``COMPRESSOR_TEST_POSTGRES_URL`` (``.ci/run`` starts one); each test gets
a new, empty database through the ``postgres_storage_url`` fixture. Without the variable these
tests are skipped with the reason, or fail when ``COMPRESSOR_REQUIRE_POSTGRES=1`` (as in CI).
"""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from compressor.study import open_storage

pytestmark = [
    pytest.mark.postgres,
    # heartbeats, fail_stale_trials and the retry callback are marked experimental by Optuna.
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

HEARTBEAT_INTERVAL = 1
GRACE_PERIOD = 2

# A worker as a search would run one: its own process, its own connection, the study loaded by
# name. It waits for the file `go` in the sync folder so that the workers really run together.
WORKER = """
import os, sys, time, pathlib
import optuna

from compressor.study import open_storage

url, study_name, n_trials, sync, name, heartbeat, grace, mode = sys.argv[1:]
sync = pathlib.Path(sync)
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = open_storage(url, heartbeat_interval=int(heartbeat), grace_period=int(grace), create=False)
study = optuna.load_study(study_name=study_name, storage=storage)
(sync / f"ready-{name}").touch()
deadline = time.monotonic() + 60
while not (sync / "go").exists():
    if time.monotonic() > deadline:
        sys.exit(f"worker {name}: no go signal")
    time.sleep(0.01)

def objective(trial):
    trial.set_user_attr("worker", name)
    trial.set_user_attr("pid", os.getpid())
    x = trial.suggest_float("x", -10.0, 10.0)
    if mode == "hang":
        (sync / f"in-trial-{name}").touch()
        time.sleep(120)
    time.sleep(0.05)
    return (x - 2.0) ** 2

study.optimize(objective, n_trials=int(n_trials))
"""


def start_worker(url: str, study_name: str, n_trials: int, sync: Path, name: str, mode: str = "run"):
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, url, study_name, str(n_trials), str(sync), name,
         str(HEARTBEAT_INTERVAL), str(GRACE_PERIOD), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def finish(worker: subprocess.Popen, timeout: float = 120) -> None:
    out, err = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, f"worker exited {worker.returncode}\nstdout:\n{out}\nstderr:\n{err}"


def rdb_storage(url: str, max_retry: int = 0):
    return open_storage(url, heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE_PERIOD, max_retry=max_retry)


def count_rows(url: str, sql: str, **params) -> int:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text(sql), params).scalar_one()
    finally:
        engine.dispose()


def test_each_test_gets_a_new_empty_postgresql_database(postgres_storage_url):
    url = sqlalchemy.engine.make_url(postgres_storage_url)
    assert url.get_backend_name() == "postgresql"
    assert url.database.startswith("test_")
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("select current_database()")).scalar_one() == url.database
            tables = connection.execute(sqlalchemy.text(
                "select count(*) from information_schema.tables where table_schema = 'public'"
            )).scalar_one()
    finally:
        engine.dispose()
    assert tables == 0
    storage = rdb_storage(postgres_storage_url)
    try:
        assert optuna.get_all_study_summaries(storage) == []
    finally:
        storage.engine.dispose()


def test_two_worker_processes_share_one_study_and_record_every_trial_once(postgres_storage_url, tmp_path):
    per_worker = 8
    storage = rdb_storage(postgres_storage_url)
    try:
        study = optuna.create_study(study_name="shared", storage=storage, direction="minimize")
        workers = {name: start_worker(postgres_storage_url, "shared", per_worker, tmp_path, name) for name in "ab"}
        wait_for(lambda: all((tmp_path / f"ready-{name}").exists() or workers[name].poll() is not None
                             for name in workers), 60, "both workers to load the study")
        (tmp_path / "go").touch()
        for worker in workers.values():
            finish(worker)

        trials = study.get_trials(deepcopy=False)
        assert len(trials) == 2 * per_worker
        assert sorted(t.number for t in trials) == list(range(2 * per_worker))
        assert len({t._trial_id for t in trials}) == 2 * per_worker
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        for t in trials:
            assert t.value == pytest.approx((t.params["x"] - 2.0) ** 2)
        assert collections.Counter(t.user_attrs["worker"] for t in trials) == {"a": per_worker, "b": per_worker}
        pids = {t.user_attrs["worker"]: t.user_attrs["pid"] for t in trials}
        assert pids["a"] != pids["b"] and os.getpid() not in pids.values()

        # The two workers ran at the same time, not one after the other.
        spans = {
            name: (min(t.datetime_start for t in trials if t.user_attrs["worker"] == name),
                   max(t.datetime_complete for t in trials if t.user_attrs["worker"] == name))
            for name in workers
        }
        assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values())

        # The database itself holds each trial once: one row per number, no more.
        study_id = storage.get_study_id_from_name("shared")
        assert count_rows(postgres_storage_url, "select count(*) from trials where study_id = :s", s=study_id) == 2 * per_worker
        assert count_rows(postgres_storage_url, "select count(distinct number) from trials where study_id = :s",
                          s=study_id) == 2 * per_worker
    finally:
        storage.engine.dispose()


def test_a_killed_workers_trial_fails_after_the_grace_period_and_is_retried(postgres_storage_url, tmp_path):
    storage = rdb_storage(postgres_storage_url, max_retry=1)
    try:
        study = optuna.create_study(study_name="crash", storage=storage)
        worker = start_worker(postgres_storage_url, "crash", 1, tmp_path, "doomed", mode="hang")
        try:
            (tmp_path / "go").touch()
            wait_for(lambda: (tmp_path / "in-trial-doomed").exists() or worker.poll() is not None, 60,
                     "the worker to start its trial")
            assert worker.poll() is None, worker.communicate()
            wait_for(lambda: count_rows(postgres_storage_url, "select count(*) from trial_heartbeats") == 1, 30,
                     "the worker's first heartbeat")
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.communicate(timeout=30)
        assert worker.returncode == -signal.SIGKILL

        (doomed,) = study.get_trials(deepcopy=False)
        assert doomed.state == optuna.trial.TrialState.RUNNING
        optuna.storages.fail_stale_trials(study)  # within the grace period: still running
        assert study.get_trials(deepcopy=False)[0].state == optuna.trial.TrialState.RUNNING

        def failed() -> bool:
            optuna.storages.fail_stale_trials(study)
            return study.get_trials(deepcopy=False)[0].state == optuna.trial.TrialState.FAIL
        wait_for(failed, 10 * GRACE_PERIOD, "the dead worker's trial to be marked failed")

        # The retry callback enqueued the same parameters; the next worker runs them.
        waiting = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.WAITING]
        assert len(waiting) == 1
        (tmp_path / "go").touch()
        finish(start_worker(postgres_storage_url, "crash", 1, tmp_path, "heir"))
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
        assert trials[1].params == trials[0].params
        assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trials[1]) == 0
        assert trials[1].user_attrs["worker"] == "heir"
    finally:
        storage.engine.dispose()
