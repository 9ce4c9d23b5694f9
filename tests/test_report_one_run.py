"""What the Pareto table says about itself: one training run per model until a confirmation, and
in words when a reference learned nothing (its score at the floor)."""

from __future__ import annotations

import pytest
from report_studies import MICRONET, UNET, add, make_study, skip_drawing

from compressor.confirm.subjects import PLAN_KEY, result_key
from compressor.floor import Floor
from compressor.report import build_report, front_table
from compressor.study import StudyInfo

FLOOR = {"constant": 0.032, "constant_class": "building", "margin": 0.02}  # a model needs more than 0.052


def _study(micronet_metric: float, *, confirmed: bool = False, confirmed_metric: float | None = None):
    info = StudyInfo(
        experiment={"name": "quickstart", "train": {"seed": 0, "steps": 120}}, space="unet_family", model="unet",
        objectives=["metric", "params", "flops"], metric="score", metric_label="building IoU",
        budget={"max_params": 1_500_000}, input_shape=[1, 1, 224, 224], floor=dict(FLOOR),
        references={"unet": dict(UNET), "micronet": {**MICRONET, "metric": micronet_metric}},
    )
    study = make_study(info)
    add(study, params=150_000, flops=1_500_000_000, metric=0.27, recipe="cut 2, concat, convs FFD")
    add(study, params=58_000, flops=1_600_000_000, metric=0.25, recipe="cut 3, concat, convs FD")
    if confirmed:
        for subject in ("unet", "micronet", "trial-0"):
            for seed in (1, 2):
                metric = confirmed_metric if subject == "micronet" and confirmed_metric is not None else 0.2 + seed / 100
                study.set_user_attr(result_key(subject, seed, None), {
                    "subject": subject, "seed": seed, "fold": None, "metric": metric, "constant": 0.032})
        study.set_user_attr(PLAN_KEY, {"subjects": ["trial-0"], "repeats": [[1, None], [2, None]],
                                       "search_repeat": [0, None], "budgets": []})
    return study


def _row(table: str, label: str) -> str:
    (row,) = [line for line in table.splitlines() if line.startswith("ref") and label in line]
    return row


def test_a_reference_at_the_floor_is_said_in_words_and_the_table_is_one_run():
    table = front_table(_study(micronet_metric=0.005))
    title = table.splitlines()[0]
    assert title.startswith("Pareto front of study quickstart: 2 trial(s), smallest first, one training run each (seed 0);")
    assert _row(table, "Micro-Net").rstrip().endswith("(reference, at the floor: learned nothing)")
    assert _row(table, "U-Net").rstrip().endswith("(reference)")  # 0.257: above the floor
    lines = table.splitlines()
    assert ("at the floor: Micro-Net (building IoU 0.005) learned nothing in its 120 steps from random weights "
            "(seed 0); that says little of what the network can do") in "\n".join(lines)
    (note,) = [line for line in lines if line.startswith("not confirmed:")]
    assert "each score above is one training run (seed 0)" in note
    assert "`compressor confirm --study quickstart --seeds 2` retrains up to 3 of the front's trials" in note
    # a study elsewhere: the command says where, quoted for a shell
    elsewhere = front_table(_study(micronet_metric=0.005), storage="sqlite:////data/my runs/s.db")
    assert "`compressor confirm --study quickstart --storage 'sqlite:////data/my runs/s.db' --seeds 2`" in elsewhere
    assert "--storage" not in front_table(_study(micronet_metric=0.005), storage="sqlite:///runs/quickstart/search.db")


