"""Which sampler the search should use by default: TPE, NSGA-II, Gaussian process and random at equal compute.

Each sampler searches the quickstart's space on its data (``experiments/quickstart.yaml``: unet_family
on the SpaceNet tile, candidates inheriting from the trained U-Net, 100 fine-tuning steps) for
``--trials`` trials on each seed, with no trial stopped (the rung scores are recorded, as in
``fidelity_inherit.py``, whose random runs are these: the studies are shared in ``--run-dir``, a
rerun resumes them). Compute is counted in training steps taken (an over-budget trial takes
none, a recipe already trained is reused) and in wall seconds (building and costing included),
and the hypervolume is the studies' own (each cost on a log axis down from 1.1x U-Net's, the
metric from 0).

Per seed, every sampler is read at the compute all of them reached (the least total steps of
the seed's runs), and the compute each needed to reach random's final hypervolume is counted.
The targets: the default reaches random's final hypervolume with at most half of random's
compute, or 1.3x random's hypervolume at equal compute.

Writes ``experiments/benchmarks/results/sampler_choice.json``.

    python experiments/benchmarks/sampler_choice.py --seeds 0 1 2 3 4 --trials 24 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import ROOT, hypervolume_at, hypervolume_history, quickstart_search, write_json  # noqa: E402

SAMPLERS = ("random", "tpe", "nsga2", "gp")
LABELS = {"tpe": "TPE", "nsga2": "NSGA-II", "gp": "GP", "random": "random"}
OBJECTIVES = ["metric", "params", "flops"]


def first_trials(study: Any, trials: int) -> list[Any]:
    """The records of the study's first ``trials`` trials that ended other than failed, in trial order (a study
    run further, as fidelity_inherit.py may, is read up to there; a trial failed because its process was
    stopped is replaced by its retry, which has a later number)."""
    from compressor.study import trial_records

    ended = [record for record in trial_records(study) if record.status in ("complete", "infeasible", "stopped")]
    return sorted(ended, key=lambda record: record.number)[:trials]


def histories(study: Any, trials: int) -> dict[str, list[tuple[int, float, float]]]:
    """The hypervolume after each of :func:`first_trials` against the training steps and the wall
    seconds spent so far."""
    from compressor.study import hypervolume_reference

    records = first_trials(study, trials)
    reference = hypervolume_reference(study)
    return {
        "steps_history": hypervolume_history(records, OBJECTIVES, reference,
                                     cost=lambda record: 0 if record.duplicate_of is not None else record.steps or 0),
        "seconds_history": hypervolume_history(records, OBJECTIVES, reference, cost=lambda record: record.wall_seconds or 0.0),
    }


def needed(history: list[tuple[int, float, float]], target: float) -> float | None:
    """The compute spent when the hypervolume first reached ``target`` (None: never)."""
    return next((spent for _, spent, value in history if value >= target - 1e-12), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "quickstart_searches"))
    args = parser.parse_args()
    from compressor.cli.console import configure_logging
    from compressor.intervals import Estimate
    from compressor.tables import format_table

    configure_logging()
    started, load = time.perf_counter(), os.getloadavg()
    runs: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:  # seed by seed: a run cut short leaves every sampler with as many seeds
        runs[seed] = {}
        for sampler in args.samplers:
            study = quickstart_search(args.run_dir, study=f"{sampler}-s{seed}", sampler=sampler, seed=seed,
                                      trials=args.trials, threads=args.threads)
            records = first_trials(study, args.trials)
            found = histories(study, args.trials)
            runs[seed][sampler] = {
                **found, "hypervolume": found["steps_history"][-1][2], "steps": found["steps_history"][-1][1],
                "seconds": round(found["seconds_history"][-1][1], 1),
                "trials": {status: sum(r.status == status for r in records) for status in ("complete", "infeasible", "failed")},
                "duplicates": sum(r.duplicate_of is not None for r in records),
                "best_metric": max((r.metric or 0.0 for r in records if r.status == "complete" and r.feasible), default=0.0),
            }
            print(f"seed {seed} {LABELS[sampler]}: hypervolume {runs[seed][sampler]['hypervolume']:.4f} after "
                  f"{runs[seed][sampler]['steps']} steps, {runs[seed][sampler]['seconds']:.0f} s", flush=True)
    summary, rows = {}, []
    for sampler in args.samplers:
        at_equal, at_equal_seconds, ratio, share = [], [], [], []
        for runs_of_seed in runs.values():
            mine, random = runs_of_seed[sampler], runs_of_seed.get("random")
            steps = min(run["steps"] for run in runs_of_seed.values())  # the compute every sampler reached
            seconds = min(run["seconds"] for run in runs_of_seed.values())
            at_equal.append(hypervolume_at(mine["steps_history"], steps))
            at_equal_seconds.append(hypervolume_at(mine["seconds_history"], seconds))
            if random is not None:
                base = hypervolume_at(random["steps_history"], steps)
                ratio.append(at_equal[-1] / base if base else float("nan"))
                reach = needed(mine["steps_history"], random["hypervolume"])
                share.append(reach / random["steps"] if reach is not None else float("inf"))
        summary[sampler] = {"hypervolume_at_equal_steps": at_equal, "hypervolume_at_equal_seconds": at_equal_seconds,
                            "ratio_to_random_at_equal_steps": ratio, "steps_to_reach_random_share": share}
        ratios = Estimate.of([value for value in ratio if value == value])
        rows.append([LABELS[sampler], f"{statistics.median(at_equal):.4f}", f"{statistics.median(at_equal_seconds):.4f}",
                     ratios.text(digits=2), f"{statistics.median(share):.2f}x" if share else "-",
                     " ".join(f"{value:.2f}" if value != float("inf") else "never" for value in share)])
    print()
    print(format_table(
        ["sampler", "HV at equal steps (median)", "HV at equal seconds (median)", "HV / random's at equal steps [95% CI]",
         "steps to reach random's final HV (median share of random's)", "per seed"],
        rows, title=f"{len(runs)} seeds x {args.trials} trials, quickstart space and data, no stopping"))
    seconds = time.perf_counter() - started
    print(f"{seconds:.0f} s; load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    path = write_json("sampler_choice", {"seeds": args.seeds, "trials": args.trials, "threads": args.threads,
                                         "runs": {str(seed): value for seed, value in runs.items()},
                                         "summary": summary, "seconds": round(seconds), "load_before": load[0]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
