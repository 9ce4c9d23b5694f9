"""Multi-fidelity where the search works: candidates inheriting from the trained U-Net, on the quickstart.

Each seed runs the quickstart's search (``experiments/quickstart.yaml``: unet_family on the
SpaceNet tile, each candidate a transformed copy of the trained U-Net fine-tuned 100 steps)
with a seeded random sampler, which draws the same candidates whatever the results, and with
every trial evaluated at the rungs (1/9 and 1/3 of its training) but none stopped
(``keep_fraction: 1``). Rung evaluations do not change a trial's weights (tested), so from one
run every stopping rule can be replayed in trial order, exactly as the search applies it
(:func:`compressor.search.fidelity.should_stop` against the trials that reached the rung
before, duplicates following their twin): the training steps it would have spent, and the
hypervolume of the trials it would have finished, against the run that stopped none.
``--verify K`` runs the first seed again for real with ``keep_fraction: 1/K`` (and
``--verify-ranking``), ``--verify-trials`` trials, and checks that the search stopped the trials
the replay of those trials says, and reached its hypervolume. (A study extended by a later call
with more ``--trials`` resumes with a sampler seeded anew, so a fresh run draws the same trials
only up to the first call's count.)

Compute is counted in training steps (what the machine's load cannot bias); the hypervolume is
the studies' own (each cost on a log axis down from 1.1x U-Net's, the metric from 0).
The target: the same hypervolume as the run that stops nothing, within the spread of that
hypervolume over seeds, with at most a third of its training steps.

Writes ``experiments/benchmarks/results/fidelity_inherit.json``.

    python experiments/benchmarks/fidelity_inherit.py --seeds 0 1 2 --trials 24 --threads 1 [--verify 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import ROOT, hypervolume_at, quickstart_search, write_json  # noqa: E402

#: rules replayed: (rungs, keep_fraction, rung_ranking); the search's default is the first
RULES: list[tuple[tuple[float, ...], float, str]] = [
    ((1 / 9, 1 / 3), 1 / 3, "front"), ((1 / 9, 1 / 3), 1 / 2, "front"), ((1 / 9,), 1 / 3, "front"),
    ((1 / 3,), 1 / 3, "front"),
    ((1 / 9, 1 / 3), 1 / 3, "contribution"), ((1 / 9, 1 / 3), 1 / 2, "contribution"),
    ((1 / 9,), 1 / 3, "contribution"), ((1 / 9,), 1 / 2, "contribution"), ((1 / 3,), 1 / 3, "contribution"),
]
MIN_TRIALS = 3  # search.min_trials_at_rung's default


def rule_name(rungs: tuple[float, ...], keep: float, ranking: str = "front") -> str:
    return f"rungs {'+'.join(f'1/{round(1 / rung)}' for rung in rungs)}, keep 1/{round(1 / keep)}, {ranking}"


def replay(study: Any, rungs: tuple[float, ...], keep: float, ranking: str = "front", *,
           until: int | None = None) -> dict[str, Any]:
    """What the rule (``rungs``, ``keep``, ``ranking``) would have done to ``study``'s trials (those
    numbered below ``until``), in their order."""
    from compressor.search.fidelity import rung_key, should_stop
    from compressor.study import (
        hypervolume_reference,
        hypervolume_shares,
        objective_values,
        study_hypervolume,
        trial_records,
    )
    from compressor.train.loop import evaluation_steps

    objectives = ["metric", "params", "flops"]
    directions = ["maximize" if name == "metric" else "minimize" for name in objectives]
    records = [record for record in trial_records(study) if until is None or record.number < until]
    reference = hypervolume_reference(study)
    limit = max(record.steps or 0 for record in records)
    rung_steps = dict(zip(rungs, evaluation_steps(limit, list(rungs))))
    reached: dict[str, list[list[float]]] = {rung_key(rung): [] for rung in rungs}
    status: dict[int, str] = {}
    history, spent, points = [], 0, []
    for record in records:
        steps = 0
        if record.duplicate_of is not None:  # reused, not trained: it ends as its twin did
            status[record.number] = status.get(record.duplicate_of, record.status)
        elif record.status != "complete" or not record.feasible:
            status[record.number] = record.status
        else:
            status[record.number], steps = "complete", record.steps or limit
            costs = {"params": record.params, "flops": record.flops}
            for rung in rungs:
                key = rung_key(rung)
                point = objective_values(record.rung_metrics[key], costs, objectives)
                shares = hypervolume_shares([point, *reached[key]], objectives, reference) if ranking == "contribution" else None
                stop = should_stop(point, reached[key], directions, keep_fraction=keep, min_trials=MIN_TRIALS, shares=shares)
                reached[key].append(point)
                if stop:
                    status[record.number], steps = "stopped", rung_steps[rung]
                    break
        spent += steps
        if status[record.number] == "complete" and record.feasible and record.values:
            points.append(list(record.values))
        history.append((record.number, spent, study_hypervolume(points, objectives, reference)))
    return {"steps": spent, "hypervolume": history[-1][2] if history else 0.0, "history": history,
            "stopped": sorted(number for number, value in status.items() if value == "stopped")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--verify", type=int, default=0, metavar="K",
                        help="run the first seed again with keep_fraction 1/K and compare it with the replay")
    parser.add_argument("--verify-ranking", default="front", choices=("front", "contribution"))
    parser.add_argument("--verify-trials", type=int, default=24, help="trials of the verification run")
    parser.add_argument("--name", default="fidelity_inherit", help="results file name (default fidelity_inherit)")
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "quickstart_searches"),
                        help="where the studies and the shared parent U-Net are kept (a rerun reuses both)")
    args = parser.parse_args()
    from compressor.cli.console import configure_logging
    from compressor.intervals import Estimate
    from compressor.study import hypervolume_reference, study_hypervolume, trial_records
    from compressor.tables import format_table

    configure_logging()
    started, load = time.perf_counter(), os.getloadavg()
    runs, studies = [], {}
    for seed in args.seeds:
        study = studies[seed] = quickstart_search(args.run_dir, study=f"random-s{seed}", sampler="random", seed=seed,
                                                  trials=args.trials, threads=args.threads, min_trials_at_rung=MIN_TRIALS)
        full = replay(study, (1 / 9, 1 / 3), 1.0)  # stops nothing: the run as it ran
        records = trial_records(study)
        runs.append({
            "seed": seed, "steps": full["steps"], "hypervolume": full["hypervolume"], "full_history": full["history"],
            "trials": {status: sum(record.status == status for record in records)
                       for status in ("complete", "infeasible", "failed", "stopped")},
            "duplicates": sum(record.duplicate_of is not None for record in records),
            "rules": {rule_name(*rule): replay(study, *rule) for rule in RULES},
        })
        print(f"seed {seed}: {full['steps']} steps, hypervolume {full['hypervolume']:.4f}; " + "; ".join(
            f"{name}: {found['steps'] / full['steps']:.2f}x steps, {found['hypervolume']:.4f}"
            for name, found in runs[-1]["rules"].items()), flush=True)
    spread = statistics.stdev(run["hypervolume"] for run in runs) if len(runs) > 1 else float("nan")
    rows, verdicts = [], {}
    for rule in RULES:
        name = rule_name(*rule)
        shares = [run["rules"][name]["steps"] / run["steps"] for run in runs]
        differences = [run["rules"][name]["hypervolume"] - run["hypervolume"] for run in runs]
        at_equal = [run["rules"][name]["hypervolume"] - hypervolume_at(run["full_history"], run["rules"][name]["steps"])
                    for run in runs]  # against stopping none given the same steps (its first trials)
        estimate = Estimate.of(differences)
        cheap = max(shares) <= 1 / 3
        same = abs(statistics.mean(differences)) <= spread if len(runs) > 1 else False
        verdicts[name] = "met" if cheap and same else "not met" if not cheap else "not settled"
        rows.append([name, f"{statistics.median(shares):.2f}x ({min(shares):.2f}-{max(shares):.2f})",
                     estimate.text(digits=4, signed=True), f"{statistics.mean(at_equal):+.4f}",
                     f"{statistics.mean(len(run['rules'][name]['stopped']) for run in runs):.1f}", verdicts[name]])
    print()
    print(format_table(
        ["rule (replayed)", "training steps vs stopping none (median, range)", "hypervolume minus stopping none [95% CI]",
         "minus stopping none at the rule's steps (mean)", "trials stopped (mean)", "target"], rows,
        title=f"{len(runs)} seeds x {args.trials} trials; hypervolume of stopping none "
              f"{statistics.mean(run['hypervolume'] for run in runs):.4f}, spread over seeds (sd) {spread:.4f}"))
    verification = None
    if args.verify:
        seed, keep, ranking = args.seeds[0], 1 / args.verify, args.verify_ranking
        name = f"random-keep{args.verify}-s{seed}" + ("" if ranking == "front" else f"-{ranking}")
        study = quickstart_search(args.run_dir, study=name, sampler="random", seed=seed, trials=args.verify_trials,
                                  threads=args.threads, keep_fraction=keep, min_trials_at_rung=MIN_TRIALS,
                                  rung_ranking=ranking)
        records = trial_records(study)
        actual = sorted(record.number for record in records if record.status == "stopped")
        points = [list(r.values) for r in records if r.status == "complete" and r.feasible and r.values]
        expected = replay(studies[seed], (1 / 9, 1 / 3), keep, ranking, until=args.verify_trials)  # on the run that stopped none
        verification = {"seed": seed, "keep_fraction": keep, "rung_ranking": ranking, "stopped": actual, "replayed_stopped": expected["stopped"],
                        "steps": sum(record.steps or 0 for record in records if record.duplicate_of is None),
                        "replayed_steps": expected["steps"],
                        "hypervolume": study_hypervolume(points, ["metric", "params", "flops"], hypervolume_reference(study)),
                        "replayed_hypervolume": expected["hypervolume"]}
        print(f"verification (seed {seed}, keep 1/{args.verify}, {ranking}, run for real): stopped {actual} (replay "
              f"{expected['stopped']}), {verification['steps']} steps (replay {expected['steps']}), hypervolume "
              f"{verification['hypervolume']:.4f} (replay {expected['hypervolume']:.4f})")
    seconds = time.perf_counter() - started
    print(f"{seconds:.0f} s; load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    path = write_json(args.name, {"seeds": args.seeds, "trials": args.trials, "threads": args.threads,
                                           "spread_sd": spread, "runs": runs, "verdicts": verdicts,
                                           "verification": verification, "seconds": round(seconds),
                                           "load_before": load[0]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
