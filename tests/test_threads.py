"""``threads: auto``: the cores this process may use, from its affinity and its cgroup's CPU quota,
less the cores other processes keep busy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from compressor import threads as threads_module
from compressor.errors import ConfigError
from compressor.experiment import Experiment
from compressor.threads import (
    available_cores,
    free_cores,
    load_from,
    parse_threads,
    resolve_threads,
    timing_threads,
    torch_threads,
)


def _cgroup(tmp_path, v2: str | None = None, v1: tuple[int, int] | None = None):
    tmp_path.mkdir()
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return tmp_path


def test_auto_is_the_affinity_capped_by_the_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(_cgroup(tmp_path / "none")) == affinity  # no cgroup files: the affinity
    assert available_cores(_cgroup(tmp_path / "max", v2="max 100000")) == affinity
    assert available_cores(_cgroup(tmp_path / "half", v2="50000 100000")) == 1  # half a core: at least 1
    assert available_cores(_cgroup(tmp_path / "big", v2="6400000 100000")) == affinity  # quota above the cpuset
    assert available_cores(_cgroup(tmp_path / "v1", v1=(150000, 100000))) == min(affinity, 2)  # 1.5 CPUs -> 2
    assert available_cores(_cgroup(tmp_path / "v1-off", v1=(-1, 100000))) == affinity


def test_auto_follows_a_narrowed_affinity():
    before = os.sched_getaffinity(0)  # one core under xdist (tests/conftest.py): widened first
    try:
        try:
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        except OSError:  # some of those cores are outside this process's cpuset
            pass
        wide = os.sched_getaffinity(0)
        if len(wide) < 2:
            pytest.skip("needs 2 cores to narrow the affinity")
        os.sched_setaffinity(0, {min(wide)})
        assert available_cores() == 1 and resolve_threads("auto") == 1
        with torch_threads("auto") as count:
            assert count == 1 == torch.get_num_threads()
    finally:
        os.sched_setaffinity(0, before)


def test_torch_threads_restores_and_counts_pass_through():
    previous = torch.get_num_threads()
    with torch_threads(1) as count:
        assert count == 1
    with torch_threads(None) as count:
        assert count == previous
    assert torch.get_num_threads() == previous and resolve_threads(3) == 3 and resolve_threads(None) is None


def test_auto_is_the_default_and_bad_values_are_refused():
    assert Experiment.from_dict({}).train.threads == "auto"
    assert Experiment.from_dict({"train": {"threads": 1}}).train.threads == 1
    with pytest.raises(ConfigError, match=r"train.threads: expected integer or one of 'auto' or null, got 'many'"):
        Experiment.from_dict({"train": {"threads": "many"}})
    with pytest.raises(ConfigError, match=r"train.threads must be 'auto' or >= 1, got 0"):
        Experiment.from_dict({"train": {"threads": 0}})
    assert parse_threads("auto") == "auto" and parse_threads("2") == 2
    for bad in ("0", "many", "100000"):
        with pytest.raises(ConfigError, match=rf"threads must be 'auto' or a count in \[1, \d+\] .*, got '{bad}'"):
            parse_threads(bad)


_STAT_BEFORE = "cpu  0 0 0 0\ncpu0 1000 500 100 9000 10 0 0 0 0 0\ncpu1 1000 0 100 9000 0 0 0 0\ncpu2 0 0 0 0 0 0 0 0\nintr 5\n"


def _after(cpu0: tuple[int, ...], cpu1: tuple[int, ...], cpu2: tuple[int, ...] = (0,) * 8) -> str:
    """``/proc/stat`` after 1 s at 100 ticks a second, each CPU's ticks added to _STAT_BEFORE's."""
    base = {0: (1000, 500, 100, 9000, 10, 0, 0, 0), 1: (1000, 0, 100, 9000, 0, 0, 0, 0), 2: (0,) * 8}
    lines = ["cpu  0 0 0 0"]
    for cpu, added in enumerate((cpu0, cpu1, cpu2)):
        lines.append(f"cpu{cpu} " + " ".join(str(a + b) for a, b in zip(base[cpu], added)))
    return "\n".join(lines) + "\nintr 9\n"


def _busy(before: str, after: str, **kwargs) -> float:
    return load_from(before, after, ticks_per_second=100, **kwargs)[0]


def test_busy_counts_other_processes_work_at_any_priority_on_the_allowed_cores():
    # user nice system idle iowait irq softirq steal, 100 ticks per CPU
    cpu0_user, cpu1_idle = (90, 0, 10, 0, 0, 0, 0, 0), (0, 0, 0, 100, 0, 0, 0, 0)
    after = _after(cpu0_user, cpu1_idle, (100, 0, 0, 0, 0, 0, 0, 0))
    assert load_from(_STAT_BEFORE, after, own_seconds=0.0, cpus=[0, 1], ticks_per_second=100) == (pytest.approx(1.0), 2)
    # a CPU outside the affinity is not counted; without an affinity, every CPU line is
    assert load_from(_STAT_BEFORE, after, own_seconds=0.0, cpus=[1], ticks_per_second=100) == (0.0, 1)
    assert load_from(_STAT_BEFORE, after, own_seconds=0.0, ticks_per_second=100) == (pytest.approx(2.0), 3)
    # an affinity CPU that /proc/stat does not list is not counted either
    assert load_from(_STAT_BEFORE, after, own_seconds=0.0, cpus=[0, 7], ticks_per_second=100) == (pytest.approx(1.0), 1)
    # this process's own second of CPU time is not someone else's
    assert _busy(_STAT_BEFORE, after, own_seconds=1.0, cpus=[0, 1]) == pytest.approx(0.0)
    # work under nice is busy too (a thread beside it waits: measured 1.47x slower with 2 threads than
    # with 1 beside one niced CPU-bound program); I/O wait is idle; interrupts and steal are busy
    niced = _after((0, 100, 0, 0, 0, 0, 0, 0), (0, 0, 0, 50, 50, 0, 0, 0))
    assert _busy(_STAT_BEFORE, niced, own_seconds=0.0, cpus=[0, 1]) == pytest.approx(1.0)
    stolen = _after((0, 0, 0, 50, 0, 20, 10, 20), cpu1_idle)
    assert _busy(_STAT_BEFORE, stolen, own_seconds=0.0, cpus=[0, 1]) == pytest.approx(0.5)
    assert _busy(_STAT_BEFORE, _STAT_BEFORE, own_seconds=0.0) == 0.0  # no time passed


def _host_stat(cpus: int, busy: int, extra: int = 0) -> str:
    """A /proc/stat of ``cpus`` CPUs whose first ``busy`` have spent ``extra`` ticks in user time."""
    return "cpu  0 0 0 0\n" + "".join(
        f"cpu{cpu} {1000 + (extra if cpu < busy else 0)} 0 0 {1000 + (0 if cpu < busy else extra)} 0 0 0 0\n"
        for cpu in range(cpus))


def _stat_changing(path, before: str, after: str):
    """A stat file at ``path`` that reads ``before`` now and ``after`` from 50 ms on (inside
    free_cores' window)."""
    path.write_text(before)
    timer = threading.Timer(0.05, path.write_text, args=(after,))
    timer.start()
    return path, timer


def test_free_cores_reads_the_file_twice_over_its_window(tmp_path):
    path, timer = _stat_changing(tmp_path / "stat", _host_stat(4, 0), _host_stat(4, 3, extra=40))
    try:
        free = free_cores(window=0.3, stat=path, cpus=[0, 1, 2, 3])
    finally:
        timer.join()
    assert free == pytest.approx(1.0, abs=0.2)  # 3 of 4 busy; our own CPU time in the window is about 0
    path2, timer = _stat_changing(tmp_path / "stat2", _host_stat(4, 0), _host_stat(4, 3, extra=40))
    try:
        assert free_cores(window=0.3, stat=path2, cpus=[3]) == pytest.approx(1.0, abs=0.05)  # cpu3 was idle
    finally:
        timer.join()
    assert free_cores(stat=tmp_path / "missing") is None


def test_a_quota_is_not_charged_with_the_hosts_load(monkeypatch, tmp_path):
    """A container allowed 2 CPUs on a 64-CPU host whose other tenants keep 30 busy: 34 are free,
    so auto takes its whole quota; with 63 busy it takes the 1 that is free."""
    monkeypatch.setattr(threads_module, "_last_reading", None)
    monkeypatch.setattr(threads_module.os, "sched_getaffinity", lambda pid: set(range(64)))  # xdist pins to one
    cgroup = _cgroup(tmp_path / "quota", v2="200000 100000")
    for busy, expected in ((30, 2), (63, 1), (0, 2)):
        path, timer = _stat_changing(tmp_path / f"stat-{busy}", _host_stat(64, 0), _host_stat(64, busy, extra=40))
        try:
            assert threads_module.auto_threads(cgroup_root=cgroup, stat=path, fresh=True) == expected, busy
        finally:
            timer.join()


def test_auto_reads_the_load_once_per_ttl_and_again_when_the_affinity_changes(monkeypatch):
    reads = []
    affinity = [0, 1, 2, 3]
    monkeypatch.setattr(threads_module, "available_cores", lambda root=None: len(affinity))
    monkeypatch.setattr(threads_module, "_affinity", lambda: list(affinity))
    monkeypatch.setattr(threads_module, "free_cores", lambda stat=None: reads.append(1) or 1.4)
    monkeypatch.setattr(threads_module, "_last_reading", None)
    assert threads_module.auto_threads() == 1  # 4 allowed, 1.4 free
    monkeypatch.setattr(threads_module, "free_cores", lambda stat=None: reads.append(1) or 2.5)
    assert threads_module.auto_threads() == 1 and len(reads) == 1  # within LOAD_TTL: the same reading
    assert threads_module.auto_threads(fresh=True) == 3 and len(reads) == 2  # 2.5 rounds half up
    affinity.pop()  # 3 cores now: a new reading, not the one taken on 4
    assert threads_module.auto_threads() == 3 and len(reads) == 3
    monkeypatch.setattr(threads_module, "LOAD_TTL", 0.0)
    assert threads_module.auto_threads() == 3 and len(reads) == 4  # past the TTL: read again
    monkeypatch.setattr(threads_module, "free_cores", lambda stat=None: 0.0)
    assert threads_module.auto_threads(fresh=True) == 1  # never below one thread
    monkeypatch.setattr(threads_module, "free_cores", lambda stat=None: None)
    assert threads_module.auto_threads(fresh=True) == 3  # no /proc/stat: the allowed cores


def test_latency_is_timed_at_a_count_the_load_does_not_change(monkeypatch):
    monkeypatch.setattr(threads_module, "available_cores", lambda root=None: 2)
    monkeypatch.setattr(threads_module, "free_cores", lambda stat=None: 1.0)
    monkeypatch.setattr(threads_module, "_last_reading", None)
    assert threads_module.auto_threads(fresh=True) == 1
    assert timing_threads("auto") == 2 and timing_threads(None) == 2 and timing_threads(3) == 3


def test_auto_leaves_a_core_to_a_program_that_keeps_it_busy():
    """In a fresh process on every core this one may use (xdist pins each worker to one), with a
    CPU-bound program beside it: auto takes fewer threads than the allowed cores."""
    script = textwrap.dedent("""
        import os, subprocess, sys, time
        try:
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        except OSError:
            pass
        from compressor.threads import auto_threads, available_cores
        allowed = available_cores()
        if allowed < 2:
            print("skip", allowed)
            sys.exit()
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(allowed - 1)]
        try:
            time.sleep(0.5)
            print(allowed, auto_threads(fresh=True))
        finally:
            for hog in hogs:
                hog.kill()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True).stdout
    if out.startswith("skip"):
        pytest.skip("needs 2 cores")
    allowed, auto = map(int, out.split())
    assert 1 <= auto < allowed
