"""The converged table's reading of its job records (experiments/benchmarks/converged.py): what is paired
with what, and which rows a target may be judged on. Records are made up; the reading is the script's."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARENT = {"params": 31_000_000, "flops": 37_000_000_000}


@pytest.fixture(scope="module")
def converged():
    path, modules = list(sys.path), set(sys.modules)
    sys.path.insert(0, str(ROOT / "experiments" / "benchmarks"))
    try:
        yield importlib.import_module("converged")
    finally:  # the script puts its folder on the path too: the runner's path and modules as they were
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if name in ("converged", "common"):
                del sys.modules[name]


def _record(job: str, kind: str, test: float, *, seed: int | None = None, params: int = 700_000, flops: int = 4_000_000_000,
            val: float | None = None, best_step: int = 500) -> dict:
    return {"job": job, "kind": kind, "seed": seed, "test": {"score": test}, "val": {"score": test if val is None else val},
            "score_name": "building IoU", "params": params, "flops": flops, "steps_done": 1000, "best_step": best_step,
            "converged": True, "train_seconds": 10.0, "curve": [[100, test]]}


def _records(**extra: dict) -> dict:
    records = {"parent-p0": _record("parent-p0", "parent", 0.30, seed=0, **PARENT)}
    for seed, (recipe, control, micronet, scratch) in enumerate([(0.31, 0.30, 0.25, 0.20), (0.33, 0.31, 0.27, 0.24)]):
        records[f"recipe-s{seed}"] = _record(f"recipe-s{seed}", "recipe", recipe, seed=seed)
        records[f"control-s{seed}"] = _record(f"control-s{seed}", "control", control, seed=seed, best_step=0, **PARENT)
        records[f"micronet-s{seed}"] = _record(f"micronet-s{seed}", "micronet", micronet, seed=seed, params=1_000_000,
                                              flops=7_000_000_000)
        records[f"scratch-s{seed}"] = _record(f"scratch-s{seed}", "scratch", scratch, seed=seed)
    records.update(extra)
    return records


def test_rows_are_paired_by_seed_with_the_control_micronet_and_scratch(converged):
    records = _records()
    del records["micronet-s0"]  # Micro-Net on seeds 1 and 2, the recipe on 0 and 1: one pair, seed 1
    records["micronet-s2"] = _record("micronet-s2", "micronet", 0.9, seed=2)
    found = converged.table(records)
    rows = {row["label"]: row for row in found["rows"]}
    recipe = rows["the paper's recipe, inherited, fine-tuned"]
    assert (recipe["minus_control_points"]["mean"], recipe["minus_control_points"]["n"]) == (pytest.approx(1.5), 2)
    assert recipe["minus_parent_points"]["mean"] == pytest.approx(2.0)
    micronet = found["recipe_dominates_micronet"]["minus_micronet_points"]
    assert (micronet["mean"], micronet["n"]) == (pytest.approx(6.0), 1)
    scratch_gain = found["recipe_minus_scratch_points"]
    assert (scratch_gain["mean"], scratch_gain["n"]) == (pytest.approx(10.0), 2)
    assert rows["control: the parent fine-tuned the same way"]["start_kept"] == 2
    scratch = rows["the paper's recipe's network from scratch (trained to its plateau)"]
    assert scratch["n"] == 2 and scratch["minus_control_points"] is None  # not fine-tuned: nothing to pair with the control


def test_the_size_target_is_judged_on_rows_compressed_from_the_parent_only(converged):
    tiny = {"params": 100_000, "flops": 1_000_000_000}  # 310x / 37x
    records = _records(**{f"scratch-s{seed}": _record(f"scratch-s{seed}", "scratch", 0.5, seed=seed, val=0.9, **tiny)
                          for seed in (0, 1)})
    found = converged.table(records)
    assert next(iter(converged.targets(found).values())) == "not run"  # the scratch row, best on validation, is no candidate
    records.update({f"small-s{seed}": _record(f"small-s{seed}", "small", 0.30, seed=seed, val=0.2, **tiny) for seed in (0, 1)})
    verdict = next(iter(converged.targets(converged.table(records)).values()))
    assert "the paper's recipe + prune 0.6" in verdict
