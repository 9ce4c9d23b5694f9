"""``compressor train``: train one model of an experiment and print its metrics."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from compressor.cli.common import add_base_model_arguments, model_config_from_args
from compressor.experiment import (
    Experiment,
    TrainedModel,
    load_experiment,
    model_label,
    train_model,
)
from compressor.threads import parse_threads
from compressor.units import format_count


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train one model of an experiment and print its metrics",
        description="Train one model on an experiment's data with its recipe; evaluate on the whole validation set.",
    )
    add_experiment_arguments(parser)
    add_base_model_arguments(parser, "'unet', 'micronet' or 'package.module:callable' (default: the experiment's)")
    parser.add_argument("--recipe", metavar="FILE", help="transform recipe (YAML) applied to the model before training")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(run=run)


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    """The experiment file and the options that adjust it (shared with ``baseline``)."""
    parser.add_argument("config", metavar="CONFIG.yaml", help="experiment file")
    parser.add_argument(
        "--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
        help="override a setting of the file (repeatable), e.g. train.steps=50",
    )
    parser.add_argument("--threads", type=parse_threads, metavar="N", help="torch CPU threads, a count or auto (same as --set train.threads=N)")
    parser.add_argument("--cache-dir", metavar="DIR", help="download cache (default: $COMPRESSOR_CACHE_DIR or ~/.cache/compressor)")


def experiment_from_args(args: argparse.Namespace) -> Experiment:
    overrides = list(args.overrides)
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    return load_experiment(args.config, overrides=overrides)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each message (not the one at set-up).

    The CLI can run in-process several times (tests capture and close stderr in between).
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    """Library progress messages (downloads, reuse of stored results) as ``compressor: ...`` on stderr."""
    logger = logging.getLogger("compressor")
    if not logger.handlers:
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("compressor: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def run(args: argparse.Namespace) -> int:
    configure_logging()
    experiment = experiment_from_args(args)
    model = model_config_from_args(args, experiment.model)
    label = model_label(model, args.recipe)
    output_dir = experiment.run_path / "train" / label
    trained = train_model(
        experiment, model=model, recipe=args.recipe, cache_dir=args.cache_dir, output_dir=output_dir, label=label,
    )
    if args.json:
        print(json.dumps(trained.to_dict(), indent=2))
    else:
        print(report(trained))
    return 0


def report(trained: TrainedModel) -> str:
    """The metrics table with what was trained, how long it took and where the files are."""
    result, cost = trained.result, trained.cost
    shape = "x".join(str(size) for size in cost.input_shape)
    stopped = " (stopped early)" if result.stopped_early else ""
    lines = [
        f"{trained.label}: {format_count(cost.params)} params, {format_count(cost.flops)} FLOPs at {shape}",
        f"trained {result.steps_done} steps{stopped} in {result.train_seconds:.1f} s, evaluated in "
        f"{result.eval_seconds:.1f} s, on {result.device} with {result.threads} threads",
        "",
        result.metrics.table(),
        result.metrics.summary(),
    ]
    if trained.output_dir is not None:
        lines.append(f"results: {trained.output_dir}/ (metrics.json, config.yaml, model.pt)")
    return "\n".join(lines)
