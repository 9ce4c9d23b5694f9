"""How long a search takes to build its candidates: this tree's code against another commit's, side by side.

Every trial of the quickstart's study (``runs/quickstart/search.db``, the recipes its sampler drew,
over budget or not) is built the way the search builds it (``SearchSetup.build``: inheriting from
the quickstart's stored parent U-Net, no diagnostics) by this tree's code and by the code of
``--against`` (a commit, unpacked with ``git archive`` and imported in a subprocess), in turns,
``--rounds`` times each; each process builds every recipe once to warm up, then ``--repeats``
times, and keeps each recipe's fastest build. Reported: the sum over the recipes, per code, and
the ratio of the medians over rounds.

    python experiments/benchmarks/build_speed.py --against 7522e1a --rounds 3 --threads 1

Writes ``experiments/benchmarks/results/build_speed.json`` (``--name``: another file). Needs the quickstart's study and
parent (``compressor search experiments/quickstart.yaml`` once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import commit_code, machine, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

#: what each subprocess runs: the quickstart's setup from its stored parent, every trial's recipe built
CHILD = """
import json, sys, time
sys.path.insert(0, {benchmarks!r})
import optuna, torch
optuna.logging.set_verbosity(optuna.logging.WARNING)
from common import quickstart_setup
setup = quickstart_setup({run_dir!r}, {threads})
torch.set_num_threads({threads})
study = optuna.load_study(study_name="quickstart", storage="sqlite:///" + {database!r})
recipes = [(trial.number, setup.space(optuna.trial.FixedTrial(trial.params, number=trial.number), setup.context))
           for trial in study.trials]
def build_all():
    seconds = {{}}
    for number, recipe in recipes:
        started = time.perf_counter()
        setup.build(recipe)
        seconds[number] = time.perf_counter() - started
    return seconds
build_all()
runs = [build_all() for _ in range({repeats})]
print("RESULT " + json.dumps({{str(number): min(run[number] for run in runs) for number, _ in recipes}}))
"""


def timed(code: Path, args: argparse.Namespace) -> dict[str, float]:
    run_dir = Path(args.run_dir).resolve()
    script = CHILD.format(benchmarks=str(ROOT / "experiments" / "benchmarks"), run_dir=str(run_dir),
                          threads=args.threads, database=str(run_dir / "search.db"), repeats=args.repeats)
    done = subprocess.run([sys.executable, "-c", script], cwd=code, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(code)}, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"the build run in {code} failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the commit whose code is timed beside this tree's")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="builds of every recipe a process keeps the fastest of")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "quickstart"), help="the quickstart's run folder")
    parser.add_argument("--name", default="build_speed", help="the results file's name (results/<name>.json)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        other = commit_code(args.against, Path(folder) / "other")
        totals: dict[str, list[float]] = {"this tree": [], args.against: []}
        per_trial: dict[str, list[dict[str, float]]] = {"this tree": [], args.against: []}
        for round_ in range(args.rounds):
            for label, code in (("this tree", ROOT), (args.against, other)):
                seconds = timed(code, args)
                totals[label].append(round(sum(seconds.values()), 3))
                per_trial[label].append({key: round(value, 3) for key, value in seconds.items()})
                print(f"round {round_ + 1}: {label:<10} {sum(seconds.values()):6.2f} s for {len(seconds)} builds", flush=True)
    ratio = statistics.median(totals[args.against]) / statistics.median(totals["this tree"])
    print(f"{args.against} / this tree: {ratio:.2f}x (medians over {args.rounds} rounds)")
    write_json(args.name, {
        "command": "python experiments/benchmarks/" + " ".join([Path(__file__).name, *sys.argv[1:]]),
        "machine": machine(), "threads": args.threads, "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2), "against": args.against, "totals_seconds": totals,
        "per_trial_seconds": per_trial, "ratio": round(ratio, 3),
    })


if __name__ == "__main__":
    main()
