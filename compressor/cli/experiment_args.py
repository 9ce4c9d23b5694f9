"""The experiment file and the options that adjust it (``train``, ``baseline``, ``search``, ``compress``)."""

from __future__ import annotations

import argparse

from compressor.bounds import threads_argument
from compressor.experiment import Experiment, load_experiment

__all__ = ["add_experiment_arguments", "experiment_from_args"]


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    """The experiment file and the options that adjust it (shared with ``baseline``)."""
    parser.add_argument("config", metavar="CONFIG.yaml", help="experiment file")
    parser.add_argument(
        "--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
        help="override a setting of the file (repeatable), e.g. train.steps=50",
    )
    parser.add_argument("--threads", type=threads_argument("--threads"), metavar="N", help="torch CPU threads, a count or auto (same as --set train.threads=N)")
    parser.add_argument("--cache-dir", metavar="DIR", help="download cache (default: $COMPRESSOR_CACHE_DIR, else $XDG_CACHE_HOME/compressor, else ~/.cache/compressor)")


def experiment_from_args(args: argparse.Namespace) -> Experiment:
    overrides = list(args.overrides)
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    return load_experiment(args.config, overrides=overrides)
