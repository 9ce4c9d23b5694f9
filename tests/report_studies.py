"""Hand-made Optuna studies carrying what ``compressor search`` stores, for the report tests.

Each trial is added with :func:`optuna.trial.create_trial` and the user attributes of a
:class:`~compressor.study.TrialRecord`; the study carries a :class:`~compressor.study.StudyInfo`.
"""

from __future__ import annotations

import datetime

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from compressor.study import StudyInfo, TrialRecord

UNET = {"params": 31_024_960, "flops": 36_883_857_408, "latency_ms": 410.0, "metric": 0.257}
MICRONET = {"params": 1_055_920, "flops": 7_202_062_336, "latency_ms": 180.0, "metric": 0.260}
DISTRIBUTIONS = {
    "levels_removed": IntDistribution(0, 3),
    "conv": CategoricalDistribution(["standard", "separable", "fire"]),
    "prune": FloatDistribution(0.0, 0.9, step=0.1),
}
START = datetime.datetime(2025, 1, 6, 9, 0, 0)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_STATES = {"complete": TrialState.COMPLETE, "infeasible": TrialState.COMPLETE, "stopped": TrialState.PRUNED,
           "failed": TrialState.FAIL, "running": TrialState.RUNNING}


def study_info(*, objectives=("metric", "params", "flops"), budget=None, references=None) -> StudyInfo:
    return StudyInfo(
        experiment={"name": "quickstart"}, space="unet_family", model="unet", objectives=list(objectives),
        metric="score", metric_label="building IoU",
        budget={"max_params": None, "max_flops": None, "max_latency_ms": None, **(budget or {})},
        references={"unet": dict(UNET), "micronet": dict(MICRONET)} if references is None else references,
        input_shape=[1, 3, 224, 224], artifacts="runs/quickstart/artifacts",
    )


def make_study(info: StudyInfo | None = None, *, storage: str | None = None, name: str = "quickstart") -> optuna.Study:
    info = info or study_info()
    directions = ["maximize" if objective == "metric" else "minimize" for objective in info.objectives]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(directions=directions, storage=storage, study_name=name)
    finally:
        optuna.logging.set_verbosity(verbosity)
    for key, value in info.to_attrs().items():
        study.set_user_attr(key, value)
    return study


def add(
    study: optuna.Study, *, status: str = "complete", params: int, flops: int, metric: float | None = None,
    feasible: bool | None = None, recipe: str | None = None, duplicate_of: int | None = None,
    fidelity: float | None = None, wall_seconds: float = 60.0, sampled: dict | None = None,
    curve: list | None = None, rung_share: float | None = None, rung_metrics: dict | None = None,
) -> TrialRecord:
    """Adds one finished (or running) trial as the search would have stored it."""
    number = len(study.trials)
    info = StudyInfo.from_attrs(study.user_attrs)
    if feasible is None:
        feasible = status != "infeasible"
    trained = status in ("complete", "stopped")
    record = TrialRecord(
        number=number, status=status, recipe=[{"name": "prune", "amount": 0.5}],
        recipe_short=recipe or f"recipe-{number}", recipe_hash=f"{number:016x}", params=params, flops=flops,
        latency_ms=flops / 1e8, activation_bytes=params * 40, feasible=feasible,
        # like the search: an untrained trial carries the worst metric as a placeholder
        constraints=[-0.5 if feasible else 0.5], metric=metric if trained else 0.0,
        metrics={"score": metric, "miou": None if metric is None else 0.5 + metric / 2, "accuracy": 0.95,
                 "iou": {"background": 0.95, "building": metric}} if trained else {},
        fidelity=(1.0 if status == "complete" else 1 / 3 if status == "stopped" else 0.0) if fidelity is None
        else fidelity,
        train_seconds=wall_seconds * 0.8 if trained else 0.0, wall_seconds=wall_seconds,
        failure="training diverged (NaN loss at step 12)" if status == "failed" else None,
        weights=f"trial-{number}.pt" if status == "complete" else None, duplicate_of=duplicate_of,
        curve=list(curve or []), rung_share=rung_share, rung_metrics=dict(rung_metrics or {}),
    )
    values = None
    if _STATES[status] == TrialState.COMPLETE:
        costs = {"params": params, "flops": flops, "latency_ms": record.latency_ms}
        values = [(metric if status == "complete" and metric is not None else -1.0) if name == "metric" else costs[name]
                  for name in info.objectives]
    sampled = sampled or {"levels_removed": number % 4, "conv": ["standard", "separable", "fire"][number % 3],
                          "prune": round((number % 10) * 0.1, 1)}
    trial = optuna.trial.create_trial(
        state=_STATES[status], values=values, params=sampled,
        distributions={name: DISTRIBUTIONS[name] for name in sampled}, user_attrs=record.to_attrs(),
        intermediate_values={1: metric} if status == "stopped" else None,
    )
    # create_trial stamps "now"; give the trials a known time line instead.
    trial.datetime_start = START + datetime.timedelta(minutes=2 * number)
    if status != "running":
        trial.datetime_complete = trial.datetime_start + datetime.timedelta(seconds=wall_seconds)
    study.add_trial(trial)
    return record


