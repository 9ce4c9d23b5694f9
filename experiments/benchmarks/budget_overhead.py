"""What building a candidate under a file's budget costs (a recipe a study stored, rebuilt by ``export``,
``confirm`` or ``report --int8`` without ``--trust``): the quickstart's recipes built plainly and under the budget,
in turns, medians.

    python experiments/benchmarks/budget_overhead.py --recipes 8 --threads 1

Needs the quickstart's parent (``compressor search experiments/quickstart.yaml`` once). Writes
``experiments/benchmarks/results/budget_overhead.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import ROOT, drawn_recipes, quickstart_setup, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "quickstart"))
    args = parser.parse_args()
    import torch

    from compressor.models.policy import building_from

    setup = quickstart_setup(args.run_dir, args.threads)
    torch.set_num_threads(args.threads)
    recipes = [recipe for _, recipe in drawn_recipes(setup, args.recipes, seed=args.seed)]
    for recipe in recipes:  # the kernel memo filled, as after a search's first trials
        setup.build(recipe)
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {"plain": [], "budget": []}
    for recipe in recipes:
        for kind in ("plain", "budget", "budget", "plain"):
            started = time.perf_counter()
            if kind == "plain":
                setup.build(recipe)
            else:  # as a study read as data builds it
                with building_from("study 'benchmark'", trust=False):
                    setup.build(recipe)
            times[kind].append(time.perf_counter() - started)
    plain, budget = statistics.median(times["plain"]), statistics.median(times["budget"])
    print(f"{args.recipes} recipes x 2 builds each way, {args.threads} thread(s), load {load_before:.2f}: median "
          f"{plain:.3f} s plainly, {budget:.3f} s under the budget, {budget / plain:.2f}x")
    print(f"wrote {write_json('budget_overhead', {'times': times, 'plain': plain, 'budget': budget, 'load_before': load_before, 'threads': args.threads})}")


if __name__ == "__main__":
    main()
