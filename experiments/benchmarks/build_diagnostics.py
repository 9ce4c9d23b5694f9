"""What a search saves by building its candidates without diagnostics.

``compressor.apply`` measures, after every step, the error of each replaced layer and of the
network's output (the tables ``apply`` and ``compress`` print). A search shows none of them, so
``build_candidate`` passes ``diagnostics=False``. This times the build of a few recipes on the
quickstart's U-Net (one input channel, 64x64 patches, calibration patches as a search keeps them)
with diagnostics on and off, interleaved, ``--repeats`` times each, on ``--threads`` torch threads,
and reports the medians and their ratio. Writes ``experiments/benchmarks/results/build_diagnostics.json``.

    python experiments/benchmarks/build_diagnostics.py --threads 1 --repeats 5
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

import compressor  # noqa: E402
from compressor.transforms import Recipe  # noqa: E402

RECIPES = {
    "the paper's recipe": Recipe.load(Path(__file__).parents[1] / "recipes" / "micronet_like.yaml"),
    "fire": [{"name": "fire"}],
    "separable + prune 0.5": [{"name": "separable"}, {"name": "prune", "ratio": 0.5}],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    network = compressor.unet(in_channels=1, norm="batch").eval()
    example = torch.zeros(1, 1, 64, 64)
    calibration = [torch.randn(8, 1, 64, 64, generator=torch.Generator().manual_seed(0))]
    load = os.getloadavg()[0]
    rows = {}
    for name, recipe in RECIPES.items():
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for diagnostics in (True, False):  # interleaved: both see the same load
                started = time.perf_counter()
                compressor.apply(network, recipe, example, count_flops=False, init="inherit",
                                 calibration=calibration, diagnostics=diagnostics)
                times[diagnostics].append(time.perf_counter() - started)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        rows[name] = {"with_diagnostics_s": round(on, 3), "without_s": round(off, 3), "ratio": round(on / off, 2),
                      "runs": {str(key): [round(value, 3) for value in values] for key, values in times.items()}}
        print(f"{name:<24} with diagnostics {on:6.2f} s   without {off:6.2f} s   {on / off:4.1f}x  (median of "
              f"{args.repeats}, {args.threads} thread(s))")
    path = write_json("build_diagnostics", {"threads": args.threads, "repeats": args.repeats,
                                            "load_average_before": round(load, 2), "recipes": rows})
    print(f"load average before: {load:.2f}; written to {path}")


if __name__ == "__main__":
    main()
