"""Scaling: trials per hour with 1 worker (2 threads) and with 2 workers (1 thread each) on one SQLite study.

The same tiny experiment (the narrow U-Net of ``search_efficiency.py``, random sampler, no rung
stopping, a large trial target so the time limit decides) runs for the same wall-clock window
in each arm, through the command line a user would type:

* 1 worker: ``compressor search CONFIG --no-baselines --threads 2 --timeout W``;
* 2 workers: ``compressor search CONFIG --no-baselines --threads 1 --timeout W`` (it creates the
  study), then, as soon as the study exists, ``compressor worker --storage URL --study NAME
  --threads 1 --seed 1 --timeout W'`` (W' is what is left of the window);
* 1 worker with 1 thread, to tell the gain of a second worker from the cost of a second thread
  on a loaded machine.

Trials count when they finished inside the window, measured from the launch of the first
process (start-up, data and reference costs included in both arms); ``--timeout`` makes every
process stop starting trials at the window's end. Each process also gets
``OMP_NUM_THREADS`` equal to its ``--threads`` so that building and costing candidates
(outside training, where torch otherwise uses every core) follow the same setting;
``--no-thread-env`` leaves the environment alone. Besides the count inside the window, the
table gives the rate after start-up (from the first trial's start to the window's end) and the
rate until the last trial ended (the trials running at the window's end included), which
stays meaningful when a trial is longer than the window. With ``--rounds 2`` the arms run
in order and then in reverse order, so that a drift in the load hits every arm alike. Writes
``experiments/benchmarks/results/scaling.json``.

    python experiments/benchmarks/scaling.py                  # 180 s per arm
    python experiments/benchmarks/scaling.py --window 600 --rounds 2
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from common import synthetic_search, write_json  # noqa: E402

from compressor.study import TrialRecord, trial_records  # noqa: E402
from compressor.tables import format_table  # noqa: E402

STUDY = "scaling"
ARMS = {"1 worker x 2 threads": [2], "2 workers x 1 thread": [1, 1], "1 worker x 1 thread": [1]}


def experiment_data(run_dir: Path, steps: int) -> dict[str, Any]:
    return synthetic_search(
        STUDY, run_dir, steps=steps, threads=2, lr=0.002, max_params="60k",
        search={"n_trials": 100000, "sampler": "random", "seed": 0, "rungs": []},
    )


def environment(threads: int, thread_env: bool) -> dict[str, str]:
    env = dict(os.environ)
    if thread_env:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def study_ready(url: str) -> bool:
    try:
        study = optuna.load_study(study_name=STUDY, storage=url)
    except Exception:  # not created yet (or the database is being created)
        return False
    return study.user_attrs.get("compressor_format") is not None


def run_arm(name: str, threads: list[int], folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    run_dir = folder / name.replace(" ", "_")
    run_dir.mkdir(parents=True)
    config = run_dir / "experiment.yaml"
    config.write_text(yaml.safe_dump(experiment_data(run_dir, args.steps), sort_keys=False))
    url = f"sqlite:///{run_dir / 'search.db'}"
    logs = []
    launched = datetime.datetime.now()
    started = time.perf_counter()
    load_before = os.getloadavg()
    command = [sys.executable, "-m", "compressor", "search", str(config), "--no-baselines", "--threads",
               str(threads[0]), "--timeout", str(args.window), "--storage", url, "--study", STUDY]
    logs.append(open(run_dir / "worker0.log", "w"))
    processes = [subprocess.Popen(command, stdout=logs[-1], stderr=subprocess.STDOUT,
                                  env=environment(threads[0], args.thread_env))]
    for index, count in enumerate(threads[1:], start=1):
        while not study_ready(url):
            if processes[0].poll() is not None:
                raise SystemExit(f"the first worker exited early; see {run_dir / 'worker0.log'}")
            time.sleep(0.5)
        left = args.window - (time.perf_counter() - started)
        command = [sys.executable, "-m", "compressor", "worker", "--storage", url, "--study", STUDY, "--threads",
                   str(count), "--seed", str(index), "--timeout", f"{max(left, 1):.1f}"]
        logs.append(open(run_dir / f"worker{index}.log", "w"))
        processes.append(subprocess.Popen(command, stdout=logs[-1], stderr=subprocess.STDOUT,
                                          env=environment(count, args.thread_env)))
    deadline = started + args.window + args.grace
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.perf_counter(), 1))
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait()
    for log in logs:
        log.close()
    load_after = os.getloadavg()
    study = optuna.load_study(study_name=STUDY, storage=url)
    window_end = launched + datetime.timedelta(seconds=args.window)
    inside = [trial for trial in study.get_trials(deepcopy=False)
              if trial.datetime_complete is not None and trial.datetime_complete <= window_end]
    records = trial_records(inside)
    starts = [trial.datetime_start for trial in study.get_trials(deepcopy=False) if trial.datetime_start]
    done = [trial for trial in study.get_trials(deepcopy=False) if trial.datetime_complete is not None
            and TrialRecord.from_trial(trial).status in ("complete", "stopped", "infeasible")]
    last = max((trial.datetime_complete for trial in done), default=None)
    finished = [r for r in records if r.status in ("complete", "stopped", "infeasible")]
    trained = [r for r in records if r.status in ("complete", "stopped") and r.duplicate_of is None]
    hour = 3600 / args.window
    first = (min(starts) - launched).total_seconds() if starts else None
    steady_hour = 3600 / (args.window - first) if first is not None and first < args.window else 0.0
    return {
        "arm": name, "threads": threads, "window_seconds": args.window, "finished": len(finished),
        "trained": len(trained), "failed": sum(r.status == "failed" for r in records),
        "finished_per_hour": len(finished) * hour, "trained_per_hour": len(trained) * hour,
        "training_steps_per_hour": len(trained) * args.steps * hour,
        "median_train_seconds": statistics.median(r.train_seconds for r in trained if r.train_seconds)
        if trained else None,
        "first_trial_after_seconds": first,
        "finished_per_hour_after_startup": len(finished) * steady_hour,
        "finished_total": len(done),
        "finished_per_hour_until_last": len(done) * 3600 / (last - launched).total_seconds() if last else 0.0,
        "trained_per_hour_after_startup": len(trained) * steady_hour,
        "load_before": load_before, "load_after": load_after,
        "logs": {f"worker{index}": (run_dir / f"worker{index}.log").read_text()[-3000:]
                 for index in range(len(threads))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=180, help="seconds of wall clock per arm (default 180)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per trial (default 60)")
    parser.add_argument("--rounds", type=int, default=1, choices=(1, 2), help="2: the arms in order, then in reverse order")
    parser.add_argument("--grace", type=float, default=120, help="seconds after the window before stragglers are stopped")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), metavar="ARM",
                        help=f"arms to run, in this order (default: all: {', '.join(repr(arm) for arm in ARMS)})")
    parser.add_argument("--keep", metavar="DIR", help="keep the studies and worker logs in DIR")
    parser.add_argument("--no-thread-env", dest="thread_env", action="store_false",
                        help="do not set OMP_NUM_THREADS to each worker's --threads")
    args = parser.parse_args()
    order = list(args.arms) if args.rounds == 1 else [*args.arms, *reversed(args.arms)]
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or scratch
        for index, name in enumerate(order):
            print(f"running {name} for {args.window:.0f} s (load average {os.getloadavg()[0]:.2f})", flush=True)
            run = run_arm(name, ARMS[name], Path(folder) / str(index), args)
            runs.append(run)
            first = run["first_trial_after_seconds"]
            print(f"  {run['finished']} finished ({run['trained']} trained) in the window, the first trial started "
                  f"{first if first is None else round(first, 1)} s after the launch; load average "
                  f"{run['load_before'][0]:.2f} before, {run['load_after'][0]:.2f} after", flush=True)
    rows = []
    base = None
    for name in args.arms:
        mine = [run for run in runs if run["arm"] == name]
        finished = statistics.median(run["finished_per_hour"] for run in mine)
        trained = statistics.median(run["trained_per_hour"] for run in mine)
        base = base or (finished, trained)
        steady = statistics.median(run["finished_per_hour_after_startup"] for run in mine)
        until_last = statistics.median(run["finished_per_hour_until_last"] for run in mine)
        startup = [run["first_trial_after_seconds"] for run in mine if run["first_trial_after_seconds"] is not None]
        train_seconds = [run["median_train_seconds"] for run in mine if run["median_train_seconds"]]
        rows.append([name, f"{finished:.0f}", f"{trained:.0f}", f"{finished / base[0]:.2f}x" if base[0] else "-",
                     f"{trained / base[1]:.2f}x" if base[1] else "-",
                     f"{statistics.median(startup):.0f}" if startup else "-", f"{steady:.0f}", f"{until_last:.0f}",
                     f"{statistics.median(train_seconds):.1f}" if train_seconds else "-"])
    print()
    print(format_table(
        ["arm", "finished trials/h", "trained trials/h", "finished vs 1 worker", "trained vs 1 worker",
         "start-up s", "finished/h after start-up", "finished/h until the last ended", "median train s"], rows,
        title=(f"one SQLite study, {args.window:.0f} s window per arm ({len(runs)} runs, order {', '.join(order)}), "
               f"{args.steps} steps per trial; finished = trained + over budget"),
    ))
    loads = [load for run in runs for load in (run["load_before"], run["load_after"])]
    print(f"load average (1 min) before/after each run: {', '.join(f'{load[0]:.2f}' for load in loads)} "
          f"on {os.cpu_count()} cores")
    path = write_json("scaling", {"window": args.window, "steps": args.steps, "order": order,
                                  "thread_env": args.thread_env, "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
