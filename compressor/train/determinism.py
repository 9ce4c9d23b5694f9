"""Runs that repeat: seeds, the device, and deterministic kernels on a GPU."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch

from compressor.errors import ConfigError

__all__ = ["seed_everything", "resolve_device", "deterministic_kernels"]


def seed_everything(seed: int) -> None:
    """Seeds torch (CPU and GPUs) and numpy's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first GPU when one is present, else the CPU.

    Raises:
        ConfigError: an unknown device, or a GPU asked for where there is none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} asked for, but no CUDA GPU is available")
    return device


@contextlib.contextmanager
def deterministic_kernels(device: torch.device) -> Iterator[None]:
    """On a GPU, runs the block with cuDNN's and PyTorch's deterministic kernels, then restores the settings.

    Where an operation has no deterministic CUDA kernel PyTorch warns (``warn_only``) instead
    of failing, unless the caller had asked for the strict mode already. ``CUBLAS_WORKSPACE_CONFIG``
    is set (when unset) so cuBLAS is deterministic too; cuBLAS reads it once, when first used in
    the process, so it stays set afterwards. On the CPU nothing changes.
    """
    if device.type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    cudnn = torch.backends.cudnn
    previous = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn.deterministic, cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=previous[3] if previous[2] else True)
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = previous[0], previous[1]
        torch.use_deterministic_algorithms(previous[2], warn_only=previous[3])
