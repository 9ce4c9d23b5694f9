"""How much of a converged table's test score is the test strip itself: a block bootstrap of the parent's score.

The converged tables' intervals are over training seeds with the test strip fixed, so they leave out the
strip's own sampling error: another 180x900 strip of the same city would score a network differently.
This script predicts the test strip once with a task's converged parent (``parent-p0.pt`` of a run folder),
cuts the strip into ``--blocks`` bands across its long side, and resamples the bands with replacement
(``--resamples`` times): each resample's score comes from the summed confusion matrices of its bands. The
2.5th and 97.5th percentiles are the interval a reader should keep in mind beside the seed intervals.

    python experiments/benchmarks/strip_noise.py --run-dir runs/converged-b --task spacenet_sample --threads 1

Writes ``experiments/benchmarks/results/strip_noise.json``. With ``--keep`` the parent's bands also go into its
job record (``jobs/parent-p0.json``, as ``test_bands``), which a run folder started before jobs kept their bands
lacks: a row whose seeds all kept theirs then gets its band interval against the parent in the converged table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import write_json  # noqa: E402

#: bands a test strip is cut into
BLOCKS = 10


def band_confusions(predicted: np.ndarray, labels: np.ndarray, num_classes: int, blocks: int) -> np.ndarray:
    """``(blocks, classes, classes)`` confusion matrices (``[true][predicted]``) of ``blocks`` equal bands cut
    across the longer side of the ``(H, W)`` maps; pixels labelled outside ``[0, classes)`` (ignored) count
    nowhere."""
    axis = 0 if labels.shape[0] >= labels.shape[1] else 1
    found = []
    for rows in np.array_split(np.arange(labels.shape[axis]), blocks):
        truth = np.take(labels, rows, axis=axis).ravel().astype(np.int64)  # uint8 labels would overflow the index
        guess = np.take(predicted, rows, axis=axis).ravel().astype(np.int64)
        kept = (truth >= 0) & (truth < num_classes)
        found.append(np.bincount(truth[kept] * num_classes + guess[kept], minlength=num_classes ** 2)
                     .reshape(num_classes, num_classes))
    return np.stack(found)


def test_bands(network: Any, data: Any, config: Any, blocks: int = BLOCKS) -> np.ndarray:
    """The band confusion matrices (:func:`band_confusions`) of ``network`` on every test scene of ``data``,
    predicted as :func:`compressor.train.evaluation.evaluate` predicts them with ``config``'s windows, on the
    device the network is on: together they are the confusion matrix of ``evaluate(network, data, config,
    split="test")``."""
    import torch

    from compressor.train.evaluation import predict_scene

    device = next((parameter.device for parameter in network.parameters()), torch.device("cpu"))
    was_training = network.training
    network.eval()
    found = []
    try:
        with torch.no_grad():
            for scene in data.scenes("test"):
                probabilities = predict_scene(network, scene, data, window=config.eval_window, overlap=config.eval_overlap,
                                              batch_size=config.eval_batch_size, device=device)
                found.append(band_confusions(probabilities.argmax(axis=0), scene.class_indices(), data.num_classes, blocks))
    finally:
        network.train(was_training)
    return np.concatenate(found)


def block_bootstrap(confusions: np.ndarray, score: Any, *, resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """``score`` (a function of one confusion matrix) on all bands, and the 95% percentile interval of it over
    ``resamples`` draws of as many bands with replacement."""
    generator = np.random.default_rng(seed)
    count = len(confusions)
    draws = [score(confusions[generator.integers(0, count, count)].sum(axis=0)) for _ in range(resamples)]
    return {"score": float(score(confusions.sum(axis=0))), **_percentiles(draws), "blocks": count, "resamples": resamples}


def _percentiles(draws: list[float]) -> dict[str, float]:
    """The 2.5th and 97.5th percentiles of ``draws``; NaN for both when more than 5% of them are NaN (draws whose
    bands hold none of the class: the interval would be of the other draws only). ``nan_draws`` says how many."""
    missing = int(np.isnan(draws).sum())
    low, high = (np.nanpercentile(draws, [2.5, 97.5]) if missing <= 0.05 * len(draws) else (np.nan, np.nan))
    return {"low": float(low), "high": float(high), "nan_draws": missing}


def paired_band_interval(rows: list[np.ndarray], bases: list[np.ndarray], score: Any, *, resamples: int = 2000,
                         seed: int = 0) -> dict[str, float]:
    """The mean over pairs of ``score(row) - score(base)`` in points, every pair's band matrices summed over
    the whole strip, and its 95% percentile interval over ``resamples`` draws of the bands with replacement,
    every pair read on the same drawn bands: the test strip's sampling error of a paired difference."""
    generator = np.random.default_rng(seed)
    count = len(bases[0])

    def mean_difference(index: Any) -> float:
        return 100 * float(np.mean([score(row[index].sum(axis=0)) - score(base[index].sum(axis=0))
                                    for row, base in zip(rows, bases)]))

    draws = [mean_difference(generator.integers(0, count, count)) for _ in range(resamples)]
    return {"mean": mean_difference(slice(None)), **_percentiles(draws), "blocks": count, "resamples": resamples}


