"""The report's figures, drawn from the frames of :mod:`compressor.report.tables`; no computation here.

Figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg backend (no
pyplot state, no display needed); :func:`png_bytes` turns one into PNG bytes. Seaborn gives
the style and draws the bars.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from compressor.budget import COST_LIMITS
from compressor.report.styles import (
    BUDGET_COLOR,
    CATEGORIES,
    CONFIRMED_COLOR,
    FLOOR_COLOR,
    OTHER_REFERENCE_STYLE,
    REFERENCE_STYLE,
    point_category,
)
from compressor.report.tables import front_steps, ratio_label_of

__all__ = ["CATEGORIES", "point_category", "pareto_figure", "hypervolume_figure", "importance_figure", "png_bytes"]

#: how each cost's axis is drawn (its budget line is at the budget's key for it, COST_LIMITS)
_COST_AXES = {
    "params": {"scale": 1.0, "what": "parameters"},
    "flops": {"scale": 1e9, "what": "GFLOPs"},
    "latency_ms": {"scale": 1.0, "what": "latency"},
}


def png_bytes(figure: Figure, *, dpi: int = 130) -> bytes:
    """The figure as PNG bytes (Agg)."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor="white")  # constrained layout already fits
    return buffer.getvalue()


def _style() -> dict[str, Any]:
    rc = dict(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("notebook", font_scale=0.95))
    rc.update({"axes.titleweight": "bold", "axes.titlesize": 13, "legend.frameon": True, "legend.framealpha": 0.92})
    return rc


def _compact(value: float) -> str:
    """``50000 -> '50k'``, ``3e6 -> '3M'``, ``0.5 -> '0.5'``: tick labels."""
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _ratio_label(value: float, _position: Any = None) -> str:
    if not math.isfinite(value) or value <= 0:
        return ""
    return f"{value:.3g}x" if value < 1 else f"{value:,.0f}x"


def pareto_figure(
    trials: pd.DataFrame,
    references: pd.DataFrame,
    *,
    cost: str,
    metric_label: str,
    budget: Mapping[str, float | None] | None = None,
    title: str = "",
    input_shape: list[int] | None = None,
    confirmed: pd.DataFrame | None = None,
    threshold: float = 0.0,
    latency_note: str = "",
) -> Figure:
    """The metric against one cost (``params``, ``flops`` or ``latency_ms``), every finished trial a point.

    ``latency_note`` says how latency was measured (runtime, threads, input), on the axis.

    A confirmed model (``confirmed``: :func:`~compressor.report.tables.confirmed_frame`) gets
    a square at the mean of its repeats with its 95% interval as an error bar, above or below
    the point of the run the search picked it on. ``threshold`` (the floor, when above 0) is a
    dotted horizontal line: only trials above it can be on the front.

    Trained trials sit on the main axes (Pareto front, dominated, stopped early at the metric
    of their rung); trials never trained (over budget, failed) sit on a strip below it at their
    size. The step line is the front of the metric against this cost alone. U-Net and Micro-Net
    are labelled markers (a dotted vertical line when their metric is not known yet), the
    budget a dashed line with the region beyond it shaded, the x axis is logarithmic and the
    top axis reads as "how many times smaller than U-Net" (or than the search's own base
    network, when it is the first reference).
    """
    axis = _COST_AXES[cost]
    points = _pareto_points(trials, references, cost=cost, budget=budget, confirmed=confirmed, threshold=threshold)
    with matplotlib.rc_context(_style()):
        figure = Figure(figsize=(12, 6.6 if len(points.untrained) else 6.0), layout="constrained")
        ax, strip = _pareto_axes(figure, points)
        handles: list[Any] = []
        _draw_budget(ax, strip, points, axis["what"], handles)
        if threshold > 0:
            ax.axhline(threshold, color=FLOOR_COLOR, linestyle=(0, (2, 3)), linewidth=1.3, zorder=1)
            handles.append(Line2D([], [], color=FLOOR_COLOR, linestyle=(0, (2, 3)), linewidth=1.3,
                                  label=f"floor {threshold:.3f}: best constant prediction + margin"))
        _draw_front(ax, trials, cost, axis, metric_label, handles)
        _draw_trials(ax, strip, points, handles)
        _draw_references(ax, strip, points.refs, cost, handles)
        _draw_confirmed(ax, points.bars, handles)
        if not len(points.trained) and not points.refs["metric"].notna().any() and not len(points.bars):
            ax.set_ylim(0, 1)
            ax.text(0.5, 0.5, "no trained trial yet", transform=ax.transAxes, ha="center", va="center",
                    fontsize=12, color="#777777")
        ax.set_ylabel(f"{metric_label} (validation)")
        _format_x_axes(ax, strip, _pareto_xlabel(cost, input_shape, latency_note))
        if points.reference_x:
            _ratio_axis(ax, points.reference_x, cost, ratio_label_of(references))
        ax.set_title(title or f"{metric_label} against {axis['what']}", loc="left")
        # Outside the axes: a legend inside would hide points or labels somewhere, sooner or later.
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, borderaxespad=0)
    return figure


