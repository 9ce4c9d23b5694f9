"""Checkpoints: a model's weights with what trained them, saved atomically, loaded with checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.errors import CompressorError, first_line
from compressor.io import atomic_write
from compressor.metrics import SegmentationMetrics

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "load_weights"]


class CheckpointError(CompressorError):
    """A checkpoint cannot be read or does not fit the model."""


@dataclass
class Checkpoint:
    """The content of a checkpoint file."""

    state_dict: dict[str, torch.Tensor]
    step: int | None = None
    metrics: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_CHECKPOINT_FORMAT = "compressor-checkpoint-1"


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    step: int | None = None,
    metrics: SegmentationMetrics | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes the model's weights (and optionally the optimizer's state) atomically.

    The file is written next to ``path`` under a temporary name and renamed over it, so
    an interrupted save never leaves a truncated checkpoint. ``extra`` holds plain data
    (the model spec, the recipe) needed to rebuild the model before loading.
    """
    payload = {
        "format": _CHECKPOINT_FORMAT,
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "step": step,
        "metrics": None if metrics is None else metrics.to_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "extra": dict(extra or {}),
    }
    return atomic_write(path, lambda file: torch.save(payload, file))


def load_checkpoint(path: str | Path, model: nn.Module | None = None, *, map_location: str = "cpu") -> Checkpoint:
    """Reads a checkpoint (tensors and plain data only) and loads its weights into ``model``.

    Raises:
        CheckpointError: the file is missing or not a checkpoint, or its weights do not
            fit ``model`` (names the first mismatched keys).
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds on a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a compressor checkpoint")
    checkpoint = Checkpoint(
        state_dict=payload["state_dict"], step=payload.get("step"), metrics=payload.get("metrics"),
        optimizer=payload.get("optimizer"), extra=payload.get("extra") or {},
    )
    if model is not None:
        missing, unexpected = _key_mismatch(model.state_dict(), checkpoint.state_dict)
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        try:
            model.load_state_dict(checkpoint.state_dict)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[-1].strip()
            raise CheckpointError(f"{path}: weights do not fit the model: {first}") from None
    return checkpoint


def load_weights(path: str | Path, model: nn.Module) -> None:
    """Loads weights into ``model`` from a compressor checkpoint or a plain ``state_dict`` file.

    Only tensors and plain data are read (``weights_only``): a weights file cannot run code.

    Raises:
        CheckpointError: the file is missing or unreadable, or its weights belong to another
            architecture (names the first mismatched keys or shapes).
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds on a bad file
        first = first_line(error)
        raise CheckpointError(f"{path}: not a readable weights file (a state_dict or a compressor checkpoint): {first}") from None
    if isinstance(payload, dict) and payload.get("format") == _CHECKPOINT_FORMAT:
        load_checkpoint(path, model)
        return
    if not isinstance(payload, dict) or not all(isinstance(value, torch.Tensor) for value in payload.values()):
        raise CheckpointError(f"{path}: not a state_dict (a mapping of names to tensors) nor a compressor checkpoint")
    missing, unexpected = _key_mismatch(model.state_dict(), payload)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights of another architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    mismatched = [key for key, value in model.state_dict().items() if tuple(value.shape) != tuple(payload[key].shape)]
    if mismatched:
        key = mismatched[0]
        raise CheckpointError(
            f"{path}: weights of another architecture: {key} is {tuple(payload[key].shape)} in the file, "
            f"{tuple(model.state_dict()[key].shape)} in the model ({len(mismatched)} such tensors)"
        )
    model.load_state_dict(payload)


def _key_mismatch(expected: dict[str, Any], given: dict[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
