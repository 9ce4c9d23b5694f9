"""A tiny search experiment: a narrow U-Net on small synthetic scenes, a few steps a trial."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from compressor.experiment import Experiment, apply_overrides


def tiny_experiment_data(run_dir: Path, **search: Any) -> dict[str, Any]:
    return {
        "name": "tiny",
        "run_dir": str(run_dir),
        "data": {"name": "synthetic", "labels": "binary", "patch_size": 32, "train_images": 64, "val_images": 1,
                 "val_size": 64, "seed": 0},
        "model": {"name": "unet", "args": {"base_width": 8}},
        "train": {"steps": 9, "batch_size": 4, "threads": 1, "seed": 0, "progress": False, "eval_window": 64,
                  "eval_overlap": 0},
        "budget": {"max_params": "60k"},
        "cost": {"input_size": 64},
        # 9 steps teach these networks little more than "building everywhere", which the default floor
        # (the best constant prediction) refuses: the tests of the search's mechanics count any metric above 0.
        "search": {"space": "unet_family", "n_trials": 4, "sampler": "random", "seed": 0, "baselines": False,
                   "rungs": [], "floor": "zero", **search},
    }


def tiny_experiment(run_dir: Path, overrides: tuple[str, ...] = (), **search: Any) -> Experiment:
    data = apply_overrides(tiny_experiment_data(run_dir, **search), overrides)
    return Experiment.from_dict(data, source="tiny.yaml")


def write_tiny_experiment(path: Path, run_dir: Path, **search: Any) -> Path:
    path.write_text(yaml.safe_dump(tiny_experiment_data(run_dir, **search), sort_keys=False))
    return path