@dataclass
class _ParetoPoints:
    """What a Pareto figure draws, in the axis' units (a cost divided by its scale)."""

    trained: pd.DataFrame  # trials with a metric, by category
    untrained: pd.DataFrame  # over budget, failed: the strip below
    refs: pd.DataFrame  # the references with this cost
    bars: pd.DataFrame  # confirmed models
    low: float  # the x range
    high: float
    ys: list[float]  # the values the y range must show
    limit_x: float | None  # the budget
    reference_x: float | None  # the ratio reference's cost (the top axis)


def _pareto_points(
    trials: pd.DataFrame, references: pd.DataFrame, *, cost: str, budget: Mapping[str, float | None] | None,
    confirmed: pd.DataFrame | None, threshold: float,
) -> _ParetoPoints:
    scale = _COST_AXES[cost]["scale"]
    rows = trials[trials[cost].notna()].copy()
    rows["x"] = rows[cost].astype(float) / scale
    rows["category"] = [point_category(row) for _, row in rows.iterrows()]
    rows = rows[rows["category"].isin(CATEGORIES)]  # a trial still running has nothing final to draw
    trained = rows[rows["category"].map(lambda key: CATEGORIES[key]["trained"]) & rows["metric"].notna()]
    untrained = rows[~rows.index.isin(trained.index)]
    refs = references[references[cost].notna()].copy()
    refs["x"] = refs[cost].astype(float) / scale
    # The ratio reference is the references' first row: U-Net, or the search's own base network.
    ratio_rows = refs[refs["model"] == references["model"].iloc[0]] if len(references) else refs.iloc[:0]
    limit = (budget or {}).get(COST_LIMITS[cost])
    limit_x = float(limit) / scale if limit else None
    xs = [x for x in [*rows["x"].tolist(), *refs["x"].tolist(), *([limit_x] if limit_x else [])] if x > 0]
    ys = [*trained["metric"].astype(float).tolist(), *refs["metric"].dropna().astype(float).tolist()]
    bars = pd.DataFrame()
    if confirmed is not None and len(confirmed) and cost in confirmed.columns:
        bars = confirmed[confirmed[cost].notna() & confirmed["confirmed_n"].fillna(0).astype(int).gt(0)].copy()
        bars["x"] = bars[cost].astype(float) / scale
        # The fine-tuned parent has the parent's size: set it a little to the right, so both bars show.
        bars.loc[bars["subject"].astype(str).str.endswith("-finetuned"), "x"] *= 1.25
        # The means set the scale, not the intervals: 2 or 3 repeats give intervals that would
        # squash every point into a sliver; a bar longer than the frame runs off its edge.
        ys += bars["confirmed_mean"].astype(float).tolist()
    if threshold > 0:
        ys.append(threshold)
    low, high = (min(xs) / 1.8, max(xs) * 1.8) if xs else (1.0, 10.0)
    return _ParetoPoints(trained, untrained, refs, bars, low, high, ys, limit_x,
                         float(ratio_rows["x"].iloc[0]) if len(ratio_rows) else None)


def _pareto_xlabel(cost: str, input_shape: list[int] | None, latency_note: str) -> str:
    shape = "x".join(str(size) for size in input_shape) if input_shape else ""
    if cost == "flops":
        return f"GFLOPs per forward pass{' at ' + shape if shape else ''} (1 multiply-add = 1 flop), log scale"
    if cost == "latency_ms":
        return f"latency per forward pass, ms{' (' + latency_note + ')' if latency_note else ''}, log scale"
    return "parameters, log scale"


