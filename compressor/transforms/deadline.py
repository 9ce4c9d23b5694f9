"""A time limit on work that runs in Python loops we do not own (torch-pruning's grouping)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["DeadlineExceeded", "deadline"]


class DeadlineExceeded(BaseException):
    """The work did not finish within its time limit (a ``BaseException``, as ``KeyboardInterrupt``
    is, so that the ``except Exception`` of the code it interrupts does not swallow it)."""


@dataclass
class _Clock:
    """The time a block has been given, in ticks of a real-time timer: a tick that comes on time counts
    its wall time (working, waiting or starved by other processes alike); a tick that comes late
    counts only the CPU time the process spent meanwhile (at least one tick), so the time it was
    stopped (Ctrl-Z, SIGSTOP, a suspended machine: its timer fires, the signal waits) is not counted,
    while a long C call that worked through it is."""

    tick: float
    wall: float
    cpu: float
    given: float = 0.0
    ended: bool = False

    def advance(self) -> float:
        wall, cpu = time.monotonic(), time.process_time()
        gap, worked = wall - self.wall, cpu - self.cpu
        late = gap > 2 * self.tick + 0.05
        self.given += max(self.tick, min(gap, worked)) if late else gap
        self.wall, self.cpu = wall, cpu
        return self.given


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[bool]:
    """Raises :class:`DeadlineExceeded` inside the block once it has been given ``seconds``.

    The time given is wall time without the time the process was stopped (Ctrl-Z, a job
    scheduler's SIGSTOP, a suspended machine): a search paused and continued is not refused
    for the pause, while a block that waits (a lock, a sleep) or crawls beside other work is.
    A real-time interval timer ticks (every quarter of the limit, at most every second) and
    checks; so it bounds Python code only (a long single C call finishes first) and works in
    the main thread only: elsewhere, or with ``seconds`` None or 0, the block runs unbounded.
    Yields whether the limit is armed. An outer timer (another deadline, or the caller's own
    SIGALRM) is suspended meanwhile and goes on afterwards with what it had left.

    Example:
        >>> with deadline(5) as armed:
        ...     total = sum(range(1000))
        >>> total
        499500
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield False
        return
    tick = min(1.0, seconds / 4)
    clock = _Clock(tick=tick, wall=time.monotonic(), cpu=time.process_time())

    def expire(_signum: int, _frame: object) -> None:
        if clock.ended:  # a tick that lands as the block ends
            return
        if clock.advance() >= seconds:
            clock.ended = True  # a tick during the unwinding does nothing
            raise DeadlineExceeded(f"did not finish within {seconds:g} s")

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, expire)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, tick, tick)
    try:
        yield True
    finally:
        try:
            clock.ended = True
        finally:  # whatever a last tick did, the timer is disarmed and the outer one put back
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_handler)
            if previous_timer[0]:  # the outer timer goes on with what it had left (at least a moment)
                left = max(previous_timer[0] - (time.monotonic() - started), 1e-3)
                signal.setitimer(signal.ITIMER_REAL, left, previous_timer[1])
