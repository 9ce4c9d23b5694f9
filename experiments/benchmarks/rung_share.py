"""What a search's rung evaluations lose when they read a share of the validation windows.

A search evaluates each trained trial at its rungs (1/9 and 1/3 of the training) only to rank it
against the other trials there (:func:`compressor.search.fidelity.should_stop`); the final
evaluation is what the trial is judged by. ``search.rung_share`` makes the rung evaluations read a
fixed share of each validation scene's sliding windows (:func:`compressor.train.window_corners`).

This trains ``--trials`` candidates of the quickstart's search (``experiments/quickstart.yaml``:
the unet_family space, candidates inheriting from the trained U-Net, fine-tuned 100 steps, drawn
by a seeded random sampler; over-budget ones are drawn again) and, at each rung, evaluates every
candidate on the whole validation region and on each share of ``--shares``, timing each. It
reports, per share:

* the evaluation time against the whole one (median ratio over every rung evaluation);
* the rank agreement (Spearman) of the share's rung scores with the whole rung scores, and with
  the final scores, across candidates;
* the stop decisions: which candidates the rung rule (keep the best third by Pareto rank of
  metric, params and FLOPs, as the quickstart's search does) stops with the share's scores
  against with the whole ones.

Writes ``experiments/benchmarks/results/rung_share.json``.

    python experiments/benchmarks/rung_share.py --trials 12 --threads 1 --set train.eval_window=256 --set train.eval_batch_size=4
    python experiments/benchmarks/rung_share.py --trials 12 --threads 1 --name rung_share-288   # the quickstart as it is
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import add_candidate_arguments, feasible_candidates, machine, quickstart_setup, write_json  # noqa: E402


def spearman(first: list[float], second: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    import pandas as pd

    ranks = pd.DataFrame({"a": first, "b": second}).rank()
    return float(np.corrcoef(ranks["a"], ranks["b"])[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_candidate_arguments(parser, trials=12, run_dir="rung_share")
    parser.add_argument("--shares", default="0.5,0.25", help="shares of the windows compared with the whole")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override of the quickstart's experiment (e.g. train.eval_window=256; repeatable)")
    parser.add_argument("--name", default="rung_share", help="results/<name>.json")
    args = parser.parse_args()
    shares = [float(value) for value in args.shares.split(",")]

    from compressor.candidates.setup import start_candidate
    from compressor.search.fidelity import should_stop
    from compressor.study import objective_values
    from compressor.train import evaluate, train

    setup = quickstart_setup(args.run_dir, args.threads, args.set)
    config = setup.start_config
    load_before = os.getloadavg()[0]
    candidates: list[dict[str, Any]] = []
    drawn = feasible_candidates(setup, seed=args.seed, threads=args.threads)
    while len(candidates) < args.trials:
        study, trial, recipe, network, cost = next(drawn)
        rungs: list[dict[str, Any]] = []

        def at_rung(step: int, metrics: Any, network: Any = network, rungs: list[dict[str, Any]] = rungs) -> bool:
            found = {"step": step, "scores": {}, "seconds": {}}
            for share in [1.0, *shares]:  # the loop's own evaluation was whole: this one is timed alike
                started = time.perf_counter()
                score = setup.metric(evaluate(network, setup.data, config, share=share))
                found["seconds"][str(share)] = round(time.perf_counter() - started, 4)
                found["scores"][str(share)] = round(score, 5)
            assert abs(found["scores"]["1.0"] - setup.metric(metrics)) <= 5e-6  # the loop's whole evaluation (rounded)
            rungs.append(found)
            return True

        start_candidate(setup, network)
        result = train(network, setup.data, config, evaluate_at=list(setup.config.rungs), callback=at_rung,
                       description=f"candidate {len(candidates)}")
        final = setup.metric(result.metrics)
        candidates.append({
            "recipe": setup.space.describe(trial.params, recipe), "params": cost.params, "flops": cost.flops,
            "final": round(final, 5), "rungs": rungs, "train_seconds": round(result.train_seconds, 2),
        })
        study.tell(trial, setup.values(final, cost))
        print(f"{len(candidates):>2}/{args.trials}  final {final:.3f}  rungs "
              + "  ".join(f"{rung['step']}: " + " ".join(f"{share} {rung['scores'][share]:.3f}/{rung['seconds'][share]:.2f}s"
                                                       for share in rung["scores"]) for rung in rungs)
              + f"  {candidates[-1]['recipe']}", flush=True)

    summary: dict[str, Any] = {}
    finals = [candidate["final"] for candidate in candidates]
    for share in [1.0, *shares]:
        key = str(share)
        ratios = [rung["seconds"][key] / rung["seconds"]["1.0"] for candidate in candidates for rung in candidate["rungs"]]
        per_rung = []
        for index, fraction in enumerate(setup.config.rungs):
            scores = [candidate["rungs"][index]["scores"][key] for candidate in candidates]
            whole = [candidate["rungs"][index]["scores"]["1.0"] for candidate in candidates]
            points = [objective_values(score, candidate, setup.config.objectives) for score, candidate in zip(scores, candidates)]
            stopped = [number for number, point in enumerate(points)
                       if should_stop(point, points[:number] + points[number + 1:], setup.directions,
                                      keep_fraction=setup.config.keep_fraction, min_trials=setup.config.min_trials_at_rung)]
            per_rung.append({
                "rung": round(fraction, 4), "step": candidates[0]["rungs"][index]["step"],
                "spearman_with_whole": round(spearman(scores, whole), 3),
                "spearman_with_final": round(spearman(scores, finals), 3),
                "stopped": stopped,
            })
        summary[key] = {"median_time_ratio": round(statistics.median(ratios), 3), "rungs": per_rung}
    for key, found in summary.items():
        whole_stops = summary["1.0"]["rungs"]
        print(f"share {key:>4}: evaluation time x{found['median_time_ratio']:.2f} of the whole; " + "; ".join(
            f"rung {rung['step']}: Spearman with whole {rung['spearman_with_whole']:+.2f}, with final "
            f"{rung['spearman_with_final']:+.2f}, stops {rung['stopped']} (whole: {whole['stopped']})"
            for rung, whole in zip(found["rungs"], whole_stops)))
    payload = {
        "machine": machine(), "threads": args.threads, "seed": args.seed, "drawn": len(study.trials),
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "summary": summary, "candidates": candidates,
    }
    print(f"{len(study.trials)} drawn, {len(candidates)} within the budget; load average {load_before:.2f} before, "
          f"{payload['load_after']:.2f} after ({os.cpu_count()} cores)")
    payload["overrides"] = args.set
    write_json(args.name, payload)


if __name__ == "__main__":
    main()
