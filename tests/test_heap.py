"""A search's collection after each trial walks only what was made since its trials began."""

from __future__ import annotations

import gc
import weakref

from search_helpers import tiny_experiment

from compressor.heap import frozen_heap
from compressor.pipeline import run_search


class _Node:
    """An object in a reference cycle (what candidates leave behind): freed by a collection only."""

    def __init__(self) -> None:
        self.me = self


def test_the_objects_alive_before_are_skipped_and_unfrozen_after_and_cycles_made_inside_are_collected():
    before = _Node()
    alive_before = weakref.ref(before)
    with frozen_heap():
        frozen = gc.get_freeze_count()
        del before
        gc.collect()
        assert alive_before() is not None  # frozen: a collection inside does not walk it
        made = weakref.ref(_Node())
        gc.collect()
        assert made() is None  # a cycle made inside is collected
    assert frozen > 0 and gc.get_freeze_count() == 0
    gc.collect()
    assert alive_before() is None  # unfrozen: collected as usual


def test_a_callers_own_freeze_is_left_as_it_is():
    # The count itself is no measure: a frozen object freed by reference counting (in another
    # thread of the test runner, say) leaves it. A cycle frozen by the caller is.
    mine = _Node()
    alive = weakref.ref(mine)
    gc.freeze()
    try:
        del mine
        with frozen_heap():
            made = weakref.ref(_Node())
        gc.collect()
        assert made() is None  # nothing of the block's was frozen
        assert alive() is not None and gc.get_freeze_count() > 0  # the caller's freeze still holds
    finally:
        gc.unfreeze()
    gc.collect()
    assert alive() is None


def test_a_search_collects_its_trials_cycles_and_leaves_nothing_frozen(tmp_path, monkeypatch):
    seen = []
    collect = gc.collect

    def counting_collect(*args):
        seen.append(gc.get_freeze_count())
        return collect(*args)

    monkeypatch.setattr(gc, "collect", counting_collect)
    run_search(tiny_experiment(tmp_path, n_trials=2, references=["base"]), echo=lambda line: None)
    monkeypatch.undo()
    after_trials = [count for count in seen if count]
    assert len(after_trials) >= 2  # Optuna's collection after each trial, with the heap before them frozen
    assert gc.get_freeze_count() == 0
