"""``index.html``: one self-contained page (images as data URIs, inline CSS, no script, no link
to anything outside), readable straight from disk."""

from __future__ import annotations

import base64
import datetime
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from compressor import __version__
from compressor.budget import COST_LIMITS, Budget
from compressor.cost import FLOP_CONVENTION
from compressor.intervals import format_interval
from compressor.report.styles import point_category, status_color
from compressor.report.tables import ratio_label_of
from compressor.report.text import (
    as_sentence,
    empty_front_reason,
    format_confirmed,
    format_metric,
    format_ratio,
    format_seconds,
    missing,
    pareto_rows,
    shows_latency,
)
from compressor.study import directions
from compressor.units import format_bytes, format_count

__all__ = ["render_html", "FIGURE_CAPTIONS"]

FIGURE_CAPTIONS = {
    "pareto_params.png": "Every trial against its parameter count. Trials never trained (over budget, failed) sit "
                         "on the strip below, at their size.",
    "pareto_flops.png": "The same trials against their FLOPs. FLOPs fall less than parameters when a candidate "
                        "keeps its features at high resolution.",
    "pareto_latency.png": "The same trials against their latency on the runtime the study measured (see the axis). "
                          "Latency falls less than FLOPs: small networks leave the CPU's arithmetic idle.",
    "hypervolume.png": "How much of the objective space the feasible front dominates, after each trial and "
                       "against the compute spent.",
    "learning_curves.png": "The validation score at each evaluation of every training: the references from "
                           "scratch, the trials while they were fine-tuned. A curve still rising at its end was "
                           "stopped before its plateau.",
    "importance.png": "Which sampled parameters drive each objective.",
}

_CSS = """
:root { --ink: #1d232b; --muted: #5d6672; --line: #dfe3e8; --soft: #f5f7fa; --accent: #1f5fa8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1320px; margin: 0 auto; padding: 28px 32px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
.lead { color: var(--muted); margin: 0 0 18px; }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 10px 24px;
         background: var(--soft); border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px; }
.facts div { min-width: 0; }
.facts dt { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.facts dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 1px 8px; margin: 1px 4px 1px 0; border-radius: 10px; color: #fff;
         font-size: 12.5px; font-weight: 600; white-space: nowrap; }
.empty { background: #fff6e5; border: 1px solid #f0d29b; border-radius: 6px; padding: 10px 14px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; margin: 6px 0 4px; }
th, td { padding: 5px 9px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top;
         white-space: nowrap; }
td.text.wrap { white-space: normal; min-width: 160px; }
th { background: var(--soft); font-weight: 600; position: sticky; top: 0; white-space: normal; }
td.text, th.text { text-align: left; }
td.recipe { text-align: left; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
            font-size: 12.5px; white-space: normal; overflow-wrap: anywhere; min-width: 220px; }
tr.reference td { background: #faf7fd; font-style: italic; }
tr.front td:first-child { box-shadow: inset 3px 0 0 var(--accent); }
tbody tr:hover td { background: #eef4fb; }
.scroll { overflow-x: auto; }
.figures { display: grid; grid-template-columns: minmax(0, 1100px); justify-content: center; gap: 22px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 10px; background: #fff; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
.note { color: var(--muted); }
ul.notes li { margin-bottom: 6px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _badge(text: str, key: str) -> str:
    return f'<span class="badge" style="background:{status_color(key)}">{_e(text)}</span>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, text_columns: Sequence[int] = (0,),
           recipe_column: int | None = None, row_classes: Sequence[str] | None = None,
           raw_columns: Sequence[int] = (), wrap_columns: Sequence[int] = ()) -> str:
    def cell_class(index: int) -> str:
        if index == recipe_column:
            return ' class="recipe"'
        if index in wrap_columns:
            return ' class="text wrap"'
        return ' class="text"' if index in text_columns else ""

    left = ' class="text"'
    # A non-breaking hyphen keeps "U-Net" whole when a narrow header wraps.
    head = "".join(f"<th{left if index in text_columns or index == recipe_column else ''}>"
                   f"{_e(h).replace('U-Net', 'U&#8209;Net')}</th>"
                   for index, h in enumerate(headers))
    body = []
    for number, row in enumerate(rows):
        css = f' class="{row_classes[number]}"' if row_classes and row_classes[number] else ""
        cells = "".join(
            f"<td{cell_class(index)}>{value if index in raw_columns else _e(value)}</td>"
            for index, value in enumerate(row)
        )
        body.append(f"<tr{css}>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _machine_text(machine: Mapping[str, Any]) -> str:
    parts = [str(machine.get("platform") or "unknown platform")]
    if machine.get("cpu_count"):
        parts.append(f"{machine['cpu_count']} CPU cores")
    if machine.get("device"):
        parts.append(str(machine["device"]))
    return ", ".join(parts)


def _over_budget(row: Mapping[str, Any], budget: Mapping[str, Any]) -> str:
    """Which limits a trial's cost broke: ``params 2.90M > 1.50M``."""
    return Budget.from_dict(budget).check({name: row.get(name) for name in COST_LIMITS}).overruns()


