"""Which sampled parameters drive each objective (Optuna's PED-ANOVA), or why that is skipped."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from compressor.study import StudySnapshot, read_study

__all__ = ["Importance", "importance_frame", "MIN_IMPORTANCE_TRIALS"]

MIN_IMPORTANCE_TRIALS = 4
#: below this many trials the importances are said to be a first look (a quickstart has 4)
FEW_IMPORTANCE_TRIALS = 20


@dataclass
class Importance:
    """Parameter importances, or why there are none.

    Attributes:
        frame: columns ``param``, ``objective``, ``importance`` (each objective's sum to 1);
            empty when skipped.
        note: why it was skipped, or how it was computed.
        trials: how many trials it was computed on.
    """

    frame: pd.DataFrame
    note: str
    trials: int = 0

    @property
    def skipped(self) -> bool:
        return self.frame.empty


def importance_frame(study: optuna.Study | StudySnapshot) -> Importance:
    """Which sampled parameters drive each objective, by Optuna's PED-ANOVA evaluator.

    Computed on the feasible complete trials only (an infeasible trial's value is a
    placeholder) and the parameters that every one of them sampled and that vary among them;
    skipped, with the reason in ``note``, below 4 such trials or without a varying parameter.
    PED-ANOVA needs no extra package (fANOVA would need scikit-learn); each cost is taken in
    log scale, and the top quantile is at least 2 trials.
    """
    snapshot = read_study(study)
    empty = pd.DataFrame(columns=["param", "objective", "importance"])
    selected = [
        trial for record, trial in zip(snapshot.records, snapshot.trials)
        if record.status == "complete" and record.feasible is not False and record.metric is not None
    ]
    if len(selected) < MIN_IMPORTANCE_TRIALS:
        return Importance(
            empty, f"parameter importance needs at least {MIN_IMPORTANCE_TRIALS} feasible complete trials "
            f"(this study has {len(selected)})", len(selected),
        )
    shared = set.intersection(*(set(trial.params) for trial in selected))
    varying = sorted(
        name for name in shared
        if len({repr(trial.params[name]) for trial in selected}) > 1
        and len({repr(trial.distributions[name]) for trial in selected}) == 1
    )
    if not varying:
        return Importance(empty, "parameter importance skipped: no sampled parameter varies among the feasible "
                          "complete trials", len(selected))
    quantile = min(0.5, max(0.1, 2 / len(selected)))
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        scratch = optuna.create_study(directions=["minimize"])
        for trial in selected:
            scratch.add_trial(optuna.trial.create_trial(
                params={name: trial.params[name] for name in varying},
                distributions={name: trial.distributions[name] for name in varying},
                value=0.0, user_attrs=trial.user_attrs,
            ))
    finally:
        optuna.logging.set_verbosity(verbosity)
    rows = []
    for objective in snapshot.objectives:
        def target(trial: FrozenTrial, objective: str = objective) -> float:
            value = float(trial.user_attrs[objective])
            # PED-ANOVA looks for what makes the target low; costs span decades.
            return -value if objective == "metric" else math.log10(max(value, 1e-12))

        if any(trial.user_attrs.get(objective) is None for trial in selected):
            continue
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes", category=UserWarning)
            importances = optuna.importance.get_param_importances(
                scratch, evaluator=evaluator, params=varying, target=target, normalize=True
            )
        rows.extend({"param": name, "objective": objective, "importance": value} for name, value in importances.items())
    frame = pd.DataFrame(rows, columns=empty.columns) if rows else empty
    few = (f" (fewer than {FEW_IMPORTANCE_TRIALS}: a first look, which a few more trials can overturn)"
           if len(selected) < FEW_IMPORTANCE_TRIALS else "")
    return Importance(
        frame, f"PED-ANOVA (Optuna) on {len(selected)} feasible complete trials{few}, top {quantile:.0%} quantile",
        len(selected),
    )
