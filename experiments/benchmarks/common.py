"""Shared pieces of the benchmark scripts: the machine, JSON output, hypervolume over a study."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from compressor.io import atomic_write_text
from compressor.pareto import hypervolume
from compressor.trials import TrialRecord

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def write_json(name: str, payload: dict[str, Any]) -> Path:
    path = RESULTS / f"{name}.json"
    atomic_write_text(path, json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def hypervolume_history(
    records: list[TrialRecord], objectives: list[str], reference: list[float]
) -> list[tuple[int, float, float]]:
    """``(trial number, cumulative seconds, hypervolume of the feasible finished front)`` after each trial."""
    directions = ["maximize" if name == "metric" else "minimize" for name in objectives]
    points: list[list[float]] = []
    spent = 0.0
    history = []
    for record in sorted(records, key=lambda item: item.number):
        spent += record.wall_seconds or 0.0
        if record.status == "complete" and record.feasible and record.values:
            points.append(list(record.values))
        history.append((record.number, spent, hypervolume(points, directions, reference)))
    return history


def hypervolume_at(history: list[tuple[int, float, float]], seconds: float) -> float:
    """The hypervolume reached once ``seconds`` of compute were spent (0 before the first trial)."""
    reached = [value for _, spent, value in history if spent <= seconds]
    return reached[-1] if reached else 0.0
