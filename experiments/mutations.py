"""Does the default test run catch a regression? Each mutant below changes one line that a claim of
the README or BENCHMARKS rests on; the default tests must fail with it.

Each mutant is applied alone to a fresh copy of the working tree (the tracked and untracked,
not ignored files), and the tests it names are run there with the default selection (not
``slow``), the copy first on ``PYTHONPATH`` so that CLI subprocesses import it too. A control
run of every named test file on the unchanged copy must pass first, or a "caught" means nothing.

    python experiments/mutations.py                 # every mutant, its own test files
    python experiments/mutations.py --only rung_never_stops int8_calibration_scale
    python experiments/mutations.py --full --only rung_never_stops   # the whole default run (-x)

Results: ``experiments/benchmarks/results/mutations.json`` (with ``--full``: ``mutations-full.json``), a row
per mutant, the rows of mutants not run this time kept from the last run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "benchmarks"))


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    claim: str
    tests: tuple[str, ...]


MUTANTS = [
    # -- the five of issue 25 --------------------------------------------------------------
    Mutant("rung_never_stops", "compressor/search/runner.py",
           "return not self._stop_at(trial, rung_key(rung), setup.values(value, cost))", "return True",
           "rungs stop weak trials (README, multi-fidelity)", ("tests/test_search_logic.py",)),
    Mutant("int8_calibration_scale", "compressor/runtime/int8.py",
           "batches = [_array(batch) for batch in calibration]",
           "batches = [_array(batch) * 1000 for batch in calibration]",
           "int8 is calibrated on normalized training patches (README, deploy)", ("tests/test_deploy.py",)),
    Mutant("release_no_op", "compressor/data/base.py",
           "mapping.madvise(mmap.MADV_DONTNEED)", "pass",
           "memory stays flat at Inria scale (BENCHMARKS, data at full scale)", ("tests/test_data_release.py",)),
    Mutant("fold_mean", "compressor/transforms/inherit.py",
           ".reshape(kernel.shape[0], width, group, *kernel.shape[2:]).sum(dim=2)",
           ".reshape(kernel.shape[0], width, group, *kernel.shape[2:]).mean(dim=2)",
           "skip fusion through a projection inherits exactly (README, inheritance)", ("tests/test_inheritance.py",)),
    Mutant("prune_default_l1", "compressor/transforms/prune.py",
           'importance: Literal["lamp", "l1", "l2", "random"] = "lamp",',
           'importance: Literal["lamp", "l1", "l2", "random"] = "l1",',
           "prune ranks channels by LAMP by default (README, BENCHMARKS prune probe)", ("tests/test_transforms.py",)),
    # -- ten more ------------------------------------------------------------------------------
    Mutant("interval_z_not_t", "compressor/intervals.py",
           "half = t_quantile(n - 1) * std / math.sqrt(n)", "half = 1.95996 * std / math.sqrt(n)",
           "confirmation intervals are Student-t 95% intervals (README, confirm)",
           ("tests/test_confirm.py", "compressor/intervals.py")),
    Mutant("within_by_mean", "compressor/intervals.py",
           "if difference.low >= -points:", "if difference.mean >= -points:",
           "'within 1 point' is said only when the whole interval is (README, confirm verdicts)",
           ("tests/test_confirm.py", "compressor/intervals.py")),
    Mutant("floor_admits_constant", "compressor/floor.py",
           "return metric is not None and metric == metric and metric > self.threshold",
           "return metric is not None and metric == metric and metric >= self.threshold",
           "a model must beat the best constant prediction to be a result (README, floor)",
           ("tests/test_confirm.py", "tests/test_report_tables.py", "tests/test_search.py", "compressor/floor.py")),
    Mutant("dominance_ties", "compressor/study/pareto.py",
           "return bool(np.all(first <= second) and np.any(first < second))",
           "return bool(np.all(first <= second) and np.any(first <= second))",
           "the Pareto front keeps every non-dominated trial (README, report)",
           ("tests/test_pareto.py", "compressor/study/pareto.py")),
    Mutant("latency_mean", "compressor/latency.py",
           "median_ms=statistics.median(timings_ms)", "median_ms=statistics.mean(timings_ms)",
           "a latency is the median of its repeats (README, BENCHMARKS latency)",
           ("tests/test_cost.py", "tests/test_deploy.py", "compressor/latency.py")),
    Mutant("si_suffix_binary", "compressor/units.py",
           "value = float(match.group(1)) * _SUFFIXES[match.group(2).lower()]",
           "value = float(match.group(1)) * _SUFFIXES[match.group(2).lower()] * 1.024",
           "budgets read 60k as 60000 (README, budgets)", ("tests/test_budget.py", "compressor/units.py")),
    Mutant("bn_reestimation_momentum", "compressor/train/loop.py",
           "norm.momentum = None", "norm.momentum = 0.1",
           "batch-norm statistics are re-estimated as a cumulative average (README, inheritance)",
           ("tests/test_distill_compress.py",)),
    Mutant("distill_no_t_squared", "compressor/train/losses.py",
           "return per_pixel.mean() * temperature**2", "return per_pixel.mean()",
           "distillation's gradient keeps its scale at any temperature (Hinton et al.)",
           ("tests/test_distill_compress.py", "tests/test_train.py")),
    Mutant("iou_union", "compressor/metrics.py",
           "union = true_positive + false_positive + false_negative",
           "union = true_positive + false_positive + false_negative + 1",
           "IoU is TP / (TP + FP + FN) (README, metrics)", ("tests/test_metrics.py", "compressor/metrics.py")),
    Mutant("still_running_silent", "compressor/search/__init__.py",
           "    others = others_running(study)\n", "    others = []\n",
           "a search that ends beside a live worker says so and does not confirm yet (README, workers)",
           ("tests/test_workers.py",)),
    Mutant("latency_limit_unchecked", "compressor/budget.py",
           'constraint = 1.0 if value is None else float(value) / limit - 1.0',
           'constraint = 1.0 if value is None else min(0.0, float(value) / limit - 1.0) if metric == "latency_ms" '
           'else float(value) / limit - 1.0',
           "max_latency_ms decides feasibility in a search (README, budgets)", ("tests/test_search_logic.py",)),
    Mutant("lenient_pip", "compressor/data/cache.py",
           '_LENIENT_PIP = "pip<23.3"', '_LENIENT_PIP = "pip<25"',
           "the solaris wheel is fetched with a pip that still reads its metadata (README, data)",
           ("tests/test_data_spacenet.py",)),
]


def tree_files() -> list[str]:
    """The working tree's tracked and untracked, not ignored, files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def fresh_copy(files: list[str]) -> Path:
    copy = Path(tempfile.mkdtemp(prefix="compressor-mutant-"))
    for name in files:
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return copy


