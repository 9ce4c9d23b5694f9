"""The paper's claim on real pixels, through the search and its confirmation: means, intervals, n.

A thin caller of the library: ``compressor search`` on ``experiments/paper.yaml`` (U-Net and
Micro-Net trained once, candidates inheriting the trained U-Net's weights, then
``search.confirm``: the front's best trials and both references retrained on 5 further
seeds), then the table the README shows, read from the study's confirmation, and the
paper's targets judged by the intervals:

- at least 30x fewer params than U-Net, within 1 point of it;
- a model that dominates Micro-Net (no more params, no more FLOPs, a better metric);
- stretch: at least 100x fewer params and 10x fewer FLOPs, within 1 point of U-Net.

Each is "met" only when the 95% interval of the paired difference says so, "not met" when it
says the opposite, and "not settled" otherwise.

    python experiments/benchmarks/paper_table.py [--set search.confirm.seeds=3] [--set search.n_trials=10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import write_json  # noqa: E402

from compressor.cli.console import configure_logging  # noqa: E402
from compressor.confirm.results import Confirmation, Summary  # noqa: E402
from compressor.confirm.subjects import CONTROL  # noqa: E402
from compressor.experiment import load_experiment  # noqa: E402
from compressor.intervals import WITHIN_POINTS, within  # noqa: E402
from compressor.pipeline import run_search  # noqa: E402
from compressor.tables import format_table  # noqa: E402
from compressor.units import format_count  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def targets(confirmation: Confirmation) -> dict[str, dict[str, object]]:
    """Each target: ``met`` / ``not met`` / ``not settled``, and the models that decide it."""
    unet, micronet = confirmation.summaries["unet"], confirmation.summaries["micronet"]
    confirmed = [summary for summary in confirmation.candidates if summary.learned]

    confirmed = [summary for summary in confirmed if summary.params and summary.flops]

    def ratio(summary: Summary, name: str) -> float:
        return float(getattr(unet, name)) / float(getattr(summary, name))

    def judge(models: list[Summary], verdict_of) -> dict[str, object]:
        """One model per target, picked on the search's own run (so the further seeds judge it without
        having chosen it, and several candidates do not give several chances)."""
        if not models:
            return {"outcome": "not met", "model": None, "why": "no confirmed model of that size learned something"}
        chosen = max(models, key=lambda summary: summary.search_metric or 0.0)
        verdict = verdict_of(chosen)
        outcome = {"yes": "met", "no": "not met"}.get(verdict, "not settled")
        found = {"outcome": outcome, "model": chosen.label, "verdict": verdict}
        if chosen.vs_control.n and verdict_of is not beats_micronet:  # against U-Net trained as long
            control = within(chosen.vs_control)
            found["against U-Net fine-tuned as long"] = {"yes": "met", "no": "not met"}.get(control, "not settled")
        return found

    def beats_micronet(summary: Summary) -> str:
        difference = summary.vs_micronet
        if not difference.has_interval:
            return "not settled"
        return "yes" if difference.low > 0 else "no" if difference.high <= 0 else "not settled"

    return {
        f"30x fewer params, within {WITHIN_POINTS * 100:g} point of U-Net": judge(
            [s for s in confirmed if ratio(s, "params") >= 30], lambda s: s.within_reference),
        "dominates Micro-Net": judge(
            [s for s in confirmed if s.params <= micronet.params and s.flops <= micronet.flops], beats_micronet),
        f"stretch: 100x fewer params and 10x fewer FLOPs, within {WITHIN_POINTS * 100:g} point of U-Net": judge(
            [s for s in confirmed if ratio(s, "params") >= 100 and ratio(s, "flops") >= 10], lambda s: s.within_reference),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "experiments" / "paper.yaml"))
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args()
    configure_logging()
    experiment = load_experiment(args.config, overrides=args.overrides)
    result = run_search(experiment)
    confirmation = result.confirmation
    if confirmation is None:
        raise SystemExit("the search did not confirm its front (search.confirm in the experiment file)")
    label = confirmation.metric_label
    winners = {budget: confirmation.best_within(budget) for budget in confirmation.budgets}
    rows = []
    for summary in confirmation.summaries.values():
        row = summary.row(confirmation.unet)
        budgets = [format_count(budget) for budget, best in winners.items() if best is summary]
        rows.append([
            summary.label + (f" (best <= {', <= '.join(budgets)})" if budgets else ""),
            format_count(summary.params), format_count(summary.flops), summary.estimate.text(),
            "-" if summary.subject == "unet" else summary.vs_reference.text(scale=100, digits=1, signed=True),
            "-" if summary.subject in ("unet", CONTROL) else summary.vs_control.text(scale=100, digits=1, signed=True),
            f"{row['params_ratio']:.1f}x", f"{row['flops_ratio']:.1f}x",
            "-" if summary.search_metric is None else f"{summary.search_metric:.3f}",
        ])
    print(format_table(
        ["model", "params", "FLOPs", f"{label}, mean [95% CI] n", "minus U-Net, points [95% CI]",
         "minus U-Net fine-tuned", "params vs U-Net",
         "FLOPs vs U-Net", "search run (not counted)"], rows,
        title=f"{experiment.name}: {len(confirmation.repeats)} repeats; FLOPs at {experiment.cost.input_size}x"
              f"{experiment.cost.input_size}, one multiply-add = one flop"))
    for claim in confirmation.claims():
        print(claim)
    judged = targets(confirmation)
    for name, verdict in judged.items():
        control = verdict.get("against U-Net fine-tuned as long")
        print(f"target {name}: {verdict['outcome']} ({verdict.get('model') or verdict.get('why')})"
              + (f"; against U-Net fine-tuned as long: {control}" if control else ""))
    path = write_json("paper", {
        "study": result.study_name, "repeats": confirmation.repeats, "search_repeat": confirmation.search_repeat,
        "models": {subject: {**summary.row(confirmation.unet), "scores": {f"{seed}/{fold}": value for (seed, fold), value
                                                                          in summary.scores.items()}}
                   for subject, summary in confirmation.summaries.items()},
        "claims": confirmation.claims(), "targets": judged, "trials": len(result.records),
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
