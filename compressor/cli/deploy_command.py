"""``compressor deploy``: a saved model as an ONNX file, checked against PyTorch; optionally int8, scored, timed."""

from __future__ import annotations

import argparse

from compressor.bounds import output_argument
from compressor.cli.common import default_input_shape
from compressor.cli.deploy_args import add_deploy_arguments, deploy_from_args
from compressor.errors import ConfigError
from compressor.experiment import load_experiment
from compressor.io import check_writable
from compressor.outputs import check_fits
from compressor.saving import load_saved

COMMAND = {"name": "deploy", "help": "export a saved model to ONNX (batch norm folded, dynamic size), optionally int8",
           "description": "Export a model file saved by compressor to ONNX: batch norms folded into the "
                          "convolutions, batch, height and width dynamic, the opset stated; check it against "
                          "PyTorch on random inputs (and real ones with --experiment) and print the largest "
                          "difference; optionally quantize to int8, score every form on the validation scenes "
                          "and time them. Needs the deploy extra: pip install -e '.[deploy]'."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.pt", help="a model file saved by compressor (train, apply, compress, export)")
    parser.add_argument("--out", required=True, type=output_argument("--out"), metavar="FILE.onnx", help="where to write the ONNX model")
    parser.add_argument("--experiment", metavar="CONFIG.yaml",
                        help="the experiment the network was trained with: its data gives real inputs for the check, "
                             "calibration patches for --int8 and validation scenes for the scores")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="override a setting of the experiment file (repeatable), e.g. data.labels=multiclass")
    parser.add_argument("--cache-dir", metavar="DIR", help="download cache (default: $COMPRESSOR_CACHE_DIR, else $XDG_CACHE_HOME/compressor, else ~/.cache/compressor)")
    parser.add_argument("--trust", action="store_true",
                        help="also load a MODEL file that runs code when loaded (a pickle); only for a file you trust")
    add_deploy_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.overrides and not args.experiment:
        raise ConfigError("--set changes the experiment file: give --experiment CONFIG.yaml too; nothing was written")
    experiment = load_experiment(args.experiment, overrides=args.overrides) if args.experiment else None
    if args.int8 and experiment is None:
        raise ConfigError("--int8 needs calibration data: give --experiment CONFIG.yaml, the experiment the network "
                          "was trained with (its training patches calibrate); nothing was written")
    check_writable(args.out)  # before the data is built (perhaps downloaded)
    saved = load_saved(args.model, trust=args.trust)
    data = experiment.data.build(cache_dir=args.cache_dir) if experiment is not None else None
    if data is not None:  # the data's classes and channels, before anything is exported, scored or written
        check_fits(saved.model, data, what=f"{args.model} (on {args.experiment}'s data)")
    in_channels = data.in_channels if data is not None else default_input_shape(saved.model)[1]
    deploy_from_args(args, saved.model, args.out, in_channels=in_channels, data=data,
                     train_config=experiment.train if experiment is not None else None)
    return 0
