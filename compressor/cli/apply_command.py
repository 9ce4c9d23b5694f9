"""``compressor apply``: run a recipe on a model, print before/after, save the result."""

from __future__ import annotations

import argparse
import json

from compressor.bounds import output_argument
from compressor.cli.common import add_model_arguments, input_shape_from_args, model_from_args
from compressor.cli.recipe_args import add_recipe_arguments, recipe_from_args, record_notes, records_table
from compressor.cost import FLOP_CONVENTION
from compressor.saving import load_hint, save_model
from compressor.transforms import apply

COMMAND = {"name": "apply", "help": "apply transforms to a model",
           "description": "Apply a recipe of transforms to a model, print params/FLOPs before and after "
        f"({FLOP_CONVENTION}) and save the result, loadable with compressor.load_model(PATH)."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_recipe_arguments(parser)
    parser.add_argument("--out", type=output_argument("--out"), metavar="PATH", help="save the transformed model here (.pt)")
    parser.add_argument("--json", action="store_true", help="print the records as JSON")


def run(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args.recipe, args.transform)
    model = model_from_args(args)
    shape = input_shape_from_args(args, model)
    new_model, records = apply(model, recipe, shape)
    if args.out:
        save_model(args.out, new_model, recipe=recipe, base=args.model, input_shape=shape,
                   metadata={"records": [record.to_dict() for record in records]})
    if args.json:
        print(json.dumps({"model": args.model, "input_shape": list(shape), "recipe": recipe.to_data(),
                          "records": [record.to_dict() for record in records], "out": args.out}, indent=2))
        return 0
    print(records_table(args.model, shape, records))
    for line in record_notes(records):
        print(line)
    print(f"saved to {args.out} ({load_hint(args.out)})" if args.out else "not saved (use --out PATH)")
    return 0


