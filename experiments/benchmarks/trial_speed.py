"""Trials per hour of the quickstart's search, its earlier settings against its current ones, side by side.

The quickstart's search (``experiments/quickstart.yaml``: the unet_family space on the SpaceNet
tile, candidates inheriting from the trained U-Net, fine-tuned 100 steps) is run for each seed of
``--seeds`` once with the settings it had before (``OLD``: every evaluation whole, 4 windows of
256 pixels a pass, 16 batches re-estimating the batch norms) and once as it is now, the two runs
of a seed back to back, the sampler seeded alike, without the references (only the trials are
timed). The TPE sampler draws its first 10 trials at random, so both runs of a seed try the same
recipes; each run trains its own parent the same way (evaluation settings do not change a weight).

Reported per settings: trials per hour (trials over the sum of their wall times), the share of
a trained trial that is not optimizer steps, each phase's total, and per trial the final score
(paired by trial: the same recipe under both settings) with the study's hypervolume.

Writes ``experiments/benchmarks/results/trial_speed.json``.

    python experiments/benchmarks/trial_speed.py --seeds 0 1 2 --threads 1
    python experiments/benchmarks/trial_speed.py --seeds 0 1 2 --threads 1 --variants new bf16 --name trial_speed-bf16
    python experiments/benchmarks/trial_speed.py --seeds 0 1 --threads 1 --variants then new bf16 --name trial_speed-then
    python experiments/benchmarks/trial_speed.py --seeds 0 1 --threads 1 --variants new calibrate1 --name trial_speed-calibrate1
    python experiments/benchmarks/trial_speed.py --seeds 0 1 --threads 1 --variants before_memo new --name trial_speed-memo
    python experiments/benchmarks/trial_speed.py --seeds 0 1 --threads 1 --variants then before_eval new --name trial_speed-eval
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import commit_code, machine, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

#: the quickstart's settings before the overhead was cut (2026-12-05)
OLD = ("train.eval_window=256", "train.eval_batch_size=4", "finetune.bn_reestimate=16")
#: the candidates fine-tuned under bf16 autocast (the parent still trains in fp32; ``finetune.precision``)
BF16 = ("finetune.precision=bf16",)
#: ``then``: the code and the quickstart file as they were when issue 28 was filed (2026-12-05, the
#: commit before its first change), run in a subprocess from ``git archive``, its candidates
#: fine-tuned 100 steps as now (the file then said 120)
THEN_COMMIT = "a6e8557"
THEN = ("train.steps=100", "search.confirm.top=0")
#: each replaced layer refitted by least squares on one batch while the candidate is built (``finetune.calibrate``:
#: on the converged U-Net it started the paper's recipe 8 points higher, for a few seconds of building)
CALIBRATE1 = ("finetune.calibrate=1",)
SETTINGS = {"old": OLD, "new": (), "bf16": BF16, "then": THEN, "calibrate1": CALIBRATE1, "before_memo": (),
            "before_eval": ()}
#: the variants run by another commit's code (in a subprocess, from ``git archive``): ``before_memo`` is the
#: quickstart as it is, by the code before each parent kernel's factorization was kept between builds;
#: ``before_eval`` by the code before evaluations ran in the training's precision (bf16 candidates scored in fp32)
COMMITS = {"then": THEN_COMMIT, "before_memo": "f7b76c7", "before_eval": "4a75071"}


def run(variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import optuna

    from compressor.study import hypervolume_reference, study_hypervolume, trial_records

    overrides = [
        f"run_dir={Path(args.run_dir).resolve() / variant}", f"search.study=speed-s{seed}", f"search.seed={seed}",
        f"search.n_trials={args.trials}", "search.timeout=null", "search.baselines=false",
        f"train.threads={args.threads}", *SETTINGS[variant],
    ]
    load = os.getloadavg()[0]
    if variant in COMMITS:
        study = run_commit(COMMITS[variant], variant, overrides, Path(args.run_dir).resolve(), seed)
    else:
        from compressor.experiment.config import load_experiment
        from compressor.pipeline import run_search

        experiment = load_experiment(ROOT / "experiments" / "quickstart.yaml", overrides=overrides)
        study = run_search(experiment, echo=lambda line: print(f"[{variant} s{seed}] {line}", flush=True)).study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    records = trial_records(study)
    trained = [record for record in records if record.timing and record.timing.get("train")]
    phases: dict[str, float] = {}
    for record in records:
        for phase, seconds in (record.timing or {}).items():
            phases[phase] = round(phases.get(phase, 0.0) + seconds, 3)
    wall = sum(record.wall_seconds or 0.0 for record in records)
    reference = hypervolume_reference(study)  # 1.1x U-Net's costs, the metric from 0
    points = [list(record.values) for record in records if record.status == "complete" and record.feasible and record.values]
    return {
        "variant": variant, "seed": seed, "settings": list(SETTINGS[variant]), "load_before": round(load, 2),
        "trials": len(records), "wall_seconds": round(wall, 2), "trials_per_hour": round(3600 * len(records) / wall, 1),
        "not_training_share": round(1 - sum(r.timing["train"] for r in trained) / sum(r.timing["total"] for r in trained), 4)
        if trained else None,
        "phases": phases,
        "hypervolume": study_hypervolume(points, ["metric", "params", "flops"], reference),
        "per_trial": [{"number": r.number, "recipe_hash": r.recipe_hash, "status": r.status, "metric": r.metric,
                       "steps": r.steps, "wall_seconds": r.wall_seconds, "timing": r.timing} for r in records],
    }


def run_commit(commit: str, variant: str, overrides: list[str], run_dir: Path, seed: int) -> Any:
    """The quickstart's search as the code of ``commit`` runs it (a subprocess importing that code,
    extracted once under ``run_dir``); returns its study (in ``run_dir/variant``), read by this code."""
    import subprocess

    import optuna

    # the commit's own search spaces too: the entry point would load this tree's, which may ask for more of compressor
    code = commit_code(commit, run_dir / f"code-{commit}", ("compressor", "search_spaces", "experiments/quickstart.yaml"))
    script = ("import sys\nfrom compressor.experiment.config import load_experiment\n"
              "try:\n    from compressor.search import run_search\n"  # where it was when issue 28 was filed
              "except ImportError:\n    from compressor.pipeline import run_search\n"
              f"run_search(load_experiment(sys.argv[1], overrides=sys.argv[2:]), echo=lambda line: print(f'[{variant}] {{line}}', flush=True))")
    subprocess.run([sys.executable, "-c", script, str(code / "experiments" / "quickstart.yaml"),
                    *overrides], check=True, cwd=code, env={**os.environ, "PYTHONPATH": str(code)})
    storage = f"sqlite:///{run_dir / variant / 'search.db'}"
    return optuna.load_study(study_name=f"speed-s{seed}", storage=storage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["old", "new"], choices=list(SETTINGS),
                        help="settings to run, the first the one the others are compared with (default: old new)")
    parser.add_argument("--name", default="trial_speed", help="results file name (default trial_speed)")
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "trial_speed"))
    args = parser.parse_args()
    from compressor.intervals import Estimate

    runs = []
    for seed in args.seeds:
        for variant in args.variants:  # back to back: all see the same load
            runs.append(run(variant, seed, args))
            found = runs[-1]
            print(f"{variant} seed {seed}: {found['trials']} trials in {found['wall_seconds']:.0f} s, "
                  f"{found['trials_per_hour']:.0f} trials/hour, not training {'-' if found['not_training_share'] is None else format(found['not_training_share'], '.1%')} of a "
                  f"trained trial, hypervolume {found['hypervolume']:.4f}; phases {found['phases']}", flush=True)
    summary: dict[str, Any] = {}
    for variant in args.variants:
        mine = [found for found in runs if found["variant"] == variant]
        summary[variant] = {
            "trials_per_hour": [found["trials_per_hour"] for found in mine],
            "not_training_share": [found["not_training_share"] for found in mine],
            "hypervolume": [found["hypervolume"] for found in mine],
        }
    base = args.variants[0]
    for variant in args.variants[1:]:
        pairs = [(old, new) for old in runs if old["variant"] == base
                 for new in runs if new["variant"] == variant and new["seed"] == old["seed"]]
        speedups = [new["trials_per_hour"] / old["trials_per_hour"] for old, new in pairs]
        paired = []
        for old, new in pairs:
            for before, after in zip(old["per_trial"], new["per_trial"]):
                if before["recipe_hash"] == after["recipe_hash"] and before["status"] == after["status"] == "complete":
                    paired.append(100 * (after["metric"] - before["metric"]))
        difference = Estimate.of(paired)
        summary[f"{variant}_vs_{base}"] = {"speedup": speedups, "minus_points": difference.to_dict(), "pairs": len(paired)}
        print(f"trials per hour, {variant} / {base}: {', '.join(f'{value:.2f}x' for value in speedups)}; final score "
              f"{variant} - {base}, paired by trial: {difference.text(digits=2, signed=True)} points (n={len(paired)})")
    write_json(args.name, {"machine": machine(), "threads": args.threads, "variants": args.variants, "runs": runs,
                           "summary": summary})


if __name__ == "__main__":
    main()
