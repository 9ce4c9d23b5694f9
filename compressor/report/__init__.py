"""Pareto reports of a search against its reference (U-Net, or the user's own network): tables
(pandas), plots (seaborn), one HTML page.

:func:`build_report` reads a study once and writes, into one folder:

- ``index.html``: the page, self-contained (plots embedded, no external reference);
- ``trials.csv``: one row per finished trial; ``pareto.csv``: the Pareto front (with the confirmed
  mean, interval and n of its confirmed trials); ``confirmed.csv``: every confirmed model;
- ``pareto_params.png``, ``pareto_flops.png``, ``pareto_latency.png`` (when the study measured
  latency), ``hypervolume.png``, ``learning_curves.png`` (when trainings kept their curves) and,
  once there are enough trials, ``importance.png``;
- ``summary.md``: the Pareto table in Markdown.

Every file is written atomically, and only after all of them were computed, so a failure
never leaves a half-written file and a page never describes plots that do not exist.

Computation (:mod:`~compressor.report.tables`) is kept apart from drawing
(:mod:`~compressor.report.plots`) and from the page (:mod:`~compressor.report.html`).

Example:
    >>> from compressor.report import build_report, load_study
    >>> study = load_study("sqlite:///runs/quickstart/search.db", "quickstart")  # doctest: +SKIP
    >>> report = build_report(study, "reports/quickstart")                      # doctest: +SKIP
    >>> report.pareto[["number", "params", "flops", "metric"]]                  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from compressor.io import atomic_write, atomic_write_text
from compressor.references import REFERENCE_MODELS
from compressor.report import plots
from compressor.report.curves import curves_figure, curves_frame
from compressor.report.html import render_html
from compressor.report.hypervolume import hypervolume_frame
from compressor.report.importance import Importance, importance_frame
from compressor.report.overview import machine_info, study_overview, with_deployed
from compressor.report.tables import confirmed_frame, pareto_frame, references_frame, trials_frame
from compressor.report.text import (
    as_sentence,
    confirm_command,
    floor_references_note,
    pareto_text,
    precision_note,
    summary_markdown,
)
from compressor.study import (
    HYPERVOLUME_DECADES,
    HYPERVOLUME_MARGIN,
    StudyInfo,
    StudySnapshot,
    hypervolume_reference,
    load_study,
    objective_label,
    read_study,
)

__all__ = [
    "Report",
    "build_report",
    "default_out_dir",
    "load_study",
    "read_study",
    "StudySnapshot",
    "trials_frame",
    "pareto_frame",
    "references_frame",
    "hypervolume_frame",
    "hypervolume_reference",
    "importance_frame",
    "study_overview",
    "pareto_text",
    "front_table",
]

#: where ``compressor report`` writes a study's report unless told (``reports/<study>``)
REPORTS = Path("reports")


def default_out_dir(study_name: str) -> Path:
    """``reports/<study>``, the study's name made one safe folder name, so that no name leaves
    ``reports/``: a path separator, a colon or a control character becomes ``_``, and so does a
    leading dot (no ``..``, no hidden folder).

    Example:
        >>> default_out_dir("quickstart").as_posix(), default_out_dir("../../x").as_posix()
        ('reports/quickstart', 'reports/_._.._x')
    """
    safe = re.sub(r"[/\\:\x00-\x1f\x7f]", "_", study_name)
    return REPORTS / ("_" + safe[1:] if safe.startswith(".") else safe or "_")


REPORT_FILES = ("index.html", "trials.csv", "pareto.csv", "confirmed.csv", "summary.md", "pareto_params.png", "pareto_flops.png",
                "pareto_latency.png", "hypervolume.png", "learning_curves.png", "importance.png")


@dataclass
class Report:
    """What :func:`build_report` wrote and the numbers behind it.

    Attributes:
        out_dir: the folder.
        paths: every file written, by name (``index.html``, ``pareto.csv``, ...).
        trials, pareto, references, hypervolume: the frames (see :mod:`compressor.report.tables`).
        importance: parameter importances, or why they were skipped.
        overview: the page's header numbers (:func:`~compressor.report.overview.study_overview`).
        machine: the machine named on the page.
        notes: the extra notes of the page.
    """

    out_dir: Path
    paths: dict[str, Path]
    trials: pd.DataFrame
    pareto: pd.DataFrame
    references: pd.DataFrame
    hypervolume: pd.DataFrame
    importance: Importance
    overview: dict[str, Any]
    machine: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    confirmed: pd.DataFrame | None = None

    @property
    def index_html(self) -> Path:
        return self.paths["index.html"]

    def pareto_text(self, storage: str | None = None) -> str:
        """The Pareto table for the terminal (``storage``: where the study is, for the commands it prints)."""
        return pareto_text(self.pareto, self.references, self.overview, storage)


def build_report(
    study: optuna.Study | StudySnapshot, out_dir: str | Path, *, generated: datetime.datetime | None = None,
    storage: str | None = None,
) -> Report:
    """Writes the report of ``study`` into ``out_dir`` (created if needed) and returns it.

    The study is read once; trials still running are counted but left out of everything else.

    Args:
        study: a study made by ``compressor search`` (or a snapshot of one).
        out_dir: the folder to write to; files of an earlier report there are replaced.
        generated: the time stamped on the page (now by default).
        storage: the study's storage URL, for the commands the page prints (``--storage``).

    Returns:
        The :class:`Report`: paths and frames (``report.pareto`` holds the numbers of ``pareto.csv``).

    Raises:
        compressor.errors.ConfigError: the study was not made by ``compressor search``.
    """
    snapshot = read_study(study)
    out_dir = Path(out_dir)
    info = snapshot.info
    label = info.metric_label or info.metric
    trials = trials_frame(snapshot)
    confirmed = confirmed_frame(snapshot)
    pareto = with_deployed(pareto_frame(snapshot, trials=trials), out_dir)
    references = references_frame(snapshot)
    hypervolume = hypervolume_frame(snapshot)
    importance = importance_frame(snapshot)
    overview = study_overview(snapshot)
    machine = machine_info(snapshot)

    notes = _notes(snapshot, confirmed, references, overview, storage)
    images = _figures(snapshot, trials, references, confirmed, hypervolume, overview)
    if importance.skipped:
        notes.append(f"No parameter importance plot: {importance.note}.")
    else:
        images["importance.png"] = plots.importance_figure(
            importance.frame, labels={name: objective_label(name, label) for name in snapshot.objectives},
            title=f"{snapshot.study_name}: parameter importance ({importance.trials} feasible complete trials)")
        notes.append(f"Parameter importance: {importance.note}; costs in log scale.")
    pngs = {name: plots.png_bytes(figure) for name, figure in images.items()}

    texts = {
        "trials.csv": trials.to_csv(index=False),
        "pareto.csv": pareto.to_csv(index=False),
        **({"confirmed.csv": confirmed.to_csv(index=False)} if len(confirmed) else {}),
        "summary.md": summary_markdown(pareto, references, overview, storage),
    }
    texts["index.html"] = render_html(
        overview=overview, machine=machine, pareto=pareto, references=references, trials=trials, images=pngs,
        notes=notes, generated=generated, confirmed=confirmed,
    )

    paths = _write(out_dir, pngs, texts)
    return Report(
        out_dir=out_dir, paths=paths, trials=trials, pareto=pareto, references=references, hypervolume=hypervolume,
        importance=importance, overview=overview, machine=machine, notes=notes, confirmed=confirmed,
    )


def _notes(
    snapshot: StudySnapshot, confirmed: pd.DataFrame, references: pd.DataFrame, overview: dict[str, Any],
    storage: str | None = None,
) -> list[str]:
    """The page's notes on the hypervolume, a study not confirmed yet, references at the floor and
    references not trained yet."""
    info = snapshot.info
    label = info.metric_label or info.metric
    reference = snapshot.ratio_reference
    based_on = ", ".join(
        f"{objective_label(name, label)} {HYPERVOLUME_MARGIN:g}x "
        f"{snapshot.ratio_label if reference.get(name) is not None else 'the largest seen'}"
        for name in snapshot.objectives if name != "metric"
    )
    parts = " x ".join([f"{1 / HYPERVOLUME_DECADES:g}"] * (len(snapshot.objectives) - ("metric" in snapshot.objectives)))
    notes = [f"Hypervolume: each cost on a log axis from its reference ({based_on}) down to "
             f"{10 ** HYPERVOLUME_DECADES:,} times smaller, the metric's reference at 0; each tenfold reduction is "
             f"1/{HYPERVOLUME_DECADES} of an axis: one point of metric m at a tenth of every reference cost has "
             f"hypervolume m x {parts}."]
    if not len(confirmed) and info.floor:
        notes.append("Not confirmed yet: each number above is one training run (the seed the search ran with). "
                     f"`{confirm_command(snapshot.study_name, storage, seeds='N')}` retrains the front's best trials "
                     "and the references on further seeds and adds means with 95% intervals to this page.")
    shares = sorted({record.rung_share for record in snapshot.records if record.trained and record.rung_share})
    if shares:
        whole = any(record.trained and record.rung_metrics and not record.rung_share for record in snapshot.records)
        notes.append(f"A trial's rung evaluations (the points of its learning curve at the rungs, and the score of a "
                     f"trial stopped at one) read {' or '.join(f'{share:.0%}' for share in shares)} of each validation "
                     "scene's windows, rounded up (search.rung_share: a fixed subsample, the same for every trial; a "
                     "scene whose subsample would miss a class is read whole)"
                     + ("; the trials stored before that setting read them all, and are ranked at a rung only against "
                        "each other" if whole else "")
                     + "; the final evaluation reads them all.")
    at_floor = floor_references_note(references, overview)
    if at_floor:
        notes.append(as_sentence(at_floor))
    scored = precision_note(overview)
    if scored:
        notes.append(as_sentence(scored))
    untrained = references[~references["trained"]]
    if len(untrained):
        builtin = [str(name) for name in untrained["model"] if name in REFERENCE_MODELS]
        how = (f"`compressor baseline --models {','.join(builtin)}` trains "
               f"{'them' if len(builtin) == len(untrained) else 'U-Net and Micro-Net'}; " if builtin else "")
        if len(builtin) < len(untrained):
            how += "a search with search.baselines: true trains the base network as its reference"
        notes.append(f"Not trained yet: {', '.join(untrained['label'])}; their size is drawn as a dotted line, "
                     f"without a metric. {how.rstrip('; ')}.")
    return notes


def _figures(
    snapshot: StudySnapshot, trials: pd.DataFrame, references: pd.DataFrame, confirmed: pd.DataFrame,
    hypervolume: pd.DataFrame, overview: dict[str, Any],
) -> dict[str, Any]:
    """The front against each cost the study measured, the hypervolume, and the learning curves."""
    info = snapshot.info
    label = info.metric_label or info.metric
    title = f"{snapshot.study_name}: {label}"
    shared = {"metric_label": label, "budget": info.budget, "input_shape": info.input_shape, "confirmed": confirmed,
              "threshold": info.threshold}
    images = {
        "pareto_params.png": plots.pareto_figure(trials, references, cost="params",
                                                 title=f"{title} against parameters", **shared),
        "pareto_flops.png": plots.pareto_figure(trials, references, cost="flops", title=f"{title} against FLOPs",
                                                **shared),
        **({"pareto_latency.png": plots.pareto_figure(
            trials, references, cost="latency_ms", title=f"{title} against latency", latency_note=_latency_note(info),
            **shared)} if overview["latency"] and trials["latency_ms"].notna().any() else {}),
        "hypervolume.png": plots.hypervolume_figure(
            hypervolume, title=f"{snapshot.study_name}: hypervolume of the feasible front"),
    }
    curves = curves_frame(snapshot, set(trials.loc[trials["on_front"], "number"]))
    if len(curves):
        images["learning_curves.png"] = curves_figure(
            curves, metric_label=label, title=f"{snapshot.study_name}: validation {label} during training")
    return images


def _write(out_dir: Path, pngs: dict[str, bytes], texts: dict[str, str]) -> dict[str, Path]:
    """Every file written atomically, the page last; a file an earlier report wrote and this one does not is removed."""
    paths: dict[str, Path] = {}
    for name, data in pngs.items():
        paths[name] = atomic_write(out_dir / name, lambda file, data=data: file.write(data))
    for name in ("trials.csv", "pareto.csv", "confirmed.csv", "summary.md", "index.html"):  # the page last
        if name in texts:
            paths[name] = atomic_write_text(out_dir / name, texts[name])
    for name in REPORT_FILES:
        if name not in paths:
            (out_dir / name).unlink(missing_ok=True)  # a plot an earlier report drew and this one skips
    return paths


def _latency_note(info: StudyInfo) -> str:
    """How the study measured latency: ``onnxruntime, 1 thread, batch 1 at 224x224``."""
    latency = info.latency
    if latency is None:
        return "PyTorch eager, the cores this process may use"
    size = latency.input_size
    return (f"{latency.runtime}, {latency.threads} thread{'s' if latency.threads != 1 else ''}, "
            f"batch {latency.batch} at {size}x{size}")


def front_table(study: optuna.Study | StudySnapshot, storage: str | None = None) -> str:
    """The Pareto table with the reference models, as ``compressor report`` and ``compressor search`` print it
    (``storage``: where the study is, for the commands it prints)."""
    snapshot = read_study(study)
    return pareto_text(pareto_frame(snapshot), references_frame(snapshot), study_overview(snapshot), storage)
