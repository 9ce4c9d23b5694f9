"""Storage, disks, images, imports and names that a run cannot use: one line each, nothing half-written.

Each test calls the CLI in-process (``compressor.cli.main``) and reads all of stderr at the file
descriptor (``capfd``: a thread's traceback would show there too): exactly one ``compressor CMD:
error:`` line naming the problem, no traceback, exit code 2 for a user's mistake and 1 for a run
that started and could not go on.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.abc
import os
import shutil
import sqlite3
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from conftest import one_error_line
from optuna.trial import TrialState
from PIL import Image
from report_studies import add, make_study, skip_drawing, study_info
from search_helpers import tiny_experiment_data, write_tiny_experiment

from compressor.cli import main
from compressor.data import DataError, FolderConfig
from compressor.data.readers import image_size, read_array
from compressor.errors import ConfigError
from compressor.report import build_report, default_out_dir
from compressor.runtime import deploy_available
from compressor.search.runner import TrialRunner
from compressor.study import TrialRecord
from compressor.study.storage import check_lasting


def one_error(capfd, command: str) -> str:
    """The one ``compressor COMMAND: error:`` line on stderr; nothing else there but progress notes."""
    out, err = capfd.readouterr()
    return one_error_line(err, command, out=out)


def files_under(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*")}


# -- an in-memory storage ---------------------------------------------------------------------

IN_MEMORY = ("sqlite:///:memory:", "sqlite://", "sqlite:///file::memory:?cache=shared&uri=true",
             "sqlite+pysqlite:///file:x?mode=memory&uri=true")


@pytest.mark.parametrize("url", IN_MEMORY)
def test_check_lasting_refuses_every_in_memory_sqlite_url(url):
    with pytest.raises(ConfigError, match="in-memory database, lost when the process ends"):
        check_lasting(url)


@pytest.mark.parametrize("url", ["sqlite:///runs/quickstart/search.db", "sqlite:////abs/search.db",
                                 "postgresql://search:secret@db:5432/studies", "not a url"])
def test_check_lasting_lets_files_servers_and_garbage_through(url):
    assert check_lasting(url) == url  # garbage: open_storage says what is wrong with it


@pytest.mark.parametrize("command", [
    ["search", "tiny.yaml"], ["worker", "--study", "tiny"], ["confirm", "--study", "tiny", "--seeds", "1"],
    ["report", "--study", "tiny"], ["export", "--study", "tiny", "--trial", "0", "--out", "x.pt"],
])
def test_an_in_memory_storage_is_refused_before_anything_runs(command, tmp_path, monkeypatch, capfd):
    # Before: a search ran to its end on it, printed 78 lines of heartbeat tracebacks (the heartbeat
    # thread's own connection sees another, empty database), exited 0 and lost every trial.
    monkeypatch.chdir(tmp_path)
    write_tiny_experiment(tmp_path / "tiny.yaml", Path("run"), n_trials=1)
    assert main([*command, "--storage", "sqlite:///:memory:"]) == 2
    line = one_error(capfd, command[0])
    assert line.endswith("storage sqlite:///:memory: is an in-memory database, lost when the process ends; a study "
                         "must outlive it: give a file (sqlite:///PATH/search.db) or a database server's URL")
    assert files_under(tmp_path) == {"tiny.yaml"}  # no data cache, no run folder, no study


# -- a run folder that cannot be written, a full disk --------------------------------------------

def _no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def tiny_search(tmp_path, monkeypatch):
    """A tiny search experiment in the current folder, trained 2 steps a trial; every finished trial
    counts as on the front, so the first one writes its weights."""
    monkeypatch.chdir(tmp_path)
    experiment = tiny_experiment_data(Path("run"), n_trials=2)
    experiment["train"]["steps"] = 2
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(experiment))
    monkeypatch.setattr(TrialRunner, "_on_front", lambda self, trial, record: True)
    return tmp_path


def _trials(root: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{root / 'run' / 'search.db'}")
    try:
        return study.get_trials(deepcopy=False)
    finally:
        study._storage.remove_session()


@pytest.mark.parametrize("where", ["weights", "artifact"])
def test_a_full_disk_fails_the_trial_with_the_reason_and_ends_the_search_in_one_line(
    where, tiny_search, monkeypatch, capfd
):
    if where == "weights":  # torch writing the trial's weights to the scratch file
        save = torch.save

        def full_disk(obj, file, *args, **kwargs):
            if "artifacts" in str(getattr(file, "name", file)):
                raise _no_space()
            return save(obj, file, *args, **kwargs)

        monkeypatch.setattr(torch, "save", full_disk)
    else:  # copying them into the store: half the bytes written, then the disk is full
        def half_then_full(source, target, *args, **kwargs):
            target.write(source.read()[:100])
            raise _no_space()

        monkeypatch.setattr(shutil, "copyfileobj", half_then_full)

    assert main(["search", "tiny.yaml"]) == 1  # a run that failed
    line = one_error(capfd, "search")
    assert line.startswith("compressor search: error: trial 0 failed and the search stopped: cannot write the "
                           "weights of trial 0 in ")
    assert line.endswith("run/artifacts: No space left on device")

    (trial, *later) = _trials(tiny_search)
    assert later == []  # no trial started after it
    assert trial.state == TrialState.FAIL  # not RUNNING
    record = TrialRecord.from_trial(trial)
    assert record.status == "failed" and record.failure.endswith("run/artifacts: No space left on device")
    assert os.listdir(tiny_search / "run" / "artifacts") == []  # no scratch folder, no partial artifact


def test_a_study_that_stops_taking_writes_ends_the_search_in_one_line(tiny_search, monkeypatch, capfd):
    def disk_full(*args, **kwargs):
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as error:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from error

    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_user_attr", disk_full)
    assert main(["search", "tiny.yaml"]) == 1
    assert one_error(capfd, "search") == ("compressor search: error: cannot write the study in sqlite:///run/search.db: "
                                          "database or disk is full")
    assert [trial.state for trial in _trials(tiny_search)] == [TrialState.FAIL]


def test_a_run_folder_under_a_file_is_one_line_and_nothing_is_made(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a file, not a folder\n")
    write_tiny_experiment(tmp_path / "tiny.yaml", Path("afile") / "run", n_trials=1)
    assert main(["search", "tiny.yaml"]) == 2
    assert one_error(capfd, "search") == ("compressor search: error: cannot open storage sqlite:///afile/run/search.db: "
                                          "cannot make the folder afile/run: afile is a file, not a folder")
    assert files_under(tmp_path) == {"afile", "tiny.yaml"}


def test_a_file_in_the_way_of_the_weights_folder_is_one_line(tiny_search, capfd):
    (tiny_search / "run").mkdir()
    (tiny_search / "run" / "artifacts").write_text("in the way\n")
    assert main(["search", "tiny.yaml"]) == 2
    line = one_error(capfd, "search")
    assert line.startswith("compressor search: error: cannot make the weights folder ")
    assert line.endswith("run/artifacts: a file of that name is in the way")
    assert not [trial for trial in _trials(tiny_search) if trial.state != TrialState.WAITING]  # none ran


# -- a huge image in a folder dataset ----------------------------------------------------------

def huge_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG that says it is ``width`` x ``height`` (its header; no pixel data: Pillow refuses or
    reads it by the header alone)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


HUGE = ("an image of 20000x20000 pixels (400.00M), more than the 178.96M pixels Pillow decodes (its guard "
        "against decompression bombs); cut it into tiles, or save it as a TIFF (read without that limit)")


def test_an_image_over_pillows_limit_is_refused_naming_the_file_and_its_size(tmp_path):
    path = huge_png(tmp_path / "big.png")
    for read in (image_size, read_array):
        with pytest.raises(DataError) as caught:
            read(path)
        assert str(caught.value) == f"{path}: {HUGE}"


def test_an_image_between_pillows_warning_and_its_limit_is_read_quietly(tmp_path):
    path = huge_png(tmp_path / "large.png", 10000, 10000)  # 100M pixels: Pillow warns above 89M
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image_size(path) == (10000, 10000)


def test_a_huge_png_in_a_folder_dataset_is_one_line(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    huge_png(tmp_path / "huge" / "images" / "a.png")
    (tmp_path / "huge" / "masks").mkdir()
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "huge" / "masks" / "a.png")
    with pytest.raises(DataError, match="20000x20000"):
        FolderConfig(root="huge", patch_size=32).build()
    experiment = {**tiny_experiment_data(Path("run")), "data": {"name": "folder", "root": "huge", "patch_size": 32}}
    (tmp_path / "huge.yaml").write_text(yaml.safe_dump(experiment))
    before = files_under(tmp_path)
    assert main(["train", "huge.yaml"]) == 2
    assert one_error(capfd, "train") == f"compressor train: error: huge/images/a.png: {HUGE}"
    assert files_under(tmp_path) == before


# -- a model package that cannot import (smp without a working torchvision) ---------------------

class _TorchvisionBroken(importlib.abc.MetaPathFinder):
    """What importing segmentation_models_pytorch does on the README's CPU install, where PyPI's
    torchvision wheel does not match the CPU torch."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "segmentation_models_pytorch":
            raise RuntimeError("operator torchvision::nms does not exist")
        return None


