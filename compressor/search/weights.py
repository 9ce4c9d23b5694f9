"""Weights of Pareto-front trials, kept in an Optuna artifact store (and only theirs)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from torch import nn

from compressor.errors import NoWeightsError

__all__ = ["WeightStore"]


class WeightStore:
    """Trained weights (``state_dict``) of trials, in an Optuna ``FileSystemArtifactStore``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store = FileSystemArtifactStore(str(self.folder))

    def keep(self, trial: optuna.Trial, model: nn.Module) -> str:
        """Stores ``model``'s weights as an artifact of ``trial``; returns the artifact id."""
        with tempfile.TemporaryDirectory(dir=self.folder, prefix=".upload-") as scratch:
            path = Path(scratch) / f"trial-{trial.number}.pt"
            torch.save({key: value.detach().cpu() for key, value in model.state_dict().items()}, path)
            # A .pt file is a zip of tensors: say so, rather than what the extension guesses on this system.
            return upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial,
                                   mimetype="application/octet-stream")

    def has(self, artifact_id: str | None) -> bool:
        return bool(artifact_id) and (self.folder / artifact_id).exists()

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
            return torch.load(path, map_location="cpu", weights_only=True)