def _pareto_axes(figure: Figure, points: _ParetoPoints) -> tuple[Any, Any]:
    """The main axes (log x, a y range that shows every point) and the strip of untrained trials, if any."""
    if len(points.untrained):
        grid = figure.add_gridspec(2, 1, height_ratios=[9, 1])
        ax = figure.add_subplot(grid[0])
        strip = figure.add_subplot(grid[1], sharex=ax)
    else:
        ax, strip = figure.add_subplot(), None
    ax.set_xscale("log")
    ax.set_xlim(points.low, points.high)
    if points.ys:
        lower, upper = min(points.ys), max(points.ys)
        if len(points.trained) < 2 and lower >= 0:
            lower = 0.0  # a lone point or the references alone: no zoom into a sliver of the scale
        span = max(upper - lower, 0.05 * max(abs(upper), 1e-3))
        ax.set_ylim(max(0.0, lower - 0.12 * span) if lower >= 0 else lower - 0.12 * span, upper + 0.18 * span)
    return ax, strip


def _draw_budget(ax: Any, strip: Any, points: _ParetoPoints, what: str, handles: list[Any]) -> None:
    if not points.limit_x:
        return
    for axes in (ax, strip):
        if axes is not None:
            axes.axvspan(points.limit_x, points.high * 10, color=BUDGET_COLOR, alpha=0.05, zorder=0)
            axes.axvline(points.limit_x, color=BUDGET_COLOR, linestyle="--", linewidth=1.4, zorder=1)
    handles.append(Line2D([], [], color=BUDGET_COLOR, linestyle="--",
                          label=f"budget: <= {_compact(points.limit_x)} {what}"))


def _draw_front(ax: Any, trials: pd.DataFrame, cost: str, axis: Mapping[str, Any], metric_label: str,
                handles: list[Any]) -> None:
    """The step line of the front of the metric against this cost alone."""
    steps = front_steps(trials, cost)
    if not len(steps):
        return
    step_x = steps["cost"].to_numpy(dtype=float) / axis["scale"]
    step_y = steps["metric"].to_numpy(dtype=float)
    ax.step(step_x, step_y, where="post", color=CATEGORIES["front"]["color"], linewidth=1.8, alpha=0.85, zorder=2)
    handles.append(Line2D([], [], color=CATEGORIES["front"]["color"], linewidth=1.8,
                          label=f"front of {metric_label} vs {axis['what']}"))


def _draw_trials(ax: Any, strip: Any, points: _ParetoPoints, handles: list[Any]) -> None:
    """Each category of trial, trained ones on the main axes and the others on the strip; the
    front's points labelled by trial number (equal results, a duplicate or a tie, share a label)."""
    for key, style in CATEGORIES.items():
        subset = (points.trained if style["trained"] else points.untrained)
        subset = subset[subset["category"] == key]
        if subset.empty:
            continue
        target = ax if style["trained"] else strip
        y = subset["metric"].astype(float) if style["trained"] else np.zeros(len(subset))
        edge = {"front": "black", "failed": style["color"]}.get(key, "white")
        # An unfilled marker ("x") takes its colour from the face; an edge colour only draws a warning.
        outline = {} if key == "failed" else {"edgecolor": edge}
        sns.scatterplot(x=subset["x"].to_numpy(), y=np.asarray(y), ax=target, color=style["color"],
                        marker=style["marker"], s=style["size"], linewidth=0.6 if key != "failed" else 1.6,
                        alpha=0.95, legend=False, zorder=3, **outline)
        handles.append(Line2D([], [], linestyle="", marker=style["marker"], color=style["color"],
                              markeredgecolor=edge, markeredgewidth=0.6 if key != "failed" else 1.6, markersize=8,
                              label=f"{style['label']} ({len(subset)})"))
    front_points = points.trained[points.trained["category"] == "front"]
    for (x, metric), group in front_points.groupby(["x", "metric"], sort=False):
        label = ", ".join(f"#{number}" for number in sorted(group["number"].astype(int)))
        ax.annotate(label, (x, float(metric)), textcoords="offset points", xytext=(5, -11), fontsize=7.5,
                    color="#333333", zorder=4)


