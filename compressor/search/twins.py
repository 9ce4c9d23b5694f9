"""A recipe that another live process is training now is waited for, not trained twice.

Two processes on one study (a search and a worker, several workers) can draw the same recipe at
the same time. A trial publishes its recipe's hash as soon as it has one, then looks at the
study: a finished trial of that recipe is reused at once (as before); a running one whose
process is alive is waited for, and its result reused when it finishes.

Of two trials that publish the same hash at about the same time, one must train and the other
wait, with nothing but the study's user attributes between them. Each trial is either *claiming*
the recipe (``waits_for`` unset) or *waiting* (``waits_for`` names the trial it waits for). A trial
starts claiming; it trains only if, after its claim is stored, it sees no other live claimant,
and otherwise turns to waiting. So two trials never both train: the later of two claims sees the
earlier one. While every live twin waits (they all backed off at once, or the one training
died), the lowest-numbered one claims again. A twin whose process is gone (on this host, by
process id; elsewhere, by its heartbeat) is not waited for, and the wait is bounded: past
``max_wait`` seconds the trial trains the recipe itself.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from compressor.study.liveness import PROCESS_KEY, describe_process, is_gone, is_this_process

__all__ = ["WAITS_FOR_KEY", "wait_for_twin"]

WAITS_FOR_KEY = "waits_for"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def wait_for_twin(
    trial: optuna.Trial, digest: str, *, echo: Callable[[str], None] = print, poll: float = 1.0,
    max_wait: float = 3600.0,
) -> FrozenTrial | None:
    """The finished trial of the study with the recipe ``digest`` whose result ``trial`` reuses,
    or None: ``trial`` trains the recipe itself (no twin, none alive, or none finished in ``max_wait`` s).

    Waits (polling the study every ``poll`` seconds) while another live trial trains that recipe.
    """
    study = trial.study
    waiting: int | None = None  # the trial this one waits for, as stored
    waited_for: set[int] = set()
    # A retried trial starts with the attributes of the trial it repeats: claim afresh.
    trial.set_user_attr(WAITS_FOR_KEY, None)
    trial.set_user_attr("recipe_hash", digest)  # the claim: stored before looking at the others
    deadline = time.monotonic() + max_wait
    while True:
        _fail_stale_trials(study)  # a twin of another host whose heartbeat stopped is failed, not waited for
        trials = study.get_trials(deepcopy=False)  # one snapshot: a twin that finishes meanwhile is seen finished
        twins = [other for other in trials if other.number != trial.number and other.user_attrs.get("recipe_hash") == digest]
        finished = [other for other in twins if other.state in FINISHED]
        if finished:
            _claim(trial, waiting)
            return finished[0]
        running = [other for other in twins if other.state == TrialState.RUNNING and _alive(other)]
        claimants = [other for other in running if other.user_attrs.get(WAITS_FOR_KEY) is None]
        if waiting is None and not claimants:  # claimed, and no other live trial claims it: train it here
            if waited_for:
                echo(_why_training_here(trial.number, waited_for, running))
            return None
        if time.monotonic() > deadline:
            _claim(trial, waiting)
            echo(f"trial {trial.number}: trial {_numbers(running)}, which runs the same recipe, has not finished in "
                 f"{max_wait:.0f} s: training it here too")
            return None
        if claimants:
            target = min(claimants, key=lambda other: other.number)
            if waiting != target.number:
                if target.number not in waited_for:
                    echo(f"trial {trial.number} waits for trial {target.number}, which runs the same recipe "
                         f"({describe_process(target.user_attrs.get(PROCESS_KEY) or {})}), to reuse its result")
                    waited_for.add(target.number)
                trial.set_user_attr(WAITS_FOR_KEY, target.number)
                waiting = target.number
        elif all(trial.number < other.number for other in running):  # every live twin waits: the first claims
            trial.set_user_attr(WAITS_FOR_KEY, None)
            waiting = None
            continue  # look again now that the claim is stored
        time.sleep(poll)


def _why_training_here(number: int, waited_for: set[int], running: list[FrozenTrial]) -> str:
    still = {other.number for other in running} & waited_for
    if still:  # they waited for each other; the first one trains
        return f"trial {number} trains the recipe: trial {_numbers(still)}, which runs it too, waits for its result"
    return (f"trial {number} trains the recipe itself: trial {_numbers(waited_for)} ended without a result "
            "(it failed, or its process is gone)")


def _numbers(trials: list[FrozenTrial] | set[int]) -> str:
    return ", ".join(str(number) for number in sorted(other if isinstance(other, int) else other.number
                                                      for other in trials))


def _alive(other: FrozenTrial) -> bool:
    """Not known to be dead: its process on this host runs (a trial of this very process other than
    the one asking is a leftover: a process runs one trial at a time); another host's, until its heartbeat stops."""
    identity = other.user_attrs.get(PROCESS_KEY) or {}
    return not is_gone(identity) and not is_this_process(identity)


def _claim(trial: optuna.Trial, waiting: int | None) -> None:
    if waiting is not None:
        trial.set_user_attr(WAITS_FOR_KEY, None)


def _fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():  # "experimental" in Optuna since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
