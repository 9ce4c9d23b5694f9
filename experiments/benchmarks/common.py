"""Shared pieces of the benchmark scripts: the machine, JSON output, the synthetic search, hypervolume."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from compressor.io import atomic_write_text
from compressor.study import HYPERVOLUME_MARGIN, study_hypervolume

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[2]


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpu": cpu_model(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def cpu_model() -> str:
    """The CPU's model name and the vector extensions that decide which kernels torch runs (results can
    differ in their last bits, and then in a training's path, between machines without the same ones)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "unknown")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    kept = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile") if flag in flags]
    return f"{name} ({' '.join(kept)})" if kept else name


def results_name(run_dir: str | Path, benchmark: str) -> str:
    """The results file a benchmark's run folder writes: its default folder (``runs/<benchmark>``) writes
    ``<benchmark>.json``; another (``runs/<benchmark>-auto``, ``runs/auto``) ``<benchmark>-auto.json``, so a
    second line of runs never replaces the first one's records."""
    if Path(run_dir).resolve() == (ROOT / "runs" / benchmark).resolve():
        return benchmark
    return f"{benchmark}-{Path(run_dir).name.removeprefix(f'{benchmark}-')}"


def run_dir_label(run_dir: Path) -> str:
    """A run folder as a results file names it: relative to the project where it is inside it."""
    resolved = Path(run_dir).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)


def check_results_file(path: Path, run_dir: Path, *, default: bool) -> None:
    """Refuses a run folder whose results file ``path`` holds another run folder's records (``runs/converged-b``
    and ``/tmp/b`` both write ``converged-b.json``), or records of no named folder (a file kept as it was,
    e.g. ``converged-first.json``): one line of runs never replaces another's. The benchmark's ``default``
    file is the project's own, wherever the project is."""
    if default or not path.exists():
        return
    written_by = json.loads(path.read_text()).get("run_dir")
    if written_by != run_dir_label(run_dir):
        raise SystemExit(f"{path} holds the records of {written_by or 'no named run folder'}, not of {run_dir}: "
                         "name the run folder otherwise")


def trained_differs(stored: dict[str, Any], trained: dict[str, Any]) -> str | None:
    """How two records of one network's training differ (steps, best step, validation and test scores), or
    None. The same code, data, seed and threads train bit for bit the same network on one machine (not on
    the next one: BENCHMARKS, "The building parent trained again"), so a network trained again where the run
    folder was lost must give its stored record before rows stored beside it pair with it."""
    if any(stored.get(key) != trained.get(key) for key in ("steps_done", "best_step")) or any(
            abs(stored[part]["score"] - trained[part]["score"]) > 1e-9 for part in ("val", "test")):
        return (f"steps {trained['steps_done']} against {stored['steps_done']}, test {trained['test']['score']:.4f} "
                f"against {stored['test']['score']:.4f}")
    return None


def follow_curve(curve: Sequence[Sequence[float]], on_differ: Callable[[str], None]) -> dict[str, Any]:
    """``train``'s ``evaluate_at`` and ``callback`` for a network trained again beside its stored record: at
    each of the stored ``curve``'s evaluations (``[step, score]``, the score rounded to 5 digits as records
    keep it) the score must be the stored one; the first that is not calls ``on_differ(reason)``, which
    raises to stop the run, so a network that does not repeat is found at its first evaluation, not hours
    later at its end. The steps asked for are the plateau rule's own evaluations: the run is the same run."""
    stored = {int(step): score for step, score in curve}

    def check(step: int, metrics: Any) -> bool:
        if step in stored and round(metrics.score, 5) != stored[step]:
            on_differ(f"validation {metrics.score:.5f} at step {step} against {stored[step]:.5f}")
        return True

    return {"evaluate_at": sorted(stored), "callback": check}


def commit_code(commit: str, folder: Path, paths: Sequence[str] = ()) -> Path:
    """``folder`` holding the files of ``commit`` (``git archive``; only ``paths`` where given), for a
    subprocess to import that commit's code. Extracted beside it, then renamed, so a cut-short extraction is
    not taken for a whole one; a folder already there is reused."""
    import io
    import shutil
    import subprocess
    import tarfile

    if not folder.is_dir():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, *paths], check=True,
                                 capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(partial, filter="data")
        partial.rename(folder)
    return folder


