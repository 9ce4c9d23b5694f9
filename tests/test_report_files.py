"""The files a report writes, on studies carrying what the search stores."""

from __future__ import annotations

import re

import optuna
import pandas as pd
import pytest
from report_studies import (
    MICRONET,
    PNG_SIGNATURE,
    UNET,
    add,
    make_study,
    realistic_study,
    skip_drawing,
    study_info,
)

import compressor.report as report_module
from compressor.errors import ConfigError
from compressor.report import build_report, load_study, plots
from compressor.study import trial_records


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The realistic study (in memory: SQLite is the CLI tests'), plus a trial still running, and its report."""
    study = realistic_study()
    study.ask()  # a worker has started trial 20 and not finished it
    report = build_report(study, tmp_path_factory.mktemp("report"))
    return study, report


def test_every_file_is_written(stored):
    _, report = stored
    names = {"index.html", "trials.csv", "pareto.csv", "summary.md", "pareto_params.png", "pareto_flops.png",
             "hypervolume.png", "importance.png"}
    assert set(report.paths) == names
    assert {path.name for path in report.out_dir.iterdir()} == names  # no temporary file left behind
    for name in names:
        assert report.paths[name].stat().st_size > 0
        if name.endswith(".png"):
            assert report.paths[name].read_bytes().startswith(PNG_SIGNATURE)


def test_pareto_csv_holds_the_records_numbers(stored):
    study, report = stored
    written = pd.read_csv(report.paths["pareto.csv"])
    assert written["number"].tolist() == [9, 14, 4, 10, 2, 12, 0, 5]
    records = {record.number: record for record in trial_records(study)}
    for _, row in written.iterrows():
        record = records[int(row["number"])]
        assert int(row["params"]) == record.params and int(row["flops"]) == record.flops
        assert row["metric"] == record.metric  # exact: the CSV keeps full precision
        assert row["params_ratio"] == pytest.approx(UNET["params"] / record.params, rel=1e-12)
        assert row["recipe_short"] == record.recipe_short
    assert written.set_index("number").loc[2, "duplicates"] == 17


def test_trials_csv_has_one_row_per_finished_trial(stored):
    _, report = stored
    written = pd.read_csv(report.paths["trials.csv"])
    assert written["number"].tolist() == list(range(20))  # trial 20 is running
    assert written["status"].value_counts().to_dict() == {"complete": 12, "stopped": 4, "infeasible": 3, "failed": 1}
    assert written["on_front"].sum() == 9  # trials 2 and 17 are the same point
    assert report.overview["by_status"]["running"] == 1


def test_index_html_is_self_contained(stored):
    _, report = stored
    page = report.paths["index.html"].read_text()
    assert "http" not in page.lower()
    assert 'src="file' not in page and "href=" not in page and "<script" not in page and "@import" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 4 and all(source.startswith("data:image/png;base64,") for source in sources)
    assert "url(" not in page


def test_index_html_says_what_was_run(stored):
    _, report = stored
    page = report.paths["index.html"].read_text()
    assert "Pareto report: quickstart" in page
    for badge in ("12 complete", "3 infeasible", "4 stopped", "1 failed", "1 running"):
        assert badge in page
    assert "CPU cores" in page
    assert "18 min 11 s" in page  # the sum of the trials' wall time
    assert "one multiply-add = one flop" in page
    assert "downsample_depth(levels=3) &gt; fire(squeeze_ratio=0.125) &gt; prune(0.8)" in page
    assert "597x" in page  # trial 9: 31.02M / 52k


def test_summary_md_is_the_pareto_table(stored):
    _, report = stored
    text = report.paths["summary.md"].read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 8 + 2  # header, the front, U-Net and Micro-Net
    assert rows[1].startswith("| 1 | 9 | 52.00k | 610.00M | 0.143 | 597x | 60.5x |")
    assert rows[-2].startswith("| ref | U-Net | 31.02M | 36.88G | 0.257 | 1.00x | 1.00x |")


@pytest.fixture
def no_drawing(monkeypatch):
    skip_drawing(monkeypatch)


def test_the_spaces_legend_follows_the_front_in_every_table(tmp_path, no_drawing):
    """The study carries its space's legend of the recipe column; the terminal table, summary.md and the page
    print it under the front (a study stored before it was kept has none, and prints none: ``stored``)."""
    import dataclasses

    from compressor.report import front_table

    legend = "recipe: cut N = the N deepest levels removed & more"
    study = make_study(dataclasses.replace(study_info(), recipe_legend=legend))
    add(study, params=500_000, flops=4 * 10**9, metric=0.2)
    built = build_report(study, tmp_path / "report")
    lines = front_table(study).splitlines()
    assert lines[lines.index(legend) - 1].startswith("ref ")  # right under the table's last row
    assert "Recipe: cut N = the N deepest levels removed &amp; more." in built.paths["summary.md"].read_text()
    assert "<p class=\"note\">Recipe: cut N = the N deepest levels removed &amp; more.</p>" in built.paths["index.html"].read_text()
    report = build_report(realistic_study(), tmp_path / "old")
    assert "cut N" not in report.paths["summary.md"].read_text() and "cut N" not in report.paths["index.html"].read_text()
    # a study is data: a legend that is not text is none, not a crash
    odd = make_study(dataclasses.replace(study_info(), recipe_legend={"0": "x"}), name="odd")
    add(odd, params=500_000, flops=4 * 10**9, metric=0.2)
    assert build_report(odd, tmp_path / "odd").paths["summary.md"].read_text().count("Recipe:") == 0
    assert front_table(odd).splitlines()[-1].startswith("not confirmed")


def test_a_failure_leaves_the_previous_report_intact(tmp_path, monkeypatch, no_drawing):
    study = make_study()
    add(study, params=500_000, flops=4 * 10**9, metric=0.2)
    first = build_report(study, tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    add(study, params=300_000, flops=3 * 10**9, metric=0.25)

    def broken(**_):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_module, "render_html", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build_report(study, tmp_path)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    assert first.pareto["number"].tolist() == [0]


def test_a_skipped_plot_is_removed_and_said(tmp_path, no_drawing):
    stale = tmp_path / "importance.png"
    stale.write_bytes(b"from an earlier report")
    study = make_study()
    add(study, params=500_000, flops=4 * 10**9, metric=0.2)
    report = build_report(study, tmp_path)
    assert not stale.exists() and "importance.png" not in report.paths
    assert "No parameter importance plot: parameter importance needs at least 4" in \
        report.paths["index.html"].read_text()


def test_learning_curves_are_drawn_for_the_references_and_the_trials_that_kept_one(tmp_path):
    from compressor.report.curves import curves_frame
    from compressor.study import read_study

    references = {"unet": {**UNET, "curve": [[100, 0.1], [200, 0.2], [300, 0.25]]}, "micronet": dict(MICRONET)}
    study = make_study(study_info(references=references))
    add(study, params=500_000, flops=4 * 10**9, metric=0.2, curve=[[10, 0.12], [20, 0.2]])
    add(study, params=900_000, flops=5 * 10**9, metric=0.1, curve=[[20, 0.1]])  # one point: no curve
    add(study, params=2_000_000, flops=9 * 10**9, metric=0.15, curve=[[10, 0.05], [20, 0.15]])
    frame = curves_frame(read_study(study), on_front={0})
    assert frame.groupby("name")["kind"].first().to_dict() == {"U-Net": "reference", "trial 0": "front", "trial 2": "trial"}
    assert frame[frame["name"] == "U-Net"]["metric"].tolist() == [0.1, 0.2, 0.25]
    report = build_report(study, tmp_path)
    assert report.paths["learning_curves.png"].read_bytes().startswith(PNG_SIGNATURE)
    assert "A curve still rising at its end was stopped before its plateau" in report.paths["index.html"].read_text()


def test_all_infeasible_says_the_front_is_empty(tmp_path):
    study = make_study(study_info(budget={"max_params": 40_000}))
    for params in (60_000, 200_000):
        add(study, status="infeasible", params=params, flops=params * 9000)
    report = build_report(study, tmp_path)
    assert report.pareto.empty
    assert "The Pareto front is empty: no feasible trial has completed yet (2 over budget" in \
        report.paths["index.html"].read_text()
    assert pd.read_csv(report.paths["pareto.csv"]).empty
    assert "the Pareto front is empty" in report.pareto_text()


def test_only_trials_that_learned_nothing_says_so(tmp_path):
    study = make_study(study_info())
    add(study, params=20_000, flops=10**8, metric=0.0)
    report = build_report(study, tmp_path)
    assert report.pareto.empty
    assert "The Pareto front is empty: the 1 completed trial(s) learned nothing (metric 0)" in \
        report.paths["index.html"].read_text()
    assert "learned nothing" in report.pareto_text()


def test_baselines_not_trained_yet(tmp_path):
    references = {"unet": {**UNET, "metric": None}, "micronet": {**MICRONET, "metric": None}}
    study = make_study(study_info(references=references))
    add(study, params=500_000, flops=4 * 10**9, metric=0.2)
    report = build_report(study, tmp_path)
    assert report.references["trained"].tolist() == [False, False]
    summary = report.paths["summary.md"].read_text()
    assert "| ref | U-Net | 31.02M | 36.88G | not trained |" in summary
    assert "Not trained yet: U-Net, Micro-Net" in report.paths["index.html"].read_text()


def test_load_study_never_creates_a_missing_sqlite_file(tmp_path):
    missing = tmp_path / "runs" / "nope" / "search.db"
    with pytest.raises(ConfigError, match="no study storage at .*search.db"):
        load_study(f"sqlite:///{missing}", "nope")
    assert not missing.exists() and not missing.parent.exists()


def test_load_study_lists_the_studies_present(tmp_path):
    url = f"sqlite:///{tmp_path}/search.db"
    make_study(storage=url, name="alpha")
    make_study(storage=url, name="beta")
    with pytest.raises(ConfigError, match=r"no study 'gamma' in sqlite:///.*search.db \(studies there: alpha, beta\)"):
        load_study(url, "gamma")
    assert load_study(url, "beta").study_name == "beta"


def test_load_study_bad_url_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot open storage nosuchdriver://x/y: "):
        load_study("nosuchdriver://x/y", "quickstart")


@pytest.mark.postgres
def test_report_of_a_postgresql_study(request, tmp_path):
    try:
        postgres_storage_url = request.getfixturevalue("postgres_storage_url")
    except pytest.FixtureLookupError:  # tests/conftest.py without its PostgreSQL fixtures
        pytest.skip("no postgres_storage_url fixture in tests/conftest.py")
    study = realistic_study(storage=postgres_storage_url)
    report = build_report(load_study(postgres_storage_url, "quickstart"), tmp_path)
    assert report.pareto["number"].tolist() == [9, 14, 4, 10, 2, 12, 0, 5]
    assert len(report.trials) == len(study.trials) == 20
    optuna.delete_study(study_name="quickstart", storage=postgres_storage_url)


def test_a_study_that_asks_for_latency_is_drawn_and_tabled_against_it(tmp_path):
    study = make_study(study_info(objectives=("metric", "params", "latency_ms")))
    add(study, params=500_000, flops=4 * 10**9, metric=0.2)  # latency flops / 1e8: 40 ms
    add(study, params=50_000, flops=10**9, metric=0.15)  # 10 ms
    report = build_report(study, tmp_path)
    assert "pareto_latency.png" in report.paths
    rows = [line for line in report.paths["summary.md"].read_text().splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert header[4] == "latency" and "latency vs U-Net" in header
    column = header.index("latency vs U-Net")
    table = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]
    cells = {row[1]: row[column] for row in table}
    assert cells["1"] == "41.0x" and cells["0"] == "10.2x" and cells["U-Net"] == "1.00x"  # U-Net: 410 ms
    assert cells["Micro-Net"] == "2.28x"  # 410 / 180
    # a confirmation stores no latency: its bars are left off the latency plot, nothing fails
    figure = plots.pareto_figure(report.trials, report.references, cost="latency_ms", metric_label="building IoU",
                                 confirmed=pd.DataFrame({"params": [50_000], "flops": [10**9], "confirmed_n": [2]}))
    assert figure.axes


def test_a_study_that_did_not_ask_for_latency_has_no_latency_plot(tmp_path):
    study = make_study()  # the trials carry a latency (the helper stores one), the study asked for none
    add(study, params=500_000, flops=4 * 10**9, metric=0.2)
    report = build_report(study, tmp_path)
    assert "pareto_latency.png" not in report.paths
    assert "latency" not in report.paths["summary.md"].read_text()
