"""Search efficiency: hypervolume against trials for TPE, NSGA-II and random sampling on one space.

Every run searches ``unet_family`` on a narrow U-Net (base width 8, batch norm) with the same
synthetic binary data, the same short fixed training (no rung stopping) and the same budget;
only the sampler and its seed change. After each trial the hypervolume of the feasible
finished front (building IoU up, params and FLOPs down) is computed by the studies' own measure
against one reference for all runs: each cost on a log axis from 1.1 times the reference
U-Net's (the study's ``references`` attribute) down to 100,000 times smaller, the metric from 0
(:func:`compressor.study.study_hypervolume`). Printed as the median over seeds at a few trial
counts, with the ratio to random sampling at equal trials. Writes
``experiments/benchmarks/results/search_efficiency.json``.

    python experiments/benchmarks/search_efficiency.py                      # 3 samplers x 3 seeds x 24 trials
    python experiments/benchmarks/search_efficiency.py --trials 48 --at 12 24 36 48 --steps 150
    python experiments/benchmarks/search_efficiency.py --rescore            # the stored runs, scored again

Every candidate is at least a hundred times smaller than the reference U-Net: a linear box
(``U-Net params x U-Net FLOPs x 1``, what runs before 2026-12-05 measured, kept in each stored
run's ``hypervolume_share``) was then 99.8% filled by any of them, and measured only the best
IoU found; on the log axis a model ten times smaller again still counts. The figure does not
depend on timing (trials run with one thread each, several runs at a time with ``--jobs``); it
is deterministic for the seeds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, hypervolume_history, synthetic_search, unet_reference, write_json  # noqa: E402

from compressor.experiment import Experiment  # noqa: E402
from compressor.tables import format_table  # noqa: E402

SAMPLERS = ("tpe", "nsga2", "random")
LABELS = {"tpe": "TPE", "nsga2": "NSGA-II", "random": "random"}
OBJECTIVES = ["metric", "params", "flops"]


def experiment(run_dir: Path, *, sampler: str, seed: int, trials: int, steps: int) -> Experiment:
    return Experiment.from_dict(synthetic_search(
        f"efficiency-{sampler}-{seed}", run_dir, steps=steps, threads=1, lr=0.002, max_params="60k",
        search={"n_trials": trials, "sampler": sampler, "seed": seed, "rungs": []},
    ), source="search efficiency benchmark")


def run_one(job: tuple[str, int, int, int, bool]) -> dict[str, Any]:
    """One search (in its own process): the hypervolume share after each trial."""
    sampler, seed, trials, steps, quiet = job
    import torch

    from compressor.pipeline import run_search

    torch.set_num_threads(1)  # building and costing candidates too, not only training
    tag = f"[{LABELS[sampler]} seed {seed}]"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result = run_search(experiment(Path(folder), sampler=sampler, seed=seed, trials=trials, steps=steps),
                            echo=(lambda line: None) if quiet else (lambda line: print(tag, line, flush=True)))
        unet = result.study.user_attrs["references"]["unet"]
    best = 0.0
    best_metric = []
    for record in result.records:
        if record.status == "complete" and record.feasible and record.metric is not None:
            best = max(best, record.metric)
        best_metric.append(best)
    statuses: dict[str, int] = {}
    for record in result.records:
        statuses[record.status] = statuses.get(record.status, 0) + 1
    run = {
        "sampler": sampler, "seed": seed, "reference": [0.0, float(unet["params"]), float(unet["flops"])],
        "best_metric": best_metric, "statuses": statuses, "seconds": round(time.perf_counter() - started, 1),
        "trials": [{"number": r.number, "status": r.status, "recipe": r.recipe_short, "params": r.params,
                    "flops": r.flops, "metric": r.metric, "duplicate_of": r.duplicate_of} for r in result.records],
    }
    return run | {"hypervolume": scored(run)}


def scored(run: dict[str, Any]) -> list[float]:
    """The hypervolume after each trial of a stored ``run`` (its trials' costs and metrics, against its
    U-Net ``reference``), by the studies' own measure."""
    unet = {"params": run["reference"][1], "flops": run["reference"][2]}
    records = [SimpleNamespace(number=trial["number"], status=trial["status"], feasible=True,
                               values=[trial["metric"], trial["params"], trial["flops"]])
               for trial in run["trials"]]  # "complete" is feasible: an over-budget trial is "infeasible"
    return [value for _, _, value in hypervolume_history(records, OBJECTIVES, unet_reference(unet), cost=lambda _: 0.0)]


