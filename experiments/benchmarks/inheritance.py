"""Three ways to train the same candidates at equal steps: from scratch, inherited, inherited + distilled.

On the paper's setup (``experiments/paper.yaml``: the SpaceNet tile, one recipe for all):

1. For each seed a U-Net *parent* is trained with the file's recipe for ``--parent-steps``
   (stored once by :func:`compressor.experiment.ensure_parent`; seeds other than the file's
   in ``<run_dir>/seed<N>/``).
2. The candidates: the paper's recipe on U-Net, then random draws of ``unet_family`` (seeded)
   inside the file's budget, ``--recipes`` in all.
3. Each candidate, for each seed, is trained ``--steps`` steps three ways: ``scratch`` (the
   untrained U-Net transformed, new layers random, the ``train:`` recipe), ``inherit`` (the
   seed's parent transformed with weight inheritance, fine-tuned with the ``finetune:``
   section), ``distill`` (as ``inherit``, plus distillation from the parent). Its IoU at
   1/9 of the steps (the first rung of a search) and at the end is kept.

Each run is appended to ``results/<name>.jsonl`` (``--name``, default ``inheritance``) as
it ends (a rerun skips what is there, so several processes can split the seeds); ``--summary``
prints the tables and writes ``results/<name>.json``: per way the mean and std of building IoU, the
candidates that collapse (IoU < 0.01), the Spearman rank correlation between the rung and
the final IoU, and the paper's recipe against its parent U-Net, paired by seed.

    python experiments/benchmarks/inheritance.py --seeds 0 1 2 --steps 60
    python experiments/benchmarks/inheritance.py --summary
    python experiments/benchmarks/inheritance.py --candidates 0 --steps 200 --name inheritance-paper200
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, write_json  # noqa: E402

from compressor.candidates.builder import build_candidate  # noqa: E402
from compressor.cli.console import configure_logging  # noqa: E402
from compressor.cost import measure  # noqa: E402
from compressor.experiment import ModelConfig, ensure_parent, load_experiment  # noqa: E402
from compressor.finetune import calibration_batches  # noqa: E402
from compressor.tables import format_table  # noqa: E402
from compressor.train import seed_everything, train  # noqa: E402
from compressor.units import format_count  # noqa: E402
from search_spaces import SPACES, SearchContext  # noqa: E402
from search_spaces.unet_family import MICRONET_CHOICES  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WAYS = ("scratch", "inherit", "distill")
COLLAPSED = 0.01
log = logging.getLogger("compressor.inheritance")


def seeded(experiment, seed: int):
    if seed == experiment.train.seed:
        return experiment
    return dataclasses.replace(experiment, train=dataclasses.replace(experiment.train, seed=seed),
                               run_dir=str(experiment.run_path / f"seed{seed}"))


def draw_choices(experiment, data, count: int, seed: int) -> list[dict]:
    """The paper's choices, then random ``unet_family`` draws inside the budget (a candidate of 0 params never)."""
    space = SPACES.get("unet_family")
    model_config = ModelConfig(name="unet", args=dict(experiment.model.args))
    base = model_config.build(in_channels=data.in_channels, num_classes=data.num_classes)
    context = SearchContext(base, torch.zeros(1, data.in_channels, 64, 64), "unet")
    shape = experiment.cost_input_shape(data.in_channels)
    chosen = [dict(MICRONET_CHOICES)]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    while len(chosen) < count:
        trial = study.ask()
        recipe = space(trial, context)
        network = build_candidate(experiment, model_config, recipe, in_channels=data.in_channels,
                                  num_classes=data.num_classes, base=base)
        if experiment.budget.check(measure(network, shape)).feasible and trial.params not in chosen:
            chosen.append(dict(trial.params))
        study.tell(trial, 0.0)
    return chosen


def runs_file(name: str) -> Path:
    return RESULTS / f"{name}.jsonl"


