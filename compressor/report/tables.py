"""The numbers of a report, as pandas DataFrames: no drawing here.

Everything is computed from one :class:`StudySnapshot` (the study's trials read once), so a
report on a study that is still running is consistent with itself: the trials that had not
finished when it was read are counted but take part in nothing else.

Conventions:
    - The Pareto front is taken over the study's objectives (metric up, costs down), among
      the **feasible complete** trials with a metric above the study's floor only
      (:func:`compressor.study.front`): infeasible candidates were never trained, a trial
      stopped early has only the metric of a rung, and one that learned nothing (no better
      than the best constant prediction) is no candidate however small.
    - Ratios are against the study's reference (U-Net, or the user's own network the search
      started from): ``params_ratio = reference params / params`` (how many times smaller),
      ``flops_ratio`` likewise.
    - The hypervolume reads every cost on a log axis from its reference value (1.1 times the
      reference's cost, or 1.1 times the largest cost seen when the reference has none) down to
      100,000 times below it, the metric's reference at 0 (:func:`compressor.study.study_hypervolume`),
      so a single point of metric ``m`` at a tenth of the reference in its one cost has
      hypervolume ``m * 0.2``.

Example:
    >>> import optuna
    >>> from compressor.study import StudyInfo, TrialRecord
    >>> study = optuna.create_study(directions=["maximize", "minimize"])
    >>> info = StudyInfo({}, "unet_family", "unet", ["metric", "params"], references={"unet": {"params": 1000}})
    >>> for key, value in info.to_attrs().items():
    ...     study.set_user_attr(key, value)
    >>> record = TrialRecord(0, "complete", params=100, flops=10, metric=0.5, feasible=True)
    >>> study.add_trial(optuna.trial.create_trial(values=[0.5, 100], user_attrs=record.to_attrs()))
    >>> pareto_frame(study)[["number", "params", "metric", "params_ratio"]].values.tolist()
    [[0, 100, 0.5, 10.0]]
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import pandas as pd

from compressor.confirm.results import Confirmation, read_confirmation
from compressor.study import (
    REFERENCE_LABELS,
    TIMING_PHASES,
    StudySnapshot,
    folded_duplicates,
    front,
    front_ranks,
    nondominated_ranks,
    read_study,
    reference_label,
)

__all__ = [
    "ratio_label_of",
    "confirmation_of",
    "trials_frame",
    "pareto_frame",
    "references_frame",
    "front_steps",
    "confirmed_frame",
    "CONFIRMED_COLUMNS",
]

_SCALAR_METRICS = ("miou", "mean_f1", "accuracy")

TRIAL_COLUMNS = [
    "number", "status", "feasible", "on_front", "front_rank", "recipe_short", "params", "flops", "latency_ms",
    "activation_bytes", "metric", "fidelity", "train_seconds", "wall_seconds", "params_ratio", "flops_ratio",
    "latency_ratio", "duplicate_of", "failure", "recipe_hash", "weights", "datetime_start", "datetime_complete",
]
PARETO_COLUMNS = [
    "rank", "number", "recipe_short", "params", "flops", "latency_ms", "metric", "params_ratio", "flops_ratio",
    "latency_ratio", "fidelity", "train_seconds", "duplicates", "weights", "recipe_hash",
]
REFERENCE_COLUMNS = ["model", "label", "params", "flops", "latency_ms", "metric", "trained", "at_floor", "params_ratio",
                     "flops_ratio", "latency_ratio"]
# What pareto.csv and the references carry from a confirmation (NaN where a model was not confirmed).
CONFIRMED_COLUMNS = [
    "confirmed_n", "confirmed_mean", "confirmed_low", "confirmed_high", "vs_reference_mean", "vs_reference_low",
    "vs_reference_high", "within_1_point_of_reference", "on_confirmed_front",
]


def confirmation_of(snapshot: StudySnapshot) -> Confirmation | None:
    """The confirmation stored on the study (``compressor confirm``), or None; read once per snapshot."""
    if "confirmation" not in snapshot.derived:
        snapshot.derived["confirmation"] = read_confirmation(snapshot.user_attrs, snapshot.info, snapshot.records)
    return snapshot.derived["confirmation"]


def ratio_label_of(references: pd.DataFrame) -> str:
    """The name of the reference the ratios are against: the first row of :func:`references_frame`."""
    return str(references["label"].iloc[0]) if len(references) else "U-Net"


def _ratio(reference: float | None, value: float | None) -> float:
    if reference is None or value is None or value <= 0:
        return math.nan
    return float(reference) / float(value)


def iso_time(moment: Any) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def trials_frame(study: optuna.Study | StudySnapshot, *, include_running: bool = False) -> pd.DataFrame:
    """One row per trial, by number.

    Columns: ``number``, ``status``, ``feasible``, ``on_front`` (on the Pareto front of the
    feasible complete trials with a metric above the floor), ``front_rank`` (non-dominated rank among them, 0 = the front;
    empty for the others), ``recipe_short``, ``params``, ``flops``, ``latency_ms``,
    ``activation_bytes``, ``metric`` (empty for a trial never trained), ``fidelity``, ``train_seconds``,
    ``wall_seconds``,
    ``params_ratio`` / ``flops_ratio`` / ``latency_ratio`` (the ratio reference's value / this one's: U-Net's, or the base network's),
    ``duplicate_of``, ``failure``, ``recipe_hash``, ``weights``, ``datetime_start``,
    ``datetime_complete``, then the other metrics (``miou``, ``mean_f1``, ``accuracy``,
    ``iou:<class>``), the sampled parameters (``param:<name>``) and the seconds of each phase of
    the trial (``seconds:build`` ... ``seconds:store``, :data:`compressor.study.TIMING_PHASES`).

    Args:
        study: the study, or a snapshot of it.
        include_running: also list the trials not finished yet (their values are partial).
    """
    snapshot = read_study(study)
    reference = snapshot.ratio_reference
    ranks = front_ranks(snapshot.records, snapshot.objectives, snapshot.info.threshold)
    rows = []
    for record, trial in zip(snapshot.records, snapshot.trials):
        if record.status == "running" and not include_running:
            continue
        rank = ranks.get(record.number)
        row: dict[str, Any] = {
            "number": record.number,
            "status": record.status,
            "feasible": record.feasible,
            "on_front": rank == 0,
            "front_rank": rank,
            "recipe_short": record.recipe_short,
            "params": record.params,
            "flops": record.flops,
            "latency_ms": record.latency_ms,
            "activation_bytes": record.activation_bytes,
            # An untrained trial's stored metric is a placeholder (the worst value), not a measurement.
            "metric": record.metric if record.trained else None,
            "fidelity": record.fidelity,
            "train_seconds": record.train_seconds,
            "wall_seconds": record.wall_seconds,
            "params_ratio": _ratio(reference.get("params"), record.params),
            "flops_ratio": _ratio(reference.get("flops"), record.flops),
            "latency_ratio": _ratio(reference.get("latency_ms"), record.latency_ms),
            "duplicate_of": record.duplicate_of,
            "failure": record.failure,
            "recipe_hash": record.recipe_hash,
            "weights": record.weights,
            "datetime_start": iso_time(trial.datetime_start),
            "datetime_complete": iso_time(trial.datetime_complete),
        }
        metrics = (record.metrics or {}) if record.trained else {}
        for key in _SCALAR_METRICS:
            if key in metrics:
                row[key] = metrics[key]
        for name, value in (metrics.get("iou") or {}).items():
            row[f"iou:{name}"] = value
        for name, value in record.params_dict.items():
            row[f"param:{name}"] = value
        for phase in TIMING_PHASES:  # where the trial's time went
            if (record.timing or {}).get(phase) is not None:
                row[f"seconds:{phase}"] = record.timing[phase]
        rows.append(row)
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=TRIAL_COLUMNS)
    extra = [column for column in frame.columns if column not in TRIAL_COLUMNS]
    frame = frame[TRIAL_COLUMNS + extra]
    for column in ("params", "flops", "activation_bytes", "duplicate_of", "front_rank"):
        frame[column] = frame[column].astype("Int64")
    frame["on_front"] = frame["on_front"].astype(bool)
    frame["feasible"] = frame["feasible"].astype("boolean")
    return frame.reset_index(drop=True)


def pareto_frame(study: optuna.Study | StudySnapshot, *, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """The trials on the study's Pareto front (:func:`compressor.study.front`), one row each.

    Ties (equal objective values, different recipes) are all kept. A trial that reused the
    result of another (``duplicate_of``, the same recipe) is folded into it: the row of the
    first one lists the others in ``duplicates``. Empty (with the columns) when no feasible
    trial has completed with a metric above the floor.

    Columns: ``rank`` (1 for the smallest: rows are sorted by params, then metric down),
    ``number``, ``recipe_short``, ``params``, ``flops``, ``latency_ms``, ``metric``, the ratios
    against the study's reference, ``fidelity``, ``train_seconds``, ``duplicates``, ``weights``, ``recipe_hash``.

    Args:
        study: the study, or a snapshot of it.
        trials: :func:`trials_frame` of the same snapshot, if already computed.
    """
    snapshot = read_study(study)
    frame = trials_frame(snapshot) if trials is None else trials
    numbers = [record.number for record in front(snapshot.records, snapshot.objectives, snapshot.info.threshold)]
    folded = folded_duplicates(snapshot.records)
    rows = frame.set_index("number", drop=False).loc[numbers].reset_index(drop=True)
    rows["duplicates"] = [", ".join(map(str, folded.get(number, []))) for number in numbers]
    rows.insert(0, "rank", range(1, len(rows) + 1))
    rows = rows[PARETO_COLUMNS].reset_index(drop=True)
    return _with_confirmed(rows, confirmed_frame(snapshot), key="number", by="number")


def _with_confirmed(frame: pd.DataFrame, confirmed: pd.DataFrame, *, key: str, by: str) -> pd.DataFrame:
    """``frame`` with the :data:`CONFIRMED_COLUMNS` of the models ``confirmed`` has (matched on
    ``key``/``by``); unchanged when nothing was confirmed."""
    if not len(confirmed):
        return frame
    columns = confirmed.set_index(by)[CONFIRMED_COLUMNS]
    for column in CONFIRMED_COLUMNS:
        frame[column] = [math.nan if pd.isna(value) else columns[column].get(value, math.nan) for value in frame[key]]
    frame["confirmed_n"] = pd.array([None if pd.isna(v) else int(v) for v in frame["confirmed_n"]], dtype="Int64")
    return frame


def confirmed_frame(study: optuna.Study | StudySnapshot) -> pd.DataFrame:
    """One row per confirmed model (references first): its repeats' mean, 95% interval, the paired
    difference to the study's reference (U-Net, or the user's own network the search started
    from), and whether it is on the front recomputed on confirmed means.

    Columns: ``subject`` (``unet``, ``base``, ``base-finetuned``, ``trial-7``), ``label``, ``number``
    (the trial; empty for a reference), ``params``, ``flops``, the ratios against the reference (as
    in :func:`pareto_frame`), ``search_metric`` (the run the search picked on, not counted),
    ``confirmed_n`` / ``_mean`` / ``_std`` / ``_low`` / ``_high``, ``vs_reference_*``, ``vs_micronet_*``
    and ``vs_control_*`` (paired, this minus that model), ``within_1_point_of_reference`` (``yes``,
    ``no``, ``not settled``), ``learned`` (the mean beats the floor), ``floor``, ``failures``,
    ``planned``, ``on_confirmed_front``. Empty without a confirmation.
    """
    snapshot = read_study(study)
    confirmation = confirmation_of(snapshot)
    if confirmation is None:
        return pd.DataFrame(columns=["subject", "label", "number", *CONFIRMED_COLUMNS])
    front = {summary.subject for summary in confirmation.front()}
    rows = [{**summary.row(confirmation.reference_costs), "on_confirmed_front": summary.subject in front}
            for summary in confirmation.summaries.values()]
    frame = pd.DataFrame(rows)
    frame["number"] = frame["number"].astype("Int64")
    return frame


def front_steps(trials: pd.DataFrame, cost: str) -> pd.DataFrame:
    """The two-objective front (metric up, ``cost`` down) of the trials that are Pareto candidates
    (those :func:`trials_frame` gives a ``front_rank``: finished, feasible, above the floor).

    This is what a plot of the metric against one cost draws as its step line: the best
    metric reached at or below each size. Points with equal cost and metric appear once
    (the lowest trial number). Columns ``number``, ``cost``, ``metric``, sorted by cost.

    Example:
        >>> frame = pd.DataFrame({"number": [0, 1, 2, 3], "front_rank": [0, 1, 0, None],
        ...                       "params": [10, 20, 30, 5], "metric": [0.2, 0.1, 0.3, 0.9]})
        >>> front_steps(frame, "params")["number"].tolist()
        [0, 2]
    """
    usable = trials[trials["front_rank"].notna() & trials[cost].notna()]
    if usable.empty:
        return pd.DataFrame(columns=["number", "cost", "metric"])
    points = usable[["metric", cost]].astype(float).to_numpy()
    mask = nondominated_ranks(points, ["maximize", "minimize"]) == 0
    front = pd.DataFrame({
        "number": usable["number"].astype(int).to_numpy()[mask],
        "cost": points[mask, 1],
        "metric": points[mask, 0],
    })
    front = front.sort_values(["cost", "metric", "number"], ascending=[True, False, True])
    return front.drop_duplicates(["cost", "metric"]).reset_index(drop=True)


def references_frame(study: optuna.Study | StudySnapshot) -> pd.DataFrame:
    """The reference models (the one ratios are against first: U-Net, or the base network), with ratios.

    ``trained`` is False when the search stored no metric for that baseline yet; its size is
    still known and is drawn on the plots, marked "not trained". ``at_floor`` is True for a
    trained reference whose metric is not above the study's floor (it learned nothing); once the
    reference is confirmed, its mean over the further seeds is what is judged.
    """
    snapshot = read_study(study)
    reference = snapshot.ratio_reference
    first = snapshot.info.ratio_to
    order = sorted(snapshot.info.references,
                   key=lambda name: (name != first, name not in REFERENCE_LABELS, name != "unet", name))
    rows = []
    for name in order:
        values = snapshot.info.references[name] or {}
        rows.append({
            "model": name,
            "label": reference_label(name, snapshot.info.references),
            "params": values.get("params"),
            "flops": values.get("flops"),
            "latency_ms": values.get("latency_ms"),
            "metric": values.get("metric"),
            "trained": values.get("metric") is not None,
            "params_ratio": _ratio(reference.get("params"), values.get("params")),
            "flops_ratio": _ratio(reference.get("flops"), values.get("flops")),
            "latency_ratio": _ratio(reference.get("latency_ms"), values.get("latency_ms")),
        })
    frame = pd.DataFrame(rows, columns=REFERENCE_COLUMNS)
    frame["params"] = frame["params"].astype("Int64")
    frame["flops"] = frame["flops"].astype("Int64")
    frame["metric"] = frame["metric"].astype(float)
    frame = _with_confirmed(frame, confirmed_frame(snapshot), key="model", by="subject")
    threshold = snapshot.info.threshold
    judged = frame["metric"]  # a confirmed reference is judged on its mean over the further seeds
    if "confirmed_mean" in frame:
        judged = frame["confirmed_mean"].astype(float).fillna(judged)
    frame["at_floor"] = judged.le(threshold) & (threshold > 0)  # not trained (NaN): not at the floor
    return frame


