"""A recipe from the command line (``--recipe``, ``--transform``) and the table of what it did."""

from __future__ import annotations

import argparse

from compressor.cost import FLOP_CONVENTION
from compressor.errors import ConfigError
from compressor.tables import format_table
from compressor.transforms import Recipe, TransformRecord, parse_transform_option
from compressor.units import format_count

__all__ = ["add_recipe_arguments", "recipe_from_args", "record_notes", "records_table"]


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """``--recipe FILE`` and repeatable ``--transform`` steps (read with :func:`recipe_from_args`)."""
    parser.add_argument("--recipe", metavar="FILE", help="recipe file (YAML or JSON)")
    parser.add_argument(
        "--transform", action="append", default=[], metavar="NAME[:key=value,...]",
        help="a transform step, after the recipe's (repeatable); lists in brackets: dilation:rates=[1,2,5]",
    )


def recipe_from_args(recipe_path: str | None, transform_options: list[str]) -> Recipe:
    steps = list(Recipe.load(recipe_path).steps) if recipe_path else []
    for option in transform_options:
        step = parse_transform_option(option)
        try:  # checked here, so the error names the option as typed
            step.build(where=f"--transform {option}")
        except ConfigError as error:  # a value its transform refuses says only the transform's name
            message = str(error)
            raise ConfigError(message if message.startswith("--transform ") else f"--transform {option}: {message}") from None
        steps.append(step)
    if not steps:
        raise ConfigError("nothing to apply: give --recipe FILE or --transform NAME")
    return Recipe.of(steps)


def record_notes(records: list[TransformRecord]) -> list[str]:
    """The lines under the records table: skipped steps, notes, layers left alone."""
    lines = []
    for record in records:
        if record.skipped_step is not None:
            lines.append(f"  {record.transform}: skipped (optional step): {record.skipped_step}")
        lines.extend(f"  {record.transform}: {note}" for note in record.notes)
        if record.skipped:
            lines.append(f"  {record.transform}: left {len(record.skipped)} selected layer(s) alone, e.g. "
                         + "; ".join(f"{name} {why}" for name, why in list(record.skipped.items())[:2]))
    return lines


def records_table(model_name: str, shape: tuple[int, ...], records: list[TransformRecord]) -> str:
    first = records[0]
    rows = [[model_name, format_count(first.params_before), format_count(first.flops_before), "1.00x", "1.00x", "-", "-", "-"]]
    for index, record in enumerate(records, start=1):
        if record.skipped_step is not None:
            rows.append([f"{index}. {record.transform}", "skipped", "", "", "", "", "", ""])
            continue
        errors = sorted(record.errors.values())
        rows.append([
            f"{index}. {record.transform}",
            format_count(record.params_after),
            format_count(record.flops_after),
            f"{first.params_before / max(record.params_after, 1):.2f}x",
            f"{first.flops_before / max(record.flops_after, 1):.2f}x",
            str(len(record.changed)),
            f"{errors[len(errors) // 2]:.3f} / {errors[-1]:.3f}" if errors else "-",
            "-" if record.output_error is None else f"{record.output_error:.3f}",
        ])
    size = "x".join(str(s) for s in shape)
    return format_table(
        ["step", "params", "FLOPs", "params ratio", "FLOPs ratio", "layers changed", "layer error (median / max)",
         "output error"], rows,
        title=f"{model_name} at input {size}  ({FLOP_CONVENTION}; ratio = input model / step; errors: "
        "||new - old|| / ||old|| of each changed layer, and of the network's output, against the step's input)",
    )
