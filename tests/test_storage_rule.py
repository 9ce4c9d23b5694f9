"""One storage rule: a command given no ``--storage`` finds the study where ``compressor search`` put it."""

from __future__ import annotations

import shutil
from pathlib import Path

from search_helpers import write_tiny_experiment


def test_every_command_finds_a_study_named_apart_from_its_run_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the experiment is "tiny", its run folder runs/elsewhere, its study "foo": none of them runs/foo
    config = write_tiny_experiment(tmp_path / "tiny.yaml", Path("runs") / "elsewhere", n_trials=1)
    searched = cli("search", str(config), "--study", "foo")
    assert searched.returncode == 0, searched.stderr
    assert (tmp_path / "runs" / "elsewhere" / "search.db").is_file() and not (tmp_path / "runs" / "foo").exists()
    reported = cli("report", "--study", "foo", "--out", "report")
    assert reported.returncode == 0, reported.stderr
    assert (tmp_path / "report" / "summary.md").is_file()
    joined = cli("worker", "--study", "foo")  # the study holds its target already: the worker runs nothing
    assert joined.returncode == 0, joined.stderr
    assert "worker joined study 'foo' in sqlite:///runs/elsewhere/search.db" in joined.stdout
    exported = cli("export", "--study", "foo", "--trial", "0", "--out", "t.pt", "--untrained")
    assert exported.returncode == 0, exported.stderr

    # the same name in two files: which one is not guessed
    shutil.copy(tmp_path / "runs" / "elsewhere" / "search.db", tmp_path / "runs" / "search.db.copy")
    (tmp_path / "runs" / "again").mkdir()
    shutil.move(tmp_path / "runs" / "search.db.copy", tmp_path / "runs" / "again" / "search.db")
    refused = cli("report", "--study", "foo", "--out", "report2")
    assert refused.returncode == 2 and not (tmp_path / "report2").exists()
    (line,) = refused.stderr.strip().splitlines()
    assert line == ("compressor report: error: study 'foo' is in 2 storages (runs/again/search.db, "
                    "runs/elsewhere/search.db): give --storage sqlite:///PATH")
    # a study in no file: the default's absence, as before
    missing = cli("report", "--study", "nowhere")
    assert missing.returncode == 2 and "no study storage at runs/nowhere/search.db" in missing.stderr


def test_the_lookup_reads_odd_folder_names_and_symlinks_once_and_creates_nothing(tmp_path, monkeypatch):
    import optuna

    from compressor.study.storage import find_storage_url

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "exp#1").mkdir(parents=True)
    optuna.create_study(study_name="odd", storage="sqlite:///runs/exp#1/search.db")
    (tmp_path / "runs" / "latest").symlink_to(tmp_path / "runs" / "exp#1")  # the same file by another path
    before = sorted(path.name for path in (tmp_path / "runs").iterdir())
    assert find_storage_url("odd") in ("sqlite:///runs/exp#1/search.db", "sqlite:///runs/latest/search.db")
    assert find_storage_url("other") == "sqlite:///runs/other/search.db"  # nowhere: the default, not created
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == before


def test_a_studys_stored_settings_are_read_through_any_sqlite_url_and_nothing_is_created(tmp_path):
    """What a resumed search builds by (its build version, its floor) is read before anything is
    built: through the URL as SQLAlchemy opens it (a query string, %-escapes), and a file that is
    missing or holds no such study is no study and is left as it was."""
    import optuna

    from compressor.study.records import FORMAT
    from compressor.study.storage import stored_attrs

    database = tmp_path / "search.db"
    study = optuna.create_study(study_name="old", storage=f"sqlite:///{database}")
    study.set_user_attr("compressor_format", FORMAT)
    study.set_user_attr("init", "inherit")
    for url in (f"sqlite:///{database}", f"sqlite:///{database}?timeout=30",
                f"sqlite:///{str(database).replace('search', 'searc%68')}"):
        assert stored_attrs(url, "old") == {"compressor_format": FORMAT, "init": "inherit"}, url
        assert stored_attrs(url, "new") is None
    missing, foreign = tmp_path / "none" / "search.db", tmp_path / "empty.db"
    foreign.write_bytes(b"")
    assert stored_attrs(f"sqlite:///{missing}", "old") is None and not missing.parent.exists()
    assert stored_attrs(f"sqlite:///{foreign}", "old") is None and foreign.read_bytes() == b""
