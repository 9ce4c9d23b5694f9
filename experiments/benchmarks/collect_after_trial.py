"""What the collection after each trial costs, with the objects alive before the trials frozen and without.

A search asks Optuna to collect after each trial (``gc_after_trial``: candidates, torch-pruning's
graphs and fvcore's traces leave modules in reference cycles). A full collection walks every object
of the process; :func:`compressor.heap.frozen_heap` freezes those alive before the trials, so it
walks what the trials made. Each arm runs the same small synthetic search (``--trials`` trials of
``--steps`` steps, one thread) in a fresh process; every collection Optuna makes is timed.

Writes ``experiments/benchmarks/results/collect_after_trial.json``.

    python experiments/benchmarks/collect_after_trial.py --trials 8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import synthetic_search, write_json  # noqa: E402

ARMS = ("frozen", "not frozen")


def run_arm(arm: str, trials: int, steps: int, threads: int) -> dict:
    """One search in this process, every ``gc.collect`` timed (the arm ``not frozen`` replaces the freeze by nothing)."""
    import contextlib
    import gc

    import compressor.search as search
    from compressor.experiment import Experiment
    from compressor.pipeline import run_search

    if arm == "not frozen":
        search.frozen_heap = contextlib.nullcontext
    seconds: list[float] = []
    collect = gc.collect

    def timed(*args: int) -> int:
        after_freeze = gc.get_freeze_count() > 0  # not the freeze's own collection, made before it
        started = time.perf_counter()
        found = collect(*args)
        if after_freeze or arm == "not frozen":
            seconds.append(time.perf_counter() - started)
        return found

    with tempfile.TemporaryDirectory() as folder:
        data = synthetic_search("collect", Path(folder), steps=steps, threads=threads,
                                search={"n_trials": trials, "sampler": "random", "seed": 0, "rungs": [], "floor": "zero"})
        experiment = Experiment.from_dict(data, source="collect_after_trial")
        gc.collect = timed
        started = time.perf_counter()
        run_search(experiment, echo=lambda line: None)
        wall = time.perf_counter() - started
        gc.collect = collect
    return {"arm": arm, "collections": len(seconds), "seconds": seconds, "median_s": statistics.median(seconds),
            "total_s": sum(seconds), "search_s": wall, "objects": len(gc.get_objects())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # one arm, in a process of its own
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.trials, args.steps, args.threads)))
        return
    load = os.getloadavg()
    results = []
    for arm in ARMS:
        command = [sys.executable, __file__, "--arm", arm, "--trials", str(args.trials), "--steps", str(args.steps),
                   "--threads", str(args.threads)]
        finished = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(finished.stdout.strip().splitlines()[-1]))
        row = results[-1]
        print(f"{arm:>10}: {row['collections']} collections, median {row['median_s'] * 1000:.1f} ms, "
              f"total {row['total_s']:.2f} s of a {row['search_s']:.1f} s search; {row['objects']} objects tracked")
    frozen, plain = results
    print(f"a collection after a trial: {plain['median_s'] / frozen['median_s']:.0f}x faster frozen "
          f"(load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f})")
    path = write_json("collect_after_trial", {"trials": args.trials, "steps": args.steps, "threads": args.threads,
                                              "load_before": load[0], "arms": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
