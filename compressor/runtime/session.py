"""ONNX Runtime on the CPU: a session with a fixed thread count, and a module that runs one."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from compressor.errors import ExportError, first_line
from compressor.runtime.extra import require_deploy

__all__ = ["open_session", "run_session", "OnnxRuntimeModule"]


def open_session(model: bytes | str, *, threads: int = 1) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``model`` (bytes or a path) on the CPU.

    ``threads`` intra-op threads, one inter-op thread, sequential execution, every graph
    optimization on: the setting a deployment on a small board uses, and the one whose
    timings are comparable with PyTorch's at the same thread count.

    Raises:
        ExportError: the runtime cannot load the model (naming its first complaint).
    """
    _, onnxruntime = require_deploy("running an ONNX model")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting workers after a run: they would steal the cores from whatever runs next (timed side by side)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 4  # fatal only: a refused input is raised as one line, not logged as well
    try:
        return onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ExportError(f"ONNX Runtime cannot load the model: {_runtime_reason(error)}") from None


def run_session(session: Any, images: torch.Tensor | np.ndarray) -> np.ndarray:
    """The first output of ``session`` for ``images`` (float32, N x C x H x W).

    Raises:
        ExportError: the runtime refuses the input: its shape, naming the node and why.
    """
    array = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float32)
    name = session.get_inputs()[0].name
    try:
        return session.run(None, {name: array})[0]
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ExportError(
            f"ONNX Runtime refuses input of shape {'x'.join(map(str, array.shape))}: {_runtime_reason(error)}"
        ) from None


def _runtime_reason(error: BaseException) -> str:
    text = first_line(error)
    for marker in ("Non-zero status code returned while running ", "INVALID_ARGUMENT : ", "INVALID_GRAPH : ",
                   "NOT_IMPLEMENTED : ", "FAIL : "):
        if marker in text:
            return text[text.index(marker) + (len(marker) if marker.endswith(": ") else 0):]
    return text


class OnnxRuntimeModule(nn.Module):
    """An ONNX model run by ONNX Runtime behind the ``nn.Module`` interface (inference only).

    Lets the validation code that evaluates a PyTorch network (:func:`compressor.train.evaluate`)
    evaluate the exported, or quantized, model unchanged.
    """

    def __init__(self, model: bytes | str, *, threads: int = 1) -> None:
        super().__init__()
        self.session = open_session(model, threads=threads)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run_session(self.session, images))
