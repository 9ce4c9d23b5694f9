"""Where each reconstruction method starts a student of a network users bring: output error and validation score.

The teacher is a network of ``knowledge.py`` trained to its plateau there (its ``teacher.pt`` in
``--run-dir``); each recipe is applied with weight inheritance and the batch norms re-estimated as
``compress`` does, then each of ``--methods`` runs on the first ``--batches`` calibration batches
(``hints`` for ``--steps`` Adam steps). Nothing is fine-tuned: this says where fine-tuning would
begin and what it cost to get there, not where it ends (``knowledge.py`` does that).

    python experiments/benchmarks/reconstruct_start.py --network deeplab-mnv3 --patch-size 128 --recipes separable,fire --methods none,lstsq --threads 1

Prints one line per (recipe, method); writes ``experiments/benchmarks/results/reconstruct_start-<network>.json``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import machine, write_json  # noqa: E402


def start_metrics(metrics) -> dict[str, float]:
    """The start's validation score and, on a two-class task, where it predicts the class of interest: its
    recall, its precision and the share of pixels it gives that class (the teacher's own, on the same strip, are
    the results file's ``teacher``)."""
    found = {"start_val": round(metrics.score, 4)}
    confusion = metrics.to_dict()["confusion"]  # rows: the truth, columns: the prediction
    if len(confusion) == 2:
        (tn, fp), (fn, tp) = confusion
        found |= {"start_recall": round(tp / max(tp + fn, 1), 4), "start_precision": round(tp / max(tp + fp, 1), 4),
                  "start_predicted_share": round((tp + fp) / max(tn + fp + fn + tp, 1), 4)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", required=True)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--recipes", type=lambda text: text.split(","), default=["separable", "fire"])
    parser.add_argument("--methods", type=lambda text: text.split(","), default=["none", "lstsq"])
    parser.add_argument("--batches", type=int, default=8, help="calibration batches the methods run on")
    parser.add_argument("--steps", type=int, default=300, help="hints' Adam steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-dir", default=str(Path(__file__).resolve().parents[2] / "runs" / "knowledge"))
    parser.add_argument("--name", default=None, help="the results file's name (default reconstruct_start-<network>)")
    args = parser.parse_args()

    import knowledge
    import torch

    from compressor.finetune import calibration_batches
    from compressor.train import evaluate, reestimate_batchnorm, seed_everything
    from compressor.transforms import apply
    from compressor.transforms.reconstruct import reconstruct

    torch.set_num_threads(args.threads)
    settings = knowledge.experiment(argparse.Namespace(teacher_max_steps=3000, eval_every=100, patience=4,
                                                       threads=args.threads, finetune_steps=400,
                                                       patch_size=args.patch_size), seed=0)
    data = settings.data.build()
    teacher = knowledge.build_network(args.network, data)
    teacher.load_state_dict(torch.load(Path(args.run_dir) / args.network / "teacher.pt", weights_only=True))
    teacher.eval()
    config = settings.finetune.train_config(settings.train, distill=False)
    images = torch.cat(calibration_batches(data, args.batches, batch_size=config.batch_size, seed=0))
    example = torch.zeros(1, data.in_channels, args.patch_size, args.patch_size)
    load, rows = os.getloadavg()[0], []
    teacher_start = {key.replace("start_", "teacher_"): value
                     for key, value in start_metrics(evaluate(teacher, data, config)).items()}
    print("teacher    " + "  ".join(f"{key} {value}" for key, value in teacher_start.items()), flush=True)
    for recipe in args.recipes:
        seed_everything(0)
        student, _ = apply(teacher, knowledge.recipe_of(recipe), example, init="inherit", count_flops=False)
        reestimate_batchnorm(student, data, batches=settings.finetune.bn_reestimate, batch_size=config.batch_size, seed=0)
        for method in args.methods:
            trained = copy.deepcopy(student)
            started = time.perf_counter()
            report = reconstruct(teacher, trained, images, method=method, steps=args.steps, batch_size=config.batch_size)
            seconds = time.perf_counter() - started
            row = {"recipe": recipe, "method": method, "seconds": round(seconds, 1), "points": len(report.points),
                   "output_error_before": report.output_error_before, "output_error_after": report.output_error_after,
                   "norms_reestimated": report.norms_reestimated, "output_error_as_solved": report.output_error_as_solved,
                   "output_error_reestimated": report.output_error_reestimated,
                   **start_metrics(evaluate(trained, data, config))}
            rows.append(row)
            where = (f"  recall {row['start_recall']:.3f}  precision {row['start_precision']:.3f}  predicted "
                     f"{row['start_predicted_share']:.2%}" if "start_recall" in row else "")
            print(f"{recipe:<10} {method:<6} {seconds:6.1f} s  {row['points']} points  output error "
                  f"{row['output_error_before']:.3f} -> {row['output_error_after']:.3f}  start validation "
                  f"{row['start_val']:.4f}{where}", flush=True)
    write_json(args.name or f"reconstruct_start-{args.network}", {
        "command": "python experiments/benchmarks/" + " ".join([Path(__file__).name, *sys.argv[1:]]),
        "machine": machine(), "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
        "calibration_patches": int(images.shape[0]), "teacher": teacher_start, "rows": rows})


if __name__ == "__main__":
    main()