def job_records(folder: Path) -> dict[str, dict[str, Any]]:
    """The finished jobs' records in a run folder (``<job>.json``), by job name; none when the folder is missing."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def show_evaluations() -> None:
    """The library's log lines on the console, each evaluation of a run to its plateau among them (its progress)."""
    import logging

    from compressor.cli.console import configure_logging

    configure_logging()
    logging.getLogger("compressor.train.loop").setLevel(logging.DEBUG)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    path = RESULTS / f"{name}.json"
    atomic_write_text(path, json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def synthetic_search(
    name: str, run_dir: Path, *, steps: int, threads: int, search: dict[str, Any], patch_size: int = 48,
    val_size: int = 96, base_width: int = 8, norm: str | None = "batch", lr: float | None = None,
    eval_overlap: int = 0, max_params: str | None = None, cost_size: int = 64,
) -> dict[str, Any]:
    """The experiment (plain data) of a small ``unet_family`` search on synthetic scenes.

    Binary building labels, 2 validation scenes of ``val_size`` pixels, U-Net of ``base_width``,
    no progress bars; ``search`` adds to (or overrides) ``space: unet_family`` with no baselines.
    """
    train = {"steps": steps, "batch_size": 8, "threads": threads, "seed": 0, "progress": False,
             "eval_window": val_size, "eval_overlap": eval_overlap}
    if lr is not None:
        train["lr"] = lr
    data = {
        "name": name, "run_dir": str(run_dir),
        "data": {"name": "synthetic", "labels": "binary", "patch_size": patch_size, "train_images": 2000,
                 "val_images": 2, "val_size": val_size, "seed": 0},
        "model": {"name": "unet", "args": {"base_width": base_width, **({"norm": norm} if norm else {})}},
        "train": train,
        "cost": {"input_size": cost_size},
        "search": {"space": "unet_family", "baselines": False, **search},
    }
    if max_params is not None:
        data["budget"] = {"max_params": max_params}
    return data


def hypervolume_history(
    records: list[Any], objectives: list[str], reference: dict[str, float],
    cost: Callable[[Any], float] = lambda record: record.wall_seconds or 0.0,
) -> list[tuple[int, float, float]]:
    """``(trial number, cumulative cost, hypervolume of the feasible finished front)`` after each trial,
    by the studies' own measure (:func:`compressor.study.study_hypervolume`: each cost on a log axis
    down from ``reference``, the metric from 0), so every run is scored against one reference.

    ``records`` are :class:`~compressor.study.TrialRecord` s, or anything with ``number``, ``status``,
    ``feasible`` and ``values``; ``cost`` is what a trial spent (default: its wall seconds; training
    steps taken are a load-independent alternative).
    """
    points: list[list[float]] = []
    spent = 0.0
    history = []
    for record in sorted(records, key=lambda item: item.number):
        spent += cost(record)
        if record.status == "complete" and record.feasible and record.values:
            points.append(list(record.values))
        history.append((record.number, spent, study_hypervolume(points, objectives, reference)))
    return history


def unet_reference(unet: dict[str, Any]) -> dict[str, float]:
    """The hypervolume reference of a study whose reference U-Net costs ``unet`` (as a study's
    ``references`` attribute stores it): 1.1 times each cost, the metric from 0."""
    return {"metric": 0.0, "params": HYPERVOLUME_MARGIN * float(unet["params"]),
            "flops": HYPERVOLUME_MARGIN * float(unet["flops"])}


def hypervolume_at(history: list[tuple[int, float, float]], budget: float) -> float:
    """The hypervolume reached once ``budget`` of compute was spent (0 before the first trial)."""
    reached = [value for _, spent, value in history if spent <= budget]
    return reached[-1] if reached else 0.0


def add_candidate_arguments(parser: argparse.ArgumentParser, *, trials: int, run_dir: str) -> None:
    """``--trials``, ``--threads``, ``--seed`` and ``--run-dir``: the arguments of a benchmark that trains
    candidates of the quickstart's search (:func:`quickstart_setup`, :func:`feasible_candidates`)."""
    parser.add_argument("--trials", type=int, default=trials, help="feasible candidates trained")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="the random sampler's seed")
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / run_dir), help="where the parent U-Net is kept")


