"""What the field offers for faster training of small convolutional networks on a CPU, step by step.

One training step as the loop takes it (forward, cross-entropy plus soft Dice, backward, gradient
clipping, AdamW) on the quickstart's batch (8 patches of 64x64, one band, two classes), for the
networks a search trains: U-Net (the parent; converged tables fine-tune it), Micro-Net, the
paper's recipe on U-Net and that recipe pruned by 60%. Variants, each against the loop's own
step (``baseline``):

- ``fused``: ``torch.optim.AdamW(fused=True)`` (one kernel for the update);
- ``channels_last``: model and batch in NHWC;
- ``compile``: ``torch.compile`` of the model (inductor, C++ on the CPU); its compile time is
  reported apart, with the steps it takes to pay for itself;
- ``batch16``: 16 patches a step (the rate would be scaled): compared per image, not per step.

Variants are timed in turns (round-robin, ``--rounds`` rounds of ``--steps`` steps each, after
``--warmup`` steps), so a change in the machine's load touches all of them alike; medians of the
per-step times. Writes ``experiments/benchmarks/results/train_speed.json``.

    nice -n 10 python experiments/benchmarks/train_speed.py --threads 1
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

import torch  # noqa: E402
from common import ROOT, write_json  # noqa: E402
from torch import nn  # noqa: E402

VARIANTS = ("baseline", "fused", "channels_last", "compile", "batch16")
RECIPES = {"paper": ROOT / "experiments" / "recipes" / "micronet_like.yaml",
           "paper+prune0.6": ROOT / "experiments" / "recipes" / "micronet_small.yaml"}


def networks() -> dict[str, nn.Module]:
    from compressor.models import micronet, unet
    from compressor.transforms import Recipe, apply

    found: dict[str, nn.Module] = {"unet": unet(in_channels=1, num_classes=2, norm="batch"),
                                   "micronet": micronet(in_channels=1, num_classes=2, norm="batch")}
    for name, path in RECIPES.items():
        found[name], _ = apply(unet(in_channels=1, num_classes=2, norm="batch"), Recipe.load(path), (2, 1, 64, 64),
                               count_flops=False)
    return found


class Stepper:
    """One variant's training state for one network: a step as the loop takes it."""

    def __init__(self, network: nn.Module, variant: str) -> None:
        import copy

        self.model = copy.deepcopy(network).train()
        self.batch = 16 if variant == "batch16" else 8
        self.layout = torch.channels_last if variant == "channels_last" else torch.contiguous_format
        self.model = self.model.to(memory_format=self.layout)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1e-4,
                                           **({"fused": True} if variant == "fused" else {}))
        self.forward = torch.compile(self.model) if variant == "compile" else self.model
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(self.batch, 1, 64, 64, generator=generator).to(memory_format=self.layout)
        self.targets = torch.randint(0, 2, (self.batch, 64, 64), generator=generator)
        self.weights = torch.tensor([0.3, 1.7])

    def step(self) -> float:
        started = time.perf_counter()
        logits = self.forward(self.images)
        loss = nn.functional.cross_entropy(logits, self.targets, weight=self.weights)
        probabilities = logits.softmax(1)[:, 1]
        foreground = (self.targets == 1).float()
        loss = loss + 0.5 * (1 - (2 * (probabilities * foreground).sum() + 1) / (probabilities.sum() + foreground.sum() + 1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--networks", nargs="+", default=["unet", "micronet", "paper", "paper+prune0.6"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()
    from compressor.tables import format_table

    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    built = networks()
    results: dict[str, Any] = {}
    rows = []
    for name in args.networks:
        network = built[name]
        params = sum(parameter.numel() for parameter in network.parameters())
        steppers, first = {}, {}
        for variant in args.variants:
            steppers[variant] = Stepper(network, variant)
            first[variant] = steppers[variant].step()  # compile happens here
            for _ in range(args.warmup - 1):
                steppers[variant].step()
        times: dict[str, list[float]] = {variant: [] for variant in args.variants}
        for _ in range(args.rounds):
            for variant, stepper in steppers.items():
                times[variant] += [stepper.step() for _ in range(args.steps)]
        base = statistics.median(times["baseline"])
        results[name] = {"params": params, "first_step_seconds": first, "step_seconds": times}
        for variant in args.variants:
            median = statistics.median(times[variant])
            per_image = median / steppers[variant].batch
            speedup = (base / 8) / per_image
            compile_cost = first[variant] - median if variant == "compile" else None
            payback = compile_cost / (base - median) if compile_cost is not None and base > median else None
            rows.append([name, f"{params / 1e6:.2f}M", variant, f"{1000 * median:.0f}", f"{1000 * per_image:.1f}",
                         f"{speedup:.2f}x",
                         "-" if compile_cost is None else f"{compile_cost:.0f} s" + (
                             f", pays back after {payback:.0f} steps" if payback is not None else ", never pays back")])
        print("\n".join("  ".join(row) for row in rows[-len(args.variants):]), flush=True)
    print()
    print(format_table(["network", "params", "variant", "step ms (median)", "ms per image", "vs baseline per image",
                        "compile"], rows,
                       title=f"{args.threads} thread(s), {args.rounds} rounds x {args.steps} steps per variant, load "
                             f"average {load[0]:.2f} before"))
    path = write_json("train_speed", {"threads": args.threads, "rounds": args.rounds, "steps": args.steps,
                                      "load_before": load[0], "load_after": os.getloadavg()[0], "networks": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
