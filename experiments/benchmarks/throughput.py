"""Throughput on this CPU: training and inference images/s, and achieved GFLOP/s against a matmul peak.

Models: the reference U-Net, Micro-Net and the paper-like recipe
(``experiments/recipes/micronet_like.yaml``) applied to U-Net, as their builders make them
(3 input channels, 2 classes, no norm); with ``--study NAME --storage URL`` also the
Pareto-front models of a search, rebuilt from their recipes (``rebuild_trial``).

* training: forward, cross-entropy, backward and an AdamW step on a batch of 8 at 64x64
  and 128x128;
* inference: ``torch.no_grad`` forward in eval mode, batch 1 and 8 at 256x256;
* achieved GFLOP/s: fvcore's FLOPs of the batch (one multiply-add = one flop) x batches/s;
  a training step counts 3x its forward;
* peak: a float32 ``N x N`` matmul (N**3 multiply-adds, the same convention), same threads.

Every configuration is warmed up once, then timed ``--repeats`` times in rounds (each round
times every configuration once, the matmul ``--matmul-runs`` times, for every thread count of
``--threads``), so all figures share the same load; the medians are printed. Writes ``experiments/benchmarks/results/throughput.json``.

    python experiments/benchmarks/throughput.py
    python experiments/benchmarks/throughput.py --threads 2 1 --repeats 5 --study quickstart --storage sqlite:///runs/quickstart/search.db
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from common import write_json  # noqa: E402

import compressor  # noqa: E402
from compressor.tables import format_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Case:
    """One timed configuration: a callable doing one batch, its FLOPs (multiply-adds) and image count."""

    model: str
    mode: str
    batch: int
    size: int
    run: Callable[[], None]
    flops: float
    images: int


def models(args: argparse.Namespace) -> dict[str, nn.Module]:
    found: dict[str, nn.Module] = {"U-Net": compressor.unet(), "Micro-Net": compressor.micronet()}
    recipe = compressor.Recipe.load(ROOT / "experiments" / "recipes" / "micronet_like.yaml")
    found["U-Net + micronet_like.yaml"], _ = compressor.apply(compressor.unet(), recipe, (1, 3, 64, 64),
                                                             count_flops=False)
    if args.study:
        from compressor.search import front, load_study
        from compressor.search.export import rebuild_trial
        from compressor.study import study_info, trial_records

        study = load_study(args.storage, args.study)
        info = study_info(study)
        for record in front(trial_records(study), info.objectives, info.threshold)[: args.max_front]:
            rebuilt = rebuild_trial(args.storage, args.study, record.number, untrained=True)
            found[f"trial {record.number} ({record.recipe_short})"] = rebuilt.model
    return found


def training_case(name: str, model: nn.Module, batch: int, size: int) -> Case:
    model = model.train()
    in_channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    images = torch.randn(batch, in_channels, size, size)
    generator = torch.Generator().manual_seed(0)
    classes = model(images[:1]).shape[1]
    target = torch.randint(0, classes, (batch, size, size), generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(images), target)
        loss.backward()
        optimizer.step()

    flops = compressor.measure(model, (batch, in_channels, size, size)).flops
    return Case(name, "train", batch, size, step, 3.0 * flops, batch)


def inference_case(name: str, model: nn.Module, batch: int, size: int) -> Case:
    in_channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    images = torch.randn(batch, in_channels, size, size)

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            model(images)

    flops = compressor.measure(model, (batch, in_channels, size, size)).flops
    return Case(name, "infer", batch, size, forward, float(flops), batch)


def matmul_case(n: int) -> Case:
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    return Case("matmul", "peak", 1, n, lambda: torch.mm(a, b, out=out), float(n) ** 3, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2],
                        help="torch thread counts, interleaved in every round (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--infer-size", type=int, default=256)
    parser.add_argument("--infer-batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--matmul", type=int, default=2048, help="side of the peak matmul (default 2048)")
    parser.add_argument("--matmul-runs", type=int, default=5, help="matmuls timed per round (default 5)")
    parser.add_argument("--study", help="also the Pareto-front models of this study")
    parser.add_argument("--storage", help="the study's storage URL")
    parser.add_argument("--max-front", type=int, default=4, help="at most this many front models (by params)")
    args = parser.parse_args()
    if args.study and not args.storage:
        parser.error("--study needs --storage")
    torch.manual_seed(0)
    loads = [os.getloadavg()]
    cases = []
    for name, model in models(args).items():
        cases += [training_case(name, model, args.train_batch, size) for size in args.train_sizes]
        cases += [inference_case(name, model, batch, args.infer_size) for batch in args.infer_batches]
    peak_case = matmul_case(args.matmul)
    seconds = {threads: [[] for _ in cases] for threads in args.threads}
    matmul = {threads: [] for threads in args.threads}
    for round_ in range(args.repeats + 1):  # round 0 is the warm-up
        for threads in args.threads:
            torch.set_num_threads(threads)
            for _ in range(args.matmul_runs):
                started = time.perf_counter()
                peak_case.run()
                if round_:
                    matmul[threads].append(time.perf_counter() - started)
            for index, case in enumerate(cases):
                started = time.perf_counter()
                case.run()
                if round_:
                    seconds[threads][index].append(time.perf_counter() - started)
        loads.append(os.getloadavg())
        print(f"round {round_}/{args.repeats} done, load average {loads[-1][0]:.2f}", flush=True)
    peaks = {threads: peak_case.flops / statistics.median(matmul[threads]) / 1e9 for threads in args.threads}
    results = []
    rows = []
    for index, case in enumerate(cases):
        for threads in args.threads:
            values = seconds[threads][index]
            median = statistics.median(values)
            achieved = case.flops / median / 1e9
            results.append({"model": case.model, "mode": case.mode, "batch": case.batch, "size": case.size,
                            "threads": threads, "seconds": values, "median_seconds": median,
                            "images_per_second": case.images / median, "gflop_per_batch": case.flops / 1e9,
                            "gflops": achieved, "share_of_peak": achieved / peaks[threads]})
            rows.append([case.model, case.mode, f"{case.batch}x{case.size}x{case.size}", threads, f"{median:.3f}",
                         f"{case.images / median:.2f}", f"{case.flops / 1e9:.2f}", f"{achieved:.1f}",
                         f"{100 * achieved / peaks[threads]:.0f}%"])
    print()
    print(format_table(
        ["model", "mode", "batch", "threads", "s / batch", "images/s", "GFLOP / batch", "GFLOP/s", "of peak"], rows,
        title=(f"median of {args.repeats} rounds after a warm-up; FLOPs: fvcore, one multiply-add = one flop; "
               "a training step counts 3x its forward"),
    ))
    for threads in args.threads:
        print(f"peak with {threads} thread(s): {args.matmul}x{args.matmul} float32 matmul, {peaks[threads]:.1f} GFLOP/s "
              f"in the same convention ({2 * peaks[threads]:.1f} counting a multiply-add as 2), median of "
              f"{len(matmul[threads])} runs {statistics.median(matmul[threads]) * 1e3:.0f} ms")
    print(f"load average (1 min) at the start and after each round: {', '.join(f'{load[0]:.2f}' for load in loads)} "
          f"on {os.cpu_count()} cores")
    path = write_json("throughput", {
        "threads": args.threads, "repeats": args.repeats, "loads": loads,
        "peak": {str(threads): {"matmul": args.matmul, "seconds": matmul[threads], "gflops": peaks[threads]}
                 for threads in args.threads},
        "results": results,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
