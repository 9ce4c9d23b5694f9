from __future__ import annotations

import json

import pytest

from compressor.cli import main


def test_cost_json_reports_the_unet_count(capsys):
    assert main(["cost", "unet", "--json", "--input-shape", "1,3,64,64"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 31_024_960
    assert data["flops"] > 0 and "encoder" in data["modules"]
    assert "multiply-add" in data["flop_convention"]


def test_cost_against_a_baseline_prints_the_ratio(capsys):
    assert main(["cost", "micronet", "--baseline", "unet", "--input-shape", "1,3,64,64"]) == 0
    out = capsys.readouterr().out
    assert "1.06M" in out and "29.38x" in out
    assert "one multiply-add = one flop" in out
    assert "aten::max_pool2d" in out  # uncounted ops are shown


def test_a_baseline_is_built_for_the_models_input_channels(capsys):
    """A 1-band model (the quickstart's data) against U-Net: U-Net is built for 1 channel, not its default 3."""
    assert main(["cost", "micronet", "--model-arg", "in_channels=1", "--baseline", "unet", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == [1, 1, 224, 224]
    assert data["baseline"]["params"] == 31_024_960 - 2 * 64 * 9  # U-Net's first conv reads 1 channel, not 3


def test_a_baseline_is_a_model_file_too_and_its_errors_name_it(tmp_path, capsys):
    saved = tmp_path / "fire.pt"
    assert main(["apply", "unet", "--model-arg", "base_width=8", "--transform", "fire", "--input-shape", "1,3,32,32",
                 "--out", str(saved)]) == 0
    capsys.readouterr()
    assert main(["cost", "unet", "--model-arg", "base_width=8", "--baseline", str(saved), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["baseline"]["model"] == str(saved) and data["baseline"]["params"] < data["params"]
    assert main(["cost", "unet", "--baseline", "no.such.module:fn"]) == 2
    assert capsys.readouterr().err.startswith("compressor cost: error: --baseline no.such.module:fn: cannot import")


def test_model_args_and_inferred_input_channels(capsys):
    assert main(["cost", "unet", "--model-arg", "in_channels=1", "--model-arg", "base_width=8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == [1, 1, 224, 224]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cost", "no.such.module:fn"], "cannot import module 'no.such.module'"),
        (["cost", "builtins:dict", "--model-arg", "x=4"], "returned dict, not a torch.nn.Module"),
        (["cost", "unet", "--input-shape", "1,3,abc"], "--input-shape '1,3,abc'"),
        (["cost", "unet", "--model-arg", "oops"], "model argument 'oops' must look like key=value"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(cli, args, message):
    result = cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_help_lists_subcommands(cli):
    result = cli("--help")
    assert result.returncode == 0 and "cost" in result.stdout


def test_a_registered_model_is_built_even_beside_a_file_of_its_name(tmp_path, monkeypatch, capsys):
    """MODEL names a file when it ends in .pt/.pth or is a file, but never when it is a registered model's
    name or an import path: a stray file called `unet` in the working folder does not shadow U-Net."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "unet").write_text("not a model")
    assert main(["cost", "unet", "--json", "--input-shape", "1,3,64,64"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 31_024_960
    (tmp_path / "mine").write_text("not a model")  # a file, named as no builder: read as one, and refused
    assert main(["cost", "mine"]) == 2
    assert capsys.readouterr().err == "compressor cost: error: mine: not a model file: a text file, not a PyTorch file\n"
