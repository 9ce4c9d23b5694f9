from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
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
    assert f"saved to {out} (load with compressor.load_model({str(out)!r}))" in text  # a registered model: no trust
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


def test_a_users_own_network_saved_says_it_loads_only_with_trust(cli, tmp_path):
    """The line after --out tells how the file loads: a builder of the user's own runs only when trusted."""
    out = tmp_path / "small.pt"
    result = cli("apply", "networks:ResidualStridedNet", "--transform", "prune:ratio=0.3", "--input-shape",
                 "1,3,32,32", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"saved to {out} (load with compressor.load_model({str(out)!r}, trust=True) or --trust" in result.stdout
    with pytest.raises(compressor.errors.UntrustedModelError):
        compressor.load_model(out)
    assert compressor.load_model(out, trust=True)(torch.zeros(1, 3, 32, 32)).shape[0] == 1


def test_a_transform_that_does_not_apply_is_one_line_and_exit_2(cli):
    result = cli("apply", "networks:TinyClassifier", "--transform", "downsample_depth")
    assert_refusal(result, "apply", "step 1 (downsample_depth)", "feeds layer 'pool'")
    assert result.stderr.count("\n") == 1  # nothing else at all


def test_unknown_transform_lists_the_valid_ones(cli):
    result = cli("apply", "unet", "--transform", "squeeze")
    # every registered transform, the plugin installed for the tests (tests/plugins) included
    assert_refusal(result, "apply",
                   "--transform squeeze: unknown transform 'squeeze'; valid names: dilation, downsample_depth, fire, "
                   "grouped, low_rank, prune, separable, skip_fusion")
    # the option as typed, not a recipe file's "transforms[0]" that the user never wrote
    assert_refusal(cli("apply", "unet", "--transform", "fire:squeez=0.3"), "apply",
                   "--transform fire:squeez=0.3: unknown key 'squeez'; valid keys:")
    assert_refusal(cli("apply", "unet", "--transform", "prune:ratio=2"), "apply",
                   "--transform prune:ratio=2: prune: ratio must be in [0, 1), got 2.0")


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


def test_apply_and_cost_take_a_model_file_with_its_weights(cli, tmp_path):
    """A file saved by compressor is a MODEL for apply and cost as for compress: its network and weights,
    so a further step starts from what the file holds."""
    first, second = tmp_path / "fire.pt", tmp_path / "dilated.pt"
    assert main(["apply", "unet", "--model-arg", "base_width=8", "--transform", "fire", "--input-shape", "1,3,32,32",
                 "--out", str(first)]) == 0
    result = cli("apply", str(first), "--transform", "dilation:rates=[1,2]", "--input-shape", "1,3,32,32",
                 "--out", str(second))
    assert result.returncode == 0, result.stderr
    assert "1. dilation" in result.stdout and f"saved to {second}" in result.stdout
    before, after = compressor.load_model(first).state_dict(), compressor.load_model(second).state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[key], after[key]) for key in before)
    cost = cli("cost", str(second), "--json")
    assert cost.returncode == 0, cost.stderr
    assert json.loads(cost.stdout)["params"] == sum(value.numel() for value in compressor.load_model(second).parameters())
    assert_refusal(cli("cost", str(second), "--model-arg", "base_width=4"), "cost", str(second),
                   "is a model file", "drop --model-arg")


def test_a_file_whose_steps_ran_at_a_large_input_says_it_loads_with_trust(tmp_path, capsys):
    """Beyond the input size a file's steps are traced again at untrusted, the line after --out says trust=True,
    and why (not "loads" when it does not)."""
    out = tmp_path / "big.pt"
    assert main(["apply", "unet", "--model-arg", "base_width=4", "--transform", "fire", "--input-shape", "1,3,600,600",
                 "--out", str(out)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("saved to"))
    assert line.startswith(f"saved to {out} (load with compressor.load_model({str(out)!r}, trust=True) or --trust: ")
    assert "more than the 1,048,576 values a file's steps are traced again at" in line
    with pytest.raises(compressor.errors.ConfigError):
        compressor.load_model(out)
    assert compressor.load_model(out, trust=True)(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_a_model_file_that_runs_code_needs_trust_in_apply_and_cost(cli, tmp_path):
    out = tmp_path / "own.pt"
    assert cli("apply", "networks:ResidualStridedNet", "--transform", "prune:ratio=0.3", "--input-shape", "1,3,32,32",
               "--out", str(out)).returncode == 0
    assert_refusal(cli("cost", str(out)), "cost", str(out), "networks:ResidualStridedNet",
                   "; pass --trust to load it anyway, if you trust where the file came from")
    assert_refusal(cli("cost", "micronet", "--baseline", str(out)), "cost", f"--baseline {out}: {out}: ",
                   "; pass --trust to load it anyway")  # as a baseline too, named, with the same advice
    trusted = cli("cost", str(out), "--trust", "--json")
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["params"] == sum(p.numel() for p in compressor.load_model(out, trust=True).parameters())
