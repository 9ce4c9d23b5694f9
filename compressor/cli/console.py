"""What the CLI prints besides its results: library progress on stderr, lines as they come."""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging", "echo"]


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each message (not the one at set-up).

    The CLI can run in-process several times (tests capture and close stderr in between).
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    """Library progress messages (downloads, reuse of stored results) as ``compressor: ...`` on stderr."""
    logger = logging.getLogger("compressor")
    if not logger.handlers:
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("compressor: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def echo(line: str) -> None:
    """Prints ``line`` at once (a line per trial or job, while the work goes on)."""
    print(line, flush=True)
