"""The search on real Optuna studies (SQLite files), real transforms and real training on synthetic scenes."""

from __future__ import annotations

import re

import optuna
import pytest
import torch
from optuna.trial import TrialState
from search_helpers import tiny_experiment

from compressor.candidates.setup import prepare
from compressor.cost import measure
from compressor.errors import BudgetError, ConfigError
from compressor.pipeline import run_search
from compressor.report import front_table
from compressor.saving import load_saved
from compressor.search.export import export_trial, rebuild_trial
from compressor.search.runner import TrialRunner
from compressor.search.study import open_search_study
from compressor.search.weights import WeightStore
from compressor.study import study_info
from search_spaces.unet_family import MICRONET_CHOICES

# The base U-Net of the tiny experiment uncut, all standard convs: about 470k params, over the 60k budget.
OVER_BUDGET = {"levels_removed": 0, "skip": "concat", **{f"conv_L{i}": "standard" for i in range(5)},
               "dilation": "none", "prune": 0.0}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A 5-trial random search; its study got an over-budget candidate and a repeat of Micro-Net enqueued."""
    run_dir = tmp_path_factory.mktemp("search")
    experiment = tiny_experiment(run_dir, n_trials=5)
    study = open_search_study(prepare(experiment, echo=lambda line: None), sampler_seed=0)
    study.enqueue_trial(OVER_BUDGET)
    study.enqueue_trial(MICRONET_CHOICES)  # after the space's own start (the same choices): a duplicate
    lines = []
    result = run_search(experiment, echo=lines.append)
    return experiment, result, lines


def test_every_trial_is_recorded_with_its_recipe_cost_and_values(searched):
    _, result, lines = searched
    records = result.records
    assert len(records) == 5 and sorted(r.number for r in records) == list(range(5))
    for record in records:
        assert record.recipe_hash and record.recipe_short and record.params > 0 and record.flops > 0
        assert record.wall_seconds > 0
        if record.status == "complete":
            assert record.values == [record.metric, record.params, record.flops]
            assert record.fidelity == 1.0 and "iou" in record.metrics
            # a repeat of a finished recipe trained nothing: no training time of its own
            assert (record.train_seconds is None) == (record.duplicate_of is not None)
    assert sum(line.startswith("trial ") for line in lines) == 5


def test_each_trial_records_where_its_time_went_and_says_it(searched, tmp_path):
    from compressor.report import build_report

    _, result, lines = searched
    seen = set()
    for record, line in zip(result.records, [line for line in lines if line.startswith("trial ")]):
        timing = record.timing
        assert timing["total"] == record.wall_seconds
        phases = sum(value for phase, value in timing.items() if phase != "total")
        assert phases <= timing["total"] + 0.01, timing  # the phases are parts of the whole
        seen.add(record.status if record.duplicate_of is None else "duplicate")
        if record.status == "infeasible":  # costed, never trained
            assert {"sample", "build", "cost", "total"} == set(timing)
            shown = re.search(r"\d s \(([^)]*)\)", line)
            assert shown and "cost" in shown.group(1) and "train" not in shown.group(1), line
        elif record.duplicate_of is None:  # built, costed, trained and evaluated
            assert {"sample", "build", "cost", "calibrate", "train", "evaluate", "store", "total"} == set(timing)
            # train is the optimizer steps alone (store and evaluate are not counted in it); no order
            # between phases is asserted: on a busy machine a tiny trial's store can outlast its steps
            assert timing["train"] == record.train_seconds > 0 and timing["store"] > 0 and timing["evaluate"] > 0
            assert f"train {timing['train']:.1f}" in line and f"build {timing['build']:.1f}" in line
        else:  # a repeat reused its twin's result: nothing of its own but drawing the recipe
            assert set(timing) == {"sample", "total"}
    assert {"infeasible", "complete", "duplicate"} <= seen
    report = build_report(result.study, tmp_path / "report")
    assert {"seconds:build", "seconds:train", "seconds:evaluate"} <= set(report.trials.columns)
    shares = report.overview["phase_seconds"]
    assert shares["total"] == pytest.approx(sum(record.wall_seconds for record in result.records))
    assert "train " in (tmp_path / "report" / "index.html").read_text().split("compute spent", 1)[1][:400]
    # compute counted in optimizer steps too: the search's 9 per trained trial, none for a repeat or an infeasible one
    trained = [r for r in result.records if r.trained and r.duplicate_of is None]
    assert all(r.steps == 9 for r in trained) and all(r.steps is None for r in result.records if r not in trained)
    assert report.hypervolume["train_steps"].tolist()[-1] == 9 * len(trained)


def test_the_papers_recipe_is_tried_first(searched):
    _, result, _ = searched
    assert result.records[0].params_dict == MICRONET_CHOICES
    assert result.records[0].status == "complete"


def test_over_budget_candidates_are_recorded_and_never_trained(searched):
    _, result, _ = searched
    over = next(r for r in result.records if r.params_dict == OVER_BUDGET)
    assert over.status == "infeasible" and over.feasible is False
    assert over.params > 60_000 and over.constraints[0] == pytest.approx(over.params / 60_000 - 1)
    assert over.train_seconds is None and over.fidelity == 0.0 and over.rung_metrics == {}
    trial = result.study.trials[over.number]
    assert trial.constraints == {"params": pytest.approx(over.constraints[0])}  # what Optuna's samplers see
    for record in result.records:
        if record.status == "complete":
            assert record.feasible and all(value <= 0 for value in record.constraints)


def test_a_recipe_already_trained_is_not_trained_again(searched):
    _, result, _ = searched
    twins = [r for r in result.records if r.params_dict == MICRONET_CHOICES]
    assert [r.duplicate_of for r in twins] == [None, twins[0].number]
    assert twins[1].values == twins[0].values and twins[1].metrics == twins[0].metrics
    assert twins[1].wall_seconds < twins[0].wall_seconds


def test_only_pareto_front_trials_keep_weights(searched):
    _, result, _ = searched
    store = WeightStore(study_info(result.study).artifacts)
    front = {record.number for record in result.front}
    assert front and all(result.records[n].feasible for n in front)
    for record in result.records:
        assert store.has(record.weights) == (record.number in front)
    table = front_table(result.study)
    assert "Pareto front of study tiny" in table and "U-Net" in table
    for number in front:  # stored as bytes, not as whatever the system's MIME table guesses for ".pt"
        metas = optuna.artifacts.get_all_artifact_meta(result.study.trials[number], storage=result.study._storage)
        assert [meta.mimetype for meta in metas] == ["application/octet-stream"]


def test_export_rebuilds_the_trained_model_with_the_measured_cost(searched, tmp_path):
    experiment, result, _ = searched
    best = result.front[0]
    exported = export_trial(experiment.search.storage or f"sqlite:///{experiment.run_path}/search.db",
                            "tiny", best.number, tmp_path / "best.pt")
    # the safe form: tensors and data only, the architecture rebuilt from the study's recipe
    assert torch.load(tmp_path / "best.pt", weights_only=True)["format"] == "compressor.model/2"
    saved = load_saved(tmp_path / "best.pt")
    cost = measure(saved.model, tuple(study_info(result.study).input_shape))
    assert (cost.params, cost.flops) == (best.params, best.flops)
    kept = WeightStore(study_info(result.study).artifacts).load(best.weights, best.number)
    for name, tensor in saved.model.state_dict().items():
        assert torch.equal(tensor, kept[name]), name
    assert saved.metadata["trial"] == best.number and exported.trained


def test_export_refuses_a_trial_without_weights_unless_untrained(searched):
    experiment, result, _ = searched
    url = f"sqlite:///{experiment.run_path}/search.db"
    over = next(r for r in result.records if r.status == "infeasible")
    with pytest.raises(ConfigError, match=f"trial {over.number} has no kept weights"):
        rebuild_trial(url, "tiny", over.number)
    architecture = rebuild_trial(url, "tiny", over.number, untrained=True)
    assert measure(architecture.model, (1, 3, 64, 64)).params == over.params
    with pytest.raises(ConfigError, match="no trial 99"):
        rebuild_trial(url, "tiny", 99)
    with pytest.raises(ConfigError, match="no study 'other' .*studies there: tiny"):
        rebuild_trial(url, "other", 0)


def test_running_again_resumes_and_keeps_every_finished_trial(searched, tmp_path):
    experiment, result, _ = searched
    before = {r.number: (r.status, r.values, r.recipe_hash) for r in result.records}
    more = run_search(tiny_experiment(experiment.run_path, n_trials=6), echo=lambda line: None)
    after = {r.number: (r.status, r.values, r.recipe_hash) for r in more.records}
    assert {number: after[number] for number in before} == before
    assert len(more.study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 6
    # the seeded sampler does not start over: the first run's next draw came again, a duplicate never trained
    assert after[5][2] not in {recipe for _, _, recipe in before.values()}
    lines = []
    again = run_search(tiny_experiment(experiment.run_path, n_trials=6), echo=lines.append)
    assert len(again.records) == 6 and any("already holds 6 finished trials" in line for line in lines)


def test_other_settings_refuse_to_resume_the_study(searched):
    experiment, _, _ = searched
    changed = tiny_experiment(experiment.run_path, overrides=("train.steps=12",), n_trials=6)
    with pytest.raises(ConfigError, match="study 'tiny' .* was run with other train settings$"):
        run_search(changed, echo=lambda line: None)


def test_a_budget_no_candidate_can_meet_is_refused_before_training(tmp_path):
    experiment = tiny_experiment(tmp_path, overrides=("budget.max_params=10",))
    with pytest.raises(BudgetError, match=r"no candidate of space 'unet_family' can meet the budget \(params <= 10\)"
                       r": its smallest \(cut 3, add, convs FF .*prune .9\) has .* params"):
        run_search(experiment, echo=lambda line: None)
    assert not (tmp_path / "search.db").exists()


def _study_with_rung(metrics_and_params: list[tuple[float, int]], directions: list[str],
                     rung_share: float | None = None) -> optuna.Study:
    study = optuna.create_study(directions=directions)
    for metric, params in metrics_and_params:
        share = {"rung_share": rung_share} if rung_share is not None else {}
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.PRUNED, values=None,
            user_attrs={"rung_metrics": {"0.333": metric}, "params": params, "flops": params * 100, **share},
        ))
    return study


def test_rung_rule_reads_the_other_trials_of_the_study(tmp_path):
    """The runner's decision at a rung, on a real study holding three trials that reached it."""
    setup = prepare(tiny_experiment(tmp_path, objectives=["metric", "params"], min_trials_at_rung=3),
                    echo=lambda line: None, check_budget=False)
    runner = TrialRunner(setup, WeightStore(tmp_path / "artifacts"))
    study = _study_with_rung([(0.5, 1000), (0.4, 1000), (0.3, 1000)], ["maximize", "minimize"])
    trial = study.ask()
    assert runner._stop_at(trial, "0.333", [0.1, 1000]) is True  # worse and no smaller than all three
    assert runner._stop_at(trial, "0.333", [0.45, 1000]) is False  # only one is better: inside the best third
    assert runner._stop_at(trial, "0.333", [0.1, 10]) is False  # weak but far smaller: on the rung's front
    assert runner._stop_at(trial, "0.500", [0.1, 1000]) is False  # nobody reached that rung yet
    # trials whose rungs read another share of the windows (search.rung_share changed on a resumed
    # study) are not ranked against: nobody comparable reached the rung
    halved = _study_with_rung([(0.5, 1000), (0.4, 1000), (0.3, 1000)], ["maximize", "minimize"], rung_share=0.5)
    assert runner._stop_at(halved.ask(), "0.333", [0.1, 1000]) is False
    half = TrialRunner(prepare(tiny_experiment(tmp_path / "half", objectives=["metric", "params"],
                                               min_trials_at_rung=3, rung_share=0.5),
                               echo=lambda line: None, check_budget=False), WeightStore(tmp_path / "artifacts"))
    assert half._stop_at(halved.ask(), "0.333", [0.1, 1000]) is True and half._stop_at(trial, "0.333", [0.1, 1000]) is False