def run_tests(copy: Path, tests: tuple[str, ...], *, full: bool) -> tuple[int, list[str], float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"]
    command += [] if full else list(tests)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, flags=re.MULTILINE)))
    return result.returncode, failed, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these mutants only")
    parser.add_argument("--full", action="store_true", help="run the whole default run (-x) for each mutant")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {', '.join(sorted(unknown))}")
    files = tree_files()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    control = fresh_copy(files)
    try:
        tests = tuple(sorted({test for mutant in chosen for test in mutant.tests}))
        code, failed, seconds = run_tests(control, tests, full=args.full)
        print(f"control (no mutant): exit {code} in {seconds:.0f} s", flush=True)  # a flaky test shows here
        if code != 0:
            print(f"the unchanged tree fails: {failed}", file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(control, ignore_errors=True)
    rows = []
    for mutant in chosen:
        copy = fresh_copy(files)
        try:
            source = (copy / mutant.path).read_text()
            if source.count(mutant.old) != 1:
                raise SystemExit(f"{mutant.name}: the line to change occurs {source.count(mutant.old)} times in "
                                 f"{mutant.path}; update the mutant")
            (copy / mutant.path).write_text(source.replace(mutant.old, mutant.new))
            code, failed, seconds = run_tests(copy, mutant.tests, full=args.full)
        finally:
            shutil.rmtree(copy, ignore_errors=True)
        # tests failed (1; 2 when -x stops xdist's workers): not a collection error or no tests
        caught = code in (1, 2) and bool(failed)
        rows.append({"name": mutant.name, "path": mutant.path, "old": mutant.old, "new": mutant.new, "commit": commit,
                     "claim": mutant.claim, "tests": list(mutant.tests) if not args.full else ["(default run)"],
                     "caught": caught, "failed": failed, "seconds": round(seconds, 1)})
        print(f"{mutant.name:26s} {'caught' if caught else 'MISSED':6s} {seconds:5.0f} s  {', '.join(failed[:3])}",
              flush=True)
    from common import RESULTS, write_json

    # rows of mutants not run this time are kept from the last run
    name = "mutations-full" if args.full else "mutations"
    earlier = RESULTS / f"{name}.json"
    current = {(m.name, m.path, m.old, m.new) for m in MUTANTS}
    kept = {row["name"]: row for row in (json.loads(earlier.read_text())["mutants"] if earlier.exists() else [])
            if (row["name"], row["path"], row["old"], row["new"]) in current}  # a changed mutant is run again
    kept.update({row["name"]: row for row in rows})
    order = [m.name for m in MUTANTS]
    path = write_json(name, {"mutants": sorted(kept.values(), key=lambda row: order.index(row["name"])
                                               if row["name"] in order else len(order))})
    print(f"wrote {path}")
    return 0 if all(row["caught"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
