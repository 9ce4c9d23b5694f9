"""``compressor train`` and ``compressor baseline`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from compressor.cli import main
from compressor.saving import load_saved


def _experiment(tmp_path: Path, **changes) -> Path:
    data = {
        "name": "tiny",
        "run_dir": str(tmp_path / "run"),
        "data": {"name": "synthetic", "patch_size": 32, "val_images": 1, "val_size": 48},
        "model": {"name": "unet", "args": {"base_width": 8, "depth": 2}},
        "train": {"steps": 3, "batch_size": 2, "eval_window": 48, "progress": False},
        "cost": {"input_size": 32},
    }
    data.update(changes)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_train_prints_metrics_and_writes_results(tmp_path, capsys):
    assert main(["train", str(_experiment(tmp_path)), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "run" / "train" / "unet-base_width=8-depth=2"  # the builder and its arguments
    metrics = json.loads((folder / "metrics.json").read_text())
    assert f"building IoU {metrics['metrics']['score']:.3f}" in out
    assert "trained 3 steps" in out and "with 1 threads" in out and str(folder) in out
    assert metrics["steps_done"] == 3 and metrics["threads"] == 1
    assert yaml.safe_load((folder / "config.yaml").read_text())["train"]["threads"] == 1
    assert torch.load(folder / "model.pt", weights_only=True)["format"] == "compressor.model/2"  # no pickle
    saved = load_saved(folder / "model.pt")
    assert saved.base == "unet" and saved.metadata["metrics"] == metrics["metrics"]
    assert sum(p.numel() for p in saved.model.parameters()) == metrics["cost"]["params"]
    # whether it learned anything, by the floor a search and compress judge by, and said when it did not
    assert metrics["learned"] == (metrics["metrics"]["score"] > metrics["floor"]["threshold"])
    assert ("learned nothing" in out) == (not metrics["learned"])


def test_train_says_when_a_model_is_not_above_the_floor(tmp_path, capsys):
    """A margin no score reaches: the model is at the floor, and train says so in one line (it still saves it)."""
    assert main(["train", str(_experiment(tmp_path)), "--threads", "1", "--set", "search.min_gain=0.99", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["learned"] is False and metrics["floor"]["threshold"] > 0.99
    assert main(["train", str(_experiment(tmp_path)), "--threads", "1", "--set", "search.min_gain=0.99",
                 "--overwrite"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("learned nothing"))
    assert line.startswith(f"learned nothing: building IoU {metrics['metrics']['score']:.3f} is not above the floor (all ")
    assert "(margin 0.990)" in line and line.endswith("train longer (train.steps, or auto), or check the data")


def test_train_another_model_with_a_recipe(tmp_path, capsys):
    recipe = tmp_path / "sep.yaml"
    recipe.write_text(yaml.safe_dump({"transforms": [{"name": "separable"}]}))
    config = str(_experiment(tmp_path))
    assert main(["train", config, "--model", "unet", "--model-arg", "base_width=8", "--model-arg", "depth=2", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["train", config, "--recipe", str(recipe), "--json"]) == 0
    transformed = json.loads(capsys.readouterr().out)
    assert transformed["model"] == "unet-base_width=8-depth=2+sep" and plain["model"] == "unet-base_width=8-depth=2"
    assert transformed["cost"]["params"] < plain["cost"]["params"]
    saved = load_saved(tmp_path / "run" / "train" / "unet-base_width=8-depth=2+sep" / "model.pt")
    assert saved.recipe == {"transforms": [{"name": "separable"}]}
    assert saved.model(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_baseline_trains_then_reuses(tmp_path, capsys):
    config = str(_experiment(tmp_path, train={"steps": 1, "batch_size": 2, "eval_window": 48, "progress": False}))
    assert main(["baseline", config, "--models", "micronet"]) == 0
    first = capsys.readouterr().out
    assert "micronet" in first and "trained" in first
    assert main(["baseline", config, "--models", "micronet", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records[0]["reused"] is True and records[0]["model"] == "micronet"
    assert Path(records[0]["path"]) == tmp_path / "run" / "baselines" / "micronet.json"


@pytest.mark.parametrize(
    ("contents", "args", "message"),
    [
        ({"train": {"stepz": 3}}, [], "tiny.yaml: train.stepz: unknown key; valid keys:"),
        ({"train": {"lr": "fast"}}, [], "tiny.yaml: train.lr: expected"),
        ({}, ["--set", "data.name=mnist"], "tiny.yaml: data.name: unknown dataset 'mnist'"),
        ({}, ["--model", "no.such.module:fn"], "cannot import module 'no.such.module'"),
        ({}, ["--recipe", "missing-recipe.yaml"], "missing-recipe.yaml"),
    ],
)
def test_mistakes_give_one_line_and_exit_2(cli, tmp_path, contents, args, message):
    result = cli("train", str(_experiment(tmp_path, **contents)), *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("compressor train: error: ") and message in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_missing_experiment_file_is_one_line(cli, tmp_path):
    result = cli("baseline", str(tmp_path / "none.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"compressor baseline: error: {tmp_path / 'none.yaml'}: cannot read experiment file: No such file or directory"


def test_ctrl_c_during_a_run_to_the_plateau_then_the_same_command_goes_on_from_its_last_evaluation(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import cli_env, ctrl_c_as_in_a_shell

    # max_steps leaves the interruption a few seconds to land in the training (once, on idle cores in a full run, the run
    # had ended its 200 steps before the signal came)
    config = _experiment(tmp_path, train={"steps": "auto", "schedule": "plateau", "max_steps": 400, "eval_every": 20,
                                          "patience": 50, "batch_size": 2, "eval_window": 48, "progress": False,
                                          "threads": 1})
    command = [sys.executable, "-m", "compressor", "train", str(config)]
    runs = tmp_path / "run" / "train"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
                               preexec_fn=ctrl_c_as_in_a_shell)
    deadline = time.monotonic() + 120
    while not list(runs.glob("*/train.state")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    ended_first = process.poll() is not None
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    kept = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert not ended_first, f"the run ended before it kept a state: {kept}\n{stdout}\n{stderr}"
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    (state,) = runs.glob("*/train.state")
    assert state.parent.name == "unet-base_width=8-depth=2"
    again = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert again.returncode == 0, again.stderr
    resumed = [line for line in again.stderr.splitlines() if ": resumed at step " in line]
    assert resumed and int(resumed[0].split("resumed at step ")[1].split()[0]) >= 20, again.stderr
    assert not state.exists() and (state.parent / "model.pt").is_file()
