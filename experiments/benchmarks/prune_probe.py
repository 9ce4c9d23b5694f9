"""Why a trained U-Net pruned by 90% fine-tunes to IoU 0: the channel ranking, not starvation or the rate.

The parent is the quickstart's U-Net baseline (``experiments/quickstart.yaml``, trained once and
stored). It is pruned to ``--ratio`` of its params with each channel ranking, then for each:
the narrowest kept conv, the share of channels in the worst layer that never fire on 16
training patches (ReLU output <= 0 everywhere), the relative error of the network's output,
the IoU as pruned (batch norms re-estimated), and the IoU after ``--steps`` of fine-tuning at
two learning rates (batch norms re-estimated first). One seed: a probe, not a benchmark.

    python experiments/benchmarks/prune_probe.py [--ratio 0.9] [--steps 60]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from common import write_json  # noqa: E402

from compressor.experiment import ModelConfig, ensure_parent, load_experiment  # noqa: E402
from compressor.tables import format_table  # noqa: E402
from compressor.train import evaluate, reestimate_batchnorm, train  # noqa: E402
from compressor.transforms import apply  # noqa: E402
from compressor.units import format_count  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RANKINGS = {
    "global L1 (before)": {"importance": "l1"},
    "uniform L1": {"importance": "l1", "scope": "uniform"},
    "global L1, max 75% a layer": {"importance": "l1", "max_layer_ratio": 0.75},
    "global L2": {"importance": "l2"},
    "global LAMP (default now)": {"importance": "lamp"},
    "global random": {"importance": "random"},
}


def dead_share(model: nn.Module, images: torch.Tensor) -> tuple[float, str]:
    """The largest share of a ReLU's channels that never fire on ``images``, and where."""
    shares: list[tuple[float, str]] = []
    hooks = [module.register_forward_hook(
        lambda _m, _a, out, name=name: shares.append((float((out.amax(dim=(0, 2, 3)) <= 0).float().mean()), name)))
        for name, module in model.named_modules() if isinstance(module, nn.ReLU)]
    model.eval()
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return max(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "experiments" / "quickstart.yaml"))
    parser.add_argument("--ratio", type=float, default=0.9)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-4])
    args = parser.parse_args()
    experiment = load_experiment(args.config, overrides=["train.progress=false"])
    data = experiment.data.build()
    parent = ensure_parent(experiment, ModelConfig(name="unet"), data=data)
    images = torch.stack([data.train[index][0] for index in range(16)])
    example = torch.zeros(1, data.in_channels, experiment.data.patch_size, experiment.data.patch_size)
    parent_dead = dead_share(parent.model, images)
    rows, results = [], {"parent": {"iou": parent.metrics.get("score"), "dead": parent_dead}, "rankings": {}}
    for label, params in RANKINGS.items():
        pruned, (record,) = apply(parent.model, [{"name": "prune", "ratio": args.ratio, **params}], example,
                                  count_flops=False, calibration=images)
        narrowest = min((module.out_channels, name) for name, module in pruned.named_modules()
                        if isinstance(module, nn.Conv2d) and name != "head")
        dead = dead_share(pruned, images)
        as_pruned = copy.deepcopy(pruned)
        reestimate_batchnorm(as_pruned, data, batches=16)
        row = {"params": sum(p.numel() for p in pruned.parameters()), "narrowest": narrowest, "dead": dead,
               "output_error": record.output_error, "iou_as_pruned": evaluate(as_pruned, data, experiment.train).score}
        for lr in args.lrs:
            tuned = copy.deepcopy(pruned)
            config = dataclasses.replace(experiment.train, steps=args.steps, lr=lr, warmup_fraction=0.0, bn_reestimate=16)
            row[f"iou_lr{lr:g}"] = train(tuned, data, config).metrics.score
        results["rankings"][label] = row
        rows.append([label, format_count(row["params"]), f"{narrowest[0]} ({narrowest[1]})",
                     f"{dead[0]:.0%} ({dead[1]})", f"{row['output_error']:.2f}", f"{row['iou_as_pruned']:.3f}",
                     *[f"{row[f'iou_lr{lr:g}']:.3f}" for lr in args.lrs]])
        print(rows[-1], flush=True)
    print(format_table(
        ["ranking", "params", "narrowest conv", "never-firing channels (worst layer)", "output error", "IoU as pruned",
         *[f"IoU after {args.steps} steps, lr {lr:g}" for lr in args.lrs]], rows,
        title=f"U-Net parent (building IoU {parent.metrics.get('score'):.3f}, worst layer "
              f"{parent_dead[0]:.0%} never firing) pruned by {args.ratio:.0%} of its params"))
    print(f"written {write_json('prune_probe', {'ratio': args.ratio, 'steps': args.steps, **results})}")


if __name__ == "__main__":
    main()
