"""Which stopping rule hands on a converged parent: the control (the parent fine-tuned further) against the parent.

The converged table (``converged.py``) reads every compressed row against a parent trained to its
plateau, and against the control, that parent fine-tuned further by the same rule; if the control
gains, the parent had not converged and the rows' gains are extra training. With the plateau
schedule's default (``lr_patience`` half the patience) a run stops one drop of the rate after its
last gain; this measures whether more drops before the stop give a parent the control cannot improve.

One U-Net (``--base-width``, narrower than the paper's 64 so that it runs in minutes) is trained on
the building tile's three-strip split (``converged.py``'s task ``spacenet_sample``) with the plateau
rule at the largest patience of ``--rules``, ``lr_patience`` 4 and smoothing 3. A run with patience
``P`` would stop the first time ``P`` evaluations pass without a gain, and hand on the best weights
it holds then; every rule's run is the same as this one until that moment, so each rule's parent is
a snapshot taken during the one run (patience 8: one drop of the rate before the stop, 0.3x; 12: two,
0.09x; 16: three, 0.027x). For each rule, the control: the parent fine-tuned with no transform
(``compress``, lr 3e-4, as ``converged.py``'s control row) by that rule, on ``--seeds`` seeds. Test
strip, control minus parent, paired by seed, 95% t-interval; the validation strip beside it.

``compress`` counts the network a fine-tuning starts from as its evaluation at step 0 (since
2026-12-06: before, a fine-tuning could only hand back one of its own evaluations); controls run
before that are kept in ``<run-dir>/without-start/`` and reported apart. ``bn-probe``: the parent
with its batch norms' statistics re-estimated as ``compress`` does before fine-tuning (16, 64 and
every batch of training patches, 3 seeds), which is what a control that keeps its start scores.

    python experiments/benchmarks/plateau_rule.py --threads 1            # base width 16, rules 8 12 16, 3 seeds

Each job is stored in ``<run-dir>/<job>.json`` as it ends (a later call adds what is missing).
Writes ``experiments/benchmarks/results/plateau_rule.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import machine, show_evaluations, write_json  # noqa: E402
from converged import experiment_for  # noqa: E402

from compressor.intervals import Estimate  # noqa: E402
from compressor.io import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TASK = "spacenet_sample"
LR_PATIENCE = 4


def settings(args: argparse.Namespace, patience: int, seed: int) -> Any:
    rule = argparse.Namespace(run_dir=args.run_dir, threads=args.threads, device="auto", eval_every=100,
                              max_steps=args.max_steps, smoothing=3, patience=patience, lr_patience=LR_PATIENCE)
    return experiment_for(TASK, rule, seed=seed)


def build_parent(args: argparse.Namespace, data: Any) -> Any:
    import compressor

    return compressor.unet(in_channels=data.in_channels, num_classes=data.num_classes, norm="batch",
                           base_width=args.base_width)


def train_parent(args: argparse.Namespace, data: Any) -> dict[str, Any]:
    """The one run at the largest patience, with a snapshot of the best weights each time a smaller
    patience would have stopped it."""
    import torch

    import compressor.train.loop as loop
    from compressor.train import evaluate, seed_everything, train
    from compressor.train.plateau import Plateau

    taken: dict[int, dict[str, Any]] = {}

    class Snapshots(Plateau):  # the rule of the largest patience, watched for where the smaller ones stop
        def update(self, step: int, score: float, model: Any = None) -> bool:
            gain = super().update(step, score, model)
            for patience in args.rules:
                if self.bad == patience and patience not in taken:
                    taken[patience] = {"stopped_at": step, "best_step": self.best_step, "lr_scale": self.lr_scale,
                                       "weights": copy.deepcopy(self.best_state)}
            return gain

    experiment = settings(args, max(args.rules), seed=0)
    seed_everything(0)
    network = build_parent(args, data)
    started = time.perf_counter()
    original, loop.Plateau = loop.Plateau, Snapshots
    try:
        result = train(network, data, experiment.train, description=f"U-Net (width {args.base_width})")
    finally:
        loop.Plateau = original
    seconds = time.perf_counter() - started
    parents = {}
    for patience in args.rules:
        snapshot = taken.get(patience)
        if snapshot is None:  # the run ended (max_steps) before this rule would have stopped it: what it ended with
            snapshot = {"stopped_at": result.steps_done, "best_step": result.best_step, "lr_scale": None,
                        "weights": copy.deepcopy(network.state_dict()), "cap": True}
        model = build_parent(args, data)
        model.load_state_dict(snapshot.pop("weights"))
        torch.save(model.state_dict(), Path(args.run_dir) / f"parent-p{patience}.pt")
        parents[str(patience)] = {
            **snapshot, "test": evaluate(model, data, experiment.train, split="test").score,
            "val": evaluate(model, data, experiment.train).score}
    return {"job": "parent", "params": sum(p.numel() for p in network.parameters()), "steps_done": result.steps_done,
            "curve": [[step, round(metrics.score, 5)] for step, metrics in result.history], "seconds": round(seconds, 1),
            "parents": parents}


def run_control(args: argparse.Namespace, data: Any, patience: int, seed: int) -> dict[str, Any]:
    import torch

    from compressor.compression import compress
    from compressor.transforms import Recipe

    parent = build_parent(args, data)
    parent.load_state_dict(torch.load(Path(args.run_dir) / f"parent-p{patience}.pt", weights_only=True))
    started = time.perf_counter()
    done = compress(parent, Recipe.of([]), settings(args, patience, seed=seed), data=data, distill=False)
    return {"job": f"control-p{patience}-s{seed}", "test": done.student_test_metrics.score, "val": done.result.metrics.score,
            "steps_done": done.result.steps_done, "best_step": done.result.best_step,
            "curve": [[step, round(metrics.score, 5)] for step, metrics in done.result.history],
            "seconds": round(time.perf_counter() - started, 1)}


def bn_probe(args: argparse.Namespace, data: Any) -> dict[str, Any]:
    """The parent of the first rule with its batch norms' statistics re-estimated as ``compress`` does before
    fine-tuning (``finetune.bn_reestimate`` batches of training patches), on 16, 64 and every batch, 3 seeds:
    what a control that keeps its start differs from the parent by."""
    import math

    import torch

    from compressor.train import evaluate
    from compressor.train.loop import reestimate_batchnorm

    experiment = settings(args, args.rules[0], seed=0)
    parent = build_parent(args, data)
    parent.load_state_dict(torch.load(Path(args.run_dir) / f"parent-p{args.rules[0]}.pt", weights_only=True))
    every = math.ceil(len(data.train) / experiment.train.batch_size)
    rows = []
    for batches in (16, 64, every):
        for seed in range(3):
            model = copy.deepcopy(parent)
            reestimate_batchnorm(model, data, batches=batches, batch_size=experiment.train.batch_size, seed=seed)
            rows.append({"batches": batches, "seed": seed, "test": evaluate(model, data, experiment.train, split="test").score,
                         "val": evaluate(model, data, experiment.train).score})
    evaluated = json.loads((Path(args.run_dir) / "parent.json").read_text())["parents"][str(args.rules[0])]
    return {"job": "bn-probe", "parent": args.rules[0], "rows": rows,
            "parent_test": evaluated["test"], "parent_val": evaluated["val"]}  # measured once, when it was trained


def summarize(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.run_dir)
    parent = json.loads((folder / "parent.json").read_text())
    rules = {}
    for patience in args.rules:
        stored = parent["parents"][str(patience)]
        controls = [json.loads(path.read_text()) for path in sorted(folder.glob(f"control-p{patience}-s*.json"))]
        minus_test = Estimate.of([100 * (control["test"] - stored["test"]) for control in controls])
        minus_val = Estimate.of([100 * (control["val"] - stored["val"]) for control in controls])
        rules[str(patience)] = {
            "parent": stored, "controls": controls,
            "control_minus_parent_test_points": minus_test.to_dict(), "control_minus_parent_val_points": minus_val.to_dict()}
        rate = "max_steps reached first" if stored.get("cap") else f"rate {stored['lr_scale']:.3g}x"
        print(f"patience {patience:>2} (lr_patience {LR_PATIENCE}): parent stopped at step {stored['stopped_at']} "
              f"(best {stored['best_step']}, {rate}), test {stored['test']:.3f} val {stored['val']:.3f}; "
              f"control minus parent: test {minus_test.text(digits=1, signed=True)} points, "
              f"val {minus_val.text(digits=1, signed=True)}; control steps "
              f"{', '.join(str(control['steps_done']) for control in controls)}")
    probe = json.loads((folder / "bn-probe.json").read_text()) if (folder / "bn-probe.json").exists() else None
    if probe is not None:
        for batches in sorted({row["batches"] for row in probe["rows"]}):
            found = [row for row in probe["rows"] if row["batches"] == batches]
            test = Estimate.of([100 * (row["test"] - probe["parent_test"]) for row in found])
            val = Estimate.of([100 * (row["val"] - probe["parent_val"]) for row in found])
            print(f"the parent's batch norms re-estimated on {batches} batches: test {test.text(digits=1, signed=True)} points, "
                  f"val {val.text(digits=1, signed=True)}")
    without = sorted((folder / "without-start").glob("control-*.json"))  # controls run before the start counted, if kept
    return {"base_width": args.base_width, "params": parent["params"], "bn_probe": probe,
            "controls_without_start": [json.loads(path.read_text()) for path in without], "parent_seconds": parent["seconds"],
            "parent_steps": parent["steps_done"], "curve": parent["curve"], "lr_patience": LR_PATIENCE, "rules": rules}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-width", type=int, default=16)
    parser.add_argument("--rules", type=int, nargs="+", default=[8, 12, 16], help="patiences compared (lr_patience 4)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=6000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "plateau_rule"))
    parser.add_argument("--summarize", action="store_true")
    args = parser.parse_args()
    args.rules = sorted(set(args.rules))
    show_evaluations()  # each evaluation: the progress of a long run
    folder = Path(args.run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        data = settings(args, max(args.rules), seed=0).data.build()
        print(f"{TASK}: {data.description}; load {os.getloadavg()[0]:.1f}", flush=True)
        if not (folder / "parent.json").exists():
            record = train_parent(args, data)
            atomic_write_text(folder / "parent.json", json.dumps(record, indent=1) + "\n")
            print(f"parent: {record['steps_done']} steps, {record['seconds']:.0f} s; "
                  + "; ".join(f"patience {p}: stopped at {r['stopped_at']}, test {r['test']:.3f}" for p, r in record["parents"].items()),
                  flush=True)
        if not (folder / "bn-probe.json").exists():
            atomic_write_text(folder / "bn-probe.json", json.dumps(bn_probe(args, data), indent=1) + "\n")
        for seed in range(args.seeds):
            for patience in args.rules:
                path = folder / f"control-p{patience}-s{seed}.json"
                if path.exists():
                    continue
                record = run_control(args, data, patience, seed)
                atomic_write_text(path, json.dumps(record, indent=1) + "\n")
                print(f"{record['job']}: test {record['test']:.3f} val {record['val']:.3f}, {record['steps_done']} steps "
                      f"(best {record['best_step']}), {record['seconds']:.0f} s", flush=True)
    path = write_json("plateau_rule", {"machine": machine(), **summarize(args)})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
