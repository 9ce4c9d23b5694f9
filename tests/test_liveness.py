"""Which running trials' processes are gone: this host only, a reused process id told apart."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

from compressor.study.liveness import is_gone, process_identity


def test_a_process_that_exited_is_gone_and_a_living_one_is_not():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    identity = {**process_identity(), "pid": child.pid}
    assert is_gone(identity)
    assert not is_gone(process_identity())  # this very process
    parent = {**process_identity(), "pid": os.getppid(), "started": None}
    assert not is_gone(parent)


def test_another_hosts_process_is_left_to_heartbeats():
    assert not is_gone({"host": platform.node() + "-elsewhere", "pid": 999_999_999, "started": None})


def test_a_reused_process_id_is_told_apart_by_its_start_time():
    identity = {**process_identity(), "pid": os.getppid()}  # alive
    if identity["started"] is None:  # no /proc: the start time is unknown, and the process counts as alive
        assert not is_gone(identity)
        return
    assert not is_gone({**identity, "started": None})
    assert is_gone({**identity, "started": "1"})  # alive, but not the process that started the trial