def done_runs(name: str) -> set[tuple]:
    path = runs_file(name)
    if not path.exists():
        return set()
    return {(row["way"], row["seed"], row["candidate"]) for row in map(json.loads, path.read_text().splitlines())}


def run(args) -> None:
    experiment = load_experiment(args.config, overrides=args.overrides)
    data = experiment.data.build()
    space = SPACES.get("unet_family")
    model_config = ModelConfig(name="unet", args=dict(experiment.model.args))
    choices = draw_choices(experiment, data, args.recipes, seed=args.draw_seed)
    done = done_runs(args.name)
    example = torch.zeros(1, data.in_channels, 64, 64)
    parents = {}
    for seed in args.seeds:  # every parent first: an interrupted run still has every seed of its candidates
        parents[seed] = ensure_parent(seeded(experiment, seed), model_config, steps=args.parent_steps, data=data)
        log.info("seed %d parent: building IoU %s", seed, parents[seed].metrics.get("score"))
    for index, params in enumerate(choices):
        if args.candidates is not None and index not in args.candidates:
            continue
        for seed in args.seeds:
            experiment_s, parent = seeded(experiment, seed), parents[seed]
            for way in args.ways:
                if (way, seed, index) in done:
                    continue
                if way == "scratch":
                    seed_everything(seed)
                    base = model_config.build(in_channels=data.in_channels, num_classes=data.num_classes)
                    config = dataclasses.replace(experiment_s.train, steps=args.steps)
                else:
                    base = parent.model
                    config = experiment_s.finetune.train_config(
                        dataclasses.replace(experiment_s.train, steps=args.steps), distill=way == "distill")
                context = SearchContext(base, example, "unet")
                recipe = space.fixed(params, context)
                calibration = None
                if way != "scratch" and experiment_s.finetune.calibrate:
                    calibration = calibration_batches(data, experiment_s.finetune.calibrate,
                                                      batch_size=config.batch_size, seed=seed)
                network = build_candidate(experiment_s, model_config, recipe, in_channels=data.in_channels,
                                          num_classes=data.num_classes, base=base,
                                          init="random" if way == "scratch" else "inherit", calibration=calibration)
                cost = measure(network, experiment.cost_input_shape(data.in_channels))
                started = time.perf_counter()
                result = train(network, data, config, evaluate_at=[1 / 9], description=f"{way} s{seed} c{index}",
                               teacher=parent.model if way == "distill" else None)
                row = {
                    "way": way, "seed": seed, "candidate": index, "recipe": space.describe(params, recipe),
                    "params": cost.params, "flops": cost.flops, "steps": args.steps,
                    "rung_iou": result.history[0][1].iou_of(data.class_names[1]),
                    "iou": result.metrics.iou_of(data.class_names[1]),
                    "parent_iou": parent.metrics.get("score"), "parent_steps": parent.steps,
                    "seconds": round(time.perf_counter() - started, 1),
                }
                with runs_file(args.name).open("a") as file:
                    file.write(json.dumps(row) + "\n")
                log.info("%s seed %d candidate %d (%s): IoU %.3f (rung %.3f) in %.0f s", way, seed, index,
                         row["recipe"], row["iou"], row["rung_iou"], row["seconds"])


