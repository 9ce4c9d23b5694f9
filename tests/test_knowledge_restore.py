"""knowledge.py's restored runs (experiments/benchmarks/knowledge.py): a teacher trained again beside its
stored record is checked at each evaluation as it trains, and stops at the first that is not the stored one."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import benchmark_script


@pytest.fixture(scope="module")
def knowledge():
    yield from benchmark_script("knowledge")


def test_a_teacher_trained_again_stops_at_its_first_evaluation_off_the_stored_curve(tmp_path, knowledge, monkeypatch):
    import compressor.train

    folder = tmp_path / "unet-r18"
    (folder / "jobs").mkdir(parents=True)
    asked = {}

    class Asked(Exception):
        pass

    def train(model, data, config, **kwargs):
        asked.update(kwargs)
        raise Asked

    monkeypatch.setattr(compressor.train, "train", train)
    monkeypatch.setattr(knowledge, "build_network", lambda key, data: torch.nn.Conv2d(1, 2, 1))
    args = SimpleNamespace(run_dir=str(tmp_path), teacher_max_steps=3000, eval_every=100, patience=4,
                           finetune_steps=400, patch_size=64, threads=1)
    data = SimpleNamespace(in_channels=1, num_classes=2)
    job = {"job": "teacher", "kind": "teacher", "seed": 0}
    with pytest.raises(Asked):
        knowledge.run_job("unet-r18", job, args, data)
    assert "callback" not in asked and "evaluate_at" not in asked  # nothing stored: an ordinary run
    (folder / "teacher.stored.json").write_text(json.dumps({"curve": [[100, 0.25], [200, 0.3]]}))
    with pytest.raises(Asked):
        knowledge.run_job("unet-r18", job, args, data)
    assert asked["evaluate_at"] == [100, 200]
    assert asked["callback"](100, SimpleNamespace(score=0.25)) is True
    with pytest.raises(SystemExit, match="unet-r18: the teacher is not the stored one .*0.24000 at step 100 against 0.25000"):
        asked["callback"](100, SimpleNamespace(score=0.24))


def test_another_run_folder_of_the_same_name_is_refused(tmp_path, knowledge, monkeypatch):
    monkeypatch.setattr(knowledge, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "knowledge-auto.json").write_text(json.dumps({"run_dir": "runs/knowledge-auto", "networks": {}}))
    monkeypatch.setattr(sys, "argv", ["knowledge.py", "--summarize", "--run-dir", str(tmp_path / "auto")])
    with pytest.raises(SystemExit, match="holds the records of runs/knowledge-auto, not of .*auto: name the run folder"):
        knowledge.main()
    assert json.loads((tmp_path / "results" / "knowledge-auto.json").read_text())["run_dir"] == "runs/knowledge-auto"
