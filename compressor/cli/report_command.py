"""``compressor report``: the Pareto report of a search, as files and as a table in the terminal."""

from __future__ import annotations

import argparse
from pathlib import Path

from compressor.bounds import SIDE, output_argument, threads_argument
from compressor.cli.console import echo
from compressor.cli.study_args import add_study_arguments, add_trust_argument, storage_from_args
from compressor.errors import ConfigError
from compressor.threads import timing_threads

COMMAND = {"name": "report", "help": "write the Pareto report of a search (HTML, CSV, plots)",
           "description": "Write the Pareto report of a search: index.html (self-contained), trials.csv, "
                          "pareto.csv, plots and summary.md; print the Pareto table. Reads the finished "
                          "trials, so it works while the search is still running."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser, help_study="the study's name (the experiment's name)")
    parser.add_argument("--out", type=output_argument("--out"), metavar="DIR", default=None, help="output folder (default: reports/NAME)")
    parser.add_argument("--int8", action="store_true",
                        help="deploy the front's models first: ONNX and int8 (calibrated on the study's training "
                             "patches) in DIR/onnx, scored on the validation scenes and timed at batch 1 on PyTorch, "
                             "ONNX Runtime fp32 and int8 (interleaved); adds int8 columns (the deploy extra)")
    parser.add_argument("--latency-threads", type=threads_argument("--latency-threads"), default=None, metavar="N",
                        help="threads while timing, a count or auto (--int8; default: the study's cost.latency, else 1)")
    parser.add_argument("--latency-size", type=SIDE.argument("--latency-size"), default=None, metavar="S",
                        help="square input side while timing (--int8; default: the study's cost.latency, else 256)")
    parser.add_argument("--cache-dir", metavar="DIR", help="download cache for the study's data (--int8)")
    add_trust_argument(parser)


def run(args: argparse.Namespace) -> int:
    # pandas and seaborn: only when reporting
    from compressor.report import build_report, default_out_dir, load_study

    storage = storage_from_args(args)
    study = load_study(storage, args.study)
    out_dir = Path(args.out) if args.out else default_out_dir(args.study)  # never outside reports/
    if args.int8:
        from compressor.report.tables import pareto_frame
        from compressor.search.deployment import deploy_trials

        front = pareto_frame(study)
        numbers = [int(number) for number, weights in zip(front["number"], front["weights"]) if weights]
        if not numbers:
            raise ConfigError(f"study {args.study!r} has no front yet: nothing to deploy")
        deploy_trials(storage, args.study, numbers, out_dir, cache_dir=args.cache_dir, echo=echo,
                      latency=_latency(study, args), trust=args.trust)
    report = build_report(study, out_dir, storage=storage)
    print(report.pareto_text(storage))
    print()
    print(f"report: {report.index_html}")
    return 0


def _latency(study: object, args: argparse.Namespace) -> object:
    """How ``--int8`` times the front: as the study measured latency (``cost.latency``), unless told otherwise."""
    from compressor.latency import LatencyConfig
    from compressor.study import study_info

    asked = study_info(study).latency or LatencyConfig(input_size=256)
    threads = timing_threads(args.latency_threads) if args.latency_threads is not None else asked.threads
    return LatencyConfig(threads=threads, input_size=args.latency_size or asked.input_size or 256, repeats=asked.repeats)