def at(values: list[float], count: int) -> float:
    """The value after ``count`` trials (the last one if the run holds fewer)."""
    return values[min(count, len(values)) - 1] if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24, help="finished trials per search (default 24)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per trial (default 60)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    parser.add_argument("--at", type=int, nargs="+", default=[8, 16, 24], help="trial counts to report")
    parser.add_argument("--jobs", type=int, default=2, help="searches run at once, one thread each (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no line per trial")
    parser.add_argument("--rescore", action="store_true",
                        help="no search: score the stored runs again by the studies' measure, print and write them")
    args = parser.parse_args()
    stored: dict[str, Any] = {}
    if args.rescore:
        stored = json.loads((RESULTS / "search_efficiency.json").read_text())
        for key in ("trials", "steps", "seeds", "samplers", "at", "jobs"):
            setattr(args, key, stored[key])
        runs = [run | {"hypervolume": scored(run)} for run in stored["runs"]]
        seconds, load_before, load_after = stored["seconds"], tuple(stored["load_before"]), tuple(stored["load_after"])
    else:
        load_before = os.getloadavg()
        started = time.perf_counter()
        jobs = [(sampler, seed, args.trials, args.steps, args.quiet) for seed in args.seeds for sampler in args.samplers]
        if args.jobs > 1:
            with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
                runs = pool.map(run_one, jobs, chunksize=1)
        else:
            runs = [run_one(job) for job in jobs]
        seconds = time.perf_counter() - started
        load_after = os.getloadavg()

    def median(sampler: str, key: str, count: int) -> float:
        return statistics.median(at(run[key], count) for run in runs if run["sampler"] == sampler)

    others = [sampler for sampler in args.samplers if sampler != "random"]
    rows = []
    for count in args.at:
        row: list[object] = [count]
        row += [f"{median(sampler, 'hypervolume', count):.4f}" for sampler in args.samplers]
        if "random" in args.samplers:
            base = median("random", "hypervolume", count)
            row += [f"{median(sampler, 'hypervolume', count) / base:.2f}x" if base else "-" for sampler in others]
        rows.append(row)
    headers = ["trials"] + [f"HV {LABELS[sampler]}" for sampler in args.samplers]
    if "random" in args.samplers:
        headers += [f"{LABELS[sampler]} / random" for sampler in others]
    print()
    print(format_table(headers, rows, title=(
        f"hypervolume (log axes down from 1.1x U-Net), median over seeds {args.seeds} "
        f"({args.steps} steps of training per trial, budget 60k params)")))
    best_rows = [[count] + [f"{median(sampler, 'best_metric', count):.3f}" for sampler in args.samplers]
                 for count in args.at]
    print()
    print(format_table(["trials"] + [f"best IoU {LABELS[sampler]}" for sampler in args.samplers], best_rows,
                       title="best building IoU of a feasible trial, median over seeds"))
    print()
    for sampler in args.samplers:
        counts: dict[str, list[int]] = {}
        for run in runs:
            if run["sampler"] == sampler:
                for status, count in run["statuses"].items():
                    counts.setdefault(status, []).append(count)
        print(f"{LABELS[sampler]}: trials per run by status (per seed): "
              + ", ".join(f"{status} {values}" for status, values in sorted(counts.items())))
    print(f"{len(runs)} searches in {seconds:.0f} s with {args.jobs} at a time; "
          f"load average (1, 5, 15 min) before {tuple(round(x, 2) for x in load_before)}, "
          f"after {tuple(round(x, 2) for x in load_after)} on {os.cpu_count()} cores")
    path = write_json("search_efficiency", {
        **({"machine": stored["machine"], "rescored": time.strftime("%Y-%m-%d")} if stored else {}),
        "trials": args.trials, "steps": args.steps, "seeds": args.seeds, "samplers": args.samplers, "at": args.at,
        "jobs": args.jobs, "seconds": round(seconds, 1), "load_before": load_before, "load_after": load_after,
        "median_hypervolume": {sampler: {str(count): median(sampler, "hypervolume", count)
                                         for count in args.at} for sampler in args.samplers},
        **({"median_hypervolume_share": stored["median_hypervolume_share"]} if "median_hypervolume_share" in stored else {}),
        "runs": runs,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