@pytest.fixture
def smp_cannot_import(monkeypatch):
    for name in list(sys.modules):
        if name.partition(".")[0] == "segmentation_models_pytorch":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_TorchvisionBroken(), *sys.meta_path])


def _smp_model_file(path: Path) -> Path:
    """A model file of an smp U-Net as compressor writes it (the import fails before its weights are read)."""
    torch.save({"format": "compressor.model/2", "output": None, "state_dict": {}, "recipe": None, "base": None,
                "origin": {"base": "segmentation_models_pytorch:Unet", "steps": [], "input_shape": None,
                           "args": {"encoder_name": "resnet18", "encoder_weights": None, "classes": 2}},
                "input_shape": [1, 3, 64, 64], "metadata": {}}, path)
    return path


def test_cost_and_deploy_say_in_one_line_that_the_model_package_cannot_import(
    smp_cannot_import, tmp_path, monkeypatch, capfd
):
    if not deploy_available():
        pytest.skip("the deploy extra (onnx, onnxruntime) is not installed: pip install -e '.[deploy]'")
    monkeypatch.chdir(tmp_path)
    _smp_model_file(tmp_path / "smp.pt")
    assert main(["cost", "segmentation_models_pytorch:Unet"]) == 2
    cost = one_error(capfd, "cost")
    assert main(["deploy", "smp.pt", "--out", "smp.onnx"]) == 2
    deploy = one_error(capfd, "deploy")
    for line in (cost, deploy):
        assert "'segmentation_models_pytorch" in line and "operator torchvision::nms does not exist" in line
    assert deploy.startswith("compressor deploy: error: smp.pt: ")
    assert files_under(tmp_path) == {"smp.pt"}


