"""Resuming a training run: the whole state of :func:`~compressor.train.train`, written at each evaluation.

A run to its plateau on two CPU cores takes hours (the road tile's U-Net: about 2 s a step for
thousands of steps), and a session, a laptop lid or a job scheduler can end it anywhere. With a
``resume`` file, :func:`~compressor.train.train` writes everything it needs to go on at each
evaluation: the weights, the optimizer's and the schedule's state, the plateau rule's (its best
weights included), the learning curve, the losses and the seconds so far, and torch's random
state; the batches are not stored, they are drawn again (the patch order and the augmentations
come from one seeded generator, so skipping the draws of the steps done puts it where it was).
Called again with the same file, it continues from the last evaluation, as if never stopped (on
the CPU, the same weights to the last bit: tested); the file is removed when the run ends.

A state written by another training (other settings, another network's layers, other data) is
not used: the run starts afresh, says so, and overwrites it. The file is read as data only
(tensors and plain containers), like every model file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compressor.errors import CompressorError
from compressor.io import atomic_write
from compressor.tensor_files import read_tensor_file

__all__ = ["FORMAT", "settings_key", "state_key", "save_state", "load_state", "weights_digest"]

log = logging.getLogger(__name__)

FORMAT = "compressor-train-state-1"
#: settings that change how fast a run goes, not what it computes
_RUN_ONLY = ("threads", "progress", "device", "eval_batch_size")
#: settings added after states were written: part of the key only when not at their default
_ADDED_LATER = ("lr_patience",)
#: settings the key holds as they resolve on the device instead (:func:`state_key`'s ``run``)
_RESOLVED = ("eval_precision",)


def settings_key(config: Any) -> str:
    """The training settings a state was written with, as its key holds them: every field but those that
    only change how fast it runs; a setting added after states existed (:data:`_ADDED_LATER`) only when it
    is not at its default, so the states written before it stay valid."""
    defaults = {item.name: item.default for item in dataclasses.fields(config)}
    settings = {key: value for key, value in dataclasses.asdict(config).items()
                if key not in _RUN_ONLY + _RESOLVED and not (key in _ADDED_LATER and value == defaults[key])}
    return repr(sorted(settings.items()))


def state_key(
    config: Any, model: nn.Module, data: Any, *, device: str, precision: str, teacher: nn.Module | None = None,
    start: float | None = None, evaluation: str = "fp32",
) -> dict[str, Any]:
    """What a resumed run must share with the one that wrote the state: the training settings (not
    how fast it runs), the kind of device and the precisions its training and its evaluations resolved to
    (``evaluation`` only where bf16: every state written before evaluations followed the training's
    precision scored in fp32), the network it started
    from (its layers and its weights: a recipe, a reconstruction or an initialization that differ
    start another run), the teacher it distills from, and the data (its description, sizes, class
    shares and a fingerprint of its first and last training patches and of its validation scenes)."""
    key = {
        "settings": settings_key(config),
        "run": [device, precision, *(["scored in bf16"] if evaluation == "bf16" else [])],
        "layers": [[name, list(value.shape)] for name, value in model.state_dict().items()],
        "start": weights_digest(model),
        "teacher": None if teacher is None else weights_digest(teacher),
        "data": _data_fingerprint(data),
    }
    if start is not None:  # a run that counts its start (train's start=) is another run than one that does not
        key["counted_start"] = round(float(start), 6)
    return key


def _data_fingerprint(data: Any) -> list[Any]:
    digest = hashlib.sha256()
    for index in sorted({0, len(data.train) - 1}):
        for tensor in data.train[index]:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for scene in data.val:  # its name and shape, and its first rows (a scene may be a memory-mapped tile)
        digest.update(repr((scene.name, tuple(scene.image.shape))).encode())
        digest.update(np.ascontiguousarray(scene.image[:16]).tobytes())
        digest.update(np.ascontiguousarray(scene.labels[:16]).tobytes())
    frequencies = [round(float(value), 6) for value in data.class_frequencies()]
    return [data.description, len(data.train), int(data.num_classes), int(data.in_channels), frequencies,
            digest.hexdigest()[:16]]


def weights_digest(model: nn.Module) -> str:
    """A short fingerprint of ``model``'s weights (names, shapes and values): what tells two teachers of
    one architecture apart, so that a fine-tuning from one never resumes a state made from the other."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                      if value.numel() else b"")
    return digest.hexdigest()[:12]


def save_state(path: str | Path, key: dict[str, Any], state: dict[str, Any]) -> Path:
    """Writes ``state`` (tensors and plain data) with its ``key``, atomically (its folder made if missing)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda file: torch.save({"format": FORMAT, "key": key, **state}, file))


def load_state(path: str | Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The state stored at ``path`` if it was written for ``key``; None (and a warning) otherwise."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        stored = read_tensor_file(path, what="training state")
    except CompressorError as error:
        log.warning("%s: not a training state (%s): training from the start", path, error)
        return None
    if not isinstance(stored, dict) or stored.get("format") != FORMAT:
        log.warning("%s: not a training state written by this version: training from the start", path)
        return None
    if stored.get("key") != key:
        changed = [part for part in key if (stored.get("key") or {}).get(part) != key[part]]
        log.warning("%s was written by another training (other %s): training from the start", path,
                    ", ".join(changed) or "settings")
        return None
    return stored
