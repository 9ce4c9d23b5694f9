"""``compressor transforms``: list the registered transforms (built in, or from installed packages'
``compressor.transforms`` entry points), their parameters, an example and what they refuse."""

from __future__ import annotations

import argparse
import inspect

from compressor.transforms import TRANSFORMS, network_traits

COMMAND = {"name": "transforms", "help": "list transforms and their parameters",
           "description": "List every registered transform (plugins included) with its parameters, their types and defaults, "
                          "an example and what it refuses."}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    print(describe_transforms())
    return 0


def describe_transforms() -> str:
    blocks = []
    for name in TRANSFORMS.names():
        cls = TRANSFORMS.get(name)
        summary = inspect.getdoc(cls).split("\n\n")[0].replace("\n", " ")
        origin = "" if cls.__module__.startswith("compressor.") else f" [from {cls.__module__}]"
        lines = [f"{name}: {summary}{origin}"]
        for parameter in cls.parameters():
            default = "required" if parameter.required else f"default {parameter.default!r}"
            if isinstance(parameter.default, tuple):
                default = f"default {list(parameter.default)!r}"
            lines.append(f"    {parameter.name} ({parameter.type_name()}; {default})")
        example = " ".join(f"{key}={value!r}" for key, value in cls.example.items()) or "(its defaults)"
        lines.append(f"  example: {example}")
        if cls.refuses:
            lines.append(f"  refuses networks with: {'; '.join(network_traits()[trait] for trait in cls.refuses)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