def test_a_trials_rung_reads_its_share_of_the_windows_and_its_result_is_the_whole_evaluation(tmp_path, monkeypatch):
    """The runner hands search.rung_share to the rung evaluations only: the rung score moves with it,
    the final score (the trial's metric) does not, and the record says what its rungs read."""
    records, seen = {}, []
    original = TrialRunner._stop_at

    def watched(self, trial, key, point):
        seen.append(trial.study.get_trials(deepcopy=False)[trial.number].user_attrs.get("rung_share"))
        return original(self, trial, key, point)

    monkeypatch.setattr(TrialRunner, "_stop_at", watched)
    for share in (0.5, 1.0):
        experiment = tiny_experiment(tmp_path / str(share), ("train.eval_window=32",), n_trials=1, rungs=[1 / 3],
                                     rung_share=share, min_trials_at_rung=5)
        (records[share],) = run_search(experiment, echo=lambda line: None).records
        if share == 0.5:  # stored before training: what a worker beside it reads at the rung
            assert seen == [0.5]
    half, whole = records[0.5], records[1.0]
    assert half.recipe_hash == whole.recipe_hash and half.status == whole.status == "complete"
    assert (half.rung_share, whole.rung_share) == (0.5, None)
    assert half.metric == whole.metric and half.metrics["confusion"] == whole.metrics["confusion"]
    assert half.rung_metrics.keys() == whole.rung_metrics.keys() == {"0.333"}
    assert half.rung_metrics["0.333"] != whole.rung_metrics["0.333"]  # 2 of the scene's 4 windows, not all 4
    assert half.curve[0][1] == pytest.approx(half.rung_metrics["0.333"], abs=1e-5)
    assert half.curve[-1][1] == pytest.approx(half.metric, abs=1e-5)


