"""The time limit on work in loops we do not own (torch-pruning's grouping)."""

from __future__ import annotations

import signal
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