def realistic_study(*, storage: str | None = None, name: str = "quickstart", budget=None) -> optuna.Study:
    """20 trials with plausible values: candidates of 50k to 3M params under a 1.5M budget."""
    study = make_study(study_info(budget=budget or {"max_params": 1_500_000, "max_flops": 10e9}), storage=storage,
                       name=name)
    rows = [
        # status, params, flops, metric, recipe
        ("complete", 980_000, 6.1e9, 0.248, "downsample_depth(levels=2) > fire(squeeze_ratio=0.25) > dilation(1-1-2-3)"),
        ("infeasible", 2_900_000, 14.2e9, None, "downsample_depth(levels=1) > separable"),
        ("complete", 410_000, 3.9e9, 0.231, "downsample_depth(levels=2) > separable > skip_fusion(add)"),
        ("stopped", 620_000, 5.2e9, 0.084, "downsample_depth(levels=3) > fire(squeeze_ratio=0.125)"),
        ("complete", 152_000, 1.4e9, 0.204, "downsample_depth(levels=2) > fire(squeeze_ratio=0.125) > prune(0.5)"),
        ("complete", 1_320_000, 8.8e9, 0.262, "downsample_depth(levels=1) > fire > dilation(1-2-5)"),
        ("infeasible", 2_400_000, 21.0e9, None, "separable > skip_fusion(add)"),
        ("complete", 720_000, 5.9e9, 0.221, "downsample_depth(levels=2) > separable > prune(0.3)"),
        ("stopped", 260_000, 2.2e9, 0.061, "downsample_depth(levels=3) > separable > prune(0.6)"),
        ("complete", 52_000, 0.61e9, 0.143, "downsample_depth(levels=3) > fire(squeeze_ratio=0.125) > prune(0.8)"),
        ("complete", 305_000, 2.7e9, 0.226, "downsample_depth(levels=2) > fire(squeeze_ratio=0.25) > prune(0.4)"),
        ("failed", 88_000, 0.9e9, None, "downsample_depth(levels=3) > fire > prune(0.9)"),
        ("complete", 540_000, 4.4e9, 0.239, "downsample_depth(levels=2) > fire > dilation(1-2)"),
        ("stopped", 1_100_000, 9.1e9, 0.102, "downsample_depth(levels=1) > separable > prune(0.2)"),
        ("complete", 96_000, 0.95e9, 0.171, "downsample_depth(levels=3) > separable > prune(0.7)"),
        ("infeasible", 1_700_000, 12.5e9, None, "downsample_depth(levels=1) > fire > skip_fusion(add)"),
        ("complete", 210_000, 2.9e9, 0.198, "downsample_depth(levels=2) > separable > dilation(1-2-5)"),
        ("complete", 410_000, 3.9e9, 0.231, "downsample_depth(levels=2) > separable > skip_fusion(add)"),
        ("complete", 1_450_000, 9.8e9, 0.255, "downsample_depth(levels=1) > fire(squeeze_ratio=0.5)"),
        ("stopped", 75_000, 0.7e9, 0.052, "downsample_depth(levels=3) > fire(squeeze_ratio=0.125) > prune(0.9)"),
    ]
    for number, (status, params, flops, metric, recipe) in enumerate(rows):
        duplicate_of = 2 if number == 17 else None
        add(study, status=status, params=params, flops=int(flops), metric=metric, recipe=recipe,
            duplicate_of=duplicate_of, wall_seconds=20.0 if status == "infeasible" else 45.0 + 7 * (number % 5),
            sampled={"levels_removed": number % 4, "conv": ["standard", "separable", "fire"][number % 3],
                     "prune": round((number * 3 % 10) * 0.1, 1)})
    return study


def skip_drawing(monkeypatch) -> None:
    """Replaces the plots by a constant PNG, for tests about files rather than figures (drawing is slow)."""
    from compressor.report import plots

    for name in ("pareto_figure", "hypervolume_figure", "importance_figure"):
        monkeypatch.setattr(plots, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(plots, "png_bytes", lambda figure: PNG_SIGNATURE + b"plot")
