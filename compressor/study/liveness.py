"""Same-host liveness: a trial whose process on this machine is gone is failed (and retried) at once.

Heartbeats find a dead worker only after the grace period (120 s by default), which is longer
than it takes a user to run the killed command again; the new run then finishes while the dead
trial still shows as running. So a running trial also records where it runs: the host, the
process id and that process's start time (which tells a dead process from a new one that got its
id). A search, a worker or a confirmation on the same host fails every running trial whose
process is gone before it starts, and retries it like a heartbeat failure would; at its end it does
so again (a worker on this host may have died meanwhile), so a dead process on this host is never
reported as running elsewhere. Trials of other hosts still go by heartbeats.
"""

from __future__ import annotations

import os
import platform
import warnings
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "PROCESS_KEY", "process_identity", "is_gone", "is_this_process", "describe_process", "fail_dead_trials",
    "others_running", "retries",
]

PROCESS_KEY = "process"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def process_identity() -> dict[str, Any]:
    """This process, as a running trial records it."""
    return {"host": platform.node(), "pid": os.getpid(), "started": _start_time(os.getpid())}


def is_this_process(identity: dict[str, Any]) -> bool:
    """True if ``identity`` is this very process."""
    return bool(identity) and identity.get("host") == platform.node() and identity.get("pid") == os.getpid()


def describe_process(identity: dict[str, Any]) -> str:
    """``pid 812 on this host``, ``pid 812 on host-a`` or ``an unknown process``."""
    if not identity:
        return "an unknown process"
    host = "this host" if identity.get("host") == platform.node() else identity.get("host")
    return f"pid {identity.get('pid')} on {host}"


def is_gone(identity: dict[str, Any]) -> bool:
    """True if ``identity`` names a process on this host that no longer runs (False when unsure)."""
    if not identity or identity.get("host") != platform.node() or identity.get("pid") == os.getpid():
        return False
    pid = int(identity["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    started = identity.get("started")
    return started is not None and _start_time(pid) not in (None, started)  # the id went to a new process


def fail_dead_trials(study: optuna.Study, *, max_retry: int) -> list[int]:
    """Fails every running trial of ``study`` whose process on this host is gone, and enqueues it again
    (with the same choices) unless it was retried ``max_retry`` times already. Returns their numbers."""
    failed = []
    with warnings.catch_warnings():  # "experimental" in Optuna since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry) if max_retry else None
    for trial in study.get_trials(deepcopy=True, states=(TrialState.RUNNING,)):
        if not is_gone(trial.user_attrs.get(PROCESS_KEY) or {}):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):  # finished meanwhile (by a heartbeat, another process)
            continue
        failed.append(trial.number)
        if retry is not None:
            retry(study, trial)
    return failed


def others_running(study: optuna.Study) -> list[str]:
    """``trial 4 (pid 812 on host-a)`` for each running trial that is not this process's and whose process
    is not known to be gone (a dead process on this host runs nothing: :func:`fail_dead_trials` fails its trial)."""
    found = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        identity = trial.user_attrs.get(PROCESS_KEY) or {}
        if is_this_process(identity) or is_gone(identity):
            continue
        found.append(f"trial {trial.number} ({describe_process(identity)})")
    return found


def retries(study: optuna.Study) -> dict[int, FrozenTrial]:
    """Failed trial number -> its retry (waiting in the queue, running or finished), for each retried trial."""
    found = {}
    for trial in study.get_trials(deepcopy=False):
        history = trial.system_attrs.get("retry_history") or []
        if history:
            found[history[-1]] = trial
    return found
