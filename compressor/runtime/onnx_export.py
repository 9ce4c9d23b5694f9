"""A network exported to ONNX: batch norm folded, batch, height and width dynamic, checked.

:func:`to_onnx` traces the network with PyTorch's TorchScript-based exporter
(``dynamo=False``: it needs nothing beyond torch and names each ONNX node after the module
that made it), folds the batch norms (:mod:`compressor.runtime.folding`), and returns an
:class:`OnnxModel` held in memory: nothing is written until :meth:`OnnxModel.save`, which
writes atomically, so a failed export never leaves a partial ``.onnx`` behind.

When the exporter cannot express an operation, the module that calls it is found by
exporting submodules alone on the inputs they received, deepest first, and named in the
error. :meth:`OnnxModel.max_abs_diff` runs the export in ONNX Runtime against the network in
PyTorch; a shape the runtime refuses is one line naming the ONNX node (which carries the
module's path).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compressor.errors import ExportError, first_line
from compressor.io import atomic_write
from compressor.outputs import model_output
from compressor.runtime.extra import require_deploy
from compressor.runtime.folding import FoldReport, fold_batch_norms

__all__ = ["OnnxModel", "to_onnx", "DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME"]

#: ONNX opset of an export unless asked otherwise (ONNX Runtime 1.16+ runs it, and it has
#: every operator the transforms make)
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 11, 21
INPUT_NAME, OUTPUT_NAME = "image", "logits"
_DYNAMIC = {0: "batch", 2: "height", 3: "width"}
_EXPORT_LOCK = threading.RLock()


@dataclass(frozen=True)
class OnnxModel:
    """An exported network: the ONNX file's bytes and what was done to make it."""

    data: bytes
    opset: int
    folding: FoldReport
    input_shape: tuple[int, ...]
    quantized: str = ""

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    def describe(self) -> str:
        """``opset 17, input image [batch, 3, height, width] (dynamic), 18 batch norms folded ..., 1.9 MB``."""
        channels = self.input_shape[1]
        kind = f", {self.quantized}" if self.quantized else ""
        return (f"opset {self.opset}, input {INPUT_NAME} [batch, {channels}, height, width] (dynamic){kind}, "
                f"{self.folding.describe()}, {self.size_bytes / 1e6:.2f} MB")

    def save(self, path: str | Path) -> Path:
        """Writes the ONNX file atomically (a temporary file renamed into place)."""
        return atomic_write(path, lambda file: file.write(self.data))

    def session(self, threads: int = 1) -> Any:
        """An ONNX Runtime session of this model on the CPU (see :func:`open_session`)."""
        from compressor.runtime.session import open_session

        return open_session(self.data, threads=threads)

    def run(self, images: torch.Tensor | np.ndarray, *, session: Any = None) -> np.ndarray:
        """The logits ONNX Runtime computes for ``images`` (N, C, H, W).

        Raises:
            ExportError: the runtime refuses the input (naming the node and its message).
        """
        from compressor.runtime.session import run_session

        return run_session(session or self.session(), images)

    def max_abs_diff(self, network: nn.Module, inputs: Sequence[torch.Tensor]) -> float:
        """The largest absolute difference between this model's logits and ``network``'s, over ``inputs``."""
        return self.compare(network, inputs)[0]

    def compare(self, network: nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[float, float]:
        """The largest absolute difference between this model's logits and ``network``'s over
        ``inputs``, and the largest absolute logit of ``network`` (the scale a difference is judged at)."""
        session = self.session()
        worst = scale = 0.0
        network = network.eval()
        for images in inputs:
            try:
                with torch.inference_mode():
                    expected = model_output(network, images.float().cpu()).float().numpy()
            except Exception as error:  # noqa: BLE001 - the network refuses this input in PyTorch too
                raise ExportError(f"the network cannot run on an input of shape "
                                  f"{'x'.join(map(str, images.shape))}: {first_line(error)}") from None
            got = self.run(images, session=session)
            if got.shape != expected.shape:
                raise ExportError(f"the ONNX model gives logits of shape {got.shape} for input "
                                  f"{tuple(images.shape)}, PyTorch {expected.shape}")
            worst = max(worst, float(np.abs(got - expected).max()))
            scale = max(scale, float(np.abs(expected).max()))
        return worst, scale


class _Segmentation(nn.Module):
    """The network's segmentation tensor alone (a dict or tuple output reduced to it)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return model_output(self.network, images)


def to_onnx(
    network: nn.Module, input_shape: tuple[int, ...] = (1, 3, 256, 256), *, opset: int = DEFAULT_OPSET,
    fold: bool = True,
) -> OnnxModel:
    """Exports ``network`` (on the CPU, in eval mode, not modified) to ONNX in memory.

    Args:
        network: any ``nn.Module`` taking one image tensor; a dict or tuple output is reduced
            to its declared segmentation tensor.
        input_shape: the ``(N, C, H, W)`` traced; N, H and W stay dynamic in the file.
        opset: the ONNX opset.
        fold: fold batch norms into the convolutions before them.

    Raises:
        MissingExtraError: onnx or onnxruntime is not installed.
        ExportError: an operation the exporter cannot express, naming the module that calls it.
    """
    onnx, _ = require_deploy("exporting to ONNX")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not one this exporter writes for these networks ({MIN_OPSET} to {MAX_OPSET}: "
                          "dynamic padding needs 11)")
    module = _Segmentation(copy.deepcopy(network).cpu().float().eval())
    example = torch.randn(*input_shape)
    try:
        data = _export(module, example, opset, dynamic=True)
    except Exception as error:  # noqa: BLE001 - the exporter raises many kinds; name the module instead
        where = _failing_module(module, example, opset)
        raise ExportError(f"cannot export to ONNX (opset {opset}): {where}{_reason(error)}") from None
    proto = onnx.load_from_string(data)
    norms = sum(isinstance(layer, nn.modules.batchnorm._BatchNorm) for layer in module.modules())
    left_by_exporter = sum(node.op_type == "BatchNormalization" for node in proto.graph.node)
    by_exporter = max(0, norms - left_by_exporter)  # a norm module called twice is two nodes
    folding = (fold_batch_norms(proto, already_folded=by_exporter) if fold
               else FoldReport(folded=by_exporter, left=left_by_exporter))
    return OnnxModel(data=proto.SerializeToString(), opset=opset, folding=folding, input_shape=tuple(input_shape))


def _export(module: nn.Module, example: Any, opset: int, *, dynamic: bool) -> bytes:
    buffer = io.BytesIO()
    examples = example if isinstance(example, tuple) else (example,)
    names = [INPUT_NAME] if len(examples) == 1 else [f"input{index}" for index in range(len(examples))]
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), _quiet_exporter_log():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings: the check below is what counts
        torch.onnx.export(
            module, examples, buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=names, output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: _DYNAMIC, OUTPUT_NAME: _DYNAMIC} if dynamic else None,
        )
    return buffer.getvalue()


@contextlib.contextmanager
def _quiet_exporter_log() -> Iterator[None]:
    """Keeps the exporter's C++ log (its whole TorchScript graph when an operation fails; torch
    turns the log on whatever its setting) off standard output: the log goes to a discarded
    stream for the length of the export."""
    with _EXPORT_LOCK:  # file descriptor 2 is the process's: one export at a time redirects it
        torch._C._jit_set_onnx_log_output_stream("stderr")
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no standard error to redirect: the log goes nowhere anyway
            saved = None
        try:
            if saved is None:
                yield
                return
            with open(os.devnull, "wb") as devnull:
                os.dup2(devnull.fileno(), 2)
                try:
                    yield
                finally:
                    os.dup2(saved, 2)
        finally:
            if saved is not None:
                os.close(saved)
            torch._C._jit_set_onnx_log_output_stream("stdout")


def _reason(error: BaseException) -> str:
    text = first_line(error)
    for marker in ("Exporting the operator ", "Unsupported: ONNX export of "):
        if marker in text:
            return text[text.index(marker):].rstrip(". ")
    return text


def _failing_module(module: nn.Module, example: torch.Tensor, opset: int) -> str:
    """``module 'encoder.2' (Spectral): `` for the deepest submodule that fails to export alone."""
    inputs: dict[str, tuple] = {}
    handles = [
        layer.register_forward_pre_hook(lambda layer, args, name=name: inputs.setdefault(name, args))
        for name, layer in module.network.named_modules() if name
    ]
    try:
        with torch.no_grad():
            module(example)
    except Exception as error:  # noqa: BLE001 - the network itself fails on this input
        raise ExportError(
            f"the network cannot run on an input of shape {'x'.join(map(str, example.shape))}: {first_line(error)}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    found = ""
    current = module.network
    while True:
        for name, child in current.named_children():
            full = f"{found}.{name}" if found else name
            args = inputs.get(full)
            if args is None or not args or not all(isinstance(arg, torch.Tensor) for arg in args):
                continue
            try:
                _export(child, tuple(args), opset, dynamic=False)
            except Exception:  # noqa: BLE001 - this child holds the operation
                found, current = full, child
                break
        else:
            break
    return f"module {found!r} ({type(current).__name__}): " if found else f"{type(module.network).__name__}: "
