"""``compressor report``: the Pareto report of a search, as files and as a table in the terminal."""

from __future__ import annotations

import argparse
from pathlib import Path

from compressor.cli.study_args import add_study_arguments, storage_from_args

COMMAND = {"name": "report", "help": "write the Pareto report of a search (HTML, CSV, plots)",
           "description": "Write the Pareto report of a search: index.html (self-contained), trials.csv, "
                          "pareto.csv, plots and summary.md; print the Pareto table. Reads the finished "
                          "trials, so it works while the search is still running."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser, help_study="the study's name (the experiment's name)")
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder (default: reports/NAME)")


def run(args: argparse.Namespace) -> int:
    from compressor.report import build_report, load_study  # pandas and seaborn: only when reporting

    study = load_study(storage_from_args(args), args.study)
    report = build_report(study, Path(args.out) if args.out else Path("reports") / args.study)
    print(report.pareto_text())
    print()
    print(f"report: {report.index_html}")
    return 0
