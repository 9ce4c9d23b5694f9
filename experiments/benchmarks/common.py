"""Shared pieces of the benchmark scripts: the machine, JSON output, hypervolume over a study."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
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
    records: list[TrialRecord], objectives: list[str], reference: list[float],
    cost: Callable[[TrialRecord], float] = lambda record: record.wall_seconds or 0.0,
) -> list[tuple[int, float, float]]:
    """``(trial number, cumulative cost, hypervolume of the feasible finished front)`` after each trial.

    ``cost`` is what a trial spent (default: its wall seconds; training steps taken are a
    load-independent alternative).
    """
    directions = ["maximize" if name == "metric" else "minimize" for name in objectives]
    points: list[list[float]] = []
    spent = 0.0
    history = []
    for record in sorted(records, key=lambda item: item.number):
        spent += cost(record)
        if record.status == "complete" and record.feasible and record.values:
            points.append(list(record.values))
        history.append((record.number, spent, hypervolume(points, directions, reference)))
    return history


def hypervolume_at(history: list[tuple[int, float, float]], budget: float) -> float:
    """The hypervolume reached once ``budget`` of compute was spent (0 before the first trial)."""
    reached = [value for _, spent, value in history if spent <= budget]
    return reached[-1] if reached else 0.0
