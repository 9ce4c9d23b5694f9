"""The README's quickstart on a busy machine: a CPU-bound program beside it, ``threads: auto``
against 1 and 2 threads, and the same command on the idle machine (issue 29).

Each run starts from an empty run folder (the tile is cached), runs ``compressor search
experiments/quickstart.yaml`` as the README does (only ``run_dir`` and the threads changed), and
keeps its wall time, how long U-Net's baseline took, the trials that finished and the front.
The program beside it is a Python busy loop at normal priority, started before the search and
killed after it. Nothing else should run on the machine meanwhile.

    python experiments/benchmarks/busy_quickstart.py                 # auto, 1, 2 busy; auto idle
    python experiments/benchmarks/busy_quickstart.py --runs busy:auto,idle:auto

Writes ``experiments/benchmarks/results/busy_quickstart.json`` (each run as it ends).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments" / "quickstart.yaml"
HOG = "while True: pass"
TRIAL = re.compile(r"^trial (\d+)/\d+\s+(\w+)")
BASELINE = re.compile(r"baseline (\w+): .* in (\d+) s")
FRONT = re.compile(r"^Pareto front of study \S+: (\d+) trial")


def run_once(load: str, threads: str, scratch: Path) -> dict[str, Any]:
    """One quickstart in an empty run folder under ``scratch``; ``load`` is ``busy`` or ``idle``."""
    run_dir = scratch / f"{load}-{threads}"
    shutil.rmtree(run_dir, ignore_errors=True)
    hog = subprocess.Popen([sys.executable, "-c", HOG]) if load == "busy" else None
    command = [sys.executable, "-m", "compressor", "search", str(CONFIG), "--set", f"run_dir={run_dir}",
               "--threads", threads]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    seconds = time.perf_counter() - started
    output = done.stdout + done.stderr
    statuses: dict[str, int] = {}
    for line in output.splitlines():
        if match := TRIAL.match(line):
            statuses[match.group(2)] = statuses.get(match.group(2), 0) + 1
    baselines = {name: int(value) for name, value in BASELINE.findall(output)}
    front = next((int(match.group(1)) for line in output.splitlines() if (match := FRONT.match(line))), None)
    record = {"load": load, "threads": threads, "returncode": done.returncode, "seconds": round(seconds, 1),
              "baseline_seconds": baselines, "trials": statuses, "finished": sum(statuses.values()),
              "trained": statuses.get("complete", 0) + statuses.get("stopped", 0), "front": front,
              "auto_lines": [line for line in output.splitlines() if "threads: auto" in line]}
    (scratch / f"{load}-{threads}.log").write_text(output)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=lambda text: [tuple(item.split(":")) for item in text.split(",")],
                        default=[("busy", "auto"), ("busy", "1"), ("busy", "2"), ("idle", "auto")],
                        help="load:threads pairs, load busy or idle (default: busy:auto,busy:1,busy:2,idle:auto)")
    parser.add_argument("--keep", metavar="DIR", help="keep the run folders and logs here (default: a temporary folder)")
    args = parser.parse_args()
    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="busy-quickstart-"))
    scratch.mkdir(parents=True, exist_ok=True)
    records = []
    for load, threads in args.runs:
        print(f"{load} machine, --threads {threads}: running the quickstart...", flush=True)
        record = run_once(load, threads, scratch)
        records.append(record)
        print(f"  {record['seconds']:.0f} s, U-Net baseline {record['baseline_seconds'].get('unet', '-')} s, "
              f"{record['finished']} trials finished ({record['trained']} trained), front {record['front']}, "
              f"exit {record['returncode']}", flush=True)
        write_json("busy_quickstart", {"command": "python experiments/benchmarks/busy_quickstart.py", "runs": records})
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