# -- names: the report's folder and summary.md ---------------------------------------------------

@pytest.mark.parametrize("name, folder", [
    ("quickstart", "quickstart"), ("../../x", "_._.._x"), ("..", "_."), (".", "_"), ("", "_"),
    ("/etc/x", "_etc_x"), ("a\\b", "a_b"), ("C:x", "C_x"), (".hidden", "_hidden"), ("my study", "my study"),
])
def test_the_default_report_folder_is_one_folder_inside_reports(name, folder):
    path = default_out_dir(name)
    assert path.parent == Path("reports") and path.name == folder


def test_a_study_name_with_dots_and_slashes_writes_its_report_inside_reports(tmp_path, monkeypatch, capfd):
    skip_drawing(monkeypatch)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    study = make_study(storage=f"sqlite:///{tmp_path / 'named.db'}", name="../../x")
    add(study, params=500_000, flops=4 * 10**9, metric=0.2)
    assert main(["report", "--study", "../../x", "--storage", f"sqlite:///{tmp_path / 'named.db'}"]) == 0
    out, err = capfd.readouterr()
    assert "Traceback" not in err
    assert out.splitlines()[-1] == "report: reports/_._.._x/index.html"
    assert (work / "reports" / "_._.._x" / "summary.md").is_file()
    assert files_under(tmp_path) - {"named.db"} == {"a", "a/b", "a/b/reports"} | {
        f"a/b/reports/_._.._x{'/' + name if name else ''}" for name in ["", *os.listdir(work / "reports" / "_._.._x")]}


def test_summary_md_escapes_the_html_in_names(tmp_path, monkeypatch):
    skip_drawing(monkeypatch)
    info = dataclasses.replace(study_info(), model="<svg onload=alert(1)>", space="<b>space</b>",
                               metric_label="<script>alert(1)</script> IoU")
    study = make_study(info, name="<img src=x onerror=alert(1)> & `co`\n# injected")
    add(study, params=500_000, flops=4 * 10**9, metric=0.2, recipe="<iframe src=javascript:alert(1)>")
    summary = build_report(study, tmp_path).paths["summary.md"].read_text()
    for tag in ("<img", "<svg", "<b>", "<script", "<iframe"):
        assert tag not in summary
    assert summary.splitlines()[0] == "# Pareto front of study &lt;img src=x onerror=alert(1)> &amp; `co` # injected"
    assert "Space &lt;b>space&lt;/b> on &lt;svg onload=alert(1)>;" in summary
    assert "&lt;script>alert(1)&lt;/script> IoU" in summary and "&lt;iframe src=javascript:alert(1)>" in summary
    assert not [line for line in summary.splitlines() if line.startswith("# ") and "injected" not in line]
