"""``compressor report`` on a SQLite study where the search puts it, one trial still running."""

from __future__ import annotations

import pandas as pd
import pytest
from report_studies import add, make_study, skip_drawing

from compressor.cli import main


@pytest.fixture
def search_dir(tmp_path, monkeypatch):
    """A working folder with ``runs/demo/search.db``: three finished trials and one running."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    url = "sqlite:///runs/demo/search.db"
    study = make_study(storage=url, name="demo")
    add(study, params=980_000, flops=6_100_000_000, metric=0.248, recipe="downsample_depth(levels=2) > fire")
    add(study, params=152_000, flops=1_400_000_000, metric=0.204, recipe="downsample_depth(levels=2) > prune(0.5)")
    add(study, status="infeasible", params=2_900_000, flops=14_200_000_000)
    study.ask()  # a worker is training trial 3 right now
    return tmp_path


def test_report_with_the_default_paths(search_dir, capsys):
    assert main(["report", "--study", "demo"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("Pareto front of study demo: 2 trial(s)")
    header = lines[1].split()
    assert header[:5] == ["rank", "trial", "params", "FLOPs", "building"]
    assert lines[3].split()[:7] == ["1", "1", "152.00k", "1.40G", "0.204", "204x", "26.3x"]
    assert lines[4].split()[:7] == ["2", "0", "980.00k", "6.10G", "0.248", "31.7x", "6.05x"]
    assert lines[3].split()[7:] == ["downsample_depth(levels=2)", ">", "prune(0.5)"]
    assert lines[5].split()[:3] == ["ref", "U-Net", "31.02M"]
    index = search_dir / "reports" / "demo" / "index.html"
    assert lines[-1] == f"report: {index.relative_to(search_dir)}"
    assert index.is_file()
    trials = pd.read_csv(search_dir / "reports" / "demo" / "trials.csv")
    assert trials["number"].tolist() == [0, 1, 2]  # the running trial is not a row
    assert "1 running" in index.read_text()


def test_report_with_explicit_storage_and_out(search_dir, capsys, monkeypatch):
    skip_drawing(monkeypatch)
    out_dir = search_dir / "elsewhere"
    url = f"sqlite:///{search_dir / 'runs' / 'demo' / 'search.db'}"
    assert main(["report", "--study", "demo", "--storage", url, "--out", str(out_dir)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"report: {out_dir / 'index.html'}")
    assert pd.read_csv(out_dir / "pareto.csv")["number"].tolist() == [1, 0]


def test_a_missing_study_is_one_line_and_exit_2(search_dir, cli):
    result = cli("report", "--study", "nope", "--storage", "sqlite:///runs/demo/search.db")
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == ("compressor report: error: no study 'nope' in sqlite:///runs/demo/search.db "
                        "(studies there: demo)")


def test_a_missing_storage_is_refused_without_creating_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--study", "quickstart"]) == 2
    assert capsys.readouterr().err.strip() == (
        "compressor report: error: no study storage at runs/quickstart/search.db (file not found); "
        "run `compressor search` first, or pass --storage URL"
    )
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()
