"""Which sampler the search should use by default: TPE, NSGA-II, Gaussian process and random at equal compute.

Each sampler searches the quickstart's space on its data (``experiments/quickstart.yaml``: unet_family
on the SpaceNet tile, candidates inheriting from the trained U-Net, 100 fine-tuning steps) for
``--trials`` trials on each seed, with no trial stopped (the rung scores are recorded, as in
``fidelity_inherit.py``, whose random runs are these: the studies are shared in ``--run-dir``, a
rerun resumes them). Compute is counted in training steps taken (an over-budget trial takes
none, a recipe already trained is reused) and in wall seconds (building and costing included),
and the hypervolume is the studies' own (each cost on a log axis down from 1.1x U-Net's, the
metric from 0).

Each sampler is compared with random on the seeds both finished, at the compute both reached (the
fewer steps, and apart the fewer seconds, of the pair), and the compute it needed to reach random's
final hypervolume is counted. ``--finished-only`` runs nothing and reads the studies that hold
their trials (two processes can run different seeds or samplers, then one reads them all).
The targets: the default reaches random's final hypervolume with at most half of random's
compute, or 1.3x random's hypervolume at equal compute.

Writes ``experiments/benchmarks/results/sampler_choice.json``. ``--merge`` keeps the runs of that file's
seeds that this run does not run (their studies may be gone with an earlier machine), but only when this
run also repeats one of them exactly (the same hypervolume after every trial): a run that differs says
from which trial, and nothing is written, since rows from two codes or settings would not pair. ``--set key=value`` changes the
quickstart's settings (``finetune.precision=fp32``: as seeds 0-4 were run, before the quickstart's
candidates fine-tuned in bf16).

    python experiments/benchmarks/sampler_choice.py --seeds 0 1 2 3 4 --trials 24 --threads 1
    python experiments/benchmarks/sampler_choice.py --seeds 0 5 6 7 8 9 --samplers random tpe gp --trials 24 \
        --threads 1 --set finetune.precision=fp32 --merge
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, ROOT, hypervolume_at, hypervolume_history, quickstart_search, write_json  # noqa: E402

SAMPLERS = ("random", "tpe", "nsga2", "gp")
LABELS = {"tpe": "TPE", "nsga2": "NSGA-II", "gp": "GP", "random": "random"}
OBJECTIVES = ["metric", "params", "flops"]


def first_trials(study: Any, trials: int) -> list[Any]:
    """The records of the study's first ``trials`` trials that ended, in trial order (a study run further, as
    fidelity_inherit.py may, is read up to there). A trial failed and retried (its process was stopped) is
    replaced by its retry, which has a later number; a trial that failed on its own counts, with its seconds."""
    from compressor.study import trial_records

    retried = {trial.system_attrs.get("failed_trial") for trial in study.get_trials(deepcopy=False)}
    ended = [record for record in trial_records(study)
             if record.status in ("complete", "infeasible", "stopped")
             or (record.status == "failed" and record.number not in retried)]
    return sorted(ended, key=lambda record: record.number)[:trials]


def histories(study: Any, records: list[Any]) -> dict[str, list[tuple[int, float, float]]]:
    """The hypervolume after each of ``records`` (the study's :func:`first_trials`) against the training
    steps and the wall seconds spent so far."""
    from compressor.study import hypervolume_reference

    reference = hypervolume_reference(study)
    return {
        "steps_history": hypervolume_history(records, OBJECTIVES, reference,
                                     cost=lambda record: 0 if record.duplicate_of is not None else record.steps or 0),
        "seconds_history": hypervolume_history(records, OBJECTIVES, reference, cost=lambda record: record.wall_seconds or 0.0),
    }


def needed(history: list[tuple[int, float, float]], target: float) -> float | None:
    """The compute spent when the hypervolume first reached ``target`` (None: never)."""
    return next((spent for _, spent, value in history if value >= target - 1e-12), None)


def finished_study(run_dir: str, name: str, trials: int) -> Any:
    """The study ``name`` of ``run_dir``'s storage if it holds ``trials`` trials that ended (else None), read
    without running anything."""
    import optuna

    storage = f"sqlite:///{Path(run_dir) / 'search.db'}"
    if name not in optuna.study.get_all_study_names(storage):
        return None
    study = optuna.load_study(study_name=name, storage=storage)
    return study if len(first_trials(study, trials)) >= trials else None


def summarize(runs: dict[int, dict[str, Any]], samplers: list[str]) -> tuple[dict[str, Any], list[list[str]]]:
    """Each sampler against random on the seeds both finished, at the compute both reached (the fewer steps,
    the fewer seconds of the pair): hypervolumes, their ratio, and the share of random's steps the sampler
    needed to reach random's final hypervolume."""
    from compressor.intervals import Estimate

    summary, rows = {}, []
    for sampler in samplers:
        seeds = [seed for seed, found in runs.items() if sampler in found and "random" in found]
        mine_hv, random_hv, mine_hv_s, random_hv_s, ratio, ratio_s, share = [], [], [], [], [], [], []
        for seed in seeds:
            mine, random = runs[seed][sampler], runs[seed]["random"]
            steps = min(mine["steps"], random["steps"])
            seconds = min(mine["seconds"], random["seconds"])
            mine_hv.append(hypervolume_at(mine["steps_history"], steps))
            random_hv.append(hypervolume_at(random["steps_history"], steps))
            mine_hv_s.append(hypervolume_at(mine["seconds_history"], seconds))
            random_hv_s.append(hypervolume_at(random["seconds_history"], seconds))
            ratio.append(mine_hv[-1] / random_hv[-1] if random_hv[-1] else float("nan"))
            ratio_s.append(mine_hv_s[-1] / random_hv_s[-1] if random_hv_s[-1] else float("nan"))
            reach = needed(mine["steps_history"], random["hypervolume"])
            share.append(reach / random["steps"] if reach is not None else float("inf"))
        summary[sampler] = {"seeds": seeds, "hypervolume_at_equal_steps": mine_hv, "random_at_equal_steps": random_hv,
                            "hypervolume_at_equal_seconds": mine_hv_s, "random_at_equal_seconds": random_hv_s,
                            "ratio_to_random_at_equal_steps": ratio, "ratio_to_random_at_equal_seconds": ratio_s,
                            "steps_to_reach_random_share": share}
        if not seeds:
            continue
        rows.append([
            LABELS[sampler], str(len(seeds)),
            f"{statistics.median(mine_hv):.4f} / {statistics.median(random_hv):.4f}",
            Estimate.of([v for v in ratio if v == v]).text(digits=2),
            Estimate.of([v for v in ratio_s if v == v]).text(digits=2),
            f"{statistics.median(share):.2f}x" if sampler != "random" else "-",
            " ".join(f"{value:.2f}" if value != float("inf") else "never" for value in share) if sampler != "random" else "-",
        ])
    return summary, rows


def _earlier_runs(args: argparse.Namespace) -> tuple[dict[int, dict[str, Any]], dict[str, dict[str, list[str]]]]:
    """The runs the results file holds, by seed, and the settings each run changed (by seed, then sampler; a
    file that says none: the quickstart's as it was then); nothing without the file. A file of runs with
    another number of trials or threads cannot be merged with this run's."""
    path = RESULTS / "sampler_choice.json"
    if not path.exists():
        return {}, {}
    data = json.loads(path.read_text())
    if (data.get("trials"), data.get("threads")) != (args.trials, args.threads):
        raise SystemExit(f"--merge: {path.name} holds runs of {data.get('trials')} trials on {data.get('threads')} "
                         f"thread(s), this run {args.trials} on {args.threads}; nothing run")
    said = data.get("overrides_by_run", {})
    return ({int(seed): found for seed, found in data["runs"].items()},
            {seed: {sampler: said.get(seed, {}).get(sampler, []) for sampler in found}
             for seed, found in data["runs"].items()})


def _same_run(before: dict[str, Any], now: dict[str, Any]) -> str:
    """Whether a run repeats the results file's run of the same seed and sampler: as many trials, the same
    steps and hypervolume (to 1e-9) after each; else the first trial where they part."""
    old_history, new_history = before["steps_history"], now["steps_history"]
    for index, (old, new) in enumerate(zip(old_history, new_history, strict=False)):
        if old[1] != new[1] or abs(old[2] - new[2]) > 1e-9:
            return f"differs from trial {index} (steps {old[1]} -> {new[1]}, hypervolume {old[2]:.6f} -> {new[2]:.6f})"
    if len(old_history) != len(new_history) or not old_history:
        return f"differs: {len(new_history)} trials against {len(old_history)}"
    return f"the same, {len(new_history)} trials"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "quickstart_searches"))
    parser.add_argument("--finished-only", action="store_true",
                        help="run nothing: read the studies that hold their trials already, skip the others")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a quickstart setting changed for every run (repeatable)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the results file's runs of the seeds not run here; compare those run again")
    args = parser.parse_args()
    earlier, settings = _earlier_runs(args) if args.merge else ({}, {})
    from compressor.cli.console import configure_logging
    from compressor.tables import format_table

    configure_logging()
    started, load = time.perf_counter(), os.getloadavg()
    runs: dict[int, dict[str, Any]] = {}
    checks: list[bool] = []  # each run of a seed the results file holds: the same as the file's
    for seed in args.seeds:  # seed by seed: a run cut short leaves every sampler with as many seeds
        runs[seed] = {}
        for sampler in args.samplers:
            name = f"{sampler}-s{seed}"
            if args.finished_only:
                study = finished_study(args.run_dir, name, args.trials)
                if study is None:
                    print(f"seed {seed} {LABELS[sampler]}: not finished, left out", flush=True)
                    continue
            else:
                study = quickstart_search(args.run_dir, study=name, sampler=sampler, seed=seed, trials=args.trials,
                                          threads=args.threads, overrides=args.overrides)
            records = first_trials(study, args.trials)
            found = histories(study, records)
            runs[seed][sampler] = {
                **found, "hypervolume": found["steps_history"][-1][2], "steps": found["steps_history"][-1][1],
                "seconds": round(found["seconds_history"][-1][1], 1),
                "trials": {status: sum(r.status == status for r in records) for status in ("complete", "infeasible", "stopped", "failed")},
                "duplicates": sum(r.duplicate_of is not None for r in records),
                "best_metric": max((r.metric or 0.0 for r in records if r.status == "complete" and r.feasible), default=0.0),
                "sample_seconds": [round((r.timing or {}).get("sample", 0.0), 3) for r in records],
            }
            print(f"seed {seed} {LABELS[sampler]}: hypervolume {runs[seed][sampler]['hypervolume']:.4f} after "
                  f"{runs[seed][sampler]['steps']} steps, {runs[seed][sampler]['seconds']:.0f} s", flush=True)
            if sampler in earlier.get(seed, {}):
                verdict = _same_run(earlier[seed][sampler], runs[seed][sampler])
                print(f"seed {seed} {LABELS[sampler]} against the results file's run: {verdict}", flush=True)
                checks.append(verdict.startswith("the same"))
    if args.merge and not (checks and all(checks)):
        raise SystemExit("--merge: " + ("a run differs from the results file's run of its seed (above)" if checks else
                                        "no seed of the results file was run again to check that the runs pair")
                         + "; nothing written")
    for seed, found in earlier.items():  # the earlier seeds not run here, with their settings
        for sampler, run in found.items():
            runs.setdefault(seed, {}).setdefault(sampler, run)
    runs = dict(sorted(runs.items()))
    summary, rows = summarize(runs, list(dict.fromkeys([*args.samplers, *(s for f in earlier.values() for s in f)])))
    print()
    print(format_table(
        ["sampler", "seeds", "HV at equal steps, median (sampler / random)", "HV / random's at equal steps [95% CI]",
         "HV / random's at equal seconds [95% CI]", "steps to reach random's final HV (median share)", "per seed"],
        rows, title=f"{args.trials} trials a run, quickstart space and data, no stopping; each sampler against random "
                    "on the seeds both finished"))
    seconds = time.perf_counter() - started
    print(f"{seconds:.0f} s; load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    for seed, found in runs.items():  # a run made here is labelled with this run's settings
        for sampler in found:
            if seed in args.seeds and sampler in args.samplers:
                settings.setdefault(str(seed), {})[sampler] = args.overrides
    path = write_json("sampler_choice", {"seeds": sorted(runs), "trials": args.trials, "threads": args.threads,
                                         "overrides_by_run": settings,
                                         "runs": {str(seed): value for seed, value in runs.items()},
                                         "summary": summary, "seconds": round(seconds), "load_before": load[0]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
