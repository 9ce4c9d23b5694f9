"""A time limit on work that runs in Python loops we do not own (torch-pruning's grouping)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

__all__ = ["DeadlineExceeded", "deadline"]


class DeadlineExceeded(BaseException):
    """The work did not finish within its time limit (a ``BaseException``, as ``KeyboardInterrupt``
    is, so that the ``except Exception`` of the code it interrupts does not swallow it)."""


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[bool]:
    """Raises :class:`DeadlineExceeded` inside the block once ``seconds`` of work have been done in it.

    Work is the process's CPU time: a process paused (Ctrl-Z, a suspended machine, a job
    scheduler's SIGSTOP) or starved by other processes is not refused for the time it did not
    run. A real-time interval timer wakes it when ``seconds`` have passed, and again for what
    is left of the limit until the CPU time reaches it (several threads busy: at the first
    wake). So it bounds Python code only (a long single C call finishes first) and works in
    the main thread only: elsewhere, or with ``seconds`` None or 0, the block runs unbounded.
    Yields whether the limit is armed. An outer timer (another deadline, or the caller's own
    SIGALRM) is restored afterwards.

    Example:
        >>> with deadline(5) as armed:
        ...     total = sum(range(1000))
        >>> total
        499500
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield False
        return

    def expire(_signum: int, _frame: object) -> None:
        left = seconds - (time.process_time() - worked_from)
        if left > 0.01:  # the process did not run all this time: it gets the rest of its limit
            signal.setitimer(signal.ITIMER_REAL, left)
            return
        raise DeadlineExceeded(f"did not finish within {seconds:g} s")

    started, worked_from = time.monotonic(), time.process_time()
    previous_handler = signal.signal(signal.SIGALRM, expire)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_timer[0]:  # the outer timer goes on with what it had left (at least a moment)
            left = max(previous_timer[0] - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, previous_timer[1])
