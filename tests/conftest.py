from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import third_party  # noqa: F401 - first, so torchvision imports beside a CPU torch (see its docstring)
import torch

# One torch thread per test process: the default run spreads its tests over the cores with
# pytest-xdist (one worker per core), and tiny networks gain nothing from a second thread.
torch.set_num_threads(1)


def _one_core_per_worker() -> None:
    """An xdist worker keeps to a core of its own, as on a machine of one core: ``threads: auto``
    (training's default) then means 1 there, and two workers' 2 threads each never wait for cores
    the other holds (2 threads on 2 busy cores ran a 3 s training in 26 s). Processes the tests
    start keep to the same core."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if 1 < count <= len(cores):
        os.sched_setaffinity(0, {cores[int(worker[2:]) % len(cores)]})


_one_core_per_worker()

PLUGINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins")
# A package that declares a transform through an entry point, installed for this session as pip
# would (the package and its .dist-info on the path): the contract suite and the search spaces
# pick it up from the registry like the built-in ones (tests/test_plugins.py).
sys.path.insert(0, PLUGINS)
collect_ignore = ["plugins"]


TESTS = os.path.dirname(os.path.abspath(__file__))


def benchmark_script(name: str):
    """Imports ``experiments/benchmarks/<name>.py`` (which puts its folder on the path and imports the
    benchmarks' ``common``) for a test module's fixture to yield; then the runner's path and modules as
    they were. A generator: ``yield from benchmark_script("converged")``."""
    import importlib

    path, modules = list(sys.path), set(sys.modules)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path[:] = path
        for module in set(sys.modules) - modules:
            if module in (name, "common"):
                del sys.modules[module]


def cli_env(*, plugins: bool = True) -> dict[str, str]:
    """The environment of a CLI subprocess: this one's, with the tests folder and the plugins
    installed for the session added to ``PYTHONPATH``."""
    return {**os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [TESTS, PLUGINS if plugins else "", os.environ.get("PYTHONPATH")]))}


def ctrl_c_as_in_a_shell() -> None:
    """``preexec_fn`` of a CLI process a test presses Ctrl-C in: SIGINT as a shell leaves it (default, unblocked),
    whatever the test runner's process left it as (a full run once handed its children SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def run_cli(*args: str, timeout: float = 300, plugins: bool = True) -> subprocess.CompletedProcess:
    """Runs the installed CLI in a fresh process, as a user would.

    The tests folder is importable, so ``networks:TinyClassifier`` stands for a user's own
    network given by import path.
    """
    return subprocess.run(
        [sys.executable, "-m", "compressor", *args],
        capture_output=True, text=True, timeout=timeout, env=cli_env(plugins=plugins),
    )



def one_error_line(err: str, command: str, *facts: str, out: str = "") -> str:
    """The one ``compressor COMMAND: error:`` line of ``err`` (besides ``compressor: `` progress
    notes), with no traceback in ``err`` or ``out`` and the ``facts`` in that line."""
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"compressor {command}: error: ")]
    assert len(errors) == 1, err
    assert all(line.startswith("compressor: ") for line in lines if line not in errors), err
    for fact in facts:
        assert fact in errors[0], (fact, errors[0])
    return errors[0]


def assert_refusal(result: subprocess.CompletedProcess, command: str, *facts: str) -> str:
    """A user mistake as the CLI must report it, in a fresh process: exit code 2 and
    :func:`one_error_line`. Returns the line."""
    assert result.returncode == 2, result.stdout + result.stderr
    return one_error_line(result.stderr, command, *facts)


def cli_in_process(capfd, *args: str) -> subprocess.CompletedProcess:
    """Runs the CLI in this process (``compressor.cli.main``), as :func:`run_cli` does in a new one,
    without the 2 s of importing torch and the library again: what it wrote to the file descriptors
    1 and 2 (child processes' output included) as ``stdout`` and ``stderr``. An exception that
    escapes ``main`` (a traceback a user would see) escapes here too; warnings are added to
    ``stderr`` as a process would print them. The torch thread count and the ``compressor``
    logger's handlers that the command sets are put back."""
    from compressor.cli import main

    threads = torch.get_num_threads()
    logger = logging.getLogger("compressor")  # main() adds its stderr handler: taken off after
    handlers, level = list(logger.handlers), logger.level
    capfd.readouterr()
    # Warnings as a fresh process shows them (each once, on stderr), not as pytest's summary.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse's --help and --version, as a process would end
            code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
        finally:
            torch.set_num_threads(threads)
            logger.handlers[:], logger.level = handlers, level
    out, err = capfd.readouterr()
    err += "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in caught)
    return subprocess.CompletedProcess(["compressor", *args], code, out, err)


def refused_in_process(capfd, argv: list[str], *facts: str) -> str:
    """Runs the CLI in this process (:func:`cli_in_process`); asserts exit code 2 and
    :func:`one_error_line`. Returns the line."""
    result = cli_in_process(capfd, *argv)
    assert result.returncode == 2, result.stdout + result.stderr
    return one_error_line(result.stderr, argv[0], *facts, out=result.stdout)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest -p no:xdist runs without it
def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker per core this process may use (a container's CPU quota counted, as
    ``threads: auto`` counts it), not per core the machine has."""
    from compressor.threads import available_cores

    return available_cores()


@pytest.fixture(autouse=True)
def _same_random_state():
    """Each test starts from the same torch and numpy random state, whatever ran before it.

    Without it a test's random weights depend on which tests ran first in its process
    (``-k``, ``-n`` workers, a new test file); the prune>skip_fusion pair, for one, refuses
    or composes depending on the weights that magnitude pruning sees.
    """
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def cli(capfd):
    """``cli(*args)``: the CLI run in this process (:func:`cli_in_process`), its result as
    :func:`run_cli` gives it. Tests that need a process of its own (signals, kills, a pickle that
    would run code, the plugins left out) call :func:`run_cli`."""

    def run(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        return cli_in_process(capfd, *args)  # timeout: the test's own (pytest-timeout) bounds it

    return run


POSTGRES_URL_VARIABLE = "COMPRESSOR_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_VARIABLE = "COMPRESSOR_REQUIRE_POSTGRES"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of a PostgreSQL server (SQLAlchemy form), from ``COMPRESSOR_TEST_POSTGRES_URL``.

    ``.ci/run`` starts a throwaway server and sets it; without it the test is skipped, or fails
    when ``COMPRESSOR_REQUIRE_POSTGRES=1`` (``.ci/run`` sets it: CI is not green without them).
    """
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        reason = f"no PostgreSQL server: set {POSTGRES_URL_VARIABLE} (.ci/run starts one)"
        if os.environ.get(REQUIRE_POSTGRES_VARIABLE) == "1":  # CI: the distributed checks must run
            pytest.fail(f"{reason}; {REQUIRE_POSTGRES_VARIABLE}=1 asks for one", pytrace=False)
        pytest.skip(reason)
    return url


@pytest.fixture
def postgres_storage_url(postgres_url: str):
    """The URL of a new, empty database on the server of ``postgres_url``, dropped after the test."""
    import sqlalchemy

    server = sqlalchemy.engine.make_url(postgres_url)
    name = f"test_{uuid.uuid4().hex}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool)
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            # FORCE ends the sessions a test left open (PostgreSQL 13 and later).
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
