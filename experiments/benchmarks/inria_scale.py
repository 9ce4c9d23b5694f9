"""Data at full scale: an Inria-shaped folder of 5000 x 5000 RGB tiles, 9 and then 36 of them.

Writes once, into ``--root`` (a temporary folder by default), ``images/<city><n>.tif`` (RGB,
uint8, uncompressed: memory-mappable) and ``gt/<city><n>.tif`` (0 and 255), as the Inria
archive lays them out: 9 tiles are one city (tiles 1..9), 36 are four. Then, for each size, a
fresh process builds the data with ``data: {name: folder, preset: inria}`` (tiles 1..5 of each
city validate, the rest train) and trains Micro-Net on its patches with the experiment's loop
(:func:`compressor.train.train`), and reports:

* seconds to build the data (pairing, size checks, the normalization fitted on strided samples);
* seconds from the start of training to the end of its first step, and steps per second after it;
* the process's peak resident memory (``ru_maxrss``), and after building the data.

The training's final evaluation runs on a 512 x 512 crop of the first validation tile (a view of
the memory map: nothing is copied); evaluating twenty 5000 x 5000 tiles would measure
evaluation, not whether training scales with the number of tiles.

    python experiments/benchmarks/inria_scale.py                 # 9 then 36 tiles, 30 steps each
    python experiments/benchmarks/inria_scale.py --root /data/inria-fake --steps 60

Writes ``experiments/benchmarks/results/inria_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402

SIDE = 5000
CITIES = ("austin", "chicago", "kitsap", "tyrol-w")


def tile_names(count: int) -> list[str]:
    """``austin1 .. austin9``, then the next cities: 9 tiles a city, as in the Inria archive."""
    return [f"{city}{number}" for city in CITIES for number in range(1, 10)][:count]


def write_tiles(root: Path, names: list[str]) -> float:
    """Writes the tiles not written yet; returns the seconds it took."""
    import tifffile

    started = time.perf_counter()
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        image_path, mask_path = root / "images" / f"{name}.tif", root / "gt" / f"{name}.tif"
        if image_path.exists() and mask_path.exists():
            continue
        rng = np.random.default_rng(index)
        # Blocks of 50 x 50 pixels, a quarter of them "buildings" (bright, 255 in the mask), with noise.
        blocks = rng.random((SIDE // 50, SIDE // 50)) < 0.25
        mask = np.repeat(np.repeat(blocks, 50, axis=0), 50, axis=1).astype(np.uint8) * 255
        image = rng.integers(0, 96, (SIDE, SIDE, 3), dtype=np.uint8)
        image[mask > 0] += 128
        tifffile.imwrite(image_path, image)
        tifffile.imwrite(mask_path, mask)
    return time.perf_counter() - started


# One measurement, in a process of its own (peak memory is per process).
MEASURE = """
import dataclasses, json, resource, sys, time
started = time.perf_counter()
import torch
from compressor.data import FolderConfig
from compressor.models import micronet
from compressor.train import TrainConfig, train

root, steps, batch, patch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.manual_seed(0)
imported = time.perf_counter()
data = FolderConfig(root=root, preset="inria", patch_size=patch).build()
built = time.perf_counter()
rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
first = {}
data = dataclasses.replace(data, val=(data.val[0].crop(0, 0, 512, 512),))
config = TrainConfig(steps=steps, batch_size=batch, threads=threads, progress=False, eval_window=256, eval_overlap=0)
train_started = time.perf_counter()
result = train(micronet(in_channels=3, num_classes=2, base_width=16, norm="batch"), data, config,
               evaluate_at=[1], callback=lambda step, metrics: first.setdefault(step, time.perf_counter()))
print(json.dumps({
    "train_tiles": len(data.train.scenes), "patches": len(data.train), "import_seconds": imported - started,
    "build_seconds": built - imported, "first_step_seconds": first[1] - train_started,
    "train_seconds": result.train_seconds, "steps": result.steps_done,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_after_build_mb": rss_built / 1024,
}))
"""


def measure(root: Path, *, steps: int, batch: int, patch: int, threads: int) -> dict:
    result = subprocess.run([sys.executable, "-c", MEASURE, str(root), str(steps), str(batch), str(patch), str(threads)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"measurement failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="where the tiles are written (default: a temporary folder)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[9, 36], help="tile counts, in order")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    scratch = None if args.root else tempfile.TemporaryDirectory(prefix="inria-scale-")
    base = args.root or Path(scratch.name)
    rows = []
    try:
        for size in args.sizes:
            root = base / f"{size}-tiles"
            written = write_tiles(root, tile_names(size))
            row = {"tiles": size, "write_seconds": round(written, 1), "load_before": list(os.getloadavg()),
                   **measure(root, steps=args.steps, batch=args.batch, patch=args.patch, threads=args.threads)}
            row["steps_per_second"] = (row["steps"] - 1) / max(row["train_seconds"] - row["first_step_seconds"], 1e-9)
            rows.append(row)
            print(f"{size:>3} tiles ({row['train_tiles']} train, {row['patches']} patches): data built in "
                  f"{row['build_seconds']:.1f} s, first step {row['first_step_seconds']:.1f} s after training "
                  f"started, {row['steps_per_second']:.2f} steps/s, peak RSS {row['peak_rss_mb']:.0f} MB "
                  f"({row['rss_after_build_mb']:.0f} MB after building the data)", flush=True)
    finally:
        if scratch is not None:
            scratch.cleanup()
    path = write_json("inria_scale", {
        "machine": machine(), "side": SIDE, "steps": args.steps, "batch": args.batch, "patch": args.patch,
        "threads": args.threads, "rows": rows,
        "peak_rss_ratio": rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"] if len(rows) > 1 else None,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
