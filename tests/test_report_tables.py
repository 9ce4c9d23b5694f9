"""The numbers of a report, on hand-made studies: no drawing, no files."""

from __future__ import annotations

import math

import optuna
import pytest
from report_studies import MICRONET, UNET, add, make_study, realistic_study, study_info

from compressor.errors import ConfigError
from compressor.report import hypervolume as progress
from compressor.report import importance as drivers
from compressor.report import overview as header
from compressor.report import tables
from compressor.study import front, hypervolume_reference, trial_records

TWO = ("metric", "params")


def share(ratio: float) -> float:
    """The share of a cost's log axis (5 decades below the reference) that a cost at ``ratio`` of the reference dominates."""
    return -math.log10(ratio) / 5


def two_objective_study(references=None, **kwargs):
    refs = {"unet": {"params": 1000, "flops": 10_000, "latency_ms": None, "metric": 0.4}} if references is None \
        else references
    return make_study(study_info(objectives=TWO, references=refs, **kwargs))


def test_trials_frame_one_row_per_finished_trial_with_ratios():
    study = realistic_study()
    add(study, status="running", params=100_000, flops=10**9)
    frame = tables.trials_frame(study)
    assert frame["number"].tolist() == list(range(20))  # the running trial 20 is left out
    assert frame["status"].value_counts().to_dict() == {"complete": 12, "stopped": 4, "infeasible": 3, "failed": 1}
    row = frame.set_index("number").loc[9]
    assert row["params"] == 52_000 and row["flops"] == 610_000_000 and row["metric"] == pytest.approx(0.143)
    assert row["params_ratio"] == pytest.approx(UNET["params"] / 52_000)
    assert row["flops_ratio"] == pytest.approx(UNET["flops"] / 610_000_000)
    assert row["iou:building"] == pytest.approx(0.143) and row["param:conv"] == "standard"
    infeasible = frame.set_index("number").loc[1]
    assert infeasible["feasible"] == False  # noqa: E712 (pandas' nullable boolean)
    assert math.isnan(infeasible["metric"])  # the stored 0.0 is a placeholder: it was never trained
    assert tables.trials_frame(study, include_running=True)["number"].tolist() == list(range(21))


def test_pareto_frame_of_a_realistic_study():
    study = realistic_study()
    front = tables.pareto_frame(study)
    # smallest first; trial 17 repeated trial 2's recipe and is folded into it
    assert front["number"].tolist() == [9, 14, 4, 10, 2, 12, 0, 5]
    assert front["rank"].tolist() == list(range(1, 9))
    assert front.set_index("number").loc[2, "duplicates"] == "17"
    records = {record.number: record for record in trial_records(study)}
    for _, row in front.iterrows():
        record = records[row["number"]]
        assert (row["params"], row["flops"], row["metric"]) == (record.params, record.flops, record.metric)
        assert record.status == "complete" and record.feasible
    # trial 18 (1.45M, 0.255) loses to trial 5 (1.32M, 0.262) on every objective
    trials = tables.trials_frame(study).set_index("number")
    assert not trials.loc[18, "on_front"] and trials.loc[18, "front_rank"] == 1


def test_ties_are_all_on_the_front():
    study = two_objective_study()
    add(study, params=500, flops=1, metric=0.3, recipe="fire")
    add(study, params=500, flops=1, metric=0.3, recipe="separable")  # a different recipe, the same result
    add(study, params=600, flops=1, metric=0.3)                       # dominated by both
    front = tables.pareto_frame(study)
    assert front["number"].tolist() == [0, 1]
    assert front["duplicates"].tolist() == ["", ""]
    assert progress.hypervolume_frame(study)["front_size"].tolist() == [1, 1, 1]  # one distinct point


def test_a_trial_that_learned_nothing_is_never_on_the_front_however_small():
    study = two_objective_study()
    add(study, params=500, flops=1, metric=0.3)
    add(study, params=10, flops=1, metric=0.0)  # 50x smaller, building IoU 0: it predicts background everywhere
    assert tables.pareto_frame(study)["number"].tolist() == [0]
    trials = tables.trials_frame(study).set_index("number")
    assert not trials.loc[1, "on_front"] and trials.loc[0, "on_front"]
    assert tables.front_steps(tables.trials_frame(study), "params")["number"].tolist() == [0]
    records = trial_records(study)
    assert [record.number for record in front(records, list(TWO))] == [0]


def test_infeasible_points_never_reach_the_front():
    study = two_objective_study()
    add(study, params=500, flops=1, metric=0.3)
    # over budget: the search records the cost and no metric; even a stored metric would not count
    add(study, status="infeasible", params=100, flops=1)
    add(study, status="complete", params=50, flops=1, metric=0.9, feasible=False)
    add(study, status="stopped", params=200, flops=1, metric=0.35)  # a rung metric, not a final one
    assert tables.pareto_frame(study)["number"].tolist() == [0]
    assert progress.hypervolume_frame(study)["hypervolume"].tolist() == pytest.approx([0.3 * share(500 / 1100)] * 4)