def test_the_reports_files_give_the_confirm_command_with_the_studys_storage(tmp_path, monkeypatch):
    skip_drawing(monkeypatch)
    study = _study(micronet_metric=0.2)
    storage = "sqlite:////data/my runs/s.db"
    report = build_report(study, tmp_path / "elsewhere", storage=storage)
    command = "compressor confirm --study quickstart --storage 'sqlite:////data/my runs/s.db'"
    for name in ("index.html", "summary.md"):
        text = (tmp_path / "elsewhere" / name).read_text()
        assert command in text.replace("&#x27;", "'").replace("&#39;", "'"), name
    assert command in report.pareto_text(storage)
    plain = build_report(study, tmp_path / "default", storage="sqlite:///runs/quickstart/search.db")
    assert "compressor confirm --study quickstart --seeds" in (tmp_path / "default" / "summary.md").read_text()
    assert "--storage" not in (tmp_path / "default" / "summary.md").read_text() and plain.index_html.exists()


def test_the_page_says_what_a_trials_rung_evaluations_read(tmp_path, monkeypatch):
    skip_drawing(monkeypatch)
    study = _study(micronet_metric=0.2)
    report = build_report(study, tmp_path / "before")  # trials stored before rung_share: nothing said
    assert "rung evaluations" not in report.index_html.read_text()
    add(study, params=90_000, flops=1_000_000_000, metric=0.22, curve=[[11, 0.1], [100, 0.22]], rung_share=0.5,
        rung_metrics={"0.111": 0.1})
    text = build_report(study, tmp_path / "after").index_html.read_text()
    assert "rung evaluations (the points of its learning curve at the rungs" in text
    assert "read 50% of each validation scene&#x27;s windows" in text or "read 50% of each validation scene's windows" in text
    assert "stored before that setting" not in text
    add(study, params=80_000, flops=1_000_000_000, metric=0.21, curve=[[11, 0.1], [100, 0.21]],
        rung_metrics={"0.111": 0.1})  # a trial of the same study from before rung_share: its rungs read everything
    mixed = build_report(study, tmp_path / "mixed").index_html.read_text()
    assert "the trials stored before that setting read them all, and are ranked at a rung only against each other" in mixed


@pytest.mark.parametrize("above", [0.0, 1e-6])
def test_the_floor_note_follows_the_threshold(above):
    metric = Floor.from_dict(FLOOR).threshold + above  # "a model needs more than 0.052"
    table = front_table(_study(micronet_metric=metric))
    at_floor = above == 0.0
    assert _row(table, "Micro-Net").rstrip().endswith("(reference, at the floor: learned nothing)") == at_floor
    assert ("\nat the floor: Micro-Net" in table) == at_floor


def test_a_confirmed_study_is_not_called_one_run_and_its_references_are_judged_on_their_means():
    table = front_table(_study(micronet_metric=0.2, confirmed=True))
    assert "one training run each" not in table.splitlines()[0]
    assert "not confirmed" not in table and "at the floor: Micro-Net" not in table
    assert "confirmed building IoU [95% CI] n" in table
    # Micro-Net's search run learned nothing, its further seeds did (0.21, 0.22): not at the floor
    table = front_table(_study(micronet_metric=0.005, confirmed=True))
    assert _row(table, "Micro-Net").rstrip().endswith("(reference)") and "at the floor" not in table
    # further seeds that learned nothing either: at the floor, without "confirming shows more"
    table = front_table(_study(micronet_metric=0.005, confirmed=True, confirmed_metric=0.01))
    assert _row(table, "Micro-Net").rstrip().endswith("(reference, at the floor: learned nothing)")
    assert "at the floor: Micro-Net" in table and "confirming over more seeds" not in table


def test_the_page_and_the_summary_carry_both_notes(tmp_path, monkeypatch):
    skip_drawing(monkeypatch)
    report = build_report(_study(micronet_metric=0.005), tmp_path / "report")
    summary = report.paths["summary.md"].read_text()
    assert "At the floor: Micro-Net (building IoU 0.005) learned nothing in its 120 steps" in summary
    assert "Not confirmed: each score above is one training run (seed 0)" in summary
    assert "(reference, at the floor: learned nothing)" in summary
    page = report.paths["index.html"].read_text()
    assert "At the floor: Micro-Net (building IoU 0.005) learned nothing" in page
    assert "(reference, at the floor: learned nothing)" in page
