"""The options of a deployment (``deploy``, ``export --format onnx``) and the run they describe."""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from compressor.bounds import NON_NEGATIVE, POSITIVE_COUNT, SIDE, threads_argument
from compressor.cli.console import echo
from compressor.data.base import SegmentationData
from compressor.deploy import DIFF_TOLERANCE, REL_TOLERANCE, Deployment, Tolerance, deploy
from compressor.latency import LatencyConfig
from compressor.runtime.onnx_export import DEFAULT_OPSET
from compressor.threads import timing_threads
from compressor.train import TrainConfig

__all__ = ["add_deploy_arguments", "deploy_from_args"]


def add_deploy_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("deployment (ONNX; needs the deploy extra)")
    group.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N", help=f"ONNX opset (default {DEFAULT_OPSET})")
    group.add_argument("--input-size", type=SIDE.argument("--input-size"), default=256, metavar="S",
                       help="side of the square input traced and checked; batch, height and width stay dynamic "
                            "(default 256)")
    group.add_argument("--max-diff", type=NON_NEGATIVE.argument("--max-diff"), default=DIFF_TOLERANCE, metavar="D",
                       help="the largest logit difference from PyTorch that passes the check "
                            f"(default {DIFF_TOLERANCE:g}; see --max-rel-diff)")
    group.add_argument("--max-rel-diff", type=NON_NEGATIVE.argument("--max-rel-diff"), default=REL_TOLERANCE, metavar="R",
                       help="... or this share of the largest PyTorch logit, where that is more: networks with "
                            f"large logits differ more between runtimes (default {REL_TOLERANCE:g})")
    group.add_argument("--int8", action="store_true",
                       help="also write <out>.int8.onnx: static int8 quantization calibrated on training patches "
                            "(needs the network's data)")
    group.add_argument("--calibration", type=POSITIVE_COUNT.argument("--calibration"), default=8, metavar="N",
                       help="batches of training patches that calibrate int8 (default 8)")
    group.add_argument("--no-eval", action="store_true", help="do not score the forms on the validation scenes")
    group.add_argument("--latency", action="store_true",
                       help="time PyTorch, ONNX Runtime fp32 (and int8) side by side, interleaved, at batch 1")
    group.add_argument("--latency-threads", type=threads_argument("--latency-threads"), default=1, metavar="N",
                       help="threads of every runtime while timing, a count or auto (default 1)")
    group.add_argument("--repeats", type=POSITIVE_COUNT.argument("--repeats"), default=20, metavar="N", help="timed passes of each form (default 20)")


def deploy_from_args(
    args: argparse.Namespace, network: nn.Module, out: str | Path, *, in_channels: int,
    data: SegmentationData | None, train_config: TrainConfig | None,
) -> Deployment:
    """Runs :func:`compressor.deploy.deploy` as the options say, printing progress and the summary."""
    latency = None
    if args.latency:
        latency = LatencyConfig(runtime="torch", threads=1 if args.latency_threads is None else timing_threads(args.latency_threads),
                                repeats=args.repeats, input_size=args.input_size)
    deployment = deploy(
        network, out, in_channels=in_channels, input_size=args.input_size, opset=args.opset, data=data,
        train_config=train_config, int8=args.int8, calibration=args.calibration, evaluate_metrics=not args.no_eval,
        latency=latency, tolerance=Tolerance(args.max_diff, args.max_rel_diff), echo=echo,
    )
    for line in deployment.summary_lines():
        print(line)
    print(f"what was measured: {deployment.path}.json")
    return deployment
