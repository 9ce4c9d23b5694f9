"""How many CPU threads torch should use: a number, or ``auto``, the cores this process may use
and nobody else is using.

A fixed count serves nobody: 2 threads on a machine whose scheduler or container gives this
process one core wait on each other (measured here: a search worker with 2 threads finished
about 40x fewer trials an hour than with 1 when the cores were shared, BENCHMARKS.md), and so do
2 threads on 2 cores one of which another program keeps busy: each step waits for the thread
that shares its core. ``auto`` takes the cores no other process keeps busy right now
(:func:`free_cores`: the CPU time of the cores this process may run on over a fifth of a second,
read from ``/proc/stat``, less this process's own; work at a lowered priority, ``nice``, counts
too: it does not yield enough, since every parallel region waits for the thread whose core a
niced program shares: beside one niced CPU-bound program, 2 threads trained a candidate 1.47x
slower than 1 did), capped by the cores the process is *allowed* to use
(:func:`available_cores`: its CPU affinity and its cgroup's CPU quota), at least 1.
The reading is kept for :data:`LOAD_TTL` seconds, so a search re-reads it about once a trial:
a program that starts or stops beside a long search changes the next trial's threads. Latency
is timed at a count that does not depend on the load (:func:`timing_threads`).

The thread count changes the order of floating-point reductions, so one seed trained on 1
thread and on 2 gives different numbers; give a count where a run must reproduce another.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from compressor.bounds import check_threads
from compressor.bounds import parse_threads as bounded_threads

__all__ = ["available_cores", "free_cores", "load_from", "auto_threads", "timing_threads", "resolve_threads",
           "torch_threads", "parse_threads"]

_CGROUP = Path("/sys/fs/cgroup")
_PROC_STAT = Path("/proc/stat")
#: seconds over which :func:`free_cores` watches the machine
LOAD_WINDOW = 0.2
#: seconds an ``auto`` reading is reused before the load is read again
LOAD_TTL = 15.0
_last_reading: tuple[float, tuple[tuple[int, ...], int], int] | None = None  # (time, (affinity, allowed), threads)
log = logging.getLogger(__name__)


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


def _cpu_times(stat_text: str, cpus: Sequence[int] | None) -> tuple[float, float, int]:
    """(busy, total) clock ticks of ``cpus`` (every CPU when None) in a ``/proc/stat`` text, and
    how many CPU lines were counted.

    Busy is user, ``nice`` (work at a lowered priority: it still takes its share of a core, and a
    thread beside it waits), system, interrupts and steal; idle and I/O wait are not.
    """
    wanted = None if cpus is None else {f"cpu{cpu}" for cpu in cpus}
    busy = total = 0.0
    counted = 0
    for line in stat_text.splitlines():
        name, *fields = line.split() or [""]
        if not name.startswith("cpu") or name == "cpu" or (wanted is not None and name not in wanted):
            continue
        ticks = [float(value) for value in fields[:8]] + [0.0] * (8 - len(fields[:8]))
        user, nice, system, idle, iowait, irq, softirq, steal = ticks
        busy += user + nice + system + irq + softirq + steal
        total += user + nice + system + idle + iowait + irq + softirq + steal
        counted += 1
    return busy, total, counted


def load_from(
    before: str, after: str, *, own_seconds: float, cpus: Sequence[int] | None = None,
    ticks_per_second: float | None = None,
) -> tuple[float, int]:
    """(cores kept busy by other processes, CPUs watched) between two ``/proc/stat`` readings,
    ``own_seconds`` of this process's CPU time taken out.

    Example:
        >>> before = "cpu0 100 50 10 1000 0 0 0 0\\ncpu1 100 0 10 1000 0 0 0 0"
        >>> after = "cpu0 120 70 10 1000 0 0 0 0\\ncpu1 100 0 10 1040 0 0 0 0"  # cpu0 busy, half of it nice
        >>> busy, cpus = load_from(before, after, own_seconds=0.0, ticks_per_second=100)
        >>> round(busy, 2), cpus
        (1.0, 2)
    """
    busy_0, total_0, _ = _cpu_times(before, cpus)
    busy_1, total_1, counted = _cpu_times(after, cpus)
    elapsed_ticks = total_1 - total_0
    if elapsed_ticks <= 0 or not counted:
        return 0.0, counted
    own_ticks = own_seconds * (ticks_per_second or _ticks_per_second())
    return max(0.0, (busy_1 - busy_0 - own_ticks) / elapsed_ticks * counted), counted


def _ticks_per_second() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


def _affinity() -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def free_cores(window: float = LOAD_WINDOW, stat: Path = _PROC_STAT, cpus: Sequence[int] | None = None) -> float | None:
    """Cores of this process's affinity (or ``cpus``) that no other process keeps busy (at any
    priority), watched for ``window`` seconds; None where ``/proc/stat`` cannot be read (not Linux).

    The CPUs are counted as ``/proc/stat`` lists them, not as a container's CPU quota allows:
    other tenants' load on a host's 64 CPUs does not take from a 2-CPU quota (the caller caps
    the result by the quota). This process's own CPU time in the window is taken out.
    """
    cpus = _affinity() if cpus is None else list(cpus)
    try:
        before, own_before = stat.read_text(), _own_cpu_seconds()
        time.sleep(window)
        after, own_after = stat.read_text(), _own_cpu_seconds()
    except OSError:
        return None
    busy, counted = load_from(before, after, own_seconds=own_after - own_before, cpus=cpus)
    return counted - busy if counted else None


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def auto_threads(*, cgroup_root: Path = _CGROUP, stat: Path = _PROC_STAT, fresh: bool = False) -> int:
    """``threads: auto``: the cores that are free (:func:`free_cores`, rounded half up), capped by
    :func:`available_cores` (affinity and cgroup quota), at least 1. A reading younger than
    :data:`LOAD_TTL` seconds, taken with the same affinity and quota, is reused unless ``fresh``.

    Example:
        >>> 1 <= auto_threads() <= available_cores()
        True
    """
    global _last_reading
    now = time.monotonic()
    allowed = available_cores(cgroup_root)
    where = (tuple(_affinity() or ()), allowed)
    if not fresh and _last_reading is not None and _last_reading[1] == where and now - _last_reading[0] < LOAD_TTL:
        return _last_reading[2]
    free = None if allowed == 1 else free_cores(stat=stat)
    threads = allowed if free is None else max(1, min(allowed, math.floor(free + 0.5)))
    previous = None if _last_reading is None else _last_reading[2]
    if threads != previous and (threads < allowed or previous is not None):
        log.info("threads: auto: %d of the %d cores this process may use (%s)", threads, allowed,
                 "no other program keeps one busy" if threads == allowed
                 else f"other programs keep the cores busy: {free:.1f} of {allowed} free, and one thread at the least")
    _last_reading = (now, where, threads)
    return threads


def timing_threads(value: int | str | None) -> int:
    """Threads to time latency with: a count as it is; ``auto`` or None: :func:`available_cores`
    (never the load-adjusted count of :func:`auto_threads`: a latency must not depend on what
    else the machine is doing)."""
    if value in (None, "auto"):
        return available_cores()
    return int(check_threads(value, "threads"))


def resolve_threads(value: int | str | None) -> int | None:
    """``auto`` -> :func:`auto_threads`; a count as it is; None (leave torch's setting) as it is.

    Raises:
        ConfigError: a count out of :func:`compressor.bounds.check_threads`'s range (torch
            crashes on 100000 threads and stalls the machine on 5000).
    """
    if value == "auto":
        return auto_threads()
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
    """Runs the block with ``count`` torch CPU threads (``auto``: :func:`auto_threads`; None: as
    they are), then restores them; yields the count in force."""
    previous = torch.get_num_threads()
    count = resolve_threads(count)
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
