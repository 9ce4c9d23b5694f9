"""A trained network made ready to ship: ONNX file checked against PyTorch, optional int8, measured.

:func:`deploy` exports the network (:func:`compressor.runtime.to_onnx`: batch norms folded,
batch, height and width dynamic), checks the ONNX model against PyTorch on random inputs of
two shapes and, when the data is given, on real training patches (the largest absolute logit
difference of each), and only then writes the file. With ``int8`` it also writes a
post-training static int8 model calibrated on training patches. With the data it scores each
form on the validation scenes (the same sliding window as training's evaluation), and with a
latency setting it times them side by side (interleaved, same threads, medians).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.api_inputs import as_network, check_data
from compressor.data.base import SegmentationData
from compressor.errors import ConfigError, ExportError, first_line
from compressor.finetune import calibration_batches
from compressor.io import atomic_write_text, check_writable
from compressor.latency import Latency, LatencyConfig, forward_runner, time_interleaved
from compressor.metrics import SegmentationMetrics
from compressor.models.construction import check_runs_within
from compressor.outputs import model_output
from compressor.runtime.int8 import quantize_int8
from compressor.runtime.onnx_export import DEFAULT_OPSET, OnnxModel, to_onnx
from compressor.runtime.session import OnnxRuntimeModule
from compressor.threads import available_cores
from compressor.train import TrainConfig, evaluate

__all__ = ["Deployment", "Tolerance", "deploy", "int8_path", "DIFF_TOLERANCE", "REL_TOLERANCE"]

#: the largest logit difference between the ONNX model and PyTorch that passes the check
#: (float32 kernels of the two runtimes sum in other orders: measured differences are 1e-7 to 1e-5)
DIFF_TOLERANCE = 1e-3
#: ... or this share of the largest logit, where that is more: float32 rounding grows with the
#: logits' scale (a network whose logits reach 6,790 differs by 7e-3 between runtimes, 1e-6 of it)
REL_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Tolerance:
    """How far the ONNX model's logits may be from PyTorch's: ``absolute``, or ``relative`` times
    the largest PyTorch logit of the input, whichever is larger.

    Example:
        >>> Tolerance().allowed(scale=10.0), Tolerance().allowed(scale=6790.0)
        (0.001, 0.0679)
    """

    absolute: float = DIFF_TOLERANCE
    relative: float = REL_TOLERANCE

    def allowed(self, scale: float) -> float:
        return max(self.absolute, self.relative * scale)

    def describe(self) -> str:
        return f"tolerance max({self.absolute:g}, {self.relative:g} x the largest logit)"


@dataclass
class Deployment:
    """What :func:`deploy` wrote and measured."""

    path: Path
    model: OnnxModel
    checks: dict[str, float]
    int8: OnnxModel | None = None
    int8_path: Path | None = None
    metrics: dict[str, SegmentationMetrics] = field(default_factory=dict)
    latency: dict[str, Latency] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    """Input shapes the network itself refuses in PyTorch (so not checked), with its reason."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the ``.json`` written next to the ONNX file)."""
        return {
            "onnx": str(self.path), "opset": self.model.opset, "input_shape": list(self.model.input_shape),
            "dynamic_axes": ["batch", "height", "width"], "batch_norms_folded": self.model.folding.folded,
            "batch_norms_left": self.model.folding.left, "size_bytes": self.model.size_bytes,
            "max_abs_diff": self.checks,
            "refused_by_the_network": self.refused,
            "int8": None if self.int8 is None else {"onnx": str(self.int8_path), "size_bytes": self.int8.size_bytes},
            "metrics": {name: metrics.to_dict() for name, metrics in self.metrics.items()},
            "latency_ms": {name: {"median": timing.median_ms, "p90": timing.p90_ms, "threads": timing.threads,
                                  "input_shape": list(timing.input_shape), "repeats": timing.repeats}
                           for name, timing in self.latency.items()},
        }

    def summary_lines(self) -> list[str]:
        """What a person reads after a deployment, a line per fact."""
        lines = [f"wrote {self.path}: {self.model.describe()}",
                 "checked against PyTorch, max abs difference of the logits: "
                 + "; ".join(f"{diff:.1e} on {label}" for label, diff in self.checks.items())]
        for shape, reason in self.refused.items():
            lines.append(f"not checked at {shape}: the network refuses it in PyTorch too ({reason}); "
                         "the ONNX file takes the sizes it takes")
        if self.int8 is not None:
            lines.append(f"wrote {self.int8_path}: int8, {self.int8.size_bytes / 1e6:.2f} MB "
                         f"({self.model.size_bytes / max(1, self.int8.size_bytes):.1f}x smaller than fp32)")
        for name, metrics in self.metrics.items():
            lines.append(f"validation, {name}: {metrics.summary()}")
        if self.latency:
            first = next(iter(self.latency.values()))
            shape = "x".join(map(str, first.input_shape))
            lines.append(f"latency at {shape}, {first.threads} thread{'s' if first.threads != 1 else ''}, "
                         f"interleaved, median (p90) of {first.repeats}: "
                         + ", ".join(f"{name} {timing.median_ms:.1f} ms ({timing.p90_ms:.1f})"
                                     for name, timing in self.latency.items()))
        return lines