def quickstart_setup(run_dir: str, threads: int, overrides: Sequence[str] = ()) -> Any:
    """The quickstart's search (``experiments/quickstart.yaml``) prepared in ``run_dir`` on ``threads``:
    its data, and its parent U-Net (trained there once, then reused)."""
    from compressor.candidates.setup import prepare
    from compressor.experiment.config import load_experiment

    experiment = load_experiment(ROOT / "experiments" / "quickstart.yaml",
                                 overrides=[f"run_dir={run_dir}", f"train.threads={threads}", *overrides])
    return prepare(experiment)


def drawn_recipes(setup: Any, count: int, *, seed: int) -> list[tuple[str, Any]]:
    """``(short description, recipe)`` of ``count`` recipes of ``setup``'s space drawn by a random sampler
    seeded with ``seed`` (each trial told failed: only the draws are wanted)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=setup.directions, sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = []
    for _ in range(count):
        trial = study.ask()
        recipe = setup.space(trial, setup.context)
        drawn.append((setup.space.describe(trial.params, recipe), recipe))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return drawn


def feasible_candidates(setup: Any, *, seed: int, threads: int) -> Iterator[tuple[Any, Any, Any, Any, Any]]:
    """``(study, trial, recipe, network, cost)`` for each candidate of ``setup``'s space that a random
    sampler seeded with ``seed`` draws within the budget, built and measured on ``threads``; the
    over-budget draws are told failed and skipped. The caller tells each yielded trial its values."""
    import optuna

    from compressor.threads import torch_threads

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=setup.directions, sampler=optuna.samplers.RandomSampler(seed=seed))
    while True:
        trial = study.ask()
        with torch_threads(threads):
            recipe = setup.space(trial, setup.context)
            network = setup.build(recipe)
            cost = setup.measure(network)
        if not setup.budget.check(cost).feasible:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        yield study, trial, recipe, network, cost


def quickstart_search(run_dir: str | Path, *, study: str, sampler: str, seed: int, trials: int, threads: int,
                      keep_fraction: float = 1.0, min_trials_at_rung: int = 3, rung_ranking: str = "front",
                      overrides: Sequence[str] = ()) -> Any:
    """The quickstart's search (``experiments/quickstart.yaml``) as a benchmark runs it; returns its Optuna study.

    Without the references and the time limit, ``trials`` trials, every trial evaluated at the
    rungs (1/9 and 1/3 of its training) and stopped by the rule with ``keep_fraction`` and
    ``rung_ranking`` (``keep_fraction`` 1: none stopped, the rung scores still recorded). Every study in ``run_dir`` shares one parent U-Net
    (trained there once) and one SQLite file, so a rerun resumes a study instead of starting it again.
    ``overrides`` (``key=value``) are applied last.
    """
    from compressor.experiment.config import load_experiment
    from compressor.pipeline import run_search

    overrides = [
        f"run_dir={run_dir}", f"search.study={study}", f"search.sampler={sampler}", f"search.seed={seed}",
        f"search.n_trials={trials}", "search.timeout=null", "search.baselines=false",
        "search.rungs=[0.1111111111111111, 0.3333333333333333]", f"search.keep_fraction={keep_fraction}",
        f"search.min_trials_at_rung={min_trials_at_rung}", f"train.threads={threads}",
        *([f"search.rung_ranking={rung_ranking}"] if rung_ranking != "front" else []),
        *overrides,
    ]
    experiment = load_experiment(ROOT / "experiments" / "quickstart.yaml", overrides=overrides)
    return run_search(experiment, echo=lambda line: print(f"[{study}] {line}", flush=True)).study
