"""``compressor cost``: parameters, FLOPs and memory of a model, optionally against a baseline."""

from __future__ import annotations

import argparse
import inspect
import json

from torch import nn

from compressor.bounds import COUNT, threads_argument
from compressor.cli.common import add_model_arguments, input_shape_from_args, model_from_args, names_a_file
from compressor.cost import FLOP_CONVENTION, Cost, measure
from compressor.errors import CompressorError, ConfigError, UntrustedModelError
from compressor.latency import RUNTIMES, LatencyConfig
from compressor.models import build_model
from compressor.models.loading import resolve_builder
from compressor.saving import load_saved
from compressor.tables import format_table
from compressor.threads import timing_threads
from compressor.units import format_bytes, format_count

COMMAND = {"name": "cost", "help": "count params and FLOPs of a model",
           "description": f"Count params and FLOPs of a model ({FLOP_CONVENTION})."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--baseline", metavar="MODEL",
                        help="model to compare against, as MODEL (a builder with its default arguments, and the "
                             "input's channels where it names in_channels; or a model file)")
    parser.add_argument("--latency-runs", type=COUNT.argument("--latency-runs"), default=0, metavar="N", help="time N forward passes, report the median")
    parser.add_argument("--threads", type=threads_argument("--threads"), default=None, help="threads while timing")
    parser.add_argument("--runtime", choices=RUNTIMES, default=None,
                        help="time on this runtime (onnxruntime: exported to ONNX first; the deploy extra); "
                             "median and p90 of --latency-runs passes (default 20), 1 thread unless --threads")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    shape = input_shape_from_args(args, model)
    latency = None
    if args.runtime:
        threads = 1 if args.threads is None else timing_threads(args.threads)
        latency = LatencyConfig(runtime=args.runtime, threads=threads, repeats=args.latency_runs or 20)
    timing = {"latency_runs": args.latency_runs, "threads": args.threads, "latency": latency}
    cost = measure(model, shape, **timing)
    baseline = None
    if args.baseline:
        try:
            baseline = measure(baseline_model(args.baseline, shape, trust=args.trust), shape, **timing)
        except CompressorError as error:  # named; a file that needs --trust keeps its kind, and so its advice
            kind = UntrustedModelError if isinstance(error, UntrustedModelError) else ConfigError
            raise kind(f"--baseline {args.baseline}: {error}") from None
    if args.json:
        print(json.dumps(cost_json(args.model, cost, args.baseline, baseline), indent=2))
    else:
        print(cost_text(args.model, cost, args.baseline, baseline))
    return 0


def baseline_model(spec: str, shape: tuple[int, ...], *, trust: bool = False) -> nn.Module:
    """``spec`` built with its defaults, for input ``shape``'s channels where the builder names ``in_channels``
    (U-Net's default of 3 would not run on a 1-band model's input); a model file as it is."""
    if names_a_file(spec):
        return load_saved(spec, trust=trust).model
    try:
        takes = "in_channels" in inspect.signature(resolve_builder(spec)).parameters
    except (TypeError, ValueError):  # no signature to read: built as it is
        takes = False
    return build_model(spec, {"in_channels": shape[1]} if takes and len(shape) > 1 else {})


def cost_json(name: str, cost: Cost, baseline_name: str | None, baseline: Cost | None) -> dict:
    data = {"model": name, "flop_convention": FLOP_CONVENTION, **cost.to_dict(modules=False)}
    data["modules"] = {key: vars(value) for key, value in cost.top_level().items()}
    if baseline is not None:
        data["baseline"] = {"model": baseline_name, **baseline.to_dict(modules=False)}
        data["ratios"] = cost.ratios_to(baseline)
    return data


def cost_text(name: str, cost: Cost, baseline_name: str | None, baseline: Cost | None) -> str:
    shape = "x".join(str(size) for size in cost.input_shape)
    rows = [
        [module, format_count(item.params), format_count(item.flops), _share(item.flops, cost.flops)]
        for module, item in cost.top_level().items()
    ]
    rows.append(["total", format_count(cost.params), format_count(cost.flops), "100%"])
    lines = [
        format_table(
            ["module", "params", "FLOPs", "of FLOPs"], rows,
            title=f"{name} at input {shape}  ({FLOP_CONVENTION})",
        ),
        f"activation memory (estimate, training): {format_bytes(cost.activation_bytes)}",
    ]
    if cost.latency_ms is not None:
        p90 = f", p90 {cost.latency_p90_ms:.1f} ms" if cost.latency_p90_ms is not None else ""
        lines.append(f"CPU latency ({cost.latency_runtime}): {cost.latency_ms:.1f} ms (median of {cost.latency_runs}{p90})")
    if cost.unsupported_ops:
        ops = ", ".join(f"{op} x{count}" for op, count in sorted(cost.unsupported_ops.items()))
        lines.append(f"not counted by fvcore: {ops}")
    if baseline is not None:
        ratios = cost.ratios_to(baseline)
        latency_headers = ["latency", "latency ratio"] if cost.latency_ms is not None else []
        lines.append("")
        lines.append(
            format_table(
                ["model", "params", "FLOPs", "params ratio", "FLOPs ratio", *latency_headers],
                [
                    [baseline_name, format_count(baseline.params), format_count(baseline.flops), "1.00x", "1.00x",
                     *_latency_cells(baseline, baseline)],
                    [name, format_count(cost.params), format_count(cost.flops),
                     f"{ratios['params']:.2f}x", f"{ratios['flops']:.2f}x", *_latency_cells(cost, baseline)],
                ],
                title=f"against {baseline_name} (ratio = baseline / model: how many times smaller)",
            )
        )
    return "\n".join(lines)


def _latency_cells(cost: Cost, baseline: Cost) -> list[str]:
    if cost.latency_ms is None or baseline.latency_ms is None:
        return []
    return [f"{cost.latency_ms:.1f} ms", f"{baseline.latency_ms / cost.latency_ms:.2f}x"]


def _share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"
