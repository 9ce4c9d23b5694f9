"""Does a search against latency pick other models than a search against FLOPs?

    python experiments/benchmarks/latency_search.py [--trials 16] [--seed 0]

Two searches of the quickstart experiment (experiments/quickstart.yaml: the SpaceNet tile,
candidates inherit the trained U-Net, its baselines and parent reused from runs/quickstart),
identical but for their objectives: ``[metric, params, flops]`` and ``[metric, params, latency]``,
latency measured on ONNX Runtime fp32, 1 thread, batch 1 at 256x256 (``cost.latency``) in both,
so every trial of either has both costs. TPE, same seed, no time limit, no confirmation. Prints
each study's front and, over the trials of both, the fronts of (metric, FLOPs) and
(metric, latency). Run again, it reads the finished studies (a search at its target trains nothing).
Studies in runs/latency_search/search.db; results in
experiments/benchmarks/results/latency_search.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))

from common import write_json  # noqa: E402

from compressor.experiment import load_experiment  # noqa: E402
from compressor.pipeline import run_search  # noqa: E402
from compressor.study import front, load_study, nondominated_ranks, study_info, trial_records  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    storage = f"sqlite:///{ROOT / 'runs' / 'latency_search' / 'search.db'}"
    studies = {"flops": ["metric", "params", "flops"], "latency": ["metric", "params", "latency"]}
    found = {}
    for name, objectives in studies.items():
        experiment = load_experiment(ROOT / "experiments" / "quickstart.yaml", overrides=[
            f"run_dir={ROOT / 'runs' / 'quickstart'}", f"search.storage={storage}",
            f"search.study=objective-{name}-seed{args.seed}", f"search.objectives={objectives}",
            f"search.n_trials={args.trials}", "search.timeout=null", "search.confirm.top=0",
            f"search.seed={args.seed}",
            "cost.latency={runtime: onnxruntime, threads: 1, batch: 1, input_size: 256, repeats: 10}",
        ])
        print(f"search against {name}: {objectives}", flush=True)
        run_search(experiment)
        study = load_study(storage, f"objective-{name}-seed{args.seed}")
        records = trial_records(study)
        threshold = study_info(study).threshold  # the floor: the best constant prediction plus the margin
        on_front = front(records, [o if o != "latency" else "latency_ms" for o in objectives], threshold)
        found[name] = {"records": records, "front": on_front, "threshold": threshold}

    def row(record) -> dict:
        return {"study": None, "number": record.number, "recipe": record.recipe_short, "metric": record.metric,
                "params": record.params, "flops": record.flops, "latency_ms": record.latency_ms}

    pool = [(name, record) for name, item in found.items() for record in item["records"]
            if record.status == "complete" and record.feasible and record.metric is not None
            and record.metric > item["threshold"] and record.latency_ms is not None]
    fronts = {}
    for cost in ("flops", "latency_ms"):
        ranks = nondominated_ranks([[record.metric, getattr(record, cost)] for _, record in pool], ["maximize", "minimize"])
        fronts[cost] = sorted({record.recipe_short for (_, record), rank in zip(pool, ranks) if rank == 0})
    payload = {"trials": args.trials, "seed": args.seed, "studies": {}, "front_metric_flops": fronts["flops"],
               "front_metric_latency": fronts["latency_ms"]}
    for name, item in found.items():
        rows = [{**row(record), "study": name} for record in item["front"]]
        payload["studies"][name] = {"front": rows, "distinct_recipes": len({r.recipe_hash for r in item["records"]})}
        print(f"\nfront of the search against {name}:")
        for r in rows:
            print(f"  trial {r['number']:>2}  IoU {r['metric']:.3f}  {r['params']:>9,} params  {r['flops'] / 1e9:6.2f} GFLOPs"
                  f"  {r['latency_ms']:6.1f} ms  {r['recipe']}")
    shared = ({r.recipe_short for r in found["flops"]["front"]} & {r.recipe_short for r in found["latency"]["front"]})
    payload["shared_front_recipes"] = sorted(shared)
    print(f"\nrecipes on both searches' fronts: {len(shared)} of {len(found['flops']['front'])} (FLOPs) and "
          f"{len(found['latency']['front'])} (latency)")
    print(f"over both searches' trials: front of (IoU, FLOPs): {fronts['flops']}")
    print(f"                            front of (IoU, latency): {fronts['latency_ms']}")
    write_json("latency_search", payload)


if __name__ == "__main__":
    main()
