"""How many batches a search's batch-norm re-estimation needs: its time against its effect.

Before an inheriting candidate's first fine-tuning step, a search re-estimates every batch norm's
statistics on ``finetune.bn_reestimate`` batches of training patches (16 by default) and measures
its output error against the parent (``compressor.candidates.setup.start_candidate``). This trains
``--trials`` candidates of the quickstart's search (``experiments/quickstart.yaml``, drawn by a
seeded random sampler; over-budget ones are drawn again) once per batch count of ``--batches``,
the same candidate built the same way each time, and reports per count, paired by candidate
against the first count: the start's seconds, the start error, the score at the first rung (1/9 of
the fine-tuning, where the statistics matter most) and the final score, with 95% intervals.

Writes ``experiments/benchmarks/results/calibration_size.json``.

    python experiments/benchmarks/calibration_size.py --trials 10 --batches 16,4,1,0 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import add_candidate_arguments, feasible_candidates, machine, quickstart_setup, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_candidate_arguments(parser, trials=10, run_dir="calibration_size")
    parser.add_argument("--batches", default="16,4,1,0", help="batch counts compared; the first is the reference")
    args = parser.parse_args()
    counts = [int(value) for value in args.batches.split(",")]

    from compressor.candidates.setup import start_candidate
    from compressor.intervals import Estimate
    from compressor.threads import torch_threads
    from compressor.train import train

    base = quickstart_setup(args.run_dir, args.threads)
    experiment = base.experiment
    setups = {count: dataclasses.replace(base, experiment=dataclasses.replace(
        experiment, finetune=dataclasses.replace(experiment.finetune, bn_reestimate=count))) for count in counts}
    load_before = os.getloadavg()[0]
    candidates: list[dict[str, Any]] = []
    drawn = feasible_candidates(base, seed=args.seed, threads=args.threads)
    while len(candidates) < args.trials:
        study, trial, recipe, _, cost = next(drawn)
        runs = {}
        for count, setup in setups.items():
            with torch_threads(args.threads):
                network = setup.build(recipe)
            started = time.perf_counter()
            start = start_candidate(setup, network)
            seconds = time.perf_counter() - started
            rungs: list[float] = []
            result = train(network, setup.data, setup.start_config, evaluate_at=list(setup.config.rungs)[:1],
                           callback=lambda step, metrics, rungs=rungs, setup=setup: rungs.append(setup.metric(metrics)),
                           description=f"candidate {len(candidates)}, {count} batches")
            runs[str(count)] = {"start_seconds": round(seconds, 3), "start_error": start.error,
                                "first_rung": round(rungs[0], 5), "final": round(base.metric(result.metrics), 5)}
        candidates.append({"recipe": base.space.describe(trial.params, recipe), "params": cost.params, "runs": runs})
        study.tell(trial, base.values(runs[str(counts[0])]["final"], cost))
        print(f"{len(candidates):>2}/{args.trials}  " + "  ".join(
            f"{count}: {run['start_seconds']:.2f}s err {run['start_error']} rung {run['first_rung']:.3f} final {run['final']:.3f}"
            for count, run in runs.items()) + f"  {candidates[-1]['recipe']}", flush=True)

    reference = str(counts[0])
    summary = {}
    for count in map(str, counts):
        def paired(key: str, count: str = count) -> Estimate:
            return Estimate.of([100 * (candidate["runs"][count][key] - candidate["runs"][reference][key])
                                for candidate in candidates])

        rung, final = paired("first_rung"), paired("final")
        summary[count] = {
            "median_start_seconds": round(statistics.median(c["runs"][count]["start_seconds"] for c in candidates), 3),
            "median_start_error": statistics.median(c["runs"][count]["start_error"] for c in candidates
                                                    if c["runs"][count]["start_error"] is not None),
            "first_rung_minus_reference_points": rung.to_dict(),
            "final_minus_reference_points": final.to_dict(),
        }
        found = summary[count]
        print(f"{count:>3} batches: start {found['median_start_seconds']:.2f} s (median), start error "
              f"{found['median_start_error']:.3f}; against {reference}: first rung "
              f"{rung.text(digits=1, signed=True)} points, final {final.text(digits=1, signed=True)} points")
    payload = {
        "machine": machine(), "threads": args.threads, "seed": args.seed, "counts": counts,
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "summary": summary, "candidates": candidates,
    }
    write_json("calibration_size", payload)


if __name__ == "__main__":
    main()
