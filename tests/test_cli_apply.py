from __future__ import annotations

import re
from pathlib import Path

import torch
from conftest import assert_refusal

import compressor
from compressor.cli import main

RECIPE = Path(__file__).resolve().parents[1] / "experiments" / "recipes" / "micronet_like.yaml"


def test_the_papers_recipe_makes_unet_at_least_25x_smaller(tmp_path, capsys):
    out = tmp_path / "micro.pt"
    assert main(["apply", "unet", "--recipe", str(RECIPE), "--input-shape", "1,3,64,64", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    (final,) = [line for line in text.splitlines() if line.startswith("4. ")]  # the recipe's last step
    ratio = float(re.findall(r"([0-9.]+)x", final)[0])
    assert final.startswith("4. dilation") and ratio >= 25
    saved = compressor.load_saved(out)
    assert saved.recipe == compressor.Recipe.load(RECIPE).to_data() and saved.base == "unet"
    params = sum(p.numel() for p in saved.model.parameters())
    assert 31_024_960 / params == ratio or abs(31_024_960 / params - ratio) < 0.01
    assert saved.model(torch.randn(1, 3, 48, 40)).shape == (1, 2, 48, 40)


def test_transform_options_on_a_users_own_factory(cli, tmp_path):
    result = cli("apply", "networks:ResidualStridedNet", "--transform", "dilation:rates=[1,2]",
                 "--transform", "prune:ratio=0.3", "--input-shape", "1,3,32,32")
    assert result.returncode == 0, result.stderr
    assert "1. dilation" in result.stdout and "2. prune" in result.stdout and "not saved" in result.stdout


def test_a_transform_that_does_not_apply_is_one_line_and_exit_2(cli):
    result = cli("apply", "networks:TinyClassifier", "--transform", "downsample_depth")
    assert_refusal(result, "apply", "step 1 (downsample_depth)", "feeds layer 'pool'")
    assert result.stderr.count("\n") == 1  # nothing else at all


def test_unknown_transform_lists_the_valid_ones(cli):
    result = cli("apply", "unet", "--transform", "squeeze")
    # every registered transform, the plugin installed for the tests (tests/plugins) included
    assert_refusal(result, "apply",
                   "unknown transform 'squeeze'; valid names: dilation, downsample_depth, fire, grouped, low_rank, prune, "
                   "separable, skip_fusion")


def test_nothing_to_apply_is_an_error(cli):
    result = cli("apply", "unet")
    assert_refusal(result, "apply", "nothing to apply")


def test_transforms_lists_the_registry_with_defaults(cli):
    result = cli("transforms")
    assert result.returncode == 0
    for name in compressor.TRANSFORMS.names():
        assert re.search(rf"^{name}: ", result.stdout, re.MULTILINE)
    assert "squeeze_ratio (number; default 0.25)" in result.stdout
    assert "rates (list of integers; default [1, 1, 2, 3])" in result.stdout
