from __future__ import annotations

import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
import third_party  # noqa: F401 - first, so torchvision imports beside a CPU torch (see its docstring)
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

PLUGINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins")
# A package that declares a transform through an entry point, installed for this session as pip
# would (the package and its .dist-info on the path): the contract suite and the search spaces
# pick it up from the registry like the built-in ones (tests/test_plugins.py).
sys.path.insert(0, PLUGINS)
collect_ignore = ["plugins"]


TESTS = os.path.dirname(os.path.abspath(__file__))


def cli_env(*, plugins: bool = True) -> dict[str, str]:
    """The environment of a CLI subprocess: this one's, with the tests folder and the plugins
    installed for the session added to ``PYTHONPATH``."""
    return {**os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [TESTS, PLUGINS if plugins else "", os.environ.get("PYTHONPATH")]))}


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


def refused_in_process(capfd, argv: list[str], *facts: str) -> str:
    """Runs the CLI in this process (``compressor.cli.main``); asserts exit code 2 and
    :func:`one_error_line`. Returns the line."""
    from compressor.cli import main

    code = main(argv)
    out, err = capfd.readouterr()
    assert code == 2, out + err
    return one_error_line(err, argv[0], *facts, out=out)

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
def cli():
    return run_cli


POSTGRES_URL_VARIABLE = "COMPRESSOR_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of a PostgreSQL server (SQLAlchemy form), from ``COMPRESSOR_TEST_POSTGRES_URL``.

    ``.ci/run`` starts a throwaway server and sets it; without it the test is skipped.
    """
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        pytest.skip(f"no PostgreSQL server: set {POSTGRES_URL_VARIABLE} (.ci/run starts one)")
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