def test_all_infeasible_gives_an_empty_front_and_zero_hypervolume():
    study = two_objective_study(budget={"max_params": 10})
    for params in (100, 200, 300):
        add(study, status="infeasible", params=params, flops=1)
    front = tables.pareto_frame(study)
    assert front.empty and list(front.columns) == tables.PARETO_COLUMNS
    assert progress.hypervolume_frame(study)["hypervolume"].tolist() == [0.0, 0.0, 0.0]
    assert tables.front_steps(tables.trials_frame(study), "params").empty
    assert drivers.importance_frame(study).skipped


def test_an_empty_study():
    study = two_objective_study()
    assert tables.trials_frame(study).empty
    assert tables.pareto_frame(study).empty
    assert progress.hypervolume_frame(study).empty
    overview = header.study_overview(study)
    assert overview["trials"] == 0 and overview["span_seconds"] is None


def test_a_single_trial():
    study = make_study()  # metric, params, flops against the real U-Net reference
    add(study, params=3_102_496, flops=3_688_385_741, metric=0.2)  # a tenth of U-Net in both costs
    front = tables.pareto_frame(study)
    assert front["number"].tolist() == [0]
    assert front.loc[0, "params_ratio"] == pytest.approx(10.0) and front.loc[0, "flops_ratio"] == pytest.approx(10.0)
    hypervolume = progress.hypervolume_frame(study)
    assert hypervolume["hypervolume"].tolist() == pytest.approx([0.2 * share(1 / 11) ** 2])
    assert hypervolume["front_size"].tolist() == [1]


def test_hypervolume_grows_by_hand_computed_steps():
    study = two_objective_study()  # U-Net params 1000: the reference is 1100
    add(study, params=550, flops=1, metric=0.5)                     # 0.5 * share(0.5)
    add(study, params=110, flops=1, metric=0.2)                     # + 0.2 * (share(0.1) - share(0.5))
    add(study, status="infeasible", params=50, flops=1)             # nothing
    add(study, status="failed", params=60, flops=1)                 # nothing
    add(study, params=880, flops=1, metric=0.45)                    # dominated: nothing
    add(study, params=110, flops=1, metric=0.2, duplicate_of=1)     # the same result again: nothing
    frame = progress.hypervolume_frame(study)
    first = 0.5 * share(0.5)
    second = first + 0.2 * (0.2 - share(0.5))  # a tenth of the reference: a fifth of the log axis
    assert frame["hypervolume"].tolist() == pytest.approx([first] + [second] * 5)
    assert frame["front_size"].tolist() == [1, 2, 2, 2, 2, 2]
    assert frame["feasible_complete"].tolist() == [1, 2, 2, 2, 3, 4]
    assert frame["wall_seconds"].tolist() == pytest.approx([60.0 * n for n in range(1, 7)])
    assert hypervolume_reference(study) == {"metric": 0.0, "params": pytest.approx(1100.0)}


def test_the_log_axis_still_tells_small_models_apart():
    """Every candidate 500x smaller than U-Net filled 99.8% of a linear box: the hypervolume was the best
    metric. On the log axis a model ten times smaller again counts, and at equal size the metric does."""
    values = []
    for params in (2, 0.2):  # 500x and 5000x smaller than U-Net's 1000
        study = two_objective_study()
        add(study, params=params, flops=1, metric=0.3)
        values.append(progress.hypervolume_frame(study)["hypervolume"].iloc[-1])
    assert values[0] == pytest.approx(0.3 * share(2 / 1100)) and values[1] == pytest.approx(0.3 * share(0.2 / 1100))
    assert values[1] > 1.3 * values[0]
    study = two_objective_study()
    add(study, params=0.001, flops=1, metric=0.3)  # beyond the axis's 5 decades: the whole axis, no more
    assert progress.hypervolume_frame(study)["hypervolume"].iloc[-1] == pytest.approx(0.3)


def test_confirmation_picks_the_front_trials_that_add_most_on_the_log_axis():
    """A 1100x smaller model at IoU 0.30 adds a band of 0.40 of the log axis (0.12); on a linear box it
    added 0.09% of the axis and came last behind the 11x smaller model at 0.50."""
    from compressor.confirm.plan import choose_top

    study = two_objective_study()  # U-Net params 1000: the reference is 1100
    add(study, params=1, flops=1, metric=0.30)     # adds (share(1/1100) - share(100/1100)) x 0.30 = 0.12
    add(study, params=100, flops=1, metric=0.50)   # adds (share(100/1100) - share(0.5)) x (0.50 - 0.30) = 0.030
    add(study, params=550, flops=1, metric=0.55)   # adds share(0.5) x (0.55 - 0.50) = 0.003
    assert choose_top(study, 3) == [0, 1, 2]
    assert choose_top(study, 1) == [0]


def test_without_a_u_net_reference_the_largest_cost_seen_sets_the_box():
    study = two_objective_study(references={})
    add(study, params=400, flops=1, metric=0.5)
    add(study, status="infeasible", params=1000, flops=1)
    assert hypervolume_reference(study)["params"] == pytest.approx(1100.0)
    assert progress.hypervolume_frame(study)["hypervolume"].iloc[-1] == pytest.approx(0.5 * share(400 / 1100))
    frame = tables.trials_frame(study)
    assert frame["params_ratio"].isna().all()
    assert tables.references_frame(study).empty


