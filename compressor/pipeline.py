"""A search, then its confirmation: the one place that runs both, above :mod:`compressor.search`
and :mod:`compressor.confirm` (which never import each other).

:func:`run_search` is what ``compressor search`` runs; :func:`join_search` what ``compressor
worker`` runs. Each runs the study's trials, then, when the study asks for a confirmation
(``search.confirm``) and its front is final (no trial running in another process), confirms it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from compressor.confirm.plan import plan_repeats
from compressor.confirm.run import run_confirmation
from compressor.experiment import Experiment
from compressor.search import SearchResult, join_trials, run_trials

__all__ = ["run_search", "join_search", "SearchResult"]


def run_search(
    experiment: Experiment, *, cache_dir: str | Path | None = None, echo: Callable[[str], None] = print,
    trust: bool = False,
) -> SearchResult:
    """Runs the search ``experiment.search`` describes (:func:`compressor.search.run_trials`), then
    its confirmation when ``search.confirm`` asks for one; a confirmation that cannot run
    (folds without k-fold data, nothing to repeat) is refused before any training.

    Raises:
        CompressorError: bad settings, an impossible budget, a study made with other settings.
    """
    if experiment.search.confirm.active:
        plan_repeats(experiment, experiment.search.confirm)
    result = run_trials(experiment, cache_dir=cache_dir, echo=echo, trust=trust)
    return _confirmed(result, cache_dir=cache_dir, echo=echo, trust=trust)


def join_search(
    storage_url: str, study_name: str, *, n_trials: int | None = None, timeout: float | None = None,
    seed: int | None = None, threads: int | None = None, cache_dir: str | Path | None = None,
    echo: Callable[[str], None] = print, trust: bool = False,
) -> SearchResult:
    """One more worker on a running study (:func:`compressor.search.join_trials`, same arguments),
    then the study's confirmation when it asks for one and no other process is still running a trial."""
    result = join_trials(storage_url, study_name, n_trials=n_trials, timeout=timeout, seed=seed, threads=threads,
                         cache_dir=cache_dir, echo=echo, trust=trust)
    return _confirmed(result, cache_dir=cache_dir, echo=echo, trust=trust)


def _confirmed(
    result: SearchResult, *, cache_dir: str | Path | None, echo: Callable[[str], None], trust: bool
) -> SearchResult:
    if not result.confirm.active:
        return result
    if result.running_elsewhere:  # the front is final only when no trial runs
        echo(f"not confirming yet: a trial is still running (another worker, or one that died); when it ends: "
             f"compressor confirm --study {result.study_name} --storage {result.storage_url}")
        return result
    confirmation = run_confirmation(result.study, result.storage_url, config=result.confirm, cache_dir=cache_dir,
                                    echo=echo, trust=trust or result.own_network)
    return dataclasses.replace(result, confirmation=confirmation)
