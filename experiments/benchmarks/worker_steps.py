"""A second worker or a second thread: training steps per second of a search's candidates on 2 idle cores.

A search on a 2-core machine can run one process with 2 torch threads (the quickstart's
``threads: auto`` on idle cores) or two worker processes with 1 thread each (``compressor worker``
beside the search). Which trains more steps a second? Each network's training step as the loop
takes it (``train_speed.py``'s: forward, cross-entropy plus soft Dice, backward, clipping, AdamW; 8
patches of 64x64, one band), under bf16 autocast as the quickstart's candidates fine-tune
(``--precision fp32``: without), timed in fresh processes:

- ``1 process x 1 thread``; ``1 process x 2 threads``;
- ``2 processes x 1 thread``: two such processes started together, each timing its own steps; the
  steps per second are the two processes' sum.

The three arms take turns (``--rounds`` rounds); medians of the per-step times. Only meaningful on
otherwise idle cores: the script says the load it saw. Writes
``experiments/benchmarks/results/worker_steps.json``.

    python experiments/benchmarks/worker_steps.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import write_json  # noqa: E402

ARMS = ("1 process x 1 thread", "1 process x 2 threads", "2 processes x 1 thread")


def child(network: str, threads: int, steps: int, precision: str) -> None:
    """Times ``steps`` training steps of ``network`` on ``threads`` threads after 3 warm-up steps; prints them."""
    import contextlib

    import torch
    from train_speed import Stepper, networks

    torch.set_num_threads(threads)
    stepper = Stepper(networks()[network], "baseline")
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())
    with autocast:
        for _ in range(3):
            stepper.step()
        times = [stepper.step() for _ in range(steps)]
    print("RESULT " + json.dumps(times), flush=True)


def timed(network: str, threads: int, processes: int, args: argparse.Namespace) -> list[list[float]]:
    """The step times of each of ``processes`` processes started together."""
    command = [sys.executable, __file__, "--child", network, str(threads), str(args.steps), args.precision]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    running = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
    found = []
    for process in running:
        out, _ = process.communicate()
        if process.returncode:
            raise SystemExit(f"a timing process failed ({process.returncode})")
        found.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["paper", "paper+prune0.6", "micronet"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--child", nargs=4, metavar=("NETWORK", "THREADS", "STEPS", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        network, threads, steps, precision = args.child
        child(network, int(threads), int(steps), precision)
        return
    from compressor.tables import format_table

    load_before = os.getloadavg()
    results, rows = {}, []
    for network in args.networks:
        # the one-process arms: their step times; the two-process arm: each process's step times
        times: dict[str, list] = {arm: [] for arm in ARMS}
        for _ in range(args.rounds):
            times[ARMS[0]] += timed(network, 1, 1, args)[0]
            times[ARMS[1]] += timed(network, 2, 1, args)[0]
            times[ARMS[2]] += timed(network, 1, 2, args)
        one = statistics.median(times[ARMS[0]])
        two_threads = statistics.median(times[ARMS[1]])
        each = statistics.median(step for run in times[ARMS[2]] for step in run)
        per_second = {ARMS[0]: 1 / one, ARMS[1]: 1 / two_threads, ARMS[2]: 2 / each}
        results[network] = {"step_seconds": times, "steps_per_second": per_second}
        rows.append([network, f"{1000 * one:.0f}", f"{1000 * two_threads:.0f}", f"{1000 * each:.0f}",
                     f"{per_second[ARMS[1]] / per_second[ARMS[0]]:.2f}x",
                     f"{per_second[ARMS[2]] / per_second[ARMS[0]]:.2f}x",
                     f"{per_second[ARMS[2]] / per_second[ARMS[1]]:.2f}x"])
        print("  ".join(rows[-1]), flush=True)
    load_after = os.getloadavg()
    print(format_table(
        ["network", "1x1 step ms", "1x2 step ms", "2x1 step ms (each)", "1x2 vs 1x1 steps/s", "2x1 vs 1x1 steps/s",
         "2x1 vs 1x2 steps/s"], rows,
        title=f"training steps per second, {args.precision}, {args.rounds} rounds of {args.steps} steps per arm; load "
              f"average {load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} cores"))
    path = write_json("worker_steps", {"precision": args.precision, "rounds": args.rounds, "steps": args.steps,
                                       "load_before": load_before[0], "load_after": load_after[0],
                                       "networks": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
