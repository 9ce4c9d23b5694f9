from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


TESTS = os.path.dirname(os.path.abspath(__file__))


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs the installed CLI in a fresh process, as a user would.

    The tests folder is importable, so ``networks:TinyClassifier`` stands for a user's own
    network given by import path.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "compressor", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


@pytest.fixture
def cli():
    return run_cli
