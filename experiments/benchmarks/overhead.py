"""Overhead per trial: time spent building and costing a candidate against time spent training it.

1. A small search (random sampler, no budget, so every trial is trained): per trial, where its
   time went as the search records it (the trial's ``timing``: build, cost, calibrate, train,
   evaluate, store, total), each phase's share of the wall time; medians over the trials.
2. Apply against measure on the reference U-Net at 224x224 for a few recipes:
   ``compressor.apply(..., count_flops=False)`` and ``compressor.measure`` timed separately,
   median of ``--repeats`` runs.
3. The same build (apply + measure of the Micro-Net recipe on the search's narrow U-Net) with
   1 and with 2 torch threads, interleaved: on a loaded 2-core machine the small convolutions
   of a narrow network are much slower with 2 threads.

Writes ``experiments/benchmarks/results/overhead.json``.

    python experiments/benchmarks/overhead.py
    python experiments/benchmarks/overhead.py --trials 20 --steps 200 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import synthetic_search, write_json  # noqa: E402

import compressor  # noqa: E402
from compressor.experiment import Experiment  # noqa: E402
from compressor.pipeline import run_search  # noqa: E402
from compressor.study import TIMING_PHASES as PHASES  # noqa: E402
from compressor.tables import format_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RECIPES: dict[str, Any] = {
    "micronet_like.yaml": ROOT / "experiments" / "recipes" / "micronet_like.yaml",
    "separable": [{"name": "separable"}],
    "fire .25/.5": [{"name": "fire", "squeeze_ratio": 0.25, "expand3x3_share": 0.5}],
    "downsample_depth 2": [{"name": "downsample_depth", "levels": 2}],
    "skip_fusion + dilation": [{"name": "skip_fusion"},
                               {"name": "dilation", "rates": [1, 1, 2, 3], "decoder_rates": [3, 2, 1]}],
    "prune 0.5 params": [{"name": "prune", "ratio": 0.5}],
}


def experiment(run_dir: Path, *, trials: int, steps: int, threads: int, cost_size: int) -> Experiment:
    return Experiment.from_dict(synthetic_search(
        "overhead", run_dir, steps=steps, threads=threads, patch_size=64, val_size=128, base_width=16,
        cost_size=cost_size, search={"n_trials": trials, "sampler": "random", "seed": 0, "rungs": []},
    ), source="overhead benchmark")


def timed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - started, value


def recipe_of(value: Any) -> compressor.Recipe:
    return compressor.Recipe.load(value) if isinstance(value, Path) else compressor.Recipe.from_data(value)


def search_part(args: argparse.Namespace) -> dict[str, Any]:
    """Each trained trial's own ``timing`` (seconds per phase, as the search records it), its
    phases as shares of the trial's wall time, and the medians over the trials."""
    with tempfile.TemporaryDirectory() as folder:
        result = run_search(experiment(Path(folder), trials=args.trials, steps=args.steps, threads=args.threads,
                                       cost_size=args.cost_size), echo=lambda line: print("[search]", line))
    trained = [r for r in result.records if r.timing and "train" in r.timing and r.duplicate_of is None]
    trials = [{"number": r.number, "recipe": r.recipe_short, **{phase: r.timing.get(phase, 0.0) for phase in PHASES},
               "total": r.timing["total"],
               **{f"{phase}_percent": 100 * r.timing.get(phase, 0.0) / r.timing["total"] for phase in PHASES}}
              for r in trained]

    def med(key: str) -> float:
        return statistics.median(t[key] for t in trials)

    rows = [[t["number"], t["recipe"], *(f"{t[phase]:.2f}" for phase in PHASES), f"{t['total']:.1f}",
             f"{100 - t['train_percent']:.0f}%"] for t in trials]
    rows.append(["median", "", *(f"{med(phase):.2f}" for phase in PHASES), f"{med('total'):.1f}",
                 f"{100 - med('train_percent'):.0f}%"])
    print()
    print(format_table(
        ["trial", "recipe", *(f"{phase} s" for phase in PHASES), "total s", "not training"], rows,
        title=(f"per trial, from its timing: build and cost (fvcore at {args.cost_size}x{args.cost_size}), "
               f"calibrate, train ({args.steps} steps, batch 8 of 64x64, {args.threads} threads), evaluate, store"),
    ))
    summary = {f"{phase}_percent": med(f"{phase}_percent") for phase in PHASES}
    print("median share of a trial's wall time: " + ", ".join(f"{phase} {summary[f'{phase}_percent']:.1f}%"
                                                              for phase in PHASES))
    return {"trials": trials, "median": summary}


