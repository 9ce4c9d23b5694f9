"""Saving a transformed model with its recipe, and loading it back in one call."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.io import atomic_write

__all__ = ["SavedModel", "save_model", "load_model", "load_saved"]

_FORMAT = "compressor.model/1"


@dataclass
class SavedModel:
    """What :func:`load_saved` returns: the module and what it was made from."""

    model: nn.Module
    recipe: dict[str, Any] | None = None
    base: str | None = None
    input_shape: tuple[int, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def save_model(
    path: str | Path,
    model: nn.Module,
    *,
    recipe: Any = None,
    base: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Saves the whole module (architecture and weights) with its recipe, atomically.

    The file is a pickle (``torch.save``) of the module: load it only from sources you
    trust, with :func:`load_model`. Classes of a user's own network must be importable
    when loading.

    Args:
        path: destination file.
        model: the module (a transformed model is often a ``torch.fx.GraphModule``).
        recipe: a :class:`~compressor.transforms.Recipe` or its plain data.
        base: the spec of the model the recipe was applied to (``"unet"``, ``"pkg.mod:fn"``).
        input_shape: the example input shape the model was transformed and costed at.
        metadata: anything else JSON-like (costs, metrics).
    """
    if recipe is not None and hasattr(recipe, "to_data"):
        recipe = recipe.to_data()
    payload = {
        "format": _FORMAT,
        "model": model,
        "recipe": recipe,
        "base": base,
        "input_shape": list(input_shape) if input_shape else None,
        "metadata": dict(metadata or {}),
    }
    return atomic_write(path, lambda file: torch.save(payload, file))


def load_saved(path: str | Path, *, map_location: str | torch.device = "cpu") -> SavedModel:
    """Loads a file written by :func:`save_model` with its recipe and metadata.

    Raises:
        ConfigError: the file is missing or was not written by :func:`save_model`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001 - corrupted or foreign file
        raise ConfigError(f"{path}: cannot load model file: {type(error).__name__}: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ConfigError(f"{path}: not a model file saved by compressor")
    shape = payload.get("input_shape")
    return SavedModel(
        model=payload["model"],
        recipe=payload.get("recipe"),
        base=payload.get("base"),
        input_shape=tuple(shape) if shape else None,
        metadata=payload.get("metadata") or {},
    )


def load_model(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Loads the module saved by :func:`save_model` (or ``compressor apply --out``).

    Example:
        >>> import tempfile, os, compressor
        >>> path = os.path.join(tempfile.mkdtemp(), "model.pt")
        >>> _ = compressor.save_model(path, compressor.unet(base_width=4))
        >>> type(compressor.load_model(path)).__name__
        'UNet'
    """
    return load_saved(path, map_location=map_location).model
