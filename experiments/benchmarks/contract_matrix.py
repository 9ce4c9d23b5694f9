"""The contract matrix: every transform, with its defaults, on the networks users bring.

For each network of ``tests/third_party.py`` (segmentation_models_pytorch, torchvision and
MONAI models, random weights, nothing downloaded) and each registered transform: the params
and FLOPs ratios of ``compressor.apply`` at ``--size``, or the refusal's reason; then the
paper's recipe (``experiments/recipes/micronet_like.yaml``, every step optional) on smp's
Unet-resnet34 and torchvision's DeepLabV3-MobileNetV3, step by step.

Writes ``experiments/benchmarks/results/contract_matrix.json`` and prints the Markdown table
the README shows.

    python experiments/benchmarks/contract_matrix.py              # every network, 128x128
    python experiments/benchmarks/contract_matrix.py --size 256 --networks "smp FPN"
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests"))

import third_party  # noqa: E402 - first: torchvision beside a CPU torch
from common import write_json  # noqa: E402

import compressor  # noqa: E402
from compressor.errors import CompressorError  # noqa: E402

TRANSFORMS = ("separable", "fire", "dilation", "downsample_depth", "skip_fusion", "prune")
PAPER_RECIPE = ROOT / "experiments" / "recipes" / "micronet_like.yaml"
PAPER_NETWORKS = ("smp Unet-resnet34", "tv DeepLabV3-MobileNetV3")


def _reason(error: Exception) -> str:
    """The refusal without its ``step 1 (name): name:`` prefix."""
    return re.sub(r"^step \d+ \(\w+\): \w+: ", "", str(error))


def matrix(networks: list[str], *, size: int = 128) -> list[dict[str, Any]]:
    """One row per (network, transform): ratios, or the refusal."""
    rows = []
    shape = (1, 3, size, size)
    for network in networks:
        model = third_party.build(network)
        for transform in TRANSFORMS:
            started = time.perf_counter()
            row: dict[str, Any] = {"network": network, "transform": transform}
            try:
                _, (record,) = compressor.apply(model, [{"name": transform}], shape)
            except CompressorError as error:
                row["refused"] = _reason(error)
            else:
                row.update(
                    params_before=record.params_before, params_after=record.params_after,
                    params_ratio=record.params_before / record.params_after,
                    flops_ratio=record.flops_before / max(record.flops_after, 1),
                    layers_changed=len(record.changed),
                )
            row["seconds"] = round(time.perf_counter() - started, 2)
            rows.append(row)
            print(f"{network:26s} {transform:17s} {_cell(row)}", file=sys.stderr, flush=True)
    return rows


def paper_recipe(network: str, *, size: int) -> list[dict[str, Any]]:
    """The paper's recipe on ``network``, one row per step."""
    model = third_party.build(network)
    _, records = compressor.apply(model, compressor.Recipe.load(PAPER_RECIPE), (1, 3, size, size))
    first = records[0]
    return [
        {
            "step": record.transform, "skipped": record.skipped_step, "params": record.params_after,
            "flops": record.flops_after, "params_ratio": first.params_before / record.params_after,
            "flops_ratio": first.flops_before / max(record.flops_after, 1), "layers_changed": len(record.changed),
        }
        for record in records
    ] + [{"step": "(input)", "params": first.params_before, "flops": first.flops_before}]


def _cell(row: dict[str, Any]) -> str:
    if "refused" in row:
        return "refused: " + row["refused"]
    return f"{row['params_ratio']:.2f}x params, {row['flops_ratio']:.2f}x FLOPs"


def markdown(rows: list[dict[str, Any]]) -> str:
    networks = list(dict.fromkeys(row["network"] for row in rows))
    cells = {(row["network"], row["transform"]): row for row in rows}
    lines = ["| network | " + " | ".join(TRANSFORMS) + " |", "|---|" + "---|" * len(TRANSFORMS)]
    refusals = []
    for network in networks:
        entries = []
        for transform in TRANSFORMS:
            row = cells[(network, transform)]
            if "refused" in row:
                refusals.append(f"{network}, {transform}: {row['refused']}")
                entries.append(f"refused ({len(refusals)})")
            else:
                entries.append(f"{row['params_ratio']:.2f}x / {row['flops_ratio']:.2f}x")
        lines.append(f"| {network} | " + " | ".join(entries) + " |")
    lines.append("")
    lines.extend(f"({index}) {text}" for index, text in enumerate(refusals, start=1))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--networks", nargs="*", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    names = args.networks or [*third_party.NETWORKS, *third_party.SLOW_NETWORKS]
    missing = {name: third_party.missing_reason({**third_party.NETWORKS, **third_party.SLOW_NETWORKS}[name][1])
               for name in names}
    names = [name for name in names if not missing[name]]
    rows = matrix(names, size=args.size)
    recipes = {name: paper_recipe(name, size=args.size) for name in PAPER_NETWORKS if name in names}
    path = write_json("contract_matrix", {
        "size": args.size, "rows": rows, "paper_recipe": recipes,
        "missing": {name: reason for name, reason in missing.items() if reason},
    })
    print(markdown(rows))
    for name, steps in recipes.items():
        print(f"\npaper's recipe on {name}:")
        for step in steps:
            print(f"  {step}")
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
