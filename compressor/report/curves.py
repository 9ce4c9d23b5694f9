"""Learning curves in the report: the validation metric against optimizer steps, for the references and the front.

Every trained network keeps its curve: a trial in its ``curve`` attribute (each validation
evaluation of its fine-tuning), a reference baseline in the study's ``references`` (read from
its stored training history). A curve that still rises at its last point says the network
was stopped before its plateau; a flat tail says it converged.
"""

from __future__ import annotations

import matplotlib
import matplotlib.lines
import pandas as pd
from matplotlib.figure import Figure

from compressor.study import StudySnapshot, reference_label

__all__ = ["curves_frame", "curves_figure", "CURVE_COLUMNS"]

CURVE_COLUMNS = ["name", "kind", "step", "metric"]


def curves_frame(snapshot: StudySnapshot, on_front: set[int]) -> pd.DataFrame:
    """One row per evaluation: ``name`` (a reference's label, ``trial N``), ``kind``
    (``reference``, ``front``, ``trial``), ``step``, ``metric``; only curves of two points or more."""
    rows = []
    for name, values in snapshot.info.references.items():
        curve = (values or {}).get("curve") or []
        if len(curve) > 1:
            label = reference_label(name, snapshot.info.references)
            rows += [{"name": label, "kind": "reference", "step": step, "metric": metric} for step, metric in curve]
    for record in snapshot.records:
        if record.trained and len(record.curve) > 1:
            kind = "front" if record.number in on_front else "trial"
            rows += [{"name": f"trial {record.number}", "kind": kind, "step": step, "metric": metric}
                     for step, metric in record.curve]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def curves_figure(curves: pd.DataFrame, *, metric_label: str, title: str = "") -> Figure:
    """The references' curves in black, the front's in blue, the other trials faint."""
    from compressor.report.plots import _style
    from compressor.report.styles import CATEGORIES

    style = {"reference": ("#2b2b2b", 2.0, 1.0), "front": (CATEGORIES["front"]["color"], 1.5, 0.95),
             "trial": (CATEGORIES["complete"]["color"], 0.9, 0.55)}
    with matplotlib.rc_context(_style()):
        figure = Figure(figsize=(10, 4.4), layout="constrained")
        axes = figure.add_subplot()
        for kind in ("trial", "front", "reference"):  # the ones that matter drawn last, on top
            color, width, alpha = style[kind]
            for name, curve in curves[curves["kind"] == kind].groupby("name", sort=False):
                axes.plot(curve["step"], curve["metric"], color=color, linewidth=width, alpha=alpha,
                          marker="o" if kind != "trial" else None, markersize=3)
                if kind != "trial":
                    last = curve.iloc[-1]
                    axes.annotate(name, (last["step"], last["metric"]), xytext=(4, 0), textcoords="offset points",
                                  fontsize=8, color=color, va="center")
        handles = [matplotlib.lines.Line2D([], [], color=style[kind][0], linewidth=style[kind][1], label=label)
                   for kind, label in (("reference", "reference (trained from scratch)"),
                                       ("front", "on the Pareto front (fine-tuning)"), ("trial", "other trials"))
                   if (curves["kind"] == kind).any()]
        axes.legend(handles=handles, loc="lower right", fontsize=8.5)
        axes.set_xlabel("optimizer steps")
        axes.set_ylabel(f"validation {metric_label}")
        axes.set_ylim(bottom=0)
        axes.set_title(title or "Learning curves", loc="left")
    return figure
