"""``compressor baseline``: train (or reuse) U-Net and Micro-Net with an experiment's settings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compressor.cli.experiment_args import add_experiment_arguments, experiment_from_args
from compressor.experiment import BASELINE_MODELS, BaselineRecord, ensure_baselines
from compressor.tables import format_table
from compressor.units import format_count

COMMAND = {"name": "baseline", "help": "train U-Net and Micro-Net once per experiment and store their metrics and costs",
           "description": "Train the reference models with the experiment's data and training settings and store "
                          "their metrics and costs in <run_dir>/baselines/; reused while the settings are unchanged."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_arguments(parser)
    parser.add_argument(
        "--models", default=",".join(BASELINE_MODELS), metavar="NAMES",
        help=f"comma-separated models (default: {','.join(BASELINE_MODELS)})",
    )
    parser.add_argument("--force", action="store_true", help="retrain even if stored results are current")
    parser.add_argument("--json", action="store_true", help="print the records as JSON")


def run(args: argparse.Namespace) -> int:
    experiment = experiment_from_args(args)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    records = ensure_baselines(experiment, models=models, force=args.force, cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps([{**record.to_dict(), "path": str(record.path), "reused": record.reused} for record in records], indent=2))
    else:
        print(report(records, experiment.run_path))
    return 0


def report(records: list[BaselineRecord], run_path: Path) -> str:
    """One row per baseline: score, params, FLOPs, time, and whether it was reused."""
    rows = [
        [
            record.model,
            _number(record.metrics.get("score")),
            _number(record.metrics.get("miou")),
            format_count(record.cost["params"]),
            format_count(record.cost["flops"]),
            str(record.steps),
            f"{record.wall_seconds:.0f} s",
            "reused" if record.reused else "trained",
        ]
        for record in records
    ]
    score_name = records[0].metrics.get("score_name", "score") if records else "score"
    table = format_table(["model", score_name, "mIoU", "params", "FLOPs", "steps", "time", "status"], rows)
    return f"{table}\nstored in {run_path / 'baselines'}/"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