def _draw_references(ax: Any, strip: Any, refs: pd.DataFrame, cost: str, handles: list[Any]) -> None:
    """Each reference a labelled marker, or a dotted line at its size while its metric is not known."""
    for _, ref in refs.iterrows():
        marker, size, color = REFERENCE_STYLE.get(ref["model"], OTHER_REFERENCE_STYLE)
        unit = {"flops": " GFLOPs", "latency_ms": " ms"}.get(cost, "")
        name = f"{ref['label']} ({_compact(ref['x'])}{unit})"
        if pd.notna(ref["metric"]):
            ax.scatter([ref["x"]], [float(ref["metric"])], marker=marker, s=size, color=color,
                       edgecolor="white", linewidth=0.8, zorder=5)
            ax.annotate(name, (ref["x"], float(ref["metric"])), textcoords="offset points", xytext=(0, 10),
                        ha="center", fontsize=9, fontweight="bold", color=color, zorder=5)
            handles.append(Line2D([], [], linestyle="", marker=marker, color=color, markersize=9,
                                  label=f"{ref['label']} (reference)"))
            continue
        for axes in (ax, strip):
            if axes is not None:
                axes.axvline(ref["x"], color=color, linestyle=":", linewidth=1.6, zorder=1)
        ax.annotate(f"{name}, not trained", (ref["x"], 0.98), xycoords=ax.get_xaxis_transform(),
                    textcoords="offset points", xytext=(-4, 0), rotation=90, va="top", ha="right",
                    fontsize=8.5, color=color)
        handles.append(Line2D([], [], color=color, linestyle=":", linewidth=1.6,
                              label=f"{ref['label']} size (metric not trained yet)"))


def _draw_confirmed(ax: Any, bars: pd.DataFrame, handles: list[Any]) -> None:
    """Each confirmed model: a square at its mean, its 95% interval as an error bar."""
    if not len(bars):
        return
    low = (bars["confirmed_mean"] - bars["confirmed_low"]).fillna(0).clip(lower=0).to_numpy(dtype=float)
    high = (bars["confirmed_high"] - bars["confirmed_mean"]).fillna(0).clip(lower=0).to_numpy(dtype=float)
    ax.errorbar(bars["x"].to_numpy(dtype=float), bars["confirmed_mean"].to_numpy(dtype=float),
                yerr=[low, high], fmt="s", color=CONFIRMED_COLOR, markerfacecolor="white",
                markeredgewidth=1.6, markersize=7, capsize=4, elinewidth=1.5, zorder=6)
    for _, bar in bars.iterrows():
        ax.annotate(f"{bar['label']}, n={int(bar['confirmed_n'])}", (bar["x"], float(bar["confirmed_mean"])),
                    textcoords="offset points", xytext=(7, 3), fontsize=7.5, color=CONFIRMED_COLOR, zorder=6)
    handles.append(Line2D([], [], linestyle="", marker="s", color=CONFIRMED_COLOR, markerfacecolor="white",
                          markeredgewidth=1.6, markersize=7,
                          label=f"confirmed: mean of further seeds, 95% CI ({len(bars)})"))


def _format_x_axes(ax: Any, strip: Any, xlabel: str) -> None:
    formatter = FuncFormatter(lambda value, _position: _compact(value))
    for axes in (ax, strip):
        if axes is not None:
            axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axes.xaxis.set_major_formatter(formatter)
            axes.xaxis.set_minor_formatter(NullFormatter())
    if strip is None:
        ax.set_xlabel(xlabel)
        return
    ax.tick_params(labelbottom=False)
    strip.set_yticks([])
    strip.set_ylim(-1, 1)
    strip.set_ylabel("never\ntrained", rotation=0, ha="right", va="center", fontsize=9)
    strip.set_xlabel(xlabel)
    strip.grid(axis="y", visible=False)


