"""What measuring a candidate costs: fvcore's count and the activation bytes in one forward pass, against two.

``compressor.measure`` used to run the model twice at the cost's input size: once eagerly with
hooks on the leaf modules (the activation bytes), once under fvcore's jit trace (the FLOPs). It now
reads the leaf outputs during fvcore's trace, which runs the model eagerly anyway. The two-pass way
is timed here as what it was: ``measure`` plus one eager forward pass under ``no_grad`` at the same
shape. Interleaved (one of each, ``--repeats`` times), 1 thread by default, medians; the networks a
search measures: U-Net, Micro-Net and the paper's recipe on U-Net, at 1x1x224x224 (the quickstart's
``cost.input_size``, one band).

Writes ``experiments/benchmarks/results/cost_pass.json``.

    python experiments/benchmarks/cost_pass.py --repeats 5 --threads 1
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from compressor.cost import measure
    from compressor.models import micronet, unet
    from compressor.tables import format_table
    from compressor.transforms import Recipe, apply

    shape = (1, 1, args.size, args.size)
    recipe, _ = apply(unet(in_channels=1, num_classes=2, norm="batch"), Recipe.load(ROOT / "experiments" / "recipes" / "micronet_like.yaml"),
                      (1, 1, 64, 64), count_flops=False, diagnostics=False)
    networks = {"U-Net": unet(in_channels=1, num_classes=2, norm="batch"), "Micro-Net": micronet(in_channels=1, num_classes=2, norm="batch"),
                "the paper's recipe on U-Net": recipe}
    load = os.getloadavg()[0]
    rows, results = [], {}
    for name, network in networks.items():
        network.eval()
        one, two = [], []
        for _ in range(args.repeats + 1):  # the first round warms up
            started = time.perf_counter()
            measure(network, shape)
            one.append(time.perf_counter() - started)
            started = time.perf_counter()
            measure(network, shape)
            with torch.no_grad():
                network(torch.zeros(shape))  # the eager pass the activation bytes took
            two.append(time.perf_counter() - started)
        one, two = one[1:], two[1:]
        results[name] = {"one_pass_s": one, "two_passes_s": two}
        rows.append([name, f"{statistics.median(two):.3f}", f"{statistics.median(one):.3f}",
                     f"{statistics.median(two) / statistics.median(one):.2f}x"])
    print(format_table(["network", "two passes s (median)", "one pass s", "faster"], rows,
                       title=f"measure at {shape}, {args.threads} thread(s), {args.repeats} interleaved rounds; "
                             f"load before {load:.2f}, after {os.getloadavg()[0]:.2f}"))
    write_json("cost_pass", {"threads": args.threads, "shape": list(shape), "repeats": args.repeats, "load_before": load,
                             "load_after": os.getloadavg()[0], "networks": results})


if __name__ == "__main__":
    main()