def _trial_rows(
    trials: pd.DataFrame, metric_label: str, budget: Mapping[str, Any], ratio_label: str = "U-Net"
) -> tuple[list[str], list[list[str]], list[str]]:
    headers = ["trial", "status", "recipe", "params", "FLOPs", "latency", "memory (train)", metric_label, "fidelity",
               f"params vs {ratio_label}", f"FLOPs vs {ratio_label}", "training", "wall", "note"]
    rows, classes = [], []
    for _, row in trials.iterrows():
        category = point_category(row)
        status_label = {"front": "Pareto front", "stopped": "stopped early"}.get(category, row["status"])
        note = ""
        if not missing(row["failure"]):
            note = str(row["failure"])
        elif not missing(row["duplicate_of"]):
            note = f"same recipe as trial {int(row['duplicate_of'])}, result reused"
        elif row["status"] == "infeasible":
            note = "over budget (" + (_over_budget(row, budget) or "a limit") + "): never trained"
        elif row["status"] == "stopped":
            note = f"metric at {float(row['fidelity']):.0%} of the training"
        rows.append([
            str(row["number"]), _badge(status_label, category), row["recipe_short"] or "(identity)",
            "-" if missing(row["params"]) else format_count(int(row["params"])),
            "-" if missing(row["flops"]) else format_count(int(row["flops"])),
            "-" if missing(row["latency_ms"]) else f"{float(row['latency_ms']):.1f} ms",
            "-" if missing(row["activation_bytes"]) else format_bytes(int(row["activation_bytes"])),
            format_metric(row["metric"]),
            "-" if missing(row["fidelity"]) else f"{float(row['fidelity']):.0%}",
            format_ratio(row["params_ratio"]), format_ratio(row["flops_ratio"]),
            format_seconds(row["train_seconds"]), format_seconds(row["wall_seconds"]), note,
        ])
        classes.append("front" if category == "front" else "")
    return headers, rows, classes


def _confirmed_section(confirmed: pd.DataFrame | None, overview: Mapping[str, Any]) -> str:
    """The confirmation: every confirmed model's repeats, interval, paired difference, and the claims."""
    if confirmed is None or confirmed.empty:
        return ""
    metric_label = overview["metric_label"]
    reference = overview.get("reference_label") or "U-Net"
    subjects = list(confirmed["subject"])
    first = subjects[0] if subjects else "unet"  # the reference: its row comes first
    controls = [str(row["label"]) for _, row in confirmed.iterrows() if str(row["subject"]).endswith("-finetuned")]
    control = controls[0] if controls else ""
    headers = ["model", "params", "FLOPs", f"params vs {reference}", "search run (not counted)",
               f"confirmed {metric_label} [95% CI] n", f"minus {reference}, points [95% CI]",
               *([f"minus {control} as long, points [95% CI]"] if control else []), f"within 1 point of {reference}",
               "verdict"]
    rows, classes = [], []

    def points(row: Any, prefix: str) -> str:
        if missing(row[f"{prefix}_mean"]):
            return "-"
        low, high = (math.nan if missing(row[f"{prefix}_{end}"]) else float(row[f"{prefix}_{end}"])
                     for end in ("low", "high"))
        return format_interval(float(row[f"{prefix}_mean"]), low, high, scale=100, digits=1, signed=True)

    for _, row in confirmed.iterrows():
        is_reference = missing(row["number"])
        n = int(row["confirmed_n"]) if not missing(row["confirmed_n"]) else 0
        difference = "-" if row["subject"] == first or not n else points(row, "vs_reference")
        extra = [points(row, "vs_control") if n else "-"] if control else []
        verdict = ("reference" if is_reference else "on the confirmed front" if row["on_confirmed_front"] else
                   "learned" if row["learned"] else "not above the floor" if n else "not run yet")
        rows.append([str(row["label"]), format_count(row["params"]) if not missing(row["params"]) else "-",
                     format_count(row["flops"]) if not missing(row["flops"]) else "-",
                     format_ratio(row["params_ratio"]), format_metric(row["search_metric"]),
                     format_confirmed(row), difference, *extra,
                     "-" if is_reference else str(row["within_1_point_of_reference"]), verdict])
        classes.append("reference" if is_reference else "front" if row["on_confirmed_front"] else "")
    parent = control.removesuffix(" fine-tuned") if control else ""
    claims = "".join(f"<li>{_e(claim)}</li>" for claim in overview.get("claims", []))
    return f"""<h2>Confirmation over further seeds</h2>
<p class="note">Each model retrained with the search's recipe on further seeds (and folds); the run the search picked
the front on is shown but not counted, since picking on it flatters the winners. Intervals are 95% Student-t
intervals of the mean; the difference to {_e(reference)} is paired (same seed, same fold). "Within 1 point" is "yes"
only if the whole interval of the difference lies above -1 point. The confirmed front is recomputed on the confirmed
means, among the models whose mean beats the floor. The model each budget's sentence speaks of is picked on the
search's own run, so the further seeds judge it without having chosen it.{_control_note(parent, control)}</p>
{_table(headers, rows, text_columns=(0, len(headers) - 2, len(headers) - 1), row_classes=classes)}
<p class="note">What the data supports, per parameter budget:</p><ul class="notes">{claims}</ul>"""


