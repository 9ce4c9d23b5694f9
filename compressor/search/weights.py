"""Weights of Pareto-front trials, kept in an Optuna artifact store (and only theirs)."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from torch import nn

from compressor.errors import NoWeightsError, first_line
from compressor.io import WriteError, atomic_write
from compressor.tensor_files import read_tensor_file

__all__ = ["WeightStore"]

#: what Optuna names an artifact (a UUID); a trial's ``weights`` attribute is read from the study, so
#: anything else (a path, ``../x``) is not one of this store's files
_ARTIFACT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class WeightStore:
    """Trained weights (``state_dict``) of trials, in an Optuna ``FileSystemArtifactStore``."""

    def __init__(self, folder: str | Path, *, create: bool = True) -> None:
        """``create``: make the folder (a search keeping weights); off to read what is there (an export).

        Raises:
            WriteError: the folder cannot be made (a file in the way, no permission).
        """
        self.folder = Path(folder)
        try:
            if create:
                self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise WriteError(f"cannot make the weights folder {self.folder}: {self._why(error)}") from None
        self.store = _AtomicStore(str(self.folder))

    def keep(self, trial: optuna.Trial, model: nn.Module) -> str:
        """Stores ``model``'s weights as an artifact of ``trial``; returns the artifact id.

        Raises:
            WriteError: they cannot be written (a read-only folder, a full disk); no scratch file is left.
        """
        state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        try:
            with tempfile.TemporaryDirectory(dir=self.folder, prefix=".upload-") as scratch:
                path = Path(scratch) / f"trial-{trial.number}.pt"
                with path.open("wb") as file:  # to a file, torch reports a failed write as the OSError it is
                    torch.save(state, file)
                # A .pt file is a zip of tensors: say so, rather than what the extension guesses on this system.
                return upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial,
                                       mimetype="application/octet-stream")
        except OSError as error:
            raise WriteError(f"cannot write the weights of trial {trial.number} in {self.folder}: "
                             f"{self._why(error)}") from None

    def _why(self, error: OSError) -> str:
        if self.folder.exists() and not self.folder.is_dir():
            return "a file of that name is in the way"
        if isinstance(error, WriteError) and isinstance(error.__cause__, OSError):
            error = error.__cause__  # what atomic_write met
        return error.strerror or first_line(error)

    def has(self, artifact_id: str | None) -> bool:
        """True if ``artifact_id`` names a file this store wrote (an id, never a path) and it is there."""
        return isinstance(artifact_id, str) and _ARTIFACT_ID.fullmatch(artifact_id) is not None and \
            (self.folder / artifact_id).is_file()

    def discard(self, artifact_id: str) -> None:
        if self.has(artifact_id):
            try:
                self.store.remove(artifact_id)
            except ArtifactNotFound:  # another worker of the study removed it first
                pass

    def load(self, artifact_id: str | None, number: int) -> dict[str, torch.Tensor]:
        """The ``state_dict`` kept for trial ``number``.

        Raises:
            NoWeightsError: none was kept (the trial left the Pareto front or never finished).
        """
        if not self.has(artifact_id):
            raise NoWeightsError(
                f"trial {number} has no kept weights in {self.folder} (only trials on the Pareto front keep theirs)"
            )
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "weights.pt"
            download_artifact(artifact_store=self.store, file_path=str(path), artifact_id=artifact_id)
            state = read_tensor_file(path, what=f"weights file of trial {number}")
        if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
            raise NoWeightsError(f"trial {number}'s kept weights in {self.folder} are not a state_dict")
        return state


class _AtomicStore(FileSystemArtifactStore):
    """Optuna's file-system store, each artifact written whole or not at all: a write that fails
    (a full disk) leaves no partial file under the artifact's name (:func:`~compressor.io.atomic_write`)."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        atomic_write(self._get_filepath(artifact_id), lambda file: shutil.copyfileobj(content_body, file))
