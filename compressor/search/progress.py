"""What a search prints: a line per trial and the Pareto table at the end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from compressor.pareto import pareto_mask
from compressor.tables import format_table
from compressor.trials import TrialRecord
from compressor.units import format_count

__all__ = ["trial_line", "front", "front_table"]


def trial_line(record: TrialRecord, *, metric_label: str, target: int | None = None) -> str:
    """``trial 4/20  complete   738k params  4.68G FLOPs  building IoU 0.262  95 s  cut 2, add, ...``."""
    number = f"trial {record.number}" + (f"/{target}" if target else "")
    cost = f"{format_count(record.params):>7} params  {format_count(record.flops):>7} FLOPs"
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
    seconds = f"{record.wall_seconds:.0f} s" if record.wall_seconds is not None else ""
    return "  ".join(part for part in (f"{number:<10}", f"{record.status:<10}", cost, outcome, seconds,
                                       record.recipe_short) if part)


def front(records: Sequence[TrialRecord], objectives: Sequence[str]) -> list[TrialRecord]:
    """The complete, feasible, non-duplicate trials no other such trial dominates, by params."""
    candidates = [
        record for record in records
        if record.status == "complete" and record.feasible and record.duplicate_of is None and record.values
    ]
    if not candidates:
        return []
    directions = ["maximize" if name == "metric" else "minimize" for name in objectives]
    mask = pareto_mask([record.values for record in candidates], directions)
    return sorted((record for record, keep in zip(candidates, mask) if keep), key=lambda record: record.params or 0)


def front_table(
    records: Sequence[TrialRecord], objectives: Sequence[str], *, metric_label: str,
    references: Mapping[str, Mapping[str, float | None]],
) -> str:
    """The Pareto front with U-Net and Micro-Net for scale; ratios are U-Net's cost over the trial's."""
    unet = references.get("unet", {})
    rows = []
    for name, reference in references.items():
        metric = reference.get("metric")
        rows.append([name, "", format_count(reference.get("params")), format_count(reference.get("flops")),
                     "-" if metric is None else f"{metric:.3f}", _ratio(unet.get("params"), reference.get("params")),
                     _ratio(unet.get("flops"), reference.get("flops")), "(reference)"])
    for rank, record in enumerate(front(records, objectives), start=1):
        rows.append([f"#{rank}", record.number, format_count(record.params), format_count(record.flops),
                     f"{record.metric:.3f}", _ratio(unet.get("params"), record.params),
                     _ratio(unet.get("flops"), record.flops), record.recipe_short])
    headers = ["", "trial", "params", "FLOPs", metric_label, "params vs U-Net", "FLOPs vs U-Net", "recipe"]
    return format_table(headers, rows, title="Pareto front (FLOPs: fvcore, 1 multiply-add = 1 flop)")


def _ratio(reference: float | None, value: float | None) -> str:
    if not reference or not value:
        return "-"
    return f"{reference / value:.1f}x"
