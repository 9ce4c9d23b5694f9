"""What a report's header says of a study (trials by status, compute, floor, claims), the machine
it ran on, and the int8 columns ``compressor report --int8`` adds to the front."""

from __future__ import annotations

import os
import platform
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from compressor.floor import Floor
from compressor.report.tables import confirmation_of, iso_time
from compressor.study import STATUSES, StudySnapshot, read_study

__all__ = ["study_overview", "phase_seconds", "asks_latency", "machine_info", "with_deployed", "DEPLOYED_REPORT_COLUMNS"]


def study_overview(study: optuna.Study | StudySnapshot) -> dict[str, Any]:
    """What the page's header says: trials by status, compute spent, the study's time span.

    Keys: ``study``, ``space``, ``model``, ``objectives``, ``metric_label``, ``budget``,
    ``trials`` (total), ``by_status`` (every status, 0 included), ``wall_seconds`` (sum over
    finished trials), ``train_seconds`` (likewise), ``phase_seconds`` (:func:`phase_seconds`), ``first_start`` and ``last_complete`` (ISO
    text or None), ``span_seconds`` (from the first start to the last completion), ``input_shape``,
    ``confirmed`` (a confirmation is stored), ``seed`` and ``steps`` (the search's training),
    ``recipe_legend`` (how to read the recipe column; may be empty), ``scored_in`` (the precisions the
    trained trials' evaluations ran in, sorted: ``bf16``, ``fp32``, the second for trials stored before they
    recorded it).
    """
    snapshot = read_study(study)
    counts = Counter(record.status for record in snapshot.records)
    starts = [trial.datetime_start for trial in snapshot.trials if trial.datetime_start is not None]
    ends = [trial.datetime_complete for trial in snapshot.trials if trial.datetime_complete is not None]
    first, last = (min(starts) if starts else None), (max(ends) if ends else None)
    span = (last - first).total_seconds() if first is not None and last is not None else None
    train = (snapshot.info.experiment or {}).get("train") or {}
    return {
        "study": snapshot.study_name,
        "space": snapshot.info.space,
        "model": snapshot.info.model,
        "objectives": snapshot.objectives,
        "metric_label": snapshot.info.metric_label,
        "budget": {key: value for key, value in (snapshot.info.budget or {}).items() if value is not None},
        "trials": len(snapshot.records),
        "by_status": {status: counts.get(status, 0) for status in STATUSES},
        "wall_seconds": sum(record.wall_seconds or 0.0 for record in snapshot.finished),
        "train_seconds": sum(record.train_seconds or 0.0 for record in snapshot.finished),
        "phase_seconds": phase_seconds(snapshot),
        "first_start": iso_time(first),
        "last_complete": iso_time(last),
        "span_seconds": span,
        "input_shape": list(snapshot.info.input_shape),
        "floor": Floor.from_dict(snapshot.info.floor).describe(snapshot.info.metric_label or snapshot.info.metric),
        "threshold": snapshot.info.threshold,
        "claims": confirmation.claims() if (confirmation := confirmation_of(snapshot)) is not None else [],
        "confirmed": confirmation is not None,
        "confirm_top": (((snapshot.info.experiment or {}).get("search") or {}).get("confirm") or {}).get("top") or 3,
        "seed": train.get("seed", 0),
        "steps": train.get("steps"),
        "reference_label": snapshot.ratio_label,
        "latency": asks_latency(snapshot),
        # a study is data: a legend that is not text is none
        "recipe_legend": legend if isinstance(legend := snapshot.info.recipe_legend, str) else "",
        # a trial stored before trials recorded it was scored in fp32; a value no compressor writes is left out
        "scored_in": sorted({record.scored_in or "fp32" for record in snapshot.records
                             if record.trained and record.scored_in in ("bf16", "fp32", None)}),
    }


def phase_seconds(snapshot: StudySnapshot) -> dict[str, float]:
    """Seconds per phase of the finished trials that recorded their timing, summed
    (:data:`~compressor.study.TIMING_PHASES`, and ``total``); empty when none did."""
    sums: dict[str, float] = {}
    for record in snapshot.finished:
        for phase, seconds in (record.timing or {}).items():
            sums[phase] = sums.get(phase, 0.0) + float(seconds)
    return sums


def asks_latency(snapshot: StudySnapshot) -> bool:
    """Whether the study asked for latency: an objective, a budget, or a ``cost.latency`` section."""
    return ("latency_ms" in snapshot.objectives or (snapshot.info.budget or {}).get("max_latency_ms") is not None
            or snapshot.info.latency is not None)


def machine_info(study: optuna.Study | StudySnapshot) -> dict[str, Any]:
    """The machine to name on the page: the one the search stored on the study (user attribute
    ``machine``, a mapping or a line of text), else this one.

    Keys: ``platform``, ``cpu_count``, ``source`` (``"search"`` or ``"report built here"``), and
    whatever else the search stored.
    """
    snapshot = read_study(study)
    stored = snapshot.user_attrs.get("machine")
    if isinstance(stored, dict) and stored:
        return {"source": "search", **stored}
    if isinstance(stored, str) and stored:
        return {"source": "search", "platform": stored}
    return {"source": "report built here", "platform": platform.platform(terse=True), "cpu_count": os.cpu_count()}


#: what ``compressor report --int8`` adds to the front's rows (from ``deployed.csv``)
DEPLOYED_REPORT_COLUMNS = ["fp32_metric", "int8_metric", "int8_bytes", "latency_fp32_ms", "latency_int8_ms"]


def with_deployed(pareto: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """``pareto`` with the int8 columns of ``folder/deployed.csv`` for the trials it still describes
    (same trial, same kept weights); the columns are absent when nothing was deployed."""
    path = Path(folder) / "deployed.csv"
    if not path.is_file() or pareto.empty:
        return pareto
    deployed = pd.read_csv(path)
    if deployed.empty or not {"number", "weights", *DEPLOYED_REPORT_COLUMNS} <= set(deployed.columns):
        return pareto
    rows = {(int(row["number"]), str(row["weights"])): row for _, row in deployed.iterrows()}
    keys = [(int(number), str(weights)) for number, weights in zip(pareto["number"], pareto["weights"])]
    if not any(key in rows for key in keys):
        return pareto
    pareto = pareto.copy()
    for column in DEPLOYED_REPORT_COLUMNS:
        pareto[column] = [float(rows[key][column]) if key in rows else float("nan") for key in keys]
    return pareto
