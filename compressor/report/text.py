"""The report as text: the Pareto table for the terminal, for Markdown (``summary.md``) and
the page, with one way of writing each number."""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from typing import Any

import pandas as pd

from compressor.intervals import format_interval
from compressor.references import REFERENCE_MODELS
from compressor.report.tables import ratio_label_of
from compressor.tables import format_table
from compressor.units import format_count

__all__ = [
    "missing",
    "format_metric",
    "format_ratio",
    "format_seconds",
    "format_confirmed",
    "pareto_rows",
    "pareto_text",
    "unconfirmed_note",
    "floor_references_note",
    "precision_note",
    "as_sentence",
    "markdown_table",
    "markdown_text",
    "summary_markdown",
]


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def format_metric(value: Any) -> str:
    """``0.2573 -> '0.257'``; ``-`` when missing."""
    return "-" if missing(value) else f"{float(value):.3f}"


def format_ratio(value: Any) -> str:
    """How many times smaller: ``29.38 -> '29.4x'``, ``596.6 -> '597x'``; ``-`` when missing."""
    if missing(value):
        return "-"
    value = float(value)
    return f"{value:.0f}x" if value >= 100 else f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def format_seconds(value: Any) -> str:
    """``75 -> '1 min 15 s'``, ``3725 -> '1 h 02 min'``; ``-`` when missing."""
    if missing(value):
        return "-"
    seconds = float(value)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_confirmed(row: Any) -> str:
    """``0.252 [0.207, 0.297] n=4`` from a row's confirmed columns; ``-`` when not confirmed."""
    n = row.get("confirmed_n")
    if missing(n) or not int(n):
        return "-"
    low, high = (math.nan if missing(row[column]) else float(row[column]) for column in ("confirmed_low", "confirmed_high"))
    return format_interval(float(row["confirmed_mean"]), low, high, n=int(n))


def has_confirmed(*frames: pd.DataFrame) -> bool:
    """Whether any row of these frames was confirmed."""
    return any("confirmed_n" in frame and frame["confirmed_n"].fillna(0).astype(int).gt(0).any() for frame in frames)


def _count(value: Any) -> str:
    return "-" if missing(value) else format_count(int(value))


