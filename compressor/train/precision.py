"""The arithmetic of training's forward passes: ``fp32``, or ``bf16`` autocast (mixed precision).

With ``bf16`` the forward passes of the network (and of a distillation teacher) run under
:func:`torch.autocast` with bfloat16: convolutions and matrix products in bfloat16, the
weights, the optimizer and the losses in float32. On a CPU with AVX-512 BF16 (or AMX) oneDNN
runs those in hardware, U-Net's training step about 1.7x faster on this project's machine
(BENCHMARKS.md, "Training precision"); on one without, bfloat16 is emulated and slower, so
``auto`` takes bf16 only where the hardware has it (a CUDA GPU that supports bfloat16 without
emulation; a CPU whose flags name bfloat16) and fp32 elsewhere. Evaluation runs in the training's
precision unless ``train.eval_precision`` says otherwise (:attr:`.TrainConfig.evaluation_precision`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

__all__ = ["PRECISIONS", "bf16_supported", "resolve_precision", "autocast"]

#: the values of ``train.precision``
PRECISIONS = ("fp32", "bf16", "auto")
_CPUINFO = Path("/proc/cpuinfo")


def bf16_supported(device: torch.device, cpuinfo: Path = _CPUINFO) -> bool:
    """Whether ``device`` runs bfloat16 convolutions and matrix products in hardware: a CUDA GPU
    that does without emulation (Ampere and later), or a CPU whose flags name bfloat16 (x86's
    ``avx512_bf16`` or ``amx_bf16``, Arm's ``bf16``). oneDNN's own check is not enough: it
    accepts any AVX-512 CPU, where bfloat16 is emulated and slower than float32."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        index = device.index if device.index is not None else torch.cuda.current_device()
        with torch.cuda.device(index):
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        try:
            text = cpuinfo.read_text()
        except OSError:
            return False
        flags = set()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                flags.update(value.split())
        return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return False


def resolve_precision(precision: str, device: torch.device) -> Literal["fp32", "bf16"]:
    """``auto`` -> ``bf16`` where :func:`bf16_supported`, else ``fp32``; the others as they are.

    Example:
        >>> resolve_precision("fp32", torch.device("cpu")), resolve_precision("bf16", torch.device("cpu"))
        ('fp32', 'bf16')
    """
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return "bf16" if precision == "bf16" else "fp32"


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """A context running its forward passes in ``precision`` (``fp32``: as they are; ``bf16``: autocast)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
