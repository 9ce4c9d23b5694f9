"""The ``hints`` reconstruction with the teacher's tensors kept, against the teacher run at every step.

``compress`` reconstructs a student before fine-tuning it (``finetune.reconstruct: hints``, 300 Adam
steps on 32 batches of calibration patches). Each step ran the teacher on its batch again; now the
teacher's tensors at the changed blocks and its output are computed once per calibration image and
kept (``compressor.transforms.reconstruct.TEACHER_CACHE_BYTES``). Timed here side by side on the
quickstart's U-Net (trained 100 steps, the quickstart's parent) compressed by the paper's recipe
and by ``fire``, the two ways interleaved, medians; the output error after each says the fit is
the same. 1 thread by default.

Writes ``experiments/benchmarks/results/reconstruct_cache.json``.

    python experiments/benchmarks/reconstruct_cache.py --steps 100 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RECIPES = {
    "the paper's recipe": ROOT / "experiments" / "recipes" / "micronet_like.yaml",
    "fire": [{"name": "fire", "squeeze_ratio": 0.25, "expand3x3_share": 0.5}],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="Adam steps of each reconstruction (compress: 300)")
    parser.add_argument("--batches", type=int, default=32, help="calibration batches of 8 patches (compress: 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "reconstruct_cache"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from compressor.experiment import ModelConfig
    from compressor.experiment.baselines import ensure_parent
    from compressor.experiment.config import load_experiment
    from compressor.finetune import calibration_batches
    from compressor.tables import format_table
    from compressor.train import reestimate_batchnorm
    from compressor.transforms import Recipe, apply
    from compressor.transforms.boundaries import changed_points, shared_boundaries
    from compressor.transforms.reconstruct import reconstruct

    experiment = load_experiment(ROOT / "experiments" / "quickstart.yaml",
                                 overrides=[f"run_dir={args.run_dir}", f"train.threads={args.threads}"])
    data = experiment.data.build()
    parent = ensure_parent(experiment, ModelConfig(name="unet", args={"norm": "batch"}),
                           steps=experiment.train.steps, data=data).model.eval()
    images = torch.cat(calibration_batches(data, args.batches, batch_size=8, seed=0))
    load = os.getloadavg()[0]
    rows, results = [], {}
    for name, recipe in RECIPES.items():
        recipe = Recipe.load(recipe) if isinstance(recipe, Path) else Recipe.from_data(recipe)

        def student(recipe=recipe):
            torch.manual_seed(0)
            network, _ = apply(parent, recipe, (1, data.in_channels, 64, 64), count_flops=False, diagnostics=False)
            reestimate_batchnorm(network, data, batches=4, batch_size=8)
            return network

        points = changed_points(parent, student(), shared_boundaries(parent, student(), images[:2]), "block")
        times: dict[str, list[float]] = {"every step": [], "kept": []}
        errors: dict[str, list[float | None]] = {"every step": [], "kept": []}
        for _ in range(args.repeats):
            for way, limit in (("every step", 0), ("kept", 2**34)):
                network = student()
                started = time.perf_counter()
                report = reconstruct(parent, network, images, method="hints", steps=args.steps, batch_size=8,
                                     teacher_cache_bytes=limit)
                times[way].append(time.perf_counter() - started)
                errors[way].append(report.output_error_after)
        results[name] = {"points": len(points), "seconds": times, "output_error_after": errors}
        every, kept = statistics.median(times["every step"]), statistics.median(times["kept"])
        rows.append([name, str(len(points)), f"{every:.1f}", f"{kept:.1f}", f"{every / kept:.2f}x",
                     f"{statistics.median(e for e in errors['every step'] if e is not None):.4f}",
                     f"{statistics.median(e for e in errors['kept'] if e is not None):.4f}"])
        print(rows[-1], flush=True)
    print(format_table(["recipe", "changed blocks", "teacher every step, s", "teacher kept, s", "faster",
                        "output error after (every step)", "(kept)"], rows,
                       title=f"hints, {args.steps} steps, {args.batches} batches of 8 patches of 64, {args.threads} thread(s), "
                             f"median of {args.repeats}; load before {load:.2f}, after {os.getloadavg()[0]:.2f}"))
    write_json("reconstruct_cache", {"steps": args.steps, "batches": args.batches, "threads": args.threads,
                                     "repeats": args.repeats, "load_before": load, "load_after": os.getloadavg()[0],
                                     "recipes": results})


if __name__ == "__main__":
    main()