def _ratio_axis(ax: Any, reference_x: float, cost: str, ratio_label: str) -> None:
    """The top axis: how many times smaller (or faster) than the study's reference."""
    top = ax.secondary_xaxis(
        "top",
        functions=(lambda x: reference_x / np.clip(x, 1e-30, None), lambda r: reference_x / np.clip(r, 1e-30, None)),
    )
    top.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    top.xaxis.set_major_formatter(FuncFormatter(_ratio_label))
    top.xaxis.set_minor_formatter(NullFormatter())
    top.set_xlabel(f"speed-up vs {ratio_label} (x times faster)" if cost == "latency_ms"
                   else f"compression vs {ratio_label} (x times smaller)")


def hypervolume_figure(hypervolume: pd.DataFrame, *, title: str = "", reference_note: str = "") -> Figure:
    """The hypervolume of the feasible front after each trial, against the trial number and
    against the compute spent (the sum of the trials' wall time)."""
    with matplotlib.rc_context(_style()):
        figure = Figure(figsize=(10, 4.2), layout="constrained")
        by_trial, by_time = figure.subplots(1, 2, sharey=True)
        if hypervolume.empty:
            for axes in (by_trial, by_time):
                axes.text(0.5, 0.5, "no finished trial yet", transform=axes.transAxes, ha="center",
                          color="#777777")
        else:
            values = hypervolume["hypervolume"].to_numpy(dtype=float)
            minutes = hypervolume["wall_seconds"].to_numpy(dtype=float) / 60.0
            numbers = hypervolume["number"].to_numpy()
            improved = np.diff(np.concatenate([[0.0], values])) > 1e-12
            color = CATEGORIES["front"]["color"]
            for axes, x in ((by_trial, numbers), (by_time, minutes)):
                axes.step(x, values, where="post", color=color, linewidth=1.8)
                axes.fill_between(x, values, step="post", color=color, alpha=0.12)
                axes.scatter(x[improved], values[improved], color=color, s=28, zorder=3,
                             label="a trial that grew the front")
            if improved.any():
                by_trial.legend(loc="lower right", fontsize=8.5)
            else:
                for axes in (by_trial, by_time):
                    axes.text(0.5, 0.5, "no trial on the front yet", transform=axes.transAxes, ha="center",
                              color="#777777")
            by_trial.set_xlim(numbers.min() - 0.5, numbers.max() + 0.5)
            by_time.set_xlim(0, max(minutes.max(), 1e-3) * 1.04)
            top = float(values.max()) if len(values) else 0.0
            by_trial.set_ylim(0, top * 1.12 if top > 0 else 1.0)
        by_trial.xaxis.set_major_locator(MaxNLocator(integer=True))
        by_trial.set_xlabel("trial number")
        by_time.set_xlabel("compute spent (sum of trial wall time, minutes)")
        by_trial.set_ylabel("hypervolume (normalized)")
        figure.suptitle(title or "Hypervolume of the feasible Pareto front", fontweight="bold", x=0.01, ha="left")
        if reference_note:
            figure.text(0.01, -0.02, reference_note, fontsize=8.5, color="#555555", ha="left", va="top")
    return figure


def importance_figure(importance: pd.DataFrame, *, labels: Mapping[str, str] | None = None, title: str = "") -> Figure:
    """Horizontal bars: each sampled parameter's importance for each objective."""
    labels = dict(labels or {})
    frame = importance.copy()
    frame["objective"] = frame["objective"].map(lambda name: labels.get(name, name))
    order = (importance[importance["objective"] == importance["objective"].iloc[0]]
             .sort_values("importance", ascending=False)["param"].tolist())
    order += [name for name in importance["param"].unique() if name not in order]
    with matplotlib.rc_context(_style()):
        figure = Figure(figsize=(10, 1.6 + 0.55 * len(order) * max(1, frame["objective"].nunique()) ** 0.5),
                        layout="constrained")
        ax = figure.add_subplot()
        sns.barplot(data=frame, y="param", x="importance", hue="objective", order=order, orient="h", ax=ax,
                    palette=["#1f5fa8", "#e8912d", "#6a3d9a", "#2a9d8f"][: frame["objective"].nunique()])
        ax.set_xlim(0, 1)
        ax.set_xlabel("importance (share of each objective's variation, sums to 1)")
        ax.set_ylabel("sampled parameter")
        ax.legend(title="objective", loc="best", fontsize=8.5)
        ax.set_title(title or "Parameter importance", loc="left")
    return figure