def test_references_not_trained_yet_keep_their_size():
    references = {"unet": {**UNET, "metric": None}, "micronet": {**MICRONET, "metric": None}}
    study = make_study(study_info(references=references))
    add(study, params=500_000, flops=4 * 10**9, metric=0.2)
    frame = tables.references_frame(study)
    assert frame["model"].tolist() == ["unet", "micronet"]
    assert frame["label"].tolist() == ["U-Net", "Micro-Net"]
    assert frame["trained"].tolist() == [False, False]
    assert frame["params"].tolist() == [UNET["params"], MICRONET["params"]]
    assert frame["params_ratio"].tolist() == pytest.approx([1.0, UNET["params"] / MICRONET["params"]])
    # the hypervolume box still comes from U-Net's size
    assert hypervolume_reference(study)["params"] == pytest.approx(1.1 * UNET["params"])


def test_front_steps_is_the_two_objective_front_of_one_cost():
    study = two_objective_study()
    for params, metric, status, feasible in [(100, 0.2, "complete", True), (200, 0.1, "complete", True),
                                             (300, 0.3, "complete", True), (50, 0.9, "stopped", True),
                                             (10, 0.9, "complete", False), (100, 0.2, "complete", True)]:
        add(study, params=params, flops=1, metric=metric, status=status, feasible=feasible)
    steps = tables.front_steps(tables.trials_frame(study), "params")
    assert steps["number"].tolist() == [0, 2]  # 5 equals 0 and appears once; 3 stopped, 4 infeasible
    assert steps["cost"].tolist() == [100.0, 300.0] and steps["metric"].tolist() == [0.2, 0.3]


def test_running_trials_are_counted_but_take_part_in_nothing():
    study = two_objective_study()
    add(study, params=500, flops=1, metric=0.3)
    add(study, status="running", params=100, flops=1)
    overview = header.study_overview(study)
    assert overview["trials"] == 2 and overview["by_status"]["running"] == 1
    assert tables.trials_frame(study)["number"].tolist() == [0]
    assert progress.hypervolume_frame(study)["number"].tolist() == [0]


def test_overview_counts_and_times():
    study = realistic_study()
    overview = header.study_overview(study)
    assert overview["by_status"] == {"complete": 12, "infeasible": 3, "stopped": 4, "failed": 1, "running": 0}
    records = trial_records(study)
    assert overview["wall_seconds"] == pytest.approx(sum(record.wall_seconds for record in records))
    # trials start every 2 minutes; the last (trial 19, 45 + 28 s) ends 38 min 73 s after the first start
    assert overview["span_seconds"] == pytest.approx(19 * 120 + 73)
    assert overview["budget"] == {"max_params": 1_500_000, "max_flops": 10e9}


def test_importance_needs_four_feasible_complete_trials_with_varying_parameters():
    study = two_objective_study()
    for number in range(3):
        add(study, params=100 * (number + 1), flops=1, metric=0.1 * (number + 1))
    skipped = drivers.importance_frame(study)
    assert skipped.skipped and "at least 4" in skipped.note and skipped.trials == 3
    add(study, params=400, flops=1, metric=0.4)
    importance = drivers.importance_frame(study)
    assert not importance.skipped and importance.trials == 4
    assert "on 4 feasible complete trials (fewer than 20: a first look, which a few more trials can overturn)" in importance.note
    for _, group in importance.frame.groupby("objective"):
        assert group["importance"].sum() == pytest.approx(1.0)
    assert set(importance.frame["objective"]) == {"metric", "params"}
    assert set(importance.frame["param"]) == {"levels_removed", "conv", "prune"}


def test_importance_skipped_when_no_parameter_varies():
    study = two_objective_study()
    for number in range(5):
        add(study, params=100 + number, flops=1, metric=0.1, sampled={"conv": "fire"})
    importance = drivers.importance_frame(study)
    assert importance.skipped and "no sampled parameter varies" in importance.note


def test_a_study_not_made_by_the_search_is_refused():
    study = optuna.create_study(study_name="plain")
    with pytest.raises(ConfigError, match="'plain' was not created by `compressor search`"):
        tables.trials_frame(study)


def test_machine_comes_from_the_study_when_the_search_stored_it():
    study = two_objective_study()
    assert header.machine_info(study)["source"] == "report built here"
    study.set_user_attr("machine", {"platform": "Linux-x", "cpu_count": 2})
    assert header.machine_info(study) == {"source": "search", "platform": "Linux-x", "cpu_count": 2}


def test_objective_none_is_not_on_the_front():
    study = two_objective_study()
    add(study, params=500, flops=1, metric=0.3)
    add(study, params=100, flops=1, metric=None)  # complete but no metric stored: nothing to rank it by
    trials = tables.trials_frame(study).set_index("number")
    assert bool(trials.loc[0, "on_front"]) and not bool(trials.loc[1, "on_front"])
    assert math.isnan(trials.loc[1, "metric"])
