"""Checkpoints: a model's weights with what trained them, saved atomically, loaded with checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.errors import CompressorError, ConfigError
from compressor.io import atomic_write
from compressor.metrics import SegmentationMetrics
from compressor.tensor_files import read_tensor_file

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
    payload = _read(path, "checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a compressor checkpoint")
    state = payload.get("state_dict")
    if not _is_state_dict(state):
        raise CheckpointError(f"{path}: a damaged checkpoint (its state_dict is not a mapping of names to tensors)")
    checkpoint = Checkpoint(
        state_dict=state, step=_plain(payload.get("step"), int), metrics=_plain(payload.get("metrics"), dict),
        optimizer=_plain(payload.get("optimizer"), dict), extra=_plain(payload.get("extra"), dict) or {},
    )
    if model is not None:
        mismatch = weights_mismatch(model.state_dict(), checkpoint.state_dict)
        if mismatch:
            raise CheckpointError(f"{path}: weights do not fit the model: {mismatch}")
        model.load_state_dict(checkpoint.state_dict)
    return checkpoint


def load_weights(path: str | Path, model: nn.Module) -> None:
    """Loads weights into ``model`` from a compressor checkpoint or a plain ``state_dict`` file.

    Only tensors and plain data are read (:func:`compressor.tensor_files.read_tensor_file`): a
    weights file cannot run code.

    Raises:
        CheckpointError: the file is missing or unreadable, or its weights belong to another
            architecture (names the first mismatched keys or shapes).
    """
    path = Path(path)
    payload = _read(path, "weights file (a state_dict or a compressor checkpoint)", "cpu")
    if isinstance(payload, dict) and payload.get("format") == _CHECKPOINT_FORMAT:
        load_checkpoint(path, model)
        return
    if not _is_state_dict(payload):
        raise CheckpointError(f"{path}: not a state_dict (a mapping of names to tensors) nor a compressor checkpoint")
    mismatch = weights_mismatch(model.state_dict(), payload)
    if mismatch:
        raise CheckpointError(f"{path}: weights of another architecture ({mismatch})")
    model.load_state_dict(payload)


def weights_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str | None:
    """What keeps ``given`` from loading into a network whose ``state_dict`` is ``expected``, or None.

    Example:
        >>> import torch
        >>> weights_mismatch({"a": torch.zeros(2)}, {"a": torch.zeros(3), "b": torch.zeros(1)})
        "unexpected ['b']"
        >>> weights_mismatch({"a": torch.zeros(2)}, {"a": torch.zeros(3)})
        'a is (3,) in the file, (2,) in the model (1 such tensors)'
    """
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    if missing or unexpected:
        return ", ".join(part for part in (f"missing {missing[:3]}" if missing else "",
                                           f"unexpected {unexpected[:3]}" if unexpected else "") if part)
    mismatched = [key for key, value in expected.items() if tuple(value.shape) != tuple(given[key].shape)]
    if mismatched:
        key = mismatched[0]
        return (f"{key} is {tuple(given[key].shape)} in the file, {tuple(expected[key].shape)} in the model "
                f"({len(mismatched)} such tensors)")
    return None


def _read(path: Path, what: str, map_location: str) -> Any:
    try:
        return read_tensor_file(path, what=what, map_location=map_location)
    except ConfigError as error:
        raise CheckpointError(str(error)) from None


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(key, str) and isinstance(item, torch.Tensor)
                                           for key, item in value.items())


def _plain(value: Any, kind: type) -> Any:
    return value if isinstance(value, kind) and not isinstance(value, bool) else None
