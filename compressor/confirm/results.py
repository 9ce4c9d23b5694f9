"""What the confirmation runs say: per model, the mean over repeats with its interval, paired with the reference.

A confirmation (:mod:`compressor.confirm`) retrains a search's best candidates and the
references on further *repeats* (a training seed, and a fold of the validation data) and
stores each result as a study user attribute ``confirm/<subject>/<seed>/<fold>``. This module
reads them back from the study's attributes alone (so the report needs nothing else) and
summarizes them:

- per model, the mean of its repeats with a 95% t-interval (:class:`~compressor.intervals.Estimate`);
  the search's own run (the one the front was picked on) is shown but not counted;
- the paired difference to the study's reference (the one its ratios are against: U-Net, or the
  user's own network the search started from) and to Micro-Net, on the repeats both have;
- whether it learned something: its mean beats the mean floor of its repeats (the best
  constant prediction on each repeat's validation pixels, plus the study's margin);
- the front recomputed on the confirmed means, and a claim per parameter budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compressor.confirm.subjects import (
    PLAN_KEY,
    RESULT_PREFIX,
    Repeat,
    is_control,
    parent_subject,
    primary_reference,
    reference_subjects,
    study_control,
    subject_label,
    trial_of,
)
from compressor.floor import Floor
from compressor.intervals import WITHIN_POINTS, Estimate, paired_difference, within
from compressor.study import StudyInfo, TrialRecord, directions, pareto_mask, reference_label
from compressor.tables import format_table
from compressor.units import format_count, parse_count

__all__ = ["Summary", "Confirmation", "read_confirmation"]


@dataclass
class Summary:
    """One confirmed model: its repeats and what they support.

    Attributes:
        subject: ``trial-7``, ``unet``, ``micronet``, ``base`` (the search's own base network) or
            a control (``unet-finetuned``, ``base-finetuned``).
        label: ``trial 7``, ``U-Net``, ``Micro-Net``, ``Unet (base)``, ``Unet (base) fine-tuned``.
        trial: the trial number (None for a reference or a control).
        params, flops: its size (the search's measurement).
        search_metric: the metric of the run the search picked on (not counted).
        scores: the metric per repeat ``(seed, fold)``.
        floors: the floor threshold per repeat (best constant prediction + margin).
        failures: repeats whose training failed (counted as a metric of 0).
        estimate: mean and 95% interval of ``scores``.
        vs_reference: the paired difference to the study's reference (this minus it, same repeats).
        vs_micronet: the paired difference to Micro-Net, when it was confirmed.
        vs_control: the paired difference to the parent fine-tuned as the candidates are (inheriting studies).
        planned: how many repeats the plan holds for it.
    """

    subject: str
    label: str
    trial: int | None
    params: float | None
    flops: float | None
    search_metric: float | None
    scores: dict[Repeat, float] = field(default_factory=dict)
    floors: dict[Repeat, float] = field(default_factory=dict)
    failures: int = 0
    estimate: Estimate = field(default_factory=lambda: Estimate.of([]))
    vs_reference: Estimate = field(default_factory=lambda: Estimate.of([]))
    vs_micronet: Estimate = field(default_factory=lambda: Estimate.of([]))
    vs_control: Estimate = field(default_factory=lambda: Estimate.of([]))
    planned: int = 0

    @property
    def is_reference(self) -> bool:
        """A reference model or a control: not a candidate of the search."""
        return self.trial is None

    @property
    def floor(self) -> float:
        """The mean floor threshold over its repeats (0 when none stored)."""
        return sum(self.floors.values()) / len(self.floors) if self.floors else 0.0

    @property
    def learned(self) -> bool:
        """Its confirmed mean beats the best constant prediction (plus the margin)."""
        return self.estimate.n > 0 and self.estimate.mean > self.floor

    @property
    def within_reference(self) -> str:
        """``yes``, ``no`` or ``not settled``: is it within 1 point of the reference, by the paired interval?"""
        return within(self.vs_reference) if not self.is_reference else "-"

    def row(self, reference: Mapping[str, float | None]) -> dict[str, Any]:
        """Plain columns for tables and CSV files; ratios against ``reference``'s costs."""
        def ratio(name: str, value: float | None) -> float:
            base = reference.get(name)
            return float(base) / float(value) if base and value else math.nan

        return {
            "subject": self.subject, "label": self.label, "number": self.trial, "params": self.params,
            "flops": self.flops, "params_ratio": ratio("params", self.params), "flops_ratio": ratio("flops", self.flops),
            "search_metric": self.search_metric, "confirmed_n": self.estimate.n, "confirmed_mean": self.estimate.mean,
            "confirmed_std": self.estimate.std, "confirmed_low": self.estimate.low, "confirmed_high": self.estimate.high,
            "vs_reference_mean": self.vs_reference.mean, "vs_reference_low": self.vs_reference.low,
            "vs_reference_high": self.vs_reference.high,
            "vs_micronet_mean": self.vs_micronet.mean, "vs_micronet_low": self.vs_micronet.low,
            "vs_micronet_high": self.vs_micronet.high, "vs_control_mean": self.vs_control.mean,
            "vs_control_low": self.vs_control.low, "vs_control_high": self.vs_control.high,
            "within_1_point_of_reference": self.within_reference,
            "learned": self.learned, "floor": self.floor, "failures": self.failures, "planned": self.planned,
        }


@dataclass
class Confirmation:
    """Every confirmed model of a study, references first.

    Attributes:
        summaries: by subject.
        repeats: the planned repeats (seed, fold), in order.
        search_repeat: the search's own (seed, fold), not counted.
        budgets: parameter budgets to state a claim for.
        objectives: the study's objectives (for the confirmed front).
        metric_label: how the metric is called (``building IoU``).
        reference_costs: the costs of the reference ratios are against.
        reference: that reference's subject (``unet``, ``base``), and ``reference_label`` its name.
        control: the control's subject (None: the candidates do not inherit), ``control_label`` its name.
    """

    summaries: dict[str, Summary]
    repeats: list[Repeat]
    search_repeat: Repeat
    budgets: list[float]
    objectives: list[str]
    metric_label: str
    reference_costs: dict[str, float | None]
    reference: str = "unet"
    reference_label: str = "U-Net"
    control: str | None = None
    control_label: str = ""

    @property
    def empty(self) -> bool:
        return not any(summary.estimate.n for summary in self.summaries.values())

    @property
    def candidates(self) -> list[Summary]:
        return [summary for summary in self.summaries.values() if not summary.is_reference]

    def front(self) -> list[Summary]:
        """The confirmed candidates that learned something and that no other one beats on the
        confirmed mean and the study's costs, by params."""
        usable = [summary for summary in self.candidates if summary.learned and summary.params is not None]
        if not usable:
            return []
        names = [name for name in self.objectives if name in ("metric", "params", "flops")] or ["metric", "params"]
        points = [[summary.estimate.mean if name == "metric" else float(getattr(summary, name) or math.nan)
                   for name in names] for summary in usable]
        mask = pareto_mask(points, directions(names))
        return sorted((summary for summary, keep in zip(usable, mask) if keep), key=lambda summary: summary.params or 0)

    def best_within(self, budget: float) -> Summary | None:
        """The confirmed candidate within ``budget`` params that the search's own run ranks first.

        It is picked on the run the search made, not on the further seeds: picking the best of
        several confirmed means and then quoting that mean's interval would flatter it again.
        """
        fitting = [summary for summary in self.candidates
                   if summary.estimate.n and summary.params is not None and summary.params <= budget]
        return max(fitting, key=lambda summary: summary.search_metric or 0.0, default=None)

    def table(self) -> str:
        """The confirmed models as a terminal table, then the claim per budget."""
        label, reference = self.metric_label, self.reference_label
        rows = []
        front = {summary.subject for summary in self.front()}
        control = self.control is not None and self.control in self.summaries
        for summary in self.summaries.values():
            row = summary.row(self.reference_costs)
            search = "-" if summary.search_metric is None else f"{summary.search_metric:.3f}"
            vs = "-" if summary.subject == self.reference else summary.vs_reference.text(scale=100, digits=1, signed=True)
            vs_control = [summary.vs_control.text(scale=100, digits=1, signed=True)] if control else []
            verdict = ("reference" if summary.is_reference else
                       "on the confirmed front" if summary.subject in front else
                       "learned" if summary.learned else "not above the floor" if summary.estimate.n else "not run yet")
            rows.append([summary.label, format_count(summary.params), format_count(summary.flops),
                         _times(row["params_ratio"]), search, summary.estimate.text(), vs, *vs_control,
                         summary.within_reference, verdict])
        own = f"seed {self.search_repeat[0]}" + ("" if self.search_repeat[1] is None else f" fold {self.search_repeat[1]}")
        table = format_table(
            ["model", "params", "FLOPs", f"vs {reference}", f"search ({own})", f"confirmed {label} [95% CI] n",
             f"minus {reference}, points [95% CI]", *([f"minus {self.control_label}"] if control else []),
             "within 1 point", "verdict"], rows,
            title=f"confirmation over {len(self.repeats)} repeats (the search's own run is shown, not counted)")
        return table + "\n" + "\n".join(self.claims())

    def claims(self) -> list[str]:
        """One sentence per budget: what the data supports about the best model within it."""
        return [self.claim(budget) for budget in self.budgets]

    def claim(self, budget: float) -> str:
        label, reference = self.metric_label, self.reference_label
        head = f"<= {format_count(budget)} params"
        best = self.best_within(budget)
        if best is None:
            return f"{head}: not reached (no confirmed model within it)."
        row = best.row(self.reference_costs)
        size = f"{_times(row['params_ratio'])} fewer params and {_times(row['flops_ratio'])} fewer FLOPs than {reference}"
        if not best.learned:
            return (f"{head}: not reached: {best.label} (the best within it on the search's run, at {size}) scores "
                    f"{label} {best.estimate.mean:.3f} on the further seeds, not above the floor {best.floor:.3f}.")
        text = f"{head}: {best.label}, at {size}, scores {label} {best.estimate.mean:.3f}"
        if best.estimate.has_interval:
            text += f" (95% CI {best.estimate.low:.3f} to {best.estimate.high:.3f}, n={best.estimate.n})"
        else:
            text += f" (n={best.estimate.n}, no interval)"
        difference = best.vs_reference
        if difference.n == 0:
            return text + f"; {reference} was not run on the same repeats, so no comparison."
        points = difference.mean * 100
        side = "above" if points >= 0 else "below"
        text += f"; {abs(points):.1f} points {side} {reference}"
        if difference.has_interval:
            text += f" (paired 95% CI {difference.low * 100:+.1f} to {difference.high * 100:+.1f})"
        verdict = {"yes": f"within {WITHIN_POINTS * 100:g} point of {reference}, shown",
                   "no": f"more than {WITHIN_POINTS * 100:g} point below {reference}, shown",
                   "not settled": f"whether it is within {WITHIN_POINTS * 100:g} point of {reference} is not settled"}
        if difference.has_interval and difference.low > 0:
            verdict["yes"] = f"above {reference}, shown"
        text = f"{text}: {verdict[within(difference)]}"
        control = best.vs_control
        if control.n:
            text += (f"; against {self.control_label} as long as the candidates (the extra training alone), "
                     f"{control.mean * 100:+.1f} points")
            if control.has_interval:
                text += f" (paired 95% CI {control.low * 100:+.1f} to {control.high * 100:+.1f})"
        return text + "."


def _paired(a: Mapping[Repeat, float], b: Mapping[Repeat, float]) -> Estimate:
    """``a - b`` on the repeats both have (same seed, same fold), folds averaged per seed."""
    return paired_difference(a, b, bounds=(-1.0, 1.0), blocks=_blocked)


def read_confirmation(
    attrs: Mapping[str, Any], info: StudyInfo, records: Sequence[TrialRecord]
) -> Confirmation | None:
    """The confirmation stored on a study (its user attributes), or None if it has none."""
    plan = attrs.get(PLAN_KEY)
    results = [value for key, value in attrs.items() if key.startswith(RESULT_PREFIX) and isinstance(value, Mapping)]
    if not plan and not results:
        return None
    plan = plan or {}
    by_number = {record.number: record for record in records}
    repeats = [(int(seed), None if fold is None else int(fold)) for seed, fold in plan.get("repeats", [])]
    search_repeat = tuple(plan.get("search_repeat") or (info.experiment.get("train", {}).get("seed", 0), None))
    references = reference_subjects(info)
    primary = primary_reference(info)
    summaries: dict[str, Summary] = {}

    def summary(subject: str) -> Summary:
        if subject not in summaries:
            if subject.startswith("trial-"):
                number = trial_of(subject)
                record = by_number.get(number)
                summaries[subject] = Summary(
                    subject, f"trial {number}", number, getattr(record, "params", None), getattr(record, "flops", None),
                    getattr(record, "metric", None))
            else:  # a reference, or a control: the parent's size, no search run of its own
                control = is_control(subject)
                reference = info.references.get(parent_subject(info) if control else subject) or {}
                summaries[subject] = Summary(
                    subject, subject_label(subject, info), None, reference.get("params"), reference.get("flops"),
                    None if control else reference.get("metric"))
        return summaries[subject]

    for subject in [*references, *plan.get("subjects", [])]:
        summary(subject).planned = len(repeats)
    floor = Floor.from_dict(info.floor)
    for result in sorted(results, key=lambda value: (str(value.get("subject")), value.get("seed", 0))):
        entry = summary(str(result["subject"]))
        repeat = (int(result["seed"]), None if result.get("fold") is None else int(result["fold"]))
        entry.scores[repeat] = float(result.get("metric") or 0.0)
        # A study that keeps the old rule (no floor stored) asks for a metric above 0 only.
        entry.floors[repeat] = float(result.get("constant", floor.constant)) + floor.margin if info.floor else 0.0
        entry.failures += bool(result.get("failure"))
    control = study_control(info, attrs)
    control = control if control in summaries else None
    reference_scores = summaries[primary].scores if primary in summaries else {}
    micronet_scores = summaries["micronet"].scores if "micronet" in summaries else {}
    control_scores = summaries[control].scores if control is not None else {}
    for entry in summaries.values():
        # Every metric here (IoU, F1, accuracy) lies in [0, 1], a difference of two in [-1, 1].
        entry.estimate = Estimate.of(_blocked(entry.scores), bounds=(0.0, 1.0))
        if entry.subject != primary:
            entry.vs_reference = _paired(entry.scores, reference_scores)
        if entry.subject != "micronet" and micronet_scores:
            entry.vs_micronet = _paired(entry.scores, micronet_scores)
        if not entry.is_reference:
            entry.vs_control = _paired(entry.scores, control_scores)
    first = [*references, *([control] if control else [])]
    ordered = dict(sorted(summaries.items(), key=lambda item: (
        item[0] not in first, first.index(item[0]) if item[0] in first else 0, item[1].params or 0)))
    budgets = [parse_count(budget) for budget in plan.get("budgets", [])]
    if not budgets and info.budget.get("max_params"):
        budgets = [float(info.budget["max_params"])]
    return Confirmation(
        summaries=ordered, repeats=repeats, search_repeat=search_repeat, budgets=budgets,
        objectives=list(info.objectives), metric_label=info.metric_label or info.metric,
        reference_costs=dict(info.references.get(primary) or {}), reference=primary,
        reference_label=reference_label(primary, info.references), control=control,
        control_label=subject_label(control, info) if control else "",
    )


def _times(ratio: float) -> str:
    return "?x" if ratio != ratio else f"{ratio:.1f}x"


def _blocked(values: Mapping[Repeat, float]) -> list[float]:
    """The values to take an interval over: as they are, or with folds each seed's folds averaged
    first (the folds of one seed share its training noise and the folds' difficulty is systematic,
    so they are not independent draws: n counts seeds)."""
    if all(fold is None for _seed, fold in values):
        return [values[repeat] for repeat in sorted(values, key=_order)]
    seeds: dict[int, list[float]] = {}
    for (seed, _fold), value in sorted(values.items(), key=lambda item: _order(item[0])):
        seeds.setdefault(seed, []).append(value)
    return [sum(group) / len(group) for group in seeds.values()]


def _order(repeat: Repeat) -> tuple[int, int]:
    seed, fold = repeat
    return seed, -1 if fold is None else fold
