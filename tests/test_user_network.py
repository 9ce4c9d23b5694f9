"""A user's own network end to end: compress judges what it saved, and nothing lies or overwrites on the way."""

from __future__ import annotations

import dataclasses
import json

import pytest
from search_helpers import write_tiny_experiment

import compressor
from compressor.compression import compress
from compressor.data import SyntheticConfig
from compressor.floor import Floor
from compressor.train import TrainConfig, train


@pytest.fixture(scope="module")
def data():
    return SyntheticConfig(labels="binary", patch_size=32, train_images=32, val_images=1, val_size=48).build()


@pytest.fixture(scope="module")
def compressed(data):
    """A trained U-Net compressed by fire, with 3 steps of fine-tuning."""
    import torch

    torch.manual_seed(0)
    teacher = compressor.unet(in_channels=3, base_width=8, norm="batch")
    train(teacher, data, TrainConfig(steps=40, lr=3e-3, batch_size=4, progress=False, eval_window=48, eval_overlap=0,
                                     threads=1))
    experiment = compressor.Experiment.from_dict({
        "data": {"name": "synthetic"},
        "train": {"steps": 3, "batch_size": 4, "progress": False, "eval_window": 48, "eval_overlap": 0, "threads": 1},
        "finetune": {"reconstruct": "none"}})
    return compress(teacher.eval(), [{"name": "fire"}], experiment, data=data)


def test_compress_measures_the_floor_on_the_validation_pixels(compressed, data):
    assert compressed.floor == Floor.of_data(data, "score", margin=0.02)  # search.min_gain's default
    stored = compressed.to_dict()
    assert stored["floor"]["threshold"] == pytest.approx(compressed.floor.threshold)
    assert stored["learned"] == compressed.learned == (compressed.student_metrics.score > compressed.floor.threshold)


def test_compress_says_when_the_student_learned_nothing(compressed):
    student, teacher = compressed.student_metrics.score, compressed.teacher_metrics.score
    metric = compressed.teacher_metrics.score_name
    # a floor between the student and the teacher: the student is no model, the teacher is one
    between = dataclasses.replace(compressed, floor=Floor(constant=student, constant_class="background", margin=0.0))
    assert teacher > student and not between.learned and between.verdict == "below floor"
    line = between.verdict_line()
    assert line.startswith(f"the student learned nothing: {metric} {student:.3f} is not above the floor "
                           f"(all background scores {metric} {student:.3f}")
    assert "it is saved, but it is no model; try finetune.reconstruct: hints or more fine-tuning steps" in line
    assert between.knowledge_lines()[0] == line and between.to_dict()["verdict"] == "below floor"
    # a floor above both: the teacher itself has learned nothing to keep
    above = dataclasses.replace(compressed, floor=Floor(constant=teacher, constant_class="background", margin=0.01))
    assert above.verdict_line().endswith(f"the teacher ({teacher:.3f}) is not above it either: train it longer first")
    # a floor under both: the student is a model, and the line says how much of the teacher's gain it kept
    under = dataclasses.replace(compressed, floor=Floor(constant=0.0, constant_class="background", margin=0.0))
    assert under.learned and under.verdict == ("kept" if student >= teacher else "lost")
    assert f"{student / teacher:.0%} of the teacher's gain over the floor" in under.verdict_line()


def test_compress_cli_exits_3_and_says_so_when_the_student_is_below_the_floor(cli, tmp_path):
    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run")
    out = tmp_path / "small.pt"
    # search.min_gain 0.99: no score clears the floor
    args = ("compress", "unet", str(config), "--transform", "fire", "--steps", "1", "--out", str(out),
            "--set", "finetune.reconstruct=none", "--set", "search.min_gain=0.99")
    result = cli(*args, "--json")
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    assert report["learned"] is False and report["verdict"] == "below floor"
    assert report["floor"]["threshold"] == pytest.approx(report["floor"]["constant"] + 0.99)
    assert compressor.load_saved(out).metadata["verdict"] == "below floor"  # saved, and marked
    text = cli(*args)
    assert text.returncode == 3 and "Traceback" not in text.stderr
    assert any(line.startswith("the student learned nothing: building IoU ") for line in text.stdout.splitlines())


def _large_logit_unet():
    """A U-Net whose logits reach ~2.7e4, as a user's network trained without a bound on them can."""
    import torch

    torch.manual_seed(0)
    network = compressor.unet(base_width=4, norm="batch").eval()
    last = [module for module in network.modules() if isinstance(module, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(1e6)
    return network


def test_deploy_judges_a_difference_at_the_scale_of_the_logits(cli, tmp_path):
    compressor.save_model(tmp_path / "big.pt", _large_logit_unet())
    out = tmp_path / "big.onnx"
    passed = cli("deploy", str(tmp_path / "big.pt"), "--out", str(out), "--input-size", "32")
    assert passed.returncode == 0 and "Traceback" not in passed.stderr, passed.stderr
    measured = json.loads((tmp_path / "big.onnx.json").read_text())
    assert max(measured["max_abs_diff"].values()) > 1e-3  # beyond the old fixed tolerance, a 1e-6 share of the logits
    # the absolute rule alone refuses it, in one line, and writes nothing new
    out.unlink()
    refused = cli("deploy", str(tmp_path / "big.pt"), "--out", str(out), "--input-size", "32", "--max-rel-diff", "0")
    assert refused.returncode == 2 and not out.exists()
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("compressor deploy: error: the ONNX model's logits differ from PyTorch's by ")
    assert "tolerance max(0.001, 0 x the largest logit)" in line and "nothing was written" in line
