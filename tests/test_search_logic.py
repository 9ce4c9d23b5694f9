"""The search's own logic in real searches (tiny synthetic experiment, real Optuna studies on SQLite):
multi-fidelity stopping, NSGA-II under constraints, Optuna's front against compressor's, a FLOP
budget, and the time limit."""

from __future__ import annotations

import sys

import optuna
import pytest
from optuna.trial import TrialState
from search_helpers import tiny_experiment
from test_search import OVER_BUDGET

from compressor.candidates.setup import prepare
from compressor.errors import ConfigError
from compressor.pipeline import run_search
from compressor.report.tables import pareto_frame
from compressor.search import with_search
from compressor.search.fidelity import should_stop
from compressor.search.study import open_search_study
from compressor.study import hypervolume_reference, hypervolume_shares, trial_records

# -- one small search that shows several claims at once (the default run's fast versions of the
# slow tests below): NSGA-II under a FLOP budget, a rung that stops weak trials, and the same
# seed giving the same search.

FLOP_BUDGET = 12e6


def _small_search(run_dir, n_trials: int):
    experiment = tiny_experiment(run_dir, ("budget.max_params=null", "budget.max_flops=12M"), n_trials=n_trials,
                                 sampler="nsga2", rungs=[1 / 3], keep_fraction=0.34, min_trials_at_rung=1, seed=0)
    return run_search(experiment, echo=lambda line: None)


@pytest.fixture(scope="module")
def small_search(tmp_path_factory):
    """8 trials of NSGA-II under a 12M FLOP budget with a rung at 1/3 of the training (about 8 s):
    seed 0 draws trials over and under the budget, and trials the rung stops."""
    return _small_search(tmp_path_factory.mktemp("small"), 8)


def test_a_rung_stops_weak_trials_at_its_fidelity_with_the_metric_they_had_there(small_search):
    records = trial_records(small_search.study)
    stopped = [r for r in records if r.status == "stopped"]
    complete = [r for r in records if r.status == "complete"]
    assert stopped and complete
    for record in stopped:
        assert record.fidelity == pytest.approx(3 / 9, abs=1e-3)  # 9 steps, stopped after the rung at 3
        assert record.metric == pytest.approx(list(record.rung_metrics.values())[-1])
        assert small_search.study.trials[record.number].state == TrialState.PRUNED
    assert all(record.fidelity == 1.0 and record.rung_metrics for record in complete)
    for record in stopped + complete:  # the learning curve: the rung's evaluation, then the final one if it ran on
        assert [step for step, _ in record.curve] == ([3] if record.status == "stopped" else [3, 9])
        assert record.curve[0][1] == pytest.approx(list(record.rung_metrics.values())[0], abs=1e-5)
        assert record.curve[-1][1] == pytest.approx(record.metric, abs=1e-5)


def test_ranking_by_contribution_stops_what_the_rule_says_and_members_of_the_first_front(tmp_path):
    """search.rung_ranking: contribution, checked against the rule applied by hand to the stored rung scores:
    each trial's stop matches, and some stopped trial was on its rung's first front (which ``front`` keeps)."""
    experiment = tiny_experiment(tmp_path, n_trials=6, sampler="random", rungs=[1 / 3], keep_fraction=0.5,
                                 min_trials_at_rung=2, seed=4, rung_ranking="contribution")
    result = run_search(experiment, echo=lambda line: None)
    objectives, directions = ["metric", "params", "flops"], ["maximize", "minimize", "minimize"]
    reference = hypervolume_reference(result.study)
    reached, on_front_stopped = [], 0
    for record in trial_records(result.study):
        if record.duplicate_of is not None or not record.rung_metrics:
            continue
        point = [record.rung_metrics["0.333"], record.params, record.flops]
        shares = hypervolume_shares([point, *reached], objectives, reference)
        stop = should_stop(point, reached, directions, keep_fraction=0.5, min_trials=2, shares=shares)
        assert (record.status == "stopped") == stop, record.number
        if stop and not should_stop(point, reached, directions, keep_fraction=0.5, min_trials=2):
            on_front_stopped += 1
        reached.append(point)
    assert on_front_stopped >= 1


def test_a_flop_budget_decides_feasibility_for_compressor_and_for_nsga2(small_search):
    records = [r for r in trial_records(small_search.study) if r.flops is not None]
    assert any(r.flops > FLOP_BUDGET for r in records) and any(r.flops <= FLOP_BUDGET for r in records)
    trials = {t.number: t for t in small_search.study.trials}
    for record in records:
        over = record.flops > FLOP_BUDGET
        assert record.feasible != over and (record.status == "infeasible") == over, record.number
        assert (trials[record.number].constraints["flops"] > 0) == over, record.number
        assert over or record.train_seconds, record.number  # under budget: trained; over: never
    best = {trial.number for trial in small_search.study.best_trials}
    feasible = {r.number for r in records if r.feasible}
    assert best and best <= feasible
    front = set(pareto_frame(small_search.study)["number"])
    assert front and front <= best


