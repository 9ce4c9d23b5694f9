"""Post-training static int8 quantization of an exported model, with ONNX Runtime's tools.

The fp32 model is pre-processed (shape inference and graph optimization, ONNX Runtime's
``quant_pre_process``), then quantized in the QDQ format: int8 weights per output channel,
uint8 activations whose ranges are calibrated (min-max) on real images, the training patches
of the data the network was trained on. The batch norms are already folded, so each
convolution is quantized with its norm.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from compressor.errors import ConfigError, ExportError, first_line
from compressor.runtime.extra import require_deploy
from compressor.runtime.onnx_export import INPUT_NAME, OnnxModel

__all__ = ["quantize_int8"]


def quantize_int8(model: OnnxModel, calibration: Sequence[torch.Tensor | np.ndarray] | None) -> OnnxModel:
    """``model`` quantized to int8, its activation ranges calibrated on ``calibration`` (batches N x C x H x W).

    Raises:
        ConfigError: no calibration images.
        ExportError: ONNX Runtime's quantizer fails (naming its first complaint).
    """
    require_deploy("int8 quantization")
    if not calibration:
        raise ConfigError("int8 quantization needs calibration images (training patches); none were given")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [_array(batch) for batch in calibration]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

        def rewind(self) -> None:
            self.batches = iter(batches)

    with tempfile.TemporaryDirectory(prefix="compressor-int8-") as folder:
        fp32, prepared, int8 = (Path(folder) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        fp32.write_bytes(model.data)
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibTensorRangeSymmetric": False},
            )
        except Exception as error:  # noqa: BLE001 - the quantizer raises many kinds
            raise ExportError(f"ONNX Runtime's int8 quantization failed: {first_line(error)}") from None
        data = int8.read_bytes()
    return dataclasses.replace(model, data=data, quantized="int8 (static, QDQ, per-channel weights)")


def _array(batch: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().float().numpy()
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 4:
        raise ConfigError(f"calibration images must be batches N x C x H x W, got shape {batch.shape}")
    return batch
