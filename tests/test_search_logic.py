"""The search's own logic in real searches (tiny synthetic experiment, real Optuna studies on SQLite):
multi-fidelity stopping, NSGA-II under constraints, Optuna's front against compressor's, a FLOP
budget, and the time limit."""

from __future__ import annotations

import time

import pytest
from optuna.trial import TrialState
from search_helpers import tiny_experiment

from compressor.report.tables import pareto_frame
from compressor.search import run_search, with_search
from compressor.study import trial_records


@pytest.mark.slow  # CI time: test_search's rung-rule test checks the rule on a real study
def test_rungs_stop_weak_trials_in_a_real_search(tmp_path):
    """With a rung at 1/3 of the training, trials ranked outside the best third there stop: recorded
    as stopped, at that fidelity, with the metric they had there, and never trained further."""
    experiment = tiny_experiment(tmp_path, ("budget.max_params=1M",), n_trials=8, rungs=[1 / 3], keep_fraction=0.34,
                                 min_trials_at_rung=1)
    result = run_search(experiment, echo=lambda line: None)
    records = trial_records(result.study)
    stopped = [r for r in records if r.status == "stopped"]
    complete = [r for r in records if r.status == "complete"]
    assert stopped and complete
    for record in stopped:
        assert record.fidelity == pytest.approx(3 / 9, abs=1e-3)  # 9 steps, the rung after 3 (stored rounded)
        assert list(record.rung_metrics) and record.metric == pytest.approx(list(record.rung_metrics.values())[-1])
        assert record.train_seconds < max(r.train_seconds for r in complete)
    assert all(record.fidelity == 1.0 for record in complete)

    # The same recipe again (enqueued, as a sampler would draw it): not trained again, stopped like
    # the trial it repeats, and PRUNED for Optuna too.
    first = stopped[0]
    result.study.enqueue_trial(first.params_dict)
    again = run_search(with_search(experiment, n_trials=9), echo=lambda line: None)
    (repeat,) = [r for r in trial_records(again.study) if r.number == len(records)]
    assert (repeat.status, repeat.duplicate_of, repeat.metric) == ("stopped", first.number, first.metric)
    assert again.study.trials[repeat.number].state == TrialState.PRUNED and not repeat.train_seconds


@pytest.mark.slow  # CI time: the TPE test below checks the same constraints on the default sampler
def test_nsga2_honours_the_budget_and_optunas_front_is_compressors(tmp_path):
    """Optuna's best_trials (what dashboards, notebooks and the samplers read) are the feasible trials
    compressor puts on its front; the ones left out are duplicates or learned nothing (metric 0)."""
    experiment = tiny_experiment(tmp_path, n_trials=8, sampler="nsga2")
    result = run_search(experiment, echo=lambda line: None)
    records = {r.number: r for r in trial_records(result.study)}
    best = {trial.number for trial in result.study.best_trials}
    assert all(records[number].feasible for number in best)
    assert all(all(value <= 0 for value in trial.constraints.values()) for trial in result.study.best_trials)
    front = set(pareto_frame(result.study)["number"])
    assert front and front <= best
    assert all(records[n].duplicate_of is not None or not records[n].metric for n in best - front)
    infeasible = [r for r in records.values() if r.status == "infeasible"]
    assert infeasible and all(r.number not in best for r in infeasible)


def test_tpe_gets_the_constraints_and_keeps_over_budget_trials_off_optunas_front(tmp_path):
    experiment = tiny_experiment(tmp_path, n_trials=8, sampler="tpe")
    result = run_search(experiment, echo=lambda line: None)
    records = {r.number: r for r in trial_records(result.study)}
    infeasible = [r.number for r in records.values() if r.status == "infeasible"]
    assert infeasible and all(result.study.trials[n].constraints["params"] > 0 for n in infeasible)
    best = {trial.number for trial in result.study.best_trials}
    assert best and not best & set(infeasible) and all(records[n].feasible for n in best)


@pytest.mark.slow  # CI time: the TPE test checks a budget's constraints in a real search, test_budget FLOP limits
def test_a_flop_budget_decides_feasibility_in_a_real_search(tmp_path):
    experiment = tiny_experiment(tmp_path, ("budget.max_params=null", "budget.max_flops=12M"), n_trials=6)
    result = run_search(experiment, echo=lambda line: None)
    records = [r for r in trial_records(result.study) if r.flops is not None]
    assert any(r.flops > 12e6 for r in records) and any(r.flops <= 12e6 for r in records)
    for record in records:
        assert record.feasible == (record.flops <= 12e6), record.number
        assert (record.status == "infeasible") == (record.flops > 12e6), record.number
    trials = {t.number: t for t in result.study.trials}
    assert all((trials[r.number].constraints["flops"] > 0) == (r.flops > 12e6) for r in records)


def test_the_time_limit_starts_no_trial_after_it(tmp_path):
    experiment = tiny_experiment(tmp_path, n_trials=200, timeout=6.0)
    started = time.time()
    result = run_search(experiment, echo=lambda line: None)
    # started trials only: a start point the study enqueued and never reached stays WAITING
    trials = [trial for trial in result.study.trials if trial.datetime_start is not None]
    assert 1 <= len(trials) < 200
    assert all(t.datetime_start.timestamp() <= started + 6.0 for t in trials)