@pytest.mark.slow  # CI time: test_confirm reproduces a trial from its seed, test_train a training
def test_the_same_seed_and_settings_give_the_same_recipes_and_metrics(tmp_path):
    """Determinism on CPU: two searches in separate folders, TPE seeded alike, one thread."""
    runs = [
        run_search(tiny_experiment(tmp_path / name, n_trials=3, sampler="tpe", seed=7), echo=lambda line: None)
        for name in ("first", "second")
    ]
    first, second = ([(r.recipe_hash, r.status, r.params, r.metric, r.metrics.get("confusion")) for r in run.records]
                     for run in runs)
    assert first == second
    assert len({item[0] for item in first}) >= 2  # different candidates were drawn, not one repeated


def test_pareto_csv_numbers_equal_a_fresh_measure_of_the_exported_models(searched, tmp_path):
    """The report's numbers are the models': every front row, rebuilt by export and measured again."""
    import pandas as pd

    from compressor.report import build_report

    experiment, result, _ = searched
    report = build_report(result.study, tmp_path / "report")
    front = pd.read_csv(report.paths["pareto.csv"])
    assert len(front) == len(result.front) > 0
    input_shape = tuple(study_info(result.study).input_shape)
    for row in front.itertuples():
        model = rebuild_trial(f"sqlite:///{experiment.run_path}/search.db", "tiny", int(row.number)).model
        cost = measure(model, input_shape)
        assert (cost.params, cost.flops) == (row.params, row.flops), row.number


def test_a_repeat_of_an_over_budget_recipe_is_infeasible_for_optuna_too(tmp_path):
    """Optuna's own view (best_trials, what dashboards and constrained samplers read) must not list it."""
    experiment = tiny_experiment(tmp_path, n_trials=3)
    study = open_search_study(prepare(experiment, echo=lambda line: None), sampler_seed=0)
    study.enqueue_trial(OVER_BUDGET)
    study.enqueue_trial(OVER_BUDGET, skip_if_exists=False)
    result = run_search(experiment, echo=lambda line: None)
    first, repeat = [t for t in result.study.trials if t.params == OVER_BUDGET]
    assert repeat.user_attrs["duplicate_of"] == first.number
    assert repeat.constraints == first.constraints and first.constraints["params"] > 0
    assert {t.number for t in result.study.best_trials}.isdisjoint({first.number, repeat.number})