def test_the_same_seed_draws_the_same_trials_with_the_same_results(small_search, tmp_path):
    """Determinism on CPU (one thread): a second search in another folder, 4 trials of the same seed,
    repeats the first 4 trials exactly: recipes, statuses, rung decisions and confusion matrices."""
    def trace(result):
        return [(r.recipe_hash, r.status, r.params, r.metric, r.metrics.get("confusion"))
                for r in trial_records(result.study)]

    again = trace(_small_search(tmp_path, 4))
    assert again == trace(small_search)[:4]
    assert len({item[0] for item in again}) == 4 and len({item[1] for item in again}) >= 2


def test_a_latency_budget_decides_feasibility_in_a_real_search(tmp_path):
    """``max_latency_ms``: every candidate is timed, and only those within the limit are trained. At
    256x256 the uncut U-Net (1.9M params here) took 88-95 ms, the paper's recipe 28-36 ms and seed 0's
    random draw 17-20 ms (2 cores, load 0-2.5): a limit of 60 ms is 1.5x from the U-Net and 1.7x from
    the recipe, and both small ones must slow down past it for the test to fail."""
    experiment = tiny_experiment(tmp_path, ("budget.max_params=null", "budget.max_latency_ms=60", "cost.latency.repeats=5",
                                            "cost.latency.input_size=256", "model.args.base_width=16"),
                                 n_trials=3, references=["base"])
    study = open_search_study(prepare(experiment, echo=lambda line: None), sampler_seed=0)
    study.enqueue_trial(OVER_BUDGET)  # after the paper's recipe
    result = run_search(experiment, echo=lambda line: None)
    records = trial_records(result.study)
    assert all(record.latency_ms is not None for record in records)
    for record in records:
        over = record.latency_ms > 60
        assert record.feasible != over and (record.status == "infeasible") == over, record.number
        assert (result.study.trials[record.number].constraints["latency_ms"] > 0) == over, record.number
        assert bool(record.train_seconds) != over, record.number
    assert records[1].params_dict == OVER_BUDGET and records[1].status == "infeasible"
    assert any(record.status == "complete" for record in records)


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
    experiment = tiny_experiment(tmp_path, n_trials=4, sampler="tpe")
    result = run_search(experiment, echo=lambda line: None)
    records = {r.number: r for r in trial_records(result.study)}
    infeasible = [r.number for r in records.values() if r.status == "infeasible"]
    assert infeasible and all(result.study.trials[n].constraints["params"] > 0 for n in infeasible)
    best = {trial.number for trial in result.study.best_trials}
    assert best and not best & set(infeasible) and all(records[n].feasible for n in best)


def test_the_gaussian_process_sampler_searches_with_the_budget_as_constraints(tmp_path):
    """search.sampler: gp is Optuna's GPSampler (multi-objective, constrained), past its 5 random start-up trials."""
    experiment = tiny_experiment(tmp_path, n_trials=6, sampler="gp")
    result = run_search(experiment, echo=lambda line: None)
    assert isinstance(result.study.sampler, optuna.samplers.GPSampler)
    modelled = result.study.sampler.infer_relative_search_space(result.study, result.study.trials[-1])
    assert {"levels_removed", "skip", "dilation", "prune"} <= set(modelled)  # the axes every recipe has
    records = {r.number: r for r in trial_records(result.study)}
    assert len(records) == 6 and all(r.status in ("complete", "infeasible", "stopped") for r in records.values())
    infeasible = [r.number for r in records.values() if r.status == "infeasible"]
    assert all(result.study.trials[n].constraints["params"] > 0 for n in infeasible)
    best = {trial.number for trial in result.study.best_trials}
    assert best and not best & set(infeasible)


def test_the_gaussian_process_sampler_without_scipy_is_refused_by_name(monkeypatch):
    from compressor.search.study import make_sampler

    monkeypatch.setitem(sys.modules, "scipy", None)  # as if not installed: importing it fails
    with pytest.raises(ConfigError, match=r"search.sampler: gp needs scipy, which is not installed: pip install 'compressor\[gp\]'"):
        make_sampler("gp", 0)


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
    result = run_search(experiment, echo=lambda line: None)
    # started trials only: a start point the study enqueued and never reached stays WAITING
    trials = sorted((trial for trial in result.study.trials if trial.datetime_start is not None),
                    key=lambda trial: trial.datetime_start)
    assert 3 <= len(trials) < 200
    first = trials[0].datetime_start.timestamp()  # the clock starts (a moment before) the first trial
    # Optuna checks the limit before it creates a trial and stamps its start after: on a loaded machine
    # (this suite beside other work) that moment can take a second or two
    assert all(t.datetime_start.timestamp() <= first + 6.0 + 2.0 for t in trials)


def test_a_time_limit_shorter_than_a_trial_lets_the_first_trials_run(tmp_path):
    """A limit shorter than one trial: the first 3 trials run anyway (the space's starting point first),
    then the limit stops the study short of its target."""
    lines: list[str] = []
    experiment = tiny_experiment(tmp_path, n_trials=6, timeout=0.001)
    result = run_search(experiment, echo=lines.append)
    finished = [record for record in result.records if record.status != "running"]
    assert len(finished) == 3 and result.records[0].recipe  # the enqueued starting point was trial 0
    assert any(line.endswith("running until 6 or for 0 s (the first 3 whatever the time)") for line in lines)
    assert "the 0 s time limit of the search is spent" in lines