def breakdown_part(args: argparse.Namespace) -> list[dict[str, Any]]:
    shape = (1, 3, args.size, args.size)
    base = compressor.unet()
    found = []
    for label, value in RECIPES.items():
        recipe = recipe_of(value)
        applies, measures = [], []
        for _ in range(args.repeats):
            seconds, (model, _records) = timed(compressor.apply, base, recipe, shape, count_flops=False)
            applies.append(seconds)
            seconds, cost = timed(compressor.measure, model, shape)
            measures.append(seconds)
        found.append({"recipe": label, "apply_seconds": applies, "measure_seconds": measures,
                      "params": cost.params, "flops": cost.flops})
    measures = []
    for _ in range(args.repeats):
        seconds, cost = timed(compressor.measure, base, shape)
        measures.append(seconds)
    found.append({"recipe": "(none: U-Net itself)", "apply_seconds": [], "measure_seconds": measures,
                  "params": cost.params, "flops": cost.flops})
    rows = []
    for item in found:
        apply_s = statistics.median(item["apply_seconds"]) if item["apply_seconds"] else 0.0
        measure_s = statistics.median(item["measure_seconds"])
        rows.append([item["recipe"], f"{item['params'] / 1e6:.2f}M", f"{item['flops'] / 1e9:.2f}G",
                     f"{apply_s:.2f}" if item["apply_seconds"] else "-", f"{measure_s:.2f}",
                     f"{100 * apply_s / (apply_s + measure_s):.0f}%" if item["apply_seconds"] else "-"])
    print()
    print(format_table(
        ["recipe on U-Net", "params", "FLOPs", "apply s", "measure s", "apply share"], rows,
        title=(f"apply (count_flops=False) and measure (fvcore) at 1x3x{args.size}x{args.size}, median of "
               f"{args.repeats}, {torch.get_num_threads()} threads"),
    ))
    return found


def build(base: torch.nn.Module, recipe: compressor.Recipe, cost_size: int) -> compressor.Cost:
    """What a search trial does before training: apply at the patch size, measure at the cost size."""
    model, _records = compressor.apply(base, recipe, (1, 3, 64, 64), count_flops=False)
    return compressor.measure(model, (1, 3, cost_size, cost_size))


def threads_part(args: argparse.Namespace) -> dict[str, Any]:
    """Build time of a narrow candidate with 1 and 2 torch threads, interleaved."""
    base = compressor.unet(base_width=16, norm="batch")
    recipe = recipe_of(RECIPES["micronet_like.yaml"])
    times: dict[int, list[float]] = {1: [], 2: []}
    previous = torch.get_num_threads()
    try:
        for _ in range(args.repeats + 1):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                seconds, _ = timed(build, base, recipe, args.cost_size)
                times[threads].append(seconds)
    finally:
        torch.set_num_threads(previous)
    medians = {threads: statistics.median(values[1:]) for threads, values in times.items()}  # first is warm-up
    print()
    print(format_table(
        ["torch threads", "apply + measure s", "vs 1 thread"],
        [[threads, f"{medians[threads]:.2f}", f"{medians[threads] / medians[1]:.2f}x"] for threads in (1, 2)],
        title=(f"Micro-Net recipe on the search's narrow U-Net (base width 16): apply at 64x64, measure at "
               f"{args.cost_size}x{args.cost_size}, median of {args.repeats} after a warm-up, interleaved"),
    ))
    return {"seconds": {str(k): v for k, v in times.items()}, "median": {str(k): v for k, v in medians.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials of the small search (default 8)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per trial (default 40)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, training and building (default 1)")
    parser.add_argument("--cost-size", type=int, default=128, help="the search's cost input size (default 128)")
    parser.add_argument("--size", type=int, default=224, help="input size of the apply/measure breakdown")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats of the breakdown and the threads part (default 2)")
    parser.add_argument("--skip-search", action="store_true", help="only the apply/measure breakdown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loads = [os.getloadavg()]
    search = None if args.skip_search else search_part(args)
    loads.append(os.getloadavg())
    breakdown = breakdown_part(args)
    loads.append(os.getloadavg())
    threads = threads_part(args)
    loads.append(os.getloadavg())
    print(f"\nload average (1 min) before the search, after it, after the breakdown, after the threads part: "
          f"{', '.join(f'{load[0]:.2f}' for load in loads)} on {os.cpu_count()} cores")
    path = write_json("overhead", {
        "trials": args.trials, "steps": args.steps, "threads": args.threads, "cost_size": args.cost_size,
        "size": args.size, "repeats": args.repeats, "load": loads, "search": search, "breakdown": breakdown,
        "threads_comparison": threads,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