def pareto_rows(
    pareto: pd.DataFrame, references: pd.DataFrame, *, metric_label: str, latency: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Headers and text rows of the Pareto table, then one row per reference model.

    Columns: rank, trial, params, FLOPs, [latency,] the metric, [the confirmed mean with its
    95% interval and n, when the study was confirmed,] params and FLOPs ratios against the study's reference
    (or the search's own base network, when it is the first reference),
    the recipe in short. Reference rows have ``ref`` as rank and the model's name as trial; a
    reference without a metric says ``not trained``.
    """
    confirmed = has_confirmed(pareto, references)
    deployed = "int8_metric" in pareto.columns
    headers = ["rank", "trial", "params", "FLOPs", *(["latency"] if latency else []), metric_label,
               *([f"confirmed {metric_label} [95% CI] n"] if confirmed else []),
               f"params vs {ratio_label_of(references)}", f"FLOPs vs {ratio_label_of(references)}",
               *([f"latency vs {ratio_label_of(references)}"] if latency else []),
               *([f"int8 {metric_label}", "int8 vs fp32, points", "int8 latency (fp32)", "int8 MB"] if deployed else []),
               "recipe"]

    def confirmed_cell(row: Any) -> list[str]:
        return [format_confirmed(row)] if confirmed else []

    def latency_cell(value: Any) -> list[str]:
        return ([("-" if missing(value) else f"{float(value):.1f} ms")] if latency else [])

    def latency_ratio(row: Any) -> list[str]:
        return [format_ratio(row.get("latency_ratio"))] if latency else []

    def int8_cells(row: Any) -> list[str]:
        if not deployed:
            return []
        if missing(row["int8_metric"]):
            return ["-"] * 4
        points = 100.0 * (float(row["int8_metric"]) - float(row["fp32_metric"]))
        return [format_metric(row["int8_metric"]), f"{points:+.2f}",
                f"{float(row['latency_int8_ms']):.1f} ms ({float(row['latency_fp32_ms']):.1f})",
                f"{float(row['int8_bytes']) / 1e6:.2f}"]

    rows = []
    for _, row in pareto.iterrows():
        recipe = row["recipe_short"] or "(identity)"
        if row.get("duplicates"):
            recipe += f"  (same as trial {row['duplicates']})"
        rows.append([str(row["rank"]), str(row["number"]), _count(row["params"]), _count(row["flops"]),
                     *latency_cell(row["latency_ms"]), format_metric(row["metric"]), *confirmed_cell(row),
                     format_ratio(row["params_ratio"]),
                     format_ratio(row["flops_ratio"]), *latency_ratio(row), *int8_cells(row), recipe])
    for _, ref in references.iterrows():
        metric = format_metric(ref["metric"]) if ref["trained"] else "not trained"
        rows.append(["ref", ref["label"], _count(ref["params"]), _count(ref["flops"]), *latency_cell(ref["latency_ms"]),
                     metric, *confirmed_cell(ref), format_ratio(ref["params_ratio"]), format_ratio(ref["flops_ratio"]),
                     *latency_ratio(ref), *(["-"] * 4 if deployed else []),
                     "(reference, at the floor: learned nothing)" if ref.get("at_floor") else "(reference)"])
    return headers, rows


def confirm_command(study: str, storage: str | None = None, seeds: int | str = 2) -> str:
    """The ``compressor confirm`` line for ``study``, with ``--storage`` unless it is where
    ``--study`` alone finds it (``runs/<study>/search.db``), each value quoted for a shell."""
    parts = ["compressor", "confirm", "--study", shlex.quote(study)]
    if storage and storage != f"sqlite:///runs/{study}/search.db":
        parts += ["--storage", shlex.quote(storage)]
    return " ".join([*parts, "--seeds", str(seeds)])


def unconfirmed_note(overview: dict[str, Any], storage: str | None = None) -> str:
    """What a table of one training run per model says under it: that it is one run, and the
    command that confirms it ("" once the study is confirmed)."""
    if overview.get("confirmed"):
        return ""
    top = overview.get("confirm_top") or 3
    return (f"not confirmed: each score above is one training run (seed {overview.get('seed', 0)}), and short runs "
            f"differ by seed; `{confirm_command(overview['study'], storage)}` retrains up to {top} of the front's "
            "trials and the references on 2 more seeds and gives means with 95% intervals")


def precision_note(overview: dict[str, Any]) -> str:
    """What a table says under it when trials were scored in bf16 (as they trained), "" otherwise."""
    scored = overview.get("scored_in") or []
    if "bf16" not in scored:
        return ""
    which = "the trials" if scored == ["bf16"] else "some trials"
    return (f"{which} were scored in bf16, as they trained (about 0.06 points from an fp32 score on average), the "
            "references by the train section (fp32 unless train.precision or train.eval_precision says otherwise); "
            "a new study with train.eval_precision: fp32 scores every network in fp32")


def as_sentence(note: str) -> str:
    """A note as a sentence of its own: capital first letter, full stop."""
    return note[0].upper() + note[1:] + "."


def floor_references_note(references: pd.DataFrame, overview: dict[str, Any]) -> str:
    """A sentence on the references that learned nothing (metric at the floor), "" when none did."""
    low = references[references["at_floor"]]
    if low.empty:
        return ""
    label = overview.get("metric_label") or "the metric"
    parts = []
    for _, ref in low.iterrows():
        how = (f"in its {overview['steps']} steps from random weights (seed {overview.get('seed', 0)})"
               if ref["model"] in REFERENCE_MODELS and isinstance(overview.get("steps"), int) else "in its training")
        parts.append(f"{ref['label']} ({label} {format_metric(ref['metric'])}) learned nothing {how}")
    more = "" if overview.get("confirmed") else "; confirming over more seeds (or a longer training) shows more"
    return (f"at the floor: {'; '.join(parts)}; that says little of what the network can do, and the ratios to it "
            f"are sizes only{more}")


def shows_latency(overview: dict[str, Any]) -> bool:
    """Whether the tables show latency: the study asked for it (an objective, a budget, ``cost.latency``)."""
    return bool(overview.get("latency"))  # study_overview's asks_latency: an objective, a budget or cost.latency


def empty_front_reason(overview: dict[str, Any]) -> str:
    """Why a study's Pareto front is empty, from the trial counts."""
    counts = overview["by_status"]
    finished = sum(count for status, count in counts.items() if status != "running")
    if finished == 0:
        return "no trial has finished yet"
    if counts.get("complete"):
        threshold = overview.get("threshold") or 0.0
        return (f"none of the {counts['complete']} completed trial(s) scored above {threshold:.3f}, what the "
                "best constant prediction plus the margin scores" if threshold > 0 else
                f"the {counts['complete']} completed trial(s) learned nothing (metric 0)")
    return (f"no feasible trial has completed yet ({counts['infeasible']} over budget, "
            f"{counts['stopped']} stopped early, {counts['failed']} failed)")


def pareto_text(
    pareto: pd.DataFrame, references: pd.DataFrame, overview: dict[str, Any], storage: str | None = None
) -> str:
    """The Pareto table for the terminal (:func:`compressor.tables.format_table`); ``storage``
    (where the study is) goes into the command it prints."""
    latency = shows_latency(overview)
    headers, rows = pareto_rows(pareto, references, metric_label=overview["metric_label"], latency=latency)
    # format_table right-aligns every column but the first; padded recipes read left-aligned.
    width = max([len(headers[-1]), *(len(row[-1]) for row in rows)])
    headers[-1] = headers[-1].ljust(width)
    rows = [[*row[:-1], row[-1].ljust(width)] for row in rows]
    runs = "" if overview.get("confirmed") else f", one training run each (seed {overview.get('seed', 0)})"
    title = (f"Pareto front of study {overview['study']}: {len(pareto)} trial(s), smallest first{runs}; ratio = {ratio_label_of(references)} "
             "/ trial (how many times smaller); FLOPs: one multiply-add = one flop")
    text = format_table(headers, rows, title=title)
    if overview.get("recipe_legend") and not pareto.empty:
        text += f"\n{overview['recipe_legend']}"
    if pareto.empty:
        text += "\nthe Pareto front is empty: " + empty_front_reason(overview)
    if overview.get("floor"):
        text += f"\nfloor: {overview['floor']}"
    for note in (floor_references_note(references, overview), "" if pareto.empty else precision_note(overview),
                 "" if pareto.empty else unconfirmed_note(overview, storage)):
        if note:
            text += f"\n{note}"
    for claim in overview.get("claims", []):
        text += f"\nconfirmed: {claim}"
    return text


def markdown_text(value: Any) -> str:
    """``value`` (a name: a study, a model, a label, or a sentence holding one) as Markdown text that
    shows it as written and nothing else: ``&`` and ``<`` as entities, so no HTML tag, comment or
    autolink can start; line breaks as spaces, so it stays on its line (a heading, a table row).

    Example:
        >>> markdown_text("<img src=x onerror=alert(1)> & co")
        '&lt;img src=x onerror=alert(1)> &amp; co'
    """
    return re.sub(r"\s*[\r\n]+\s*", " ", str(value)).replace("&", "&amp;").replace("<", "&lt;")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned, every cell as text
    (:func:`markdown_text`), ``|`` escaped."""

    def cell(value: str) -> str:
        return markdown_text(value).replace("|", "\\|")

    numeric = [
        index > 0 and all(_looks_numeric(row[index]) for row in rows) if rows else False
        for index in range(len(headers))
    ]
    lines = ["| " + " | ".join(cell(header) for header in headers) + " |",
             "|" + "|".join("---:" if right else "---" for right in numeric) + "|"]
    lines.extend("| " + " | ".join(cell(value) for value in row) + " |" for row in rows)
    return "\n".join(lines)


def _looks_numeric(text: str) -> bool:
    stripped = str(text).rstrip("xkMGT%ms ").replace(".", "", 1).replace(",", "")
    return stripped.isdigit() or text in ("-", "not trained")


def summary_markdown(
    pareto: pd.DataFrame, references: pd.DataFrame, overview: dict[str, Any], storage: str | None = None
) -> str:
    """``summary.md``: a heading, one line on the study, and the Pareto table in Markdown."""
    latency = shows_latency(overview)
    headers, rows = pareto_rows(pareto, references, metric_label=overview["metric_label"], latency=latency)
    counts = ", ".join(f"{count} {status}" for status, count in overview["by_status"].items() if count)
    budget = ", ".join(f"{key.removeprefix('max_')} <= {_budget_value(key, value)}"
                       for key, value in overview["budget"].items()) or "none"
    lines = [
        f"# Pareto front of study {markdown_text(overview['study'])}",
        "",
        f"Space {markdown_text(overview['space'])} on {markdown_text(overview['model'])}; "
        f"objectives {markdown_text(', '.join(overview['objectives']))}; "
        f"budget {budget}; {overview['trials']} trials ({counts or 'none'}); "
        f"compute {format_seconds(overview['wall_seconds'])}.",
        "",
    ]
    if pareto.empty:
        lines += [f"_The Pareto front is empty: {markdown_text(empty_front_reason(overview))}._", ""]
    lines += [
        markdown_table(headers, rows),
        "",
        *([markdown_text(as_sentence(overview["recipe_legend"])), ""]
          if overview.get("recipe_legend") and not pareto.empty else []),
        *(["What the confirmation supports (mean of the further seeds and folds, 95% t-intervals; the "
           f"difference to {markdown_text(ratio_label_of(references))} paired on the same repeats):", "",
           *(f"- {markdown_text(claim)}" for claim in overview["claims"]), ""] if overview.get("claims") else []),
        *([f"Floor: {markdown_text(overview['floor'])}.", ""] if overview.get("floor") else []),
        *(line for note in (floor_references_note(references, overview), "" if pareto.empty else precision_note(overview),
                            "" if pareto.empty else unconfirmed_note(overview, storage))
          if note for line in (markdown_text(as_sentence(note)), "")),
        f"Ratios: {markdown_text(ratio_label_of(references))}'s value divided by the trial's (how many times smaller). "
        "FLOPs: fvcore count, one multiply-add = one flop.",
        "",
    ]
    return "\n".join(lines)


def _budget_value(key: str, value: Any) -> str:
    return f"{float(value):g} ms" if key == "max_latency_ms" else format_count(value)
