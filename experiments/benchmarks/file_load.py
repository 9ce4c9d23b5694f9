"""How long a command that reads a model file takes: the code of a commit before against this tree.

Two files are written once by this tree (``compressor apply``'s defaults: 1x3x224x224): U-Net with ``fire``,
and U-Net with the paper's recipe (``experiments/recipes/micronet_like.yaml``). Each is then read by each code in
turns, ``--repeats`` times, every read a fresh process (what a user's command pays):

* ``load``: ``compressor.load_model(FILE)``, timed inside the process (the imports not counted);
* ``cost``: ``compressor cost FILE`` from start to exit (imports, load, fvcore's count at the file's shape).

    python experiments/benchmarks/file_load.py --before d00de26 --repeats 5 --threads 1

Writes ``experiments/benchmarks/results/file_load.json`` (every time, the medians, the load average).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import ROOT, commit_code, write_json  # noqa: E402

FILES = {"fire": ["--transform", "fire"], "the paper's recipe": ["--recipe", str(ROOT / "experiments" / "recipes" / "micronet_like.yaml")]}
LOAD = ("import sys, time; from compressor.saving import load_model; started = time.perf_counter(); "
        "load_model(sys.argv[1]); print(time.perf_counter() - started)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit whose code is timed against this tree")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="file_load")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="file_load-"))
    codes = {"before": commit_code(args.before, scratch / f"code-{args.before}", ("compressor", "search_spaces")),
             "now": ROOT}
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    cli = [sys.executable, "-m", "compressor"]
    files = {}
    for name, flags in FILES.items():
        files[name] = scratch / f"{name.replace(' ', '_').replace(chr(39), '')}.pt"
        subprocess.run([*cli, "apply", "unet", *flags, "--out", str(files[name])], check=True, cwd=scratch,
                       env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True)
    load_before = os.getloadavg()[0]
    times: dict[str, dict[str, dict[str, list[float]]]] = {
        code: {name: {"load": [], "cost": []} for name in files} for code in codes}
    for repeat in range(args.repeats):
        for code, folder in (codes.items() if repeat % 2 == 0 else reversed(codes.items())):
            code_env = {**env, "PYTHONPATH": str(folder)}
            for name, path in files.items():
                loaded = subprocess.run([sys.executable, "-c", LOAD, str(path)], check=True, capture_output=True,
                                        text=True, env=code_env, cwd=scratch)
                times[code][name]["load"].append(float(loaded.stdout.strip().splitlines()[-1]))
                started = time.perf_counter()
                subprocess.run([*cli, "cost", str(path)], check=True, capture_output=True, env=code_env, cwd=scratch)
                times[code][name]["cost"].append(time.perf_counter() - started)
        print(f"round {repeat + 1} of {args.repeats} done", flush=True)
    load_after = os.getloadavg()[0]
    medians = {code: {name: {what: statistics.median(values) for what, values in kinds.items()}
                      for name, kinds in by_file.items()} for code, by_file in times.items()}
    print(f"\n{args.threads} thread(s); load average {load_before:.2f} before, {load_after:.2f} after; medians of "
          f"{args.repeats}, a fresh process each")
    print(f"{'file':<20} {'what':<6} {'before':>8} {'now':>8} {'faster':>7}")
    for name in files:
        for what in ("load", "cost"):
            before, now = medians["before"][name][what], medians["now"][name][what]
            print(f"{name:<20} {what:<6} {before:>7.2f}s {now:>7.2f}s {before / now:>6.2f}x")
    path = write_json(args.name, {"before": args.before, "repeats": args.repeats, "threads": args.threads,
                                  "load_before": load_before, "load_after": load_after, "times": times,
                                  "medians": medians})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
