"""Confirmation of a search's front over further seeds and folds, with confidence intervals.

:func:`run_confirmation` (``compressor confirm``, or ``search.confirm`` at the end of a
search) retrains the front's best trials and the references on further repeats and stores
each result on the study; :func:`read_confirmation` summarizes what is stored (means,
95% intervals, paired differences to the study's reference, the confirmed front and a claim per budget).
"""

from __future__ import annotations

from typing import Any

from compressor.confirm.results import Confirmation, Summary, read_confirmation

__all__ = ["Confirmation", "Summary", "read_confirmation", "run_confirmation"]


def __getattr__(name: str) -> Any:
    if name == "run_confirmation":  # the runner pulls in training and the search: only when confirming
        from compressor.confirm.run import run_confirmation

        return run_confirmation
    raise AttributeError(name)
