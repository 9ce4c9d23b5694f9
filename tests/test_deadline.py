"""The time limit on work in loops we do not own (torch-pruning's grouping)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from compressor.transforms.deadline import DeadlineExceeded, deadline


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _same_outer_timer(before: tuple[float, float]) -> bool:
    """pytest-timeout may run its own SIGALRM timer around each test: it must go on, a little shorter."""
    after = signal.getitimer(signal.ITIMER_REAL)
    return (after[0] == 0) == (before[0] == 0) and after[0] <= before[0]


def test_the_limit_interrupts_python_code_even_through_except_exception():
    before = signal.getitimer(signal.ITIMER_REAL)
    with pytest.raises(DeadlineExceeded, match="within 0.2 s"):
        with deadline(0.2):
            try:
                _spin(5)
            except Exception:  # noqa: BLE001 - what torch-pruning's code might do
                pass
    assert _same_outer_timer(before)


def test_a_block_that_waits_is_refused_as_one_that_works():
    """A lock that never comes, or a sleep, spends the limit as work does (no CPU time spent)."""
    before = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="within 0.4 s"):
        with deadline(0.4):
            _wait_forever()
    assert time.monotonic() - started < 2.0 and _same_outer_timer(before)


def _wait_forever() -> None:
    lock = threading.Lock()
    lock.acquire()
    lock.acquire(timeout=10)  # held by this very thread: never granted


def test_a_tick_that_lands_as_the_block_ends_does_nothing(monkeypatch):
    """The timer can expire just before the block's end disarms it: its handler then runs right after the
    disarming, and must neither raise after the block nor arm the timer again (with the default handler
    back, a timer left armed kills the process)."""
    import types

    import compressor.transforms.deadline as module

    real, fired = signal, []

    def setitimer(which, seconds, interval=0.0):
        previous = real.setitimer(which, seconds, interval)
        if seconds == 0 and not fired:  # the disarming: the timer had just expired
            fired.append(True)
            os.kill(os.getpid(), real.SIGALRM)  # pending: its handler runs as this call returns
        return previous

    patched = types.SimpleNamespace(**{name: getattr(real, name) for name in dir(real) if not name.startswith("__")})
    patched.setitimer = setitimer
    monkeypatch.setattr(module, "signal", patched)
    handler, outer = signal.getsignal(signal.SIGALRM), signal.setitimer(signal.ITIMER_REAL, 0)  # pytest-timeout's
    try:  # no outer timer: none to restore, which would hide a timer left armed
        with deadline(0.4):
            time.sleep(0.05)
        assert fired and signal.getsignal(signal.SIGALRM) is handler
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, *outer)


def test_a_stopped_and_continued_process_is_not_refused():
    """What happened to a benchmark paused with SIGSTOP while torch-pruning grouped its graph."""
    script = (
        "import os, signal, time\n"
        "from compressor.transforms.deadline import deadline\n"
        "with deadline(0.5):\n"
        "    os.kill(os.getpid(), signal.SIGSTOP)\n"
        "    end = time.monotonic() + 0.1\n"
        "    while time.monotonic() < end: pass\n"
        "print('finished')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline_at = time.monotonic() + 60
        while _state(process.pid) != "T" and time.monotonic() < deadline_at:
            time.sleep(0.02)
        time.sleep(1.0)  # stopped for twice its limit
        os.kill(process.pid, signal.SIGCONT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0 and out == "finished\n", err


def _state(pid: int) -> str:
    """The process's state letter in /proc (T: stopped)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_work_within_the_limit_is_untouched_and_the_handler_restored():
    handler, timer = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)
    with deadline(5) as armed:
        _spin(0.05)
    assert armed and signal.getsignal(signal.SIGALRM) is handler
    assert _same_outer_timer(timer)


def test_an_outer_timer_keeps_what_it_had_left():
    fired = []
    outer = signal.getitimer(signal.ITIMER_REAL)
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(time.monotonic()))
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        with deadline(10):
            _spin(0.3)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0.4 < left < 0.75  # 1 s minus the 0.3 s spent inside, not 1 s again
    finally:
        signal.setitimer(signal.ITIMER_REAL, *outer)
        signal.signal(signal.SIGALRM, previous)


def test_outside_the_main_thread_or_with_no_limit_nothing_is_armed():
    with deadline(0) as armed:
        assert not armed
    seen = []

    def worker() -> None:
        with deadline(1) as armed:
            seen.append(armed)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [False]