def summary(name: str) -> None:
    frame = pd.DataFrame([json.loads(line) for line in runs_file(name).read_text().splitlines()])
    rows, out = [], {"ways": {}}
    for way in WAYS:
        part = frame[frame.way == way]
        if part.empty:
            continue
        spearman = (part.groupby("seed")[["rung_iou", "iou"]].corr(method="spearman").xs("iou", level=1)["rung_iou"]
                    if part.candidate.nunique() > 2 else pd.Series(dtype=float))
        collapsed = int((part.iou < COLLAPSED).sum())
        stats = {
            "runs": len(part), "mean_iou": part.iou.mean(), "std_iou": part.iou.std(),
            "collapsed": collapsed, "collapsed_share": collapsed / len(part),
            "spearman_rung_final": spearman.mean(), "spearman_per_seed": spearman.round(3).to_dict(),
            "steps": sorted(part.steps.unique().tolist()),
        }
        out["ways"][way] = stats
        rows.append([way, str(len(part)), f"{stats['mean_iou']:.3f} +- {stats['std_iou']:.3f}",
                     f"{collapsed} ({stats['collapsed_share']:.0%})", f"{stats['spearman_rung_final']:.2f}"])
    print(format_table(["way", "runs", "building IoU mean +- std", f"collapsed (IoU < {COLLAPSED})",
                        "Spearman rung 1/9 vs end"], rows, title="the same candidates, three ways, equal steps"))
    paper = frame[frame.candidate == 0]
    parents = paper.drop_duplicates("seed").set_index("seed").parent_iou
    prow = [["U-Net parent", "-", f"{parents.mean():.3f} +- {parents.std():.3f}", "-"]]
    out["paper_recipe"] = {"parent_iou": parents.round(4).to_dict()}
    for way in WAYS:
        part = paper[paper.way == way].set_index("seed").iou
        if part.empty:
            continue
        difference = (part - parents.loc[part.index])
        out["paper_recipe"][way] = {"iou": part.round(4).to_dict(), "difference_to_parent": difference.round(4).to_dict()}
        prow.append([f"paper's recipe, {way}", format_count(int(paper.params.iloc[0])),
                     f"{part.mean():.3f} +- {part.std():.3f}", f"{difference.mean() * 100:+.1f} points"])
    print()
    print(format_table(["model", "params", "building IoU mean +- std", "vs parent (paired)"], prow,
                       title="the paper's recipe on U-Net against its trained parent"))
    parent_of = frame.drop_duplicates("seed").set_index("seed").parent_iou
    unet_params = sum(p.numel() for p in ModelConfig(name="unet").build(in_channels=1, num_classes=2).parameters())
    crow, candidates = [], []
    for index, part in frame.groupby("candidate"):
        first = part.iloc[0]
        entry = {"candidate": int(index), "recipe": first.recipe, "params": int(first.params), "flops": int(first.flops)}
        cells = [str(index), format_count(int(first.params)), f"{unet_params / first.params:.0f}x"]
        for way in WAYS:
            ious = part[part.way == way].set_index("seed").iou
            if ious.empty:
                cells.append("-")
                continue
            difference = ious - parent_of.loc[ious.index]
            entry[way] = {"mean": ious.mean(), "difference_to_parent": difference.mean(), "n": len(ious)}
            cells.append(f"{ious.mean():.3f} ({difference.mean() * 100:+.1f})")
        crow.append([*cells, first.recipe])
        candidates.append(entry)
    print()
    print(format_table(["#", "params", "vs U-Net", *[f"{way}: IoU (points vs parent)" for way in WAYS], "recipe"], crow,
                       title="per candidate, mean over seeds; the difference to the seed's own parent, paired"))
    out["candidates"] = candidates
    out["runs"] = frame.to_dict("records")
    print(f"\nwritten {write_json(name, out)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "experiments" / "paper.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    parser.add_argument("--recipes", type=int, default=12, help="candidates: the paper's and random draws")
    parser.add_argument("--draw-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=200, help="training steps of every candidate, every way")
    parser.add_argument("--parent-steps", type=int, default=None, help="the parents' steps (default: the file's)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--candidates", type=int, nargs="+", help="only these candidates (0 is the paper's recipe)")
    parser.add_argument("--name", default="inheritance", help="results/<name>.jsonl and .json")
    parser.add_argument("--summary", action="store_true", help="summarize the stored runs and stop")
    args = parser.parse_args()
    configure_logging()
    logging.getLogger("compressor").setLevel(logging.INFO)
    if args.summary:
        summary(args.name)
        return
    run(args)
    summary(args.name)


if __name__ == "__main__":
    main()
