"""``threads: auto``: the cores this process may use, from its affinity and its cgroup's CPU quota."""

from __future__ import annotations

import os

import pytest
import torch

from compressor.errors import ConfigError
from compressor.experiment import Experiment
from compressor.threads import available_cores, parse_threads, resolve_threads, torch_threads


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