def _control_note(parent: str, control: str) -> str:
    if not control:
        return ""
    return (f" The candidates inherit the weights of the trained {_e(parent)}, then train for steps of their own; "
            f'"{_e(control)}" is {_e(parent)} given the same extra training, without any transform, so the difference '
            "to it is the cost of the compression alone.")


def _floor_text(overview: Mapping[str, Any]) -> str:
    return f"a metric above {overview['threshold']:.3f}: {overview['floor']}" if overview.get("floor") else \
        "a metric above 0"


def render_html(
    *,
    overview: Mapping[str, Any],
    machine: Mapping[str, Any],
    pareto: pd.DataFrame,
    references: pd.DataFrame,
    trials: pd.DataFrame,
    images: Mapping[str, bytes],
    notes: Sequence[str] = (),
    generated: datetime.datetime | None = None,
    confirmed: pd.DataFrame | None = None,
) -> str:
    """The whole page as text.

    Args:
        overview: :func:`compressor.report.overview.study_overview`.
        machine: :func:`compressor.report.overview.machine_info`.
        pareto, references, trials: the frames of :mod:`compressor.report.tables`.
        images: PNG bytes by file name (``pareto_params.png``...), embedded in that order.
        notes: extra lines for the notes section (a skipped plot, how importance was computed).
        generated: when the report was made (now by default).
        confirmed: :func:`compressor.report.tables.confirmed_frame` (None or empty: not confirmed).
    """
    generated = generated or datetime.datetime.now().astimezone()
    metric_label = overview["metric_label"]
    shape = "x".join(str(size) for size in overview["input_shape"]) or "-"
    title = f"Pareto report: {overview['study']}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>{_e(title)}</h1>
<p class="lead">{_e(metric_label[:1].upper() + metric_label[1:])} against size and compute for every candidate of the search, with the
reference models ({_e(", ".join(references["label"]))}) on the same axes. Ratios are {_e(ratio_label_of(references))}'s value divided
by the candidate's: how many times smaller.</p>
<dl class="facts">{_facts_html(overview, machine, shape)}</dl>

<h2>Pareto front ({len(pareto)})</h2>
<p class="note">Feasible complete trials that learned something ({_e(_floor_text(overview))}) and that no other one
beats on every objective, smallest first; then the reference models.</p>
{_pareto_html(pareto, references, overview)}
{_confirmed_section(confirmed, overview)}

<h2>Plots</h2>
<div class="figures">{_figures_html(images)}</div>

<h2>All trials ({len(trials)})</h2>
{_trials_html(trials, references, overview)}

<h2>Notes</h2>
<ul class="notes">
{_notes_html(overview, notes, shape)}
</ul>
<footer>Generated by compressor {_e(__version__)} on {_e(generated.strftime("%Y-%m-%d %H:%M %Z").strip())}.
The same numbers are in trials.csv and pareto.csv next to this page.</footer>
</main>
</body>
</html>
"""


def _facts_html(overview: Mapping[str, Any], machine: Mapping[str, Any], shape: str) -> str:
    """The header's facts: the study, its space, objectives, budget, machine, compute, span and trials by status."""
    metric_label = overview["metric_label"]
    counts = overview["by_status"]
    badges = " ".join(_badge(f"{count} {status}", status) for status, count in counts.items() if count) or "none"
    span_text = format_seconds(overview["span_seconds"])
    if overview["first_start"]:
        span_text += f" ({overview['first_start'].replace('T', ' ')} to " \
                     f"{(overview['last_complete'] or 'now').replace('T', ' ')})"
    facts = [
        ("study", overview["study"]),
        ("search space / base model", f"{overview['space']} on {overview['model']}"),
        ("objectives", ", ".join(f"{name if name != 'metric' else metric_label} "
                                 f"{'up' if direction == 'maximize' else 'down'}"
                                 for name, direction in zip(overview["objectives"], directions(overview["objectives"])))),
        ("budget", Budget.from_dict(overview["budget"]).describe()),
        ("costs measured at input", shape),
        (f"machine ({machine.get('source', 'report')})", _machine_text(machine)),
        ("compute spent (sum of trial wall time)", format_seconds(overview["wall_seconds"])
         + _phase_shares(overview.get("phase_seconds") or {})),
        ("study span (first start to last end)", span_text),
    ]
    facts_html = "".join(f"<div><dt>{_e(name)}</dt><dd>{_e(value)}</dd></div>" for name, value in facts)
    return facts_html + f"<div><dt>trials ({overview['trials']})</dt><dd>{badges}</dd></div>"


