"""``compressor transforms``: list the registered transforms and their parameters."""

from __future__ import annotations

import argparse
import inspect

from compressor.transforms import TRANSFORMS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("transforms", help="list transforms and their parameters")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(describe_transforms())
    return 0


def describe_transforms() -> str:
    blocks = []
    for name in TRANSFORMS.names():
        cls = TRANSFORMS.get(name)
        summary = inspect.getdoc(cls).split("\n\n")[0].replace("\n", " ")
        lines = [f"{name}: {summary}"]
        for parameter in cls.parameters():
            default = "required" if parameter.required else f"default {parameter.default!r}"
            if isinstance(parameter.default, tuple):
                default = f"default {list(parameter.default)!r}"
            lines.append(f"    {parameter.name} ({parameter.type_name()}; {default})")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
