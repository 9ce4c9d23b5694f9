"""``compressor export``: rebuild a trial's model from its recipe and weights, and save it."""

from __future__ import annotations

import argparse
from pathlib import Path

from compressor.bounds import COUNT, output_argument
from compressor.cli.deploy_args import add_deploy_arguments, deploy_from_args
from compressor.cli.study_args import add_study_arguments, add_trust_argument, storage_from_args
from compressor.errors import ConfigError
from compressor.experiment import Experiment
from compressor.io import check_writable
from compressor.search import export_trial, rebuild_trial
from compressor.units import format_count

COMMAND = {"name": "export", "help": "save a search trial's model (recipe + kept weights) as a loadable file, or as ONNX",
           "description": "Rebuild a trial's model exactly as the search built it, load its weights, save "
                          "it."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--trial", required=True, type=COUNT.argument("--trial"), metavar="N", help="trial number")
    parser.add_argument("--out", required=True, type=output_argument("--out"), metavar="FILE", help="where to save the model (.pt, or .onnx)")
    parser.add_argument("--untrained", action="store_true", help="the architecture alone, when no weights were kept")
    parser.add_argument("--format", choices=("pt", "onnx"), default=None,
                        help="pt: a compressor model file (load_model); onnx: an ONNX file, checked against PyTorch "
                             "on random inputs and the study's data (the deploy extra). Default: from --out's suffix")
    parser.add_argument("--cache-dir", metavar="DIR", help="download cache for the study's data (with --format onnx)")
    add_trust_argument(parser)
    add_deploy_arguments(parser)


def run(args: argparse.Namespace) -> int:
    storage = storage_from_args(args)
    onnx = (args.format or ("onnx" if Path(args.out).suffix.lower() == ".onnx" else "pt")) == "onnx"
    if not onnx and (args.int8 or args.latency):
        raise ConfigError("--int8 and --latency apply to an ONNX export: add --format onnx, or give --out a .onnx file")
    if onnx:
        check_writable(args.out)  # before the rebuild and the data
        exported = rebuild_trial(storage, args.study, args.trial, untrained=args.untrained, cache_dir=args.cache_dir,
                                 trust=args.trust)
    else:
        exported = export_trial(storage, args.study, args.trial, args.out, untrained=args.untrained, trust=args.trust)
    record = exported.record
    weights = "trained weights" if exported.trained else "untrained (fresh initialization)"
    print(f"trial {record.number}: {record.recipe_short}")
    print(f"{format_count(record.params)} params, {format_count(record.flops)} FLOPs, metric {record.metric}; {weights}")
    if not onnx:
        print(f"saved {exported.path}; load it with compressor.load_model({str(exported.path)!r})")
        return 0
    experiment = Experiment.from_dict(exported.info.experiment, source=f"study {args.study!r}")
    data = experiment.data.build(cache_dir=args.cache_dir)
    deploy_from_args(args, exported.model, args.out, in_channels=data.in_channels, data=data,
                     train_config=experiment.train)
    return 0
