"""``compressor train``: train one model of an experiment and print its metrics."""

from __future__ import annotations

import argparse
import json

from compressor.cli.common import add_base_model_arguments, model_config_from_args
from compressor.cli.experiment_args import add_experiment_arguments, experiment_from_args
from compressor.errors import ConfigError
from compressor.experiment import (
    TrainedModel,
    model_label,
    train_model,
)
from compressor.units import format_count

COMMAND = {"name": "train", "help": "train one model of an experiment and print its metrics",
           "description": "Train one model on an experiment's data with its recipe; evaluate on the whole "
                          "validation set (and, where the data has one, once on the test region)."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_arguments(parser)
    add_base_model_arguments(parser, "'unet', 'micronet' or 'package.module:callable' (default: the experiment's)")
    parser.add_argument("--recipe", metavar="FILE", help="transform recipe (YAML) applied to the model before training")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier run of the same model (refused by default)")


def run(args: argparse.Namespace) -> int:
    experiment = experiment_from_args(args)
    model = model_config_from_args(args, experiment.model)
    label = model_label(model, args.recipe)
    output_dir = experiment.run_path / "train" / label
    if (output_dir / "model.pt").exists() and not args.overwrite:
        raise ConfigError(f"{output_dir / 'model.pt'} exists: this model was trained here before; give --overwrite to "
                          "replace it, or --set run_dir=... for another folder; nothing was trained")
    trained = train_model(  # an interrupted run (steps: auto) goes on from its last evaluation when run again
        experiment, model=model, recipe=args.recipe, cache_dir=args.cache_dir, output_dir=output_dir, label=label,
        resume=output_dir / "train.state",
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
    if result.best_step is not None:
        ending = "validation stopped improving" if result.converged else "max_steps reached before validation stopped improving"
        stopped = f" ({ending}; the best weights, step {result.best_step}, kept)"
    lines = [
        f"{trained.label}: {format_count(cost.params)} params, {format_count(cost.flops)} FLOPs at {shape}",
        f"trained {result.steps_done} steps{stopped} in {result.train_seconds:.1f} s, evaluated in "
        f"{result.eval_seconds:.1f} s, on {result.device} with {result.threads} threads",
    ]
    if len(result.history) > 1:
        curve = ", ".join(f"{step}: {metrics.score:.3f}" for step, metrics in result.history)
        lines.append(f"validation {result.metrics.score_name} by step: {curve}")
    lines += ["", *(["validation:"] if trained.test_metrics is not None else []), result.metrics.table(),
              result.metrics.summary()]
    if trained.learned is False:  # as compress and a search say it: a score a constant prediction gets
        label = result.metrics.score_name
        lines.append(f"learned nothing: {label} {result.metrics.score:.3f} is not above the floor "
                     f"({trained.floor.describe(label) or f'a model needs {label} above 0'}); train longer (train.steps, "
                     "or auto), or check the data")
    if trained.test_metrics is not None:
        lines += ["", "test (held out; chose nothing):", trained.test_metrics.table(), trained.test_metrics.summary()]
    if trained.output_dir is not None:
        lines.append(f"results: {trained.output_dir}/ (metrics.json, config.yaml, model.pt)")
    return "\n".join(lines)
