"""What choosing the next trial costs each sampler as a study grows: seconds per ``ask`` at 25 to 200 trials.

The trials are the quickstart space's (their choices and distributions copied, round-robin, from a
finished study of ``--run-dir``, ``random-s0`` by default) with made-up objective values (metric in
[0, 0.5], params and FLOPs log-uniform over the budget's range) and constraint values, as a search
stores them; nothing is trained. For each sampler (as ``compressor.search.study.make_sampler``
makes it) and each study size, ``--asks`` trials are asked with every parameter of the space, as a
trial draws them, and the median seconds per ask is kept.

Writes ``experiments/benchmarks/results/sampler_cost.json``.

    python experiments/benchmarks/sampler_cost.py --sizes 25 50 100 200 --asks 3 --threads 1
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import ROOT, write_json  # noqa: E402

SAMPLERS = ("random", "tpe", "nsga2", "gp")


def filled_study(source, size: int, sampler, seed: int):
    """A study holding ``size`` finished trials shaped like ``source``'s (choices, distributions, constraints)."""
    import optuna

    rng = random.Random(seed)
    shapes = [trial for trial in source.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    for index in range(size):
        shape = shapes[index % len(shapes)]
        params = math.exp(rng.uniform(math.log(1e4), math.log(3e6)))
        flops = math.exp(rng.uniform(math.log(1e8), math.log(2e10)))
        study.add_trial(optuna.trial.create_trial(
            params=shape.params, distributions=shape.distributions, values=[rng.uniform(0, 0.5), params, flops],
            system_attrs={"constraints:params": params / 1.5e6 - 1, "constraints:flops": flops / 1e10 - 1}))
    return study, {name: dist for trial in shapes for name, dist in trial.distributions.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--asks", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "quickstart_searches"))
    parser.add_argument("--source", default="random-s0", help="the finished study whose trials are copied")
    args = parser.parse_args()
    import optuna
    import torch

    from compressor.search.study import make_sampler

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    source = optuna.load_study(study_name=args.source, storage=f"sqlite:///{Path(args.run_dir) / 'search.db'}")
    load = os.getloadavg()
    results: dict[str, dict[str, float]] = {}
    for sampler_name in args.samplers:
        results[sampler_name] = {}
        for size in args.sizes:
            study, space = filled_study(source, size, make_sampler(sampler_name, 0), seed=size)
            seconds = []
            for _ in range(args.asks):
                started = time.perf_counter()
                study.ask(fixed_distributions=space)
                seconds.append(time.perf_counter() - started)
            results[sampler_name][str(size)] = statistics.median(seconds)
            print(f"{sampler_name:>6} at {size:4d} trials: {statistics.median(seconds):.3f} s per ask", flush=True)
    path = write_json("sampler_cost", {"sizes": args.sizes, "asks": args.asks, "threads": args.threads,
                                       "load_before": load[0], "seconds_per_ask": results})
    print(f"load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}; wrote {path}")


if __name__ == "__main__":
    main()
