"""How long an over-budget trial of the quickstart's search takes to be decided, and where that time goes.

``--recipes`` recipes of the quickstart's space (``unet_family`` on its trained U-Net, budget 1.5M params
and 10G FLOPs) drawn by a seeded random sampler are built as a search builds them
(``SearchSetup.build``: inheriting from the stored parent, no diagnostics) and costed
(``SearchSetup.measure``: fvcore at 224x224), in one process on ``--threads`` threads. Every recipe is
built once first, so the kernel memo holds the parent's factorizations as it does after a search's first
trials (``--cold``: not). Reported for the over-budget ones: build, cost and their sum (what the trial
takes before it is recorded), median and largest; then a profile of the same builds and costs
(cProfile, so the seconds are inflated, the shares are what counts) split by part.

    python experiments/benchmarks/over_budget.py --recipes 20 --seed 1 --threads 1

Needs the quickstart's parent (``compressor search experiments/quickstart.yaml`` once). Writes
``experiments/benchmarks/results/over_budget.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import ROOT, drawn_recipes, quickstart_setup, write_json  # noqa: E402

#: the parts of a build and a cost, by the function that does each (file:function of the profile)
PARTS = {
    "fvcore's count at 224x224": r"compressor/cost\.py:\d+\(_count\)",
    "graph captures (fx, with shapes)": r"compressor/transforms/graph\.py:\d+\(trace_with_shapes\)",
    "torch-pruning": r"compressor/transforms/prune\.py:\d+\(_prune\)",
    "output shape after each step": r"compressor/transforms/engine\.py:\d+\(_output_shape\)",
    "separable inheritance (SVD)": r"compressor/transforms/inherit\.py:\d+\(inherit_separable\)",
    "fire inheritance": r"compressor/transforms/inherit\.py:\d+\(inherit_fire\)",
    "copy of the parent": r"copy\.py:\d+\(deepcopy\)",
    "the whole build (apply)": r"compressor/transforms/engine\.py:\d+\(apply\)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cold", action="store_true", help="no first pass: the kernel memo starts empty")
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "quickstart"))
    parser.add_argument("--name", default="over_budget", help="results file name (results/NAME.json)")
    args = parser.parse_args()
    import optuna
    import torch

    from compressor.tables import format_table
    from compressor.transforms import kernel_memo

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load_before = os.getloadavg()[0]
    setup = quickstart_setup(args.run_dir, args.threads)
    torch.set_num_threads(args.threads)
    drawn = drawn_recipes(setup, args.recipes, seed=args.seed)
    if not args.cold:
        for _, recipe in drawn:
            setup.build(recipe)
    timings = []
    for short, recipe in drawn:
        started = time.perf_counter()
        network = setup.build(recipe)
        built = time.perf_counter()
        cost = setup.measure(network)
        ended = time.perf_counter()
        timings.append({"recipe": short, "build": built - started, "cost": ended - built, "params": cost.params,
                        "flops": cost.flops, "over_budget": not setup.budget.check(cost).feasible})
    profile = cProfile.Profile()
    profile.enable()
    for _, recipe in drawn:
        setup.measure(setup.build(recipe))
    profile.disable()
    stats = pstats.Stats(profile).stats
    parts = {part: sum(value[3] for key, value in stats.items() if re.search(pattern, _label(key)))
             for part, pattern in PARTS.items()}
    profiled = parts["the whole build (apply)"] + parts["fvcore's count at 224x224"]
    over = [t for t in timings if t["over_budget"]]
    totals = [t["build"] + t["cost"] for t in over]
    summary = {
        "over_budget": len(over), "recipes": len(timings),
        "build_median": statistics.median(t["build"] for t in over) if over else None,
        "cost_median": statistics.median(t["cost"] for t in over) if over else None,
        "total_median": statistics.median(totals) if over else None,
        "total_max": max(totals) if over else None,
        "under_1s": sum(total < 1.0 for total in totals),
    }
    print(format_table(["recipe", "params", "build s", "cost s", "decided in s"],
                       [[t["recipe"], f"{t['params'] / 1e6:.2f}M", f"{t['build']:.2f}", f"{t['cost']:.2f}",
                         f"{t['build'] + t['cost']:.2f}"] for t in over],
                       title=f"{len(over)} of {len(timings)} recipes over budget ({'cold' if args.cold else 'memo warm'}, "
                             f"{args.threads} thread(s))"))
    if over:
        print(f"median: build {summary['build_median']:.2f} s, cost {summary['cost_median']:.2f} s, decided in "
              f"{summary['total_median']:.2f} s (largest {summary['total_max']:.2f} s); {summary['under_1s']} of "
              f"{len(over)} under 1 s")
    print(format_table(["part", "s per recipe (profiled)", "share of build + cost"],
                       [[part, f"{seconds / len(drawn):.3f}", f"{seconds / profiled:.0%}"]
                        for part, seconds in sorted(parts.items(), key=lambda item: -item[1])],
                       title="where the time goes, every recipe (profiled)"))
    load_after = os.getloadavg()[0]
    print(f"load average {load_before:.2f} before, {load_after:.2f} after; memo {kernel_memo.stats()}")
    path = write_json(args.name, {"recipes": args.recipes, "seed": args.seed, "threads": args.threads,
                                      "cold": args.cold, "load_before": load_before, "load_after": load_after,
                                      "timings": timings, "summary": summary,
                                      "profiled_seconds_per_recipe": {part: seconds / len(drawn)
                                                                      for part, seconds in parts.items()},
                                      "memo": kernel_memo.stats()})
    print(f"wrote {path}")


def _label(key: tuple[str, int, str]) -> str:
    file, line, function = key
    return f"{file}:{line}({function})"


if __name__ == "__main__":
    main()
