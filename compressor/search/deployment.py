"""The front's models deployed: each exported to ONNX and int8, scored and timed (``report --int8``).

Writes ``deployed.csv`` in the report's folder, a row per trial, keyed by the trial's kept
weights so that a later report uses a row only while it still describes those weights.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from compressor.deploy import deploy
from compressor.errors import ConfigError
from compressor.experiment import Experiment
from compressor.io import atomic_write_text
from compressor.latency import LatencyConfig
from compressor.metrics import metric_value
from compressor.search.export import rebuild_trial

__all__ = ["deploy_trials", "DEPLOYED_FILE", "DEPLOYED_COLUMNS"]

DEPLOYED_FILE = "deployed.csv"
DEPLOYED_COLUMNS = [
    "number", "weights", "metric", "fp32_metric", "int8_metric", "onnx_bytes", "int8_bytes", "latency_torch_ms",
    "latency_fp32_ms", "latency_int8_ms", "threads", "input_size", "max_abs_diff",
]


def deploy_trials(
    storage_url: str, study_name: str, numbers: Sequence[int], out_dir: str | Path, *,
    latency: LatencyConfig, cache_dir: str | Path | None = None, echo: Callable[[str], None] = lambda line: None,
    trust: bool = False,
) -> list[dict[str, Any]]:
    """Deploys each trial of ``numbers`` to ``out_dir/onnx/trial-N.onnx`` (and ``.int8.onnx``); writes ``deployed.csv``.

    Each model is checked against PyTorch, quantized with int8 calibrated on the study's
    training patches, scored on its validation scenes in PyTorch, ONNX Runtime fp32 and int8,
    and timed in the three side by side as ``latency`` says.
    """
    out_dir = Path(out_dir)
    rows, data, experiment = [], None, None
    for index, number in enumerate(numbers, 1):
        trial = rebuild_trial(storage_url, study_name, number, cache_dir=cache_dir, trust=trust)
        if experiment is None:
            experiment = Experiment.from_dict(trial.info.experiment, source=f"study {study_name!r}")
            data = experiment.data.build(cache_dir=cache_dir)
        echo(f"deploy {index}/{len(numbers)}  trial {number}: {trial.record.recipe_short}")
        size = latency.input_size or experiment.cost.input_size
        try:
            deployment = deploy(
                trial.model, out_dir / "onnx" / f"trial-{number}.onnx", in_channels=data.in_channels, input_size=size,
                data=data, train_config=experiment.train, int8=True, latency=latency,
            )
        except ConfigError as error:  # which of the front's trials, in the one line
            raise ConfigError(f"trial {number}: {error}") from None
        metric = trial.info.metric
        scores = {name: metric_value(metrics, metric) for name, metrics in deployment.metrics.items()}
        rows.append({
            "number": number, "weights": trial.record.weights, "metric": scores.get("PyTorch"),
            "fp32_metric": scores.get("ONNX Runtime fp32"), "int8_metric": scores.get("ONNX Runtime int8"),
            "onnx_bytes": deployment.model.size_bytes,
            "int8_bytes": deployment.int8.size_bytes if deployment.int8 is not None else None,
            "latency_torch_ms": deployment.latency["torch"].median_ms,
            "latency_fp32_ms": deployment.latency["onnxruntime fp32"].median_ms,
            "latency_int8_ms": deployment.latency["onnxruntime int8"].median_ms,
            "threads": latency.threads, "input_size": size, "max_abs_diff": max(deployment.checks.values()),
        })
        row = rows[-1]
        echo(f"         {trial.info.metric_label or metric}: fp32 {row['fp32_metric']:.3f}, int8 {row['int8_metric']:.3f}; "
             f"latency torch {row['latency_torch_ms']:.1f} ms, onnxruntime fp32 {row['latency_fp32_ms']:.1f} ms, "
             f"int8 {row['latency_int8_ms']:.1f} ms")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=DEPLOYED_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / DEPLOYED_FILE, buffer.getvalue())
    return rows
