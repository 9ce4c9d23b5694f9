from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs the installed CLI in a fresh process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "compressor", *args],
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli
