"""Latency on the runtime a network ships with: PyTorch eager or ONNX Runtime, on the CPU.

A latency is the median, with the 90th percentile, of ``repeats`` timed forward passes after
``warmup`` untimed ones, at a fixed batch, input size and thread count. ``runtime:
onnxruntime`` exports the network first (:mod:`compressor.runtime`, batch norms folded) and
times the session; it needs the ``deploy`` extra.

Example:
    >>> from torch import nn
    >>> timing = measure_latency(nn.Conv2d(3, 2, 1), LatencyConfig(repeats=3, warmup=1), (1, 3, 32, 32))
    >>> timing.runtime, timing.repeats, timing.p90_ms >= timing.median_ms > 0
    ('torch', 3, True)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from compressor.bounds import BATCH, COUNT, MAX_ELEMENTS, POSITIVE_COUNT, SIDE, check_threads
from compressor.errors import ConfigError
from compressor.threads import torch_threads

__all__ = ["LatencyConfig", "Latency", "measure_latency", "time_interleaved", "RUNTIMES"]

RUNTIMES = ("torch", "onnxruntime")


@dataclass(frozen=True, kw_only=True)
class LatencyConfig:
    """How latency is measured (the ``cost.latency`` section).

    Attributes:
        runtime: ``torch`` (eager PyTorch) or ``onnxruntime`` (the network exported to ONNX,
            batch norms folded, run by ONNX Runtime; the ``deploy`` extra).
        threads: intra-op threads of the runtime (1: what a small board gives one model, and
            the least noisy on a shared machine).
        batch: images per forward pass.
        input_size: side of the square input (None: ``cost.input_size``).
        repeats: timed forward passes; the median and 90th percentile are reported.
        warmup: untimed passes first.
    """

    runtime: Literal["torch", "onnxruntime"] = "torch"
    threads: int = 1
    batch: int = 1
    input_size: int | None = None
    repeats: int = 20
    warmup: int = 3

    def __post_init__(self) -> None:
        if check_threads(self.threads, "cost.latency.threads") in (None, "auto"):
            raise ConfigError(f"cost.latency.threads must be a count of threads, got {self.threads!r}")
        BATCH.check(self.batch, "cost.latency.batch")
        POSITIVE_COUNT.check(self.repeats, "cost.latency.repeats")
        COUNT.check(self.warmup, "cost.latency.warmup")
        if self.input_size is not None:
            SIDE.check(self.input_size, "cost.latency.input_size")
            if self.batch * self.input_size**2 > MAX_ELEMENTS // 4:  # a timed input of at most 1x4x8192x8192
                raise ConfigError(f"cost.latency: a batch of {self.batch} at {self.input_size}x{self.input_size} is more than "
                                  f"the {MAX_ELEMENTS // 4:,} pixels an input may have")

    def input_shape(self, in_channels: int, default_size: int) -> tuple[int, int, int, int]:
        size = self.input_size or default_size
        return (self.batch, in_channels, size, size)


@dataclass(frozen=True)
class Latency:
    """A measured latency: median and 90th percentile in milliseconds, and how it was measured."""

    median_ms: float
    p90_ms: float
    runtime: str
    threads: int
    input_shape: tuple[int, ...]
    repeats: int

    @classmethod
    def of(cls, timings_ms: list[float], *, runtime: str, threads: int, input_shape: tuple[int, ...]) -> Latency:
        return cls(median_ms=statistics.median(timings_ms), p90_ms=float(np.percentile(timings_ms, 90)),
                   runtime=runtime, threads=threads, input_shape=tuple(input_shape), repeats=len(timings_ms))


def measure_latency(network: nn.Module, config: LatencyConfig, input_shape: tuple[int, ...]) -> Latency:
    """Times ``network`` on ``config.runtime`` at ``input_shape`` (N, C, H, W).

    Raises:
        MissingExtraError: ``onnxruntime`` asked for without the deploy extra.
        ExportError: the network cannot be exported or run by ONNX Runtime.
    """
    run = forward_runner(network, config.runtime, input_shape, threads=config.threads)
    timings = time_interleaved({config.runtime: run}, repeats=config.repeats, warmup=config.warmup,
                               threads=config.threads)[config.runtime]
    return Latency.of(timings, runtime=config.runtime, threads=config.threads, input_shape=input_shape)


def forward_runner(
    network: nn.Module | Any, runtime: str, input_shape: tuple[int, ...], *, threads: int = 1,
) -> Callable[[], Any]:
    """A function running one forward pass of ``network`` on ``runtime`` at ``input_shape``.

    ``network`` is an ``nn.Module`` for either runtime (exported first for ``onnxruntime``), or
    for ``onnxruntime`` an already exported :class:`~compressor.runtime.OnnxModel`.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"latency.runtime: {runtime!r} is not one of {', '.join(RUNTIMES)}")
    example = torch.randn(*input_shape)
    if runtime == "torch":
        if not isinstance(network, nn.Module):
            raise ConfigError("the torch runtime times a PyTorch network, not an exported model")
        device = next((tensor.device for tensor in network.parameters()), torch.device("cpu"))
        example = example.to(device)
        network.eval()

        def run_torch() -> Any:
            with torch.inference_mode():
                return network(example)

        return run_torch
    from compressor.runtime.onnx_export import OnnxModel, to_onnx
    from compressor.runtime.session import run_session

    exported = network if isinstance(network, OnnxModel) else to_onnx(network.cpu(), tuple(input_shape))
    session = exported.session(threads=threads)
    array = example.numpy()
    return lambda: run_session(session, array)


def time_interleaved(
    runners: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int = 3, threads: int | str | None = 1,
) -> dict[str, list[float]]:
    """Milliseconds of each runner's passes, taken in turn (A, B, C, A, B, C, ...).

    Interleaving spreads a machine's slow moments over every runner alike, so medians taken
    side by side compare. torch runs with ``threads`` intra-op threads for the duration
    (``auto``: the available cores; None: as they are).
    """
    timings: dict[str, list[float]] = {name: [] for name in runners}
    with torch_threads(threads):
        for _ in range(warmup):
            for run in runners.values():
                run()
        for _ in range(repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                timings[name].append((time.perf_counter() - start) * 1000.0)
    return timings