def score_of(class_names: Any):
    """The tables' score (:attr:`compressor.metrics.SegmentationMetrics.score`: the foreground IoU of two classes,
    else the mIoU) of one confusion matrix of ``class_names``; NaN where it has none of the classes scored."""
    from compressor.metrics import SegmentationMetrics

    names = list(class_names)
    return lambda confusion: SegmentationMetrics.from_confusion(confusion, names).score


def bands_add_up(bands: np.ndarray, confusion: Any) -> bool:
    """Whether the band matrices ``bands`` add up, cell by cell, to the whole strip's ``confusion`` matrix: the
    same prediction as the evaluation that recorded it."""
    confusion = np.asarray(confusion)
    return bands.shape[1:] == confusion.shape and bool((bands.sum(axis=0) == confusion).all())


def keep_bands(record_path: Path, bands: np.ndarray) -> str:
    """Stores ``bands`` as ``test_bands`` in the job record at ``record_path`` (rewritten whole, atomically), after
    checking that they are :data:`BLOCKS` integer confusion matrices of the record's classes that add up to its test
    confusion matrix; a record holding other bands is refused, not changed."""
    from compressor.io import atomic_write_text

    record = json.loads(record_path.read_text())
    confusion = np.asarray((record.get("test") or {}).get("confusion", []))
    if confusion.ndim != 2:
        raise SystemExit(f"{record_path}: no test confusion matrix to check the bands against; not kept")
    if bands.ndim != 3 or bands.shape != (BLOCKS, *confusion.shape) or not np.issubdtype(bands.dtype, np.integer):
        raise SystemExit(f"{record_path}: bands shaped {bands.shape} ({bands.dtype}), not {BLOCKS} integer confusion "
                         f"matrices {confusion.shape}; not kept")
    if not bands_add_up(bands, confusion):
        raise SystemExit(f"{record_path}: the bands do not add up to its test confusion matrix; not kept")
    if "test_bands" in record:
        if np.array_equal(np.asarray(record["test_bands"]), bands):
            return f"{record_path}: holds these bands already"
        raise SystemExit(f"{record_path}: holds other test bands; not changed")
    atomic_write_text(record_path, json.dumps({**record, "test_bands": bands.tolist()}, indent=1) + "\n")
    return f"{record_path}: its {len(bands)} test bands kept"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/converged-b")
    parser.add_argument("--task", default="spacenet_sample")
    parser.add_argument("--blocks", type=int, default=BLOCKS)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="store the parent's bands in its job record")
    args = parser.parse_args()
    import converged
    import torch

    if args.keep and args.blocks != BLOCKS:
        raise SystemExit(f"--keep stores the {BLOCKS} bands every job keeps; leave --blocks out")
    torch.set_num_threads(args.threads)
    settings = converged.parsed(["--task", args.task, "--run-dir", args.run_dir, "--threads", str(args.threads)])
    experiment = converged.experiment_for(args.task, settings, seed=0)
    data = experiment.data.build()
    parent = converged.converged_parent(Path(args.run_dir) / args.task, 0, data).eval()
    bands = test_bands(parent, data, experiment.train, args.blocks)
    record_path = Path(args.run_dir) / args.task / "jobs" / "parent-p0.json"
    stored = json.loads(record_path.read_text())["test"]
    if not bands_add_up(bands, stored["confusion"]):  # the bands must add up to the table's own evaluation
        raise SystemExit("the bands do not add up to the parent's recorded test confusion matrix: not the same prediction")
    if args.keep:  # under the parent's lock: no process trains or restores it while its record is rewritten
        with converged.claimed(record_path.parent, "parent-p0") as held:
            if not held:
                raise SystemExit(f"{record_path}: a process holds this parent (training or restoring it); not kept")
            print(keep_bands(record_path, bands))
    found = block_bootstrap(bands, score_of(data.class_names), resamples=args.resamples)
    print(f"{args.task} parent: test {stored['score_name']} {found['score']:.3f}, "
          f"block bootstrap 95% [{found['low']:.3f}, {found['high']:.3f}] ({args.blocks} bands, {args.resamples} resamples)")
    write_json("strip_noise", {"run_dir": args.run_dir, "task": args.task, "parent": found})


if __name__ == "__main__":
    main()