def int8_path(path: str | Path) -> Path:
    """Where the int8 model of ``model.onnx`` goes: ``model.int8.onnx``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.int8{path.suffix or '.onnx'}")


def deploy(
    network: nn.Module, out: str | Path, *, in_channels: int, input_size: int = 256, opset: int = DEFAULT_OPSET,
    data: SegmentationData | None = None, train_config: TrainConfig | None = None, int8: bool = False,
    calibration: int = 8, evaluate_metrics: bool = True, latency: LatencyConfig | None = None,
    tolerance: Tolerance | None = None, echo: Callable[[str], None] = lambda line: None,
) -> Deployment:
    """Exports ``network`` to ``out`` (ONNX), checks it, and optionally quantizes, scores and times it.

    Args:
        network: the trained network; it is moved to the CPU and put in eval mode, its weights untouched.
        out: the ``.onnx`` file to write; a ``.json`` with what was measured goes next to it.
        in_channels: the input's channels.
        input_size: side of the square input traced and checked (height and width stay dynamic).
        opset: the ONNX opset.
        data: the network's data: real inputs for the check, calibration patches for int8 and
            validation scenes for the scores. None: random inputs only, and no int8.
        train_config: the evaluation's window and overlap (default: training's defaults); every form is
            scored in fp32, whatever its ``eval_precision``, so the scores compare the exports alone.
        int8: also write ``<out stem>.int8.onnx``, quantized with ``calibration`` batches of
            training patches.
        evaluate_metrics: score every form on the validation scenes (needs ``data``).
        latency: time PyTorch eager, ONNX Runtime fp32 (and int8) side by side at its batch,
            input size (default ``input_size``) and threads.
        tolerance: how far the ONNX logits may be from PyTorch's (default :class:`Tolerance`()).
        echo: progress lines.

    Raises:
        MissingExtraError: onnx or onnxruntime is not installed.
        ConfigError: int8 without data to calibrate on; ``out`` cannot be written.
        ExportError: an operation the exporter cannot express, a shape the runtime refuses,
            or an export whose logits differ from PyTorch's beyond ``tolerance``;
            nothing is written then.
    """
    network = as_network(network, "deploy", argument="network")
    if data is not None:
        check_data(data, "deploy")
    out = Path(out)
    if int8 and data is None:
        raise ConfigError("int8 quantization needs calibration data (training patches): give the network's "
                          "data (an experiment file); nothing was written")
    check_writable(out)
    network = network.cpu().eval()
    largest = input_size + input_size // 2  # the largest input the check runs it at (_check)
    check_runs_within(network, (2, in_channels, largest, largest))  # a file read without trust: its memory first
    exported = to_onnx(network, (1, in_channels, input_size, input_size), opset=opset)
    echo(f"exported: {exported.describe()}")
    checks, refused = _check(exported, network, in_channels, input_size, data, tolerance or Tolerance())
    quantized = None
    if int8:
        assert data is not None
        batches = calibration_batches(data, calibration, batch_size=(train_config or TrainConfig()).batch_size)
        echo(f"int8: calibrating on {calibration} batches of training patches")
        quantized = quantize_int8(exported, batches)
        quantized.run(batches[0])  # the int8 model loads and runs before anything is written
    # Everything is measured before anything is written: a failure (or Ctrl-C) while scoring or
    # timing leaves no new .onnx beside an old .json that describes another export.
    deployment = Deployment(path=out, model=exported, checks=checks, int8=quantized,
                            int8_path=int8_path(out) if quantized is not None else None, refused=refused)
    if data is not None and evaluate_metrics:
        threads = available_cores()
        forms = {"PyTorch": network, "ONNX Runtime fp32": OnnxRuntimeModule(exported.data, threads=threads)}
        if quantized is not None:
            forms["ONNX Runtime int8"] = OnnxRuntimeModule(quantized.data, threads=threads)
        scoring = dataclasses.replace(train_config or TrainConfig(), eval_precision="fp32")
        for name, model in forms.items():
            echo(f"scoring {name} on the validation scenes")
            deployment.metrics[name] = evaluate(model, data, scoring)
    if latency is not None:
        shape = latency.input_shape(in_channels, input_size)
        runners = {"torch": forward_runner(network, "torch", shape, threads=latency.threads),
                   "onnxruntime fp32": forward_runner(exported, "onnxruntime", shape, threads=latency.threads)}
        if quantized is not None:
            runners["onnxruntime int8"] = forward_runner(quantized, "onnxruntime", shape, threads=latency.threads)
        echo(f"timing {', '.join(runners)} at {'x'.join(map(str, shape))}, {latency.threads} thread(s), "
             f"{latency.repeats} passes each, interleaved")
        timings = time_interleaved(runners, repeats=latency.repeats, warmup=latency.warmup, threads=latency.threads)
        deployment.latency = {name: Latency.of(values, runtime=name, threads=latency.threads, input_shape=shape)
                              for name, values in timings.items()}
    exported.save(out)
    if quantized is not None:
        quantized.save(int8_path(out))
    atomic_write_text(out.with_name(f"{out.name}.json"), json.dumps(deployment.to_dict(), indent=2) + "\n")
    return deployment


def _check(
    exported: OnnxModel, network: nn.Module, in_channels: int, size: int, data: SegmentationData | None,
    tolerance: Tolerance,
) -> tuple[dict[str, float], dict[str, str]]:
    """The largest logit difference on each kind of input, and the input shapes the network
    itself refuses with its reason; refuses the export beyond the tolerance."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(1, in_channels, size, size), (2, in_channels, size, max(32, size // 2 - (size // 2) % 32))]
    inputs = {f"random {'x'.join(map(str, shape))}": torch.randn(*shape, generator=generator) for shape in shapes}
    # Before a file is called dynamic: a height and width no power of two divides, where the pads and
    # crops of dynamic sizes act, and a larger size than the one traced; each checked where PyTorch
    # itself takes it (some networks take multiples of 32 only: said, not hidden).
    refused = {}
    larger = size + size // 2
    for shape in ((1, in_channels, size + 7, size // 2 + 3), (1, in_channels, larger, larger)):
        images = torch.randn(*shape, generator=generator)
        label = "x".join(map(str, shape))
        try:
            # a captured graph prints its generated code to stderr when it fails: the reason is what counts
            with torch.inference_mode(), contextlib.redirect_stderr(io.StringIO()):
                model_output(network, images)
            inputs[f"random {label}"] = images
        except Exception as error:  # noqa: BLE001 - the network refuses such sizes in PyTorch too: nothing to compare
            refused[label] = first_line(error)
    if data is not None:
        batch = calibration_batches(data, 1, batch_size=4, seed=1)[0]
        inputs[f"real {'x'.join(map(str, batch.shape))} (training patches)"] = batch
    checks = {}
    traced = "x".join(map(str, exported.input_shape[2:]))
    for label, images in inputs.items():
        try:
            diff, scale = exported.compare(network, [images])
        except ExportError as error:
            if not str(error).startswith("ONNX Runtime refuses"):
                raise
            raise ExportError(
                f"the ONNX model does not run on {label}, which PyTorch runs: the network decides something from "
                f"its input's size in Python, and the export kept what it decided at {traced}. {error}; "
                "nothing was written") from None
        if not diff <= tolerance.allowed(scale):
            raise ExportError(f"the ONNX model's logits differ from PyTorch's by {diff:.2g} on {label}, whose largest "
                              f"logit is {scale:.3g} ({tolerance.describe()}: {tolerance.allowed(scale):.2g}; "
                              "--max-diff and --max-rel-diff set it); nothing was written")
        checks[label] = diff
    return checks, refused
