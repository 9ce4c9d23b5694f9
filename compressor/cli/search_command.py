"""``compressor search``: Optuna explores transform recipes under a budget; prints a line per trial."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from compressor.bounds import POSITIVE_COUNT, SECONDS, SEED
from compressor.budget import Budget
from compressor.cli.common import add_base_model_arguments, model_config_from_args, names_a_file
from compressor.cli.console import echo
from compressor.cli.experiment_args import add_experiment_arguments, experiment_from_args
from compressor.cli.search_summary import summary
from compressor.errors import ConfigError
from compressor.experiment import Experiment
from compressor.pipeline import run_search
from compressor.search import with_search
from compressor.spaces import SPACES

COMMAND = {"name": "search", "help": "search transform recipes under a budget (Optuna); resumable",
           "description": "Sample recipes from a search space, measure each candidate's cost before training, "
                          "train the feasible ones (stopping weak ones early), and keep everything in an Optuna "
                          "study. Running the same command again resumes the study."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_arguments(parser)
    parser.add_argument("--space", metavar="NAME", help="search space (default: the experiment's search.space)")
    add_base_model_arguments(parser, "base network: 'unet', 'micronet', 'package.module:callable', or a model file "
                                     "you trained (FILE.pt: the parent the candidates inherit from, not retrained)")
    parser.add_argument("--max-params", metavar="X", help="parameter budget, e.g. 300k, 1.5M")
    parser.add_argument("--max-flops", metavar="Y", help="FLOP budget at the cost input size, e.g. 2G")
    parser.add_argument("--max-latency-ms", metavar="Z", help="latency budget in milliseconds, timed as cost.latency says (runtime, threads, "
                        "input; without that section: PyTorch eager, the cores this process may use)")
    parser.add_argument("--n-trials", type=POSITIVE_COUNT.argument("--n-trials"), metavar="N", help="finished trials the study should hold")
    parser.add_argument("--timeout", type=SECONDS.argument("--timeout"), metavar="S",
                        help="start no new trial S seconds after the first trial (references and parents are not "
                             "counted; the first 3 trials run whatever the time)")
    parser.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: sqlite:///<run_dir>/search.db)")
    parser.add_argument("--study", metavar="NAME", help="study name (default: the experiment's name)")
    parser.add_argument("--sampler", choices=("tpe", "nsga2", "gp", "random"), help="sampler (default: tpe)")
    parser.add_argument("--seed", type=SEED.argument("--seed"), metavar="N", help="sampler seed")
    parser.add_argument("--no-baselines", action="store_true", help="do not train the reference models first")
    parser.add_argument("--trust", action="store_true",
                        help="also load a --model FILE whose network is built by code of the file's choosing "
                             "(your own builder function); only for a file you trust")
    parser.add_argument(
        "--init", choices=("random", "inherit", "distill"),
        help="how candidates start: from scratch, from the trained parent's weights, or those plus distillation "
        "(default: the experiment's search.init)",
    )


def experiment_with_options(args: argparse.Namespace) -> Experiment:
    experiment = experiment_from_args(args)
    parent = None
    if args.model and names_a_file(args.model):
        if args.model_arg or args.model_output is not None:
            raise ConfigError(f"{args.model} is a model file: it carries its network and weights; "
                              "drop --model-arg and --model-output")
        if args.init == "random":
            raise ConfigError(f"--model {args.model} is a trained network for the candidates to inherit from: "
                              "--init random would throw its weights away; use --init inherit or distill")
        parent, args.model = args.model, None
        if not Path(parent).is_file():
            raise ConfigError(f"--model {parent}: no such file")
    if args.model or args.model_arg or args.model_output is not None:
        # --model-arg without --model is for the network the search would use: the space's own, else the experiment's
        space = SPACES.get(args.space or experiment.search.space)
        args.model = args.model or experiment.search.model or space.model or experiment.model.name
        model = model_config_from_args(args, experiment.model)
        experiment = dataclasses.replace(experiment, model=model)
    limits = {"max_params": args.max_params, "max_flops": args.max_flops, "max_latency_ms": args.max_latency_ms}
    if any(value is not None for value in limits.values()):
        merged = {**experiment.budget.to_dict(), **{key: value for key, value in limits.items() if value is not None}}
        experiment = dataclasses.replace(experiment, budget=Budget.from_dict(merged))
    init = args.init
    if parent is not None and init is None and experiment.search.init == "random":
        init = "inherit"  # a trained file is a parent: its weights are what the candidates start from
    return with_search(
        experiment, space=args.space, model=args.model, n_trials=args.n_trials, timeout=args.timeout,
        storage=args.storage, study=args.study, sampler=args.sampler, seed=args.seed,
        baselines=False if args.no_baselines else None, init=init, parent=parent,
    )


def run(args: argparse.Namespace) -> int:
    experiment = experiment_with_options(args)
    try:
        result = run_search(experiment, cache_dir=args.cache_dir, echo=echo, trust=args.trust)
    except KeyboardInterrupt:
        print("compressor search: interrupted; finished trials are kept in the study: run the same command to resume",
              file=sys.stderr)
        raise
    print(summary(result))
    failed = [record for record in result.records if record.status == "failed"]
    if failed and not any(record.trained for record in result.records):
        print(f"compressor search: error: no trial trained: {len(failed)} failed, the first with: {failed[0].failure}",
              file=sys.stderr)
        return 1
    return 0


