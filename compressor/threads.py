"""How many CPU threads torch should use: a number, or ``auto``, the cores this process may use.

A fixed count serves nobody: 2 threads on a machine whose scheduler or container gives this
process one core wait on each other (measured here: a search worker with 2 threads finished
about 40x fewer trials an hour than with 1 when the cores were shared, BENCHMARKS.md). ``auto``
reads the cores the process is *allowed* to run on: its CPU affinity (``taskset``, a job
scheduler's cpuset) and the CPU quota of its cgroup (a container's ``--cpus``), the smaller of
the two, at least 1. It does not guess from the load of other processes.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from compressor.bounds import check_threads
from compressor.bounds import parse_threads as bounded_threads

__all__ = ["available_cores", "resolve_threads", "torch_threads", "parse_threads"]

_CGROUP = Path("/sys/fs/cgroup")


def available_cores(cgroup_root: Path = _CGROUP) -> int:
    """The cores this process may use: CPU affinity, capped by its cgroup's CPU quota (at least 1).

    Example:
        >>> 1 <= available_cores() <= (os.cpu_count() or 1)
        True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max``, else v1 ``cfs_quota_us``), None if unlimited."""
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100000)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def resolve_threads(value: int | str | None) -> int | None:
    """``auto`` -> :func:`available_cores`; a count as it is; None (leave torch's setting) as it is.

    Raises:
        ConfigError: a count out of :func:`compressor.bounds.check_threads`'s range (torch
            crashes on 100000 threads and stalls the machine on 5000).
    """
    if value == "auto":
        return available_cores()
    return check_threads(value, "threads")


def parse_threads(text: str) -> int | str:
    """A command line's threads: ``auto`` or a count in [1, 4 x the machine's cores]
    (:func:`compressor.bounds.parse_threads`; an option's ``type=`` is
    :func:`compressor.bounds.threads_argument`, which names the flag).

    Raises:
        ConfigError: anything else.
    """
    return bounded_threads(text, "threads")


@contextlib.contextmanager
def torch_threads(count: int | str | None) -> Iterator[int]:
    """Runs the block with ``count`` torch CPU threads (``auto``: the available cores; None: as
    they are), then restores them; yields the count in force."""
    previous = torch.get_num_threads()
    count = resolve_threads(count)
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
