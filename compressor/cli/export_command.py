"""``compressor export``: rebuild a trial's model from its recipe and weights, and save it."""

from __future__ import annotations

import argparse

from compressor.cli.study_args import add_study_arguments, storage_from_args
from compressor.search import export_trial
from compressor.units import format_count

COMMAND = {"name": "export", "help": "save a search trial's model (recipe + kept weights) as a loadable file",
           "description": "Rebuild a trial's model exactly as the search built it, load its weights, save "
                          "it."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--trial", required=True, type=int, metavar="N", help="trial number")
    parser.add_argument("--out", required=True, metavar="FILE", help="where to save the model (.pt)")
    parser.add_argument("--untrained", action="store_true", help="the architecture alone, when no weights were kept")


def run(args: argparse.Namespace) -> int:
    storage = storage_from_args(args)
    exported = export_trial(storage, args.study, args.trial, args.out, untrained=args.untrained)
    record = exported.record
    weights = "trained weights" if exported.trained else "untrained (fresh initialization)"
    print(f"trial {record.number}: {record.recipe_short}")
    print(f"{format_count(record.params)} params, {format_count(record.flops)} FLOPs, metric {record.metric}; {weights}")
    print(f"saved {exported.path}; load it with compressor.load_model({str(exported.path)!r})")
    return 0
