"""What a search prints: a line per trial."""

from __future__ import annotations

from compressor.study import TIMING_PHASES, TrialRecord
from compressor.units import format_count

__all__ = ["trial_line"]


def trial_line(record: TrialRecord, *, metric_label: str, target: int | None = None) -> str:
    """``trial 4/20  complete   738k params  4.68G FLOPs  building IoU 0.262  19 s (build 1.1, cost 0.3,
    train 14.2, evaluate 2.9)  cut 2, add, ...``: the phases of :attr:`TrialRecord.timing` that took a
    twentieth of a second or more."""
    number = f"trial {record.number}" + (f"/{target}" if target else "")
    cost = f"{format_count(record.params):>7} params  {format_count(record.flops):>7} FLOPs"
    if record.latency_ms is not None:  # timed: the study asked for latency
        cost += f"  {record.latency_ms:>6.1f} ms"
    if record.status == "complete":
        outcome = f"{metric_label} {record.metric:.3f}"
        if record.duplicate_of is not None:
            outcome += f" (same recipe as trial {record.duplicate_of})"
    elif record.status == "stopped":
        outcome = f"{metric_label} {record.metric:.3f} at {record.fidelity:.0%} of training"
    elif record.status == "infeasible":
        outcome = "over budget, not trained"
    elif record.status == "failed":
        outcome = f"failed: {record.failure}"
        cost = "" if record.params is None else cost
    else:
        outcome = record.status
    if record.starts_close is False and record.start_error is not None and record.status in ("complete", "stopped"):
        outcome += f" (started far from the parent: output error {record.start_error:.2f})"
    seconds = f"{record.wall_seconds:.0f} s" if record.wall_seconds is not None else ""
    phases = [f"{phase} {record.timing[phase]:.1f}" for phase in TIMING_PHASES
              if (record.timing or {}).get(phase, 0.0) >= 0.05]
    if seconds and phases:
        seconds += f" ({', '.join(phases)})"
    return "  ".join(part for part in (f"{number:<10}", f"{record.status:<10}", cost, outcome, seconds,
                                       record.recipe_short) if part)
