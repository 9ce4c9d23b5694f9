"""``compressor cost``: parameters, FLOPs and memory of a model, optionally against a baseline."""

from __future__ import annotations

import argparse
import json

from compressor.cli.common import add_model_arguments, input_shape_from_args, model_from_args
from compressor.cost import FLOP_CONVENTION, Cost, measure
from compressor.models import build_model
from compressor.tables import format_table
from compressor.threads import parse_threads
from compressor.units import format_bytes, format_count

COMMAND = {"name": "cost", "help": "count params and FLOPs of a model",
           "description": f"Count params and FLOPs of a model ({FLOP_CONVENTION})."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--baseline", metavar="MODEL", help="model to compare against (built with default arguments)")
    parser.add_argument("--latency-runs", type=int, default=0, metavar="N", help="time N forward passes, report the median")
    parser.add_argument("--threads", type=parse_threads, default=None, help="torch threads while timing")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    shape = input_shape_from_args(args, model)
    cost = measure(model, shape, latency_runs=args.latency_runs, threads=args.threads)
    baseline = None
    if args.baseline:
        baseline = measure(build_model(args.baseline), shape, latency_runs=args.latency_runs, threads=args.threads)
    if args.json:
        print(json.dumps(cost_json(args.model, cost, args.baseline, baseline), indent=2))
    else:
        print(cost_text(args.model, cost, args.baseline, baseline))
    return 0


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
        lines.append(f"CPU latency: {cost.latency_ms:.1f} ms (median of {cost.latency_runs})")
    if cost.unsupported_ops:
        ops = ", ".join(f"{op} x{count}" for op, count in sorted(cost.unsupported_ops.items()))
        lines.append(f"not counted by fvcore: {ops}")
    if baseline is not None:
        ratios = cost.ratios_to(baseline)
        lines.append("")
        lines.append(
            format_table(
                ["model", "params", "FLOPs", "params ratio", "FLOPs ratio"],
                [
                    [baseline_name, format_count(baseline.params), format_count(baseline.flops), "1.00x", "1.00x"],
                    [name, format_count(cost.params), format_count(cost.flops),
                     f"{ratios['params']:.2f}x", f"{ratios['flops']:.2f}x"],
                ],
                title=f"against {baseline_name} (ratio = baseline / model: how many times smaller)",
            )
        )
    return "\n".join(lines)


def _share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"
