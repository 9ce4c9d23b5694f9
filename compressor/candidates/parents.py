"""The parent a search's candidates inherit from, read from a file: the user's model file
(``search.parent``), or the weights a study names (a worker, a confirmation, an export).

A search trains its own parent (:func:`compressor.experiment.ensure_parent`) unless it starts from
a model file the user trained; everything that later rebuilds the study's candidates reads the
parent back from the file the study names, and refuses a file that changed since.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compressor.data.cache import sha256_of
from compressor.errors import ConfigError, StudyMismatchError
from compressor.experiment import ModelConfig, TrainedNetwork
from compressor.origin import origin_of
from compressor.outputs import declared_output
from compressor.saving import is_model_file, load_saved
from compressor.train import CheckpointError, load_checkpoint

__all__ = ["load_parent_file", "load_parent", "shown_path", "file_sha256", "check_parent_unchanged"]


def load_parent_file(path: str | Path, *, trust: bool = False) -> TrainedNetwork:
    """A trained model file (``search.parent``) as the parent: its network, and a model config
    naming its builder and arguments (for the study's key and labels; candidates inherit from the
    network itself, whatever recipe made it).

    Raises:
        ConfigError: the file is missing or not a compressor model file.
        UntrustedModelError: its network is built by code of the file's choosing and ``trust`` is off.
    """
    saved = load_saved(path, trust=trust)
    origin = origin_of(saved.model)
    name = origin.base if origin is not None else Path(path).stem
    config = ModelConfig(name=name, args=dict(origin.args) if origin is not None else {},
                         output=declared_output(saved.model))
    steps = saved.metadata.get("steps") if isinstance(saved.metadata.get("steps"), int) else 0
    return TrainedNetwork(model=saved.model.eval(), model_config=config, weights_path=Path(path),
                  metrics=saved.metadata.get("metrics") or {}, steps=steps, reused=True, from_file=True)


def load_parent(model_config: ModelConfig, path: str, *, in_channels: int, num_classes: int,
                trust: bool = False) -> TrainedNetwork:
    """The parent a study's candidates inherit from, read from the file the study names (a worker, an export):
    the weights of ``model_config``'s network, or a whole model file (a search from a trained file).

    Raises:
        ConfigError: the file is not on this machine or does not fit the base network.
    """
    if is_model_file(path):
        return load_parent_file(path, trust=trust)
    network = model_config.build(in_channels=in_channels, num_classes=num_classes)
    try:
        checkpoint = load_checkpoint(path, network)
    except CheckpointError as error:
        raise ConfigError(
            f"this study's candidates inherit from the parent network at {path}, which cannot be read here "
            f"({error}); copy that file to this path on this machine"
        ) from None
    return TrainedNetwork(model=network.eval(), model_config=model_config, weights_path=Path(path),
                  metrics=checkpoint.metrics or {}, steps=checkpoint.step or 0, reused=True)


def shown_path(path: str | Path) -> str:
    """``path`` as a person typed it: relative to the current folder when it lies under it."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def file_sha256(path: str | Path) -> str:
    """The sha256 of the file at ``path`` (a study's parent file).

    Raises:
        ConfigError: it cannot be read here.
    """
    try:
        return sha256_of(Path(path))
    except OSError as error:
        raise ConfigError(f"cannot read the parent file {path}: {error.strerror or error}") from None


def check_parent_unchanged(study: Any, info: Any) -> None:
    """Refuses a study made from a trained file (``search.parent``) whose file changed since: its
    trials inherited from the file as it was (a confirmation, an export would use another network).

    Raises:
        StudyMismatchError: the file's sha256 is not the one the study stored.
    """
    expected = ((study.user_attrs.get("experiment_key") or {}).get("search") or {}).get("parent_sha256")
    if expected and info.parent and file_sha256(info.parent) != expected:
        raise StudyMismatchError(
            f"study {study.study_name!r}: its parent file {info.parent} changed since the search ran (another sha256): "
            "its trials inherited from the file as it was; put that file back, or search again")
