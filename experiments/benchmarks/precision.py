"""Training precision on the CPU: ``train.precision: bf16`` (autocast) against ``fp32``, on the
quickstart's data and recipe, same seeds side by side (issue 28, "faster training").

For each network (U-Net, Micro-Net, U-Net under the paper's recipe from scratch), each seed
and each precision: the quickstart's 120 steps, the training seconds and the validation score.
The speed-up is the median ratio of training seconds; the quality change is the paired
difference bf16 - fp32 over the seeds, with its 95% interval.

    python experiments/benchmarks/precision.py --seeds 3 --threads 2

Writes ``experiments/benchmarks/results/precision.json`` (after every run; a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments" / "quickstart.yaml"
PAPER = ROOT / "experiments" / "recipes" / "micronet_like.yaml"
NETWORKS = ("unet", "micronet", "paper")


def run_one(network: str, precision: str, seed: int, threads: int, data: Any) -> dict[str, Any]:
    from compressor.experiment import ModelConfig, load_experiment
    from compressor.experiment.runs import train_model

    experiment = load_experiment(str(CONFIG), overrides=[
        f"train.precision={precision}", f"train.seed={seed}", f"train.threads={threads}", "train.progress=false"])
    model = ModelConfig(name="micronet", args={"norm": "batch"}) if network == "micronet" else ModelConfig(name="unet")
    started = time.perf_counter()
    trained = train_model(experiment, model=model, recipe=str(PAPER) if network == "paper" else None, data=data,
                          test=False)
    return {"network": network, "precision": precision, "seed": seed, "score": trained.result.metrics.score,
            "train_seconds": round(trained.result.train_seconds, 2), "wall_seconds": round(time.perf_counter() - started, 2),
            "params": trained.cost.params}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    from compressor.intervals import paired_difference

    summary = {}
    for network in NETWORKS:
        pairs = {}
        for run in runs:
            if run["network"] == network:
                pairs.setdefault(run["seed"], {})[run["precision"]] = run
        both = [pair for _, pair in sorted(pairs.items()) if {"fp32", "bf16"} <= set(pair)]
        if not both:
            continue
        fp32 = [pair["fp32"]["score"] for pair in both]
        bf16 = [pair["bf16"]["score"] for pair in both]
        difference = paired_difference(dict(enumerate(bf16)), dict(enumerate(fp32)))
        summary[network] = {
            "seeds": len(both), "fp32_scores": fp32, "bf16_scores": bf16,
            "fp32_mean": statistics.mean(fp32), "bf16_mean": statistics.mean(bf16),
            "difference_points": 100 * difference.mean, "difference_low": 100 * difference.low,
            "difference_high": 100 * difference.high,
            "speedup_median": statistics.median(pair["fp32"]["train_seconds"] / pair["bf16"]["train_seconds"]
                                                for pair in both),
            "fp32_train_seconds": [pair["fp32"]["train_seconds"] for pair in both],
            "bf16_train_seconds": [pair["bf16"]["train_seconds"] for pair in both],
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--networks", type=lambda text: text.split(","), default=list(NETWORKS))
    args = parser.parse_args()
    from compressor.experiment import load_experiment

    path = RESULTS / "precision.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() else []
    done = {(run["network"], run["precision"], run["seed"]) for run in runs}
    data = load_experiment(str(CONFIG)).data.build()
    for seed in range(args.seeds):
        for network in args.networks:
            for precision in ("fp32", "bf16"):  # side by side: the pair of a seed runs back to back
                if (network, precision, seed) in done:
                    continue
                run = run_one(network, precision, seed, args.threads, data)
                runs.append(run)
                print(f"{network:9s} {precision} seed {seed}: score {run['score']:.3f}, "
                      f"{run['train_seconds']:.1f} s training", flush=True)
                write_json("precision", {"command": "python experiments/benchmarks/precision.py "
                                         f"--seeds {args.seeds} --threads {args.threads}",
                                         "threads": args.threads, "runs": runs, "summary": summarize(runs)})
    for network, row in summarize(runs).items():
        print(f"{network:9s} n={row['seeds']}: fp32 {row['fp32_mean']:.3f}, bf16 {row['bf16_mean']:.3f}, "
              f"bf16 - fp32 {row['difference_points']:+.1f} points [{row['difference_low']:+.1f}, "
              f"{row['difference_high']:+.1f}], training {row['speedup_median']:.2f}x faster")


if __name__ == "__main__":
    main()