def _phase_shares(seconds: Mapping[str, float]) -> str:
    """`` (train 67%, evaluate 15%, build 9%, ...)``: where the trials' time went, largest first."""
    total = seconds.get("total") or 0.0
    if total <= 0:
        return ""
    shares = sorted(((value / total, phase) for phase, value in seconds.items() if phase != "total"), reverse=True)
    other = 1.0 - sum(share for share, _ in shares)
    parts = [f"{phase} {share:.0%}" for share, phase in shares if share >= 0.005]
    return f" ({', '.join(parts + ([f'other {other:.0%}'] if other >= 0.005 else []))})"


def _pareto_html(pareto: pd.DataFrame, references: pd.DataFrame, overview: Mapping[str, Any]) -> str:
    headers, rows = pareto_rows(pareto, references, metric_label=overview["metric_label"],
                                latency=shows_latency(overview))
    row_classes = ["front"] * len(pareto) + ["reference"] * len(references)
    table = _table(headers, rows, text_columns=(0,), recipe_column=len(headers) - 1, row_classes=row_classes)
    if pareto.empty:
        return f'<p class="empty">The Pareto front is empty: {_e(empty_front_reason(overview))}.</p>' + table
    legend = overview.get("recipe_legend")
    return table + (f'<p class="note">{_e(as_sentence(legend))}</p>' if legend else "")


def _figures_html(images: Mapping[str, bytes]) -> str:
    figures = []
    for name, data in images.items():
        encoded = base64.b64encode(data).decode("ascii")
        caption = FIGURE_CAPTIONS.get(name, "")
        figures.append(f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{encoded}">'
                       f"<figcaption>{_e(name)}: {_e(caption)}</figcaption></figure>")
    return "".join(figures)


def _trials_html(trials: pd.DataFrame, references: pd.DataFrame, overview: Mapping[str, Any]) -> str:
    """Every finished trial, and a note on those still running (counted, not shown)."""
    trial_headers, trial_rows, trial_classes = _trial_rows(trials, overview["metric_label"], overview["budget"],
                                                             ratio_label_of(references))
    table = _table(trial_headers, trial_rows, text_columns=(0, 1, 13), recipe_column=2,
                   row_classes=trial_classes, raw_columns=(1,), wrap_columns=(13,)) if trial_rows else \
        '<p class="note">No finished trial yet.</p>'
    running = overview["by_status"].get("running", 0)
    running_note = (f'<p class="note">{running} trial(s) still running (or whose worker stopped without telling '
                    "the study) are counted above but not shown: a report reads finished trials only.</p>"
                    if running else "")
    return f"{running_note}\n{table}"


def _notes_html(overview: Mapping[str, Any], notes: Sequence[str], shape: str) -> str:
    notes_html = "".join(f"<li>{_e(note)}</li>" for note in notes)
    return f"""<li>{_e(FLOP_CONVENTION)}, per forward pass at input {_e(shape)}. Operations fvcore cannot count (additions,
max-pooling) are left out, for the candidates and the references alike.</li>
<li>Costs (parameters, FLOPs, latency, training memory) are measured before training; a candidate over the budget
is recorded with its cost and never trained.</li>
<li>The Pareto front is taken over the study's objectives ({_e(", ".join(overview["objectives"]))}) among the
feasible trials trained to the end that learned something ({_e(_floor_text(overview))}: a network that predicts one
class everywhere is no candidate, however small). A trial stopped early shows the metric of the last rung it reached and is not on the front. A trial that repeated an earlier recipe reused its result and is folded into it.</li>
<li>The step line of each plot is the front of the metric against that one cost; the points of the full front
(all objectives) are the dark ones, labelled with their trial number.</li>
{notes_html}"""
