"""What multi-fidelity saves: hypervolume reached against compute spent, with and without rung stopping.

Both runs draw the same candidates (a seeded random sampler does not look at results), so the
only difference is that one stops trials ranked outside the best third at 1/9 and 1/3 of
their training. Compute is counted in training steps taken (load-independent; the wall
seconds are reported too). Prints the hypervolume at equal compute and writes
``experiments/benchmarks/results/fidelity.json``.

    python experiments/benchmarks/fidelity.py --trials 16 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import hypervolume_at, hypervolume_history, synthetic_search, unet_reference, write_json  # noqa: E402

from compressor.experiment import Experiment  # noqa: E402
from compressor.pipeline import run_search  # noqa: E402
from compressor.tables import format_table  # noqa: E402


def experiment(run_dir: Path, *, seed: int, trials: int, steps: int, rungs: list[float]) -> Experiment:
    return Experiment.from_dict(synthetic_search(
        "fidelity", run_dir, steps=steps, threads=2, val_size=128, base_width=16, norm=None, eval_overlap=16,
        max_params="300k", cost_size=128,
        search={"n_trials": trials, "sampler": "random", "seed": seed, "rungs": rungs, "min_trials_at_rung": 3},
    ), source="fidelity benchmark")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        histories = {}
        for mode, rungs in (("without", []), ("with", [1 / 9, 1 / 3])):
            with tempfile.TemporaryDirectory() as folder:
                result = run_search(experiment(Path(folder), seed=seed, trials=args.trials, steps=args.steps,
                                               rungs=rungs), echo=lambda line, tag=f"[seed {seed}, {mode}]": print(tag, line))
                reference = unet_reference(result.study.user_attrs["references"]["unet"])
                histories[mode] = {
                    "history": hypervolume_history(result.records, ["metric", "params", "flops"], reference,
                                                   cost=lambda record: record.fidelity * args.steps),
                    "seconds": sum(record.wall_seconds or 0.0 for record in result.records),
                    "stopped": sum(record.status == "stopped" for record in result.records),
                }
        budget = histories["without"]["history"][-1][1]
        points = [0.25, 0.5, 0.75, 1.0]
        runs.append({
            "seed": seed,
            "compute_steps": {mode: item["history"][-1][1] for mode, item in histories.items()},
            "wall_seconds": {mode: item["seconds"] for mode, item in histories.items()},
            "stopped_trials": {mode: item["stopped"] for mode, item in histories.items()},
            "hypervolume_at_compute": {
                f"{share:.0%}": {mode: hypervolume_at(item["history"], share * budget) for mode, item in histories.items()}
                for share in points
            },
            "histories": {mode: item["history"] for mode, item in histories.items()},
        })
    rows = []
    for share in ("25%", "50%", "75%", "100%"):
        without = statistics.median(run["hypervolume_at_compute"][share]["without"] for run in runs)
        with_rungs = statistics.median(run["hypervolume_at_compute"][share]["with"] for run in runs)
        rows.append([share, f"{without:.4g}", f"{with_rungs:.4g}", f"{with_rungs / without:.2f}x" if without else "-"])
    compute = {mode: statistics.median(run["compute_steps"][mode] for run in runs) for mode in ("without", "with")}
    seconds = {mode: statistics.median(run["wall_seconds"][mode] for run in runs) for mode in ("without", "with")}
    stopped = statistics.median(run["stopped_trials"]["with"] for run in runs)
    print(format_table(
        ["training steps spent (share of the run without stopping)", "hypervolume without", "with rung stopping",
         "ratio"],
        rows, title=f"median over seeds {args.seeds}, {args.trials} trials of {args.steps} steps each",
    ))
    print(f"whole run: {compute['without']:.0f} training steps without, {compute['with']:.0f} with rung stopping "
          f"({compute['with'] / compute['without']:.2f}x, {stopped:.0f} trials stopped); wall time "
          f"{seconds['without']:.0f} s and {seconds['with']:.0f} s; the final hypervolume is the 100% row")
    path = write_json("fidelity", {"trials": args.trials, "steps": args.steps, "seeds": args.seeds, "runs": runs,
                                   "median_compute_steps": compute, "median_wall_seconds": seconds})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
