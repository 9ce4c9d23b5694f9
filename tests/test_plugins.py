"""A transform from another package (tests/plugins/compressor_low_rank), reaching compressor
only through its ``compressor.transforms`` entry point: listed, run from a recipe, covered by
the contract suite and sampled by ``generic``, with nothing in compressor/ naming it."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import optuna
import pytest
import test_transforms_contract
import torch
from conftest import PLUGINS, TESTS, assert_refusal, cli_env, run_cli

from compressor import TRANSFORMS, TransformError, apply, load_model, unet
from compressor.registry import Registry
from compressor.spaces import SPACES, SearchContext

from networks import ResidualStridedNet

ROOT = pathlib.Path(TESTS).parent


def _cli(*args: str, with_plugin: bool) -> subprocess.CompletedProcess:
    env = cli_env(plugins=with_plugin)
    return subprocess.run([sys.executable, "-m", "compressor", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=TESTS)


def test_nothing_in_compressor_names_the_plugin():
    sources = [path for path in (ROOT / "compressor").rglob("*.py")]
    assert sources and not [path for path in sources if "low_rank" in path.read_text() or "LowRank" in path.read_text()]


def test_it_is_listed_only_when_installed():
    listed = _cli("transforms", with_plugin=True)
    assert listed.returncode == 0, listed.stderr
    assert "low_rank: Replaces each dense k x k ``Conv2d``" in listed.stdout
    assert "[from compressor_low_rank]" in listed.stdout and "example: rank_ratio=0.5" in listed.stdout
    absent = _cli("transforms", with_plugin=False)
    assert absent.returncode == 0 and "low_rank" not in absent.stdout and "separable:" in absent.stdout


def test_it_runs_from_a_recipe_on_the_command_line(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("transforms:\n  - name: low_rank\n    rank_ratio: 0.25\n  - name: prune\n    ratio: 0.3\n")
    out = tmp_path / "small.pt"
    result = run_cli("apply", "unet", "--model-arg", "base_width=8", "--recipe", str(recipe), "--input-shape",
                     "1,3,64,64", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "1. low_rank" in result.stdout and "2. prune" in result.stdout
    model = load_model(out)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in unet(base_width=8).parameters())


def test_a_bad_parameter_of_the_plugin_is_one_line(tmp_path):
    result = _cli("apply", "unet", "--transform", "low_rank:rank_ratio=2", with_plugin=True)
    assert_refusal(result, "apply", "low_rank: rank_ratio must be between 0 and 1, got 2")


def test_python_users_pass_an_instance_and_the_svd_keeps_the_layer_at_full_rank():
    low_rank = TRANSFORMS.get("low_rank")
    model = unet(base_width=8).eval()
    example = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    nearly_full, (record,) = apply(model, low_rank(rank_ratio=0.99, include="encoder.0.*"), example)
    assert record.transform == "low_rank" and record.changed
    assert max(record.errors.values()) < 0.2  # 99% of the rank: each changed layer nearly as it was
    _, (coarse,) = apply(model, low_rank(rank_ratio=0.1, include="encoder.0.*"), example)
    assert max(coarse.errors.values()) > max(record.errors.values())


def test_the_contract_suite_covers_it():
    assert "low_rank" in test_transforms_contract.NAMES
    assert ("separable", "low_rank") in test_transforms_contract.PAIRS
    # after separable only depthwise and 1x1 convs are left: the pair must refuse, as it declares
    assert test_transforms_contract.expected_refusal(
        "low_rank", TRANSFORMS.get("separable").produces) == r"no layer could be changed"


def test_generic_samples_it():
    torch.manual_seed(0)
    context = SearchContext(ResidualStridedNet(), torch.zeros(1, 3, 32, 32), "networks:ResidualStridedNet")
    space = SPACES.get("generic")
    fixed = optuna.trial.FixedTrial({"levels_removed": 0, "skip": "concat", "conv": "standard", "dilation": "none",
                                     "low_rank": True, "grouped": False, "prune": 0.0})
    assert [step.name for step in space(fixed, context).steps] == ["low_rank"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    chosen = []
    for _ in range(24):
        trial = study.ask()
        recipe = space(trial, context)
        chosen.append("low_rank" in [step.name for step in recipe.steps])
        # drawn unless an earlier step left no dense conv for it (separable), which it refuses
        assert chosen[-1] == trial.params.get("low_rank", False)
        assert "low_rank" in trial.params or trial.params["conv"] == "separable"
        study.tell(trial, 0.0)
    assert any(chosen) and not all(chosen)
    # its smallest point uses it
    assert space.smallest(context)["low_rank"] is True


def test_a_broken_entry_point_is_named_when_asked_for(tmp_path, monkeypatch):
    info = tmp_path / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[compressor.test_widgets]\nknob = no_such_module:Knob\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    widgets = Registry("widget", entry_points="compressor.test_widgets")
    assert widgets.names() == []
    with pytest.raises(KeyError, match=r"widget 'knob': entry point no_such_module:Knob failed to load: "
                                       r"ModuleNotFoundError"):
        widgets.get("knob")


def test_plugins_folder_is_on_the_path_of_every_cli_test():
    assert PLUGINS in cli_env()["PYTHONPATH"].split(os.pathsep)


def test_the_docs_grouped_example_is_the_plugin_and_declares_what_it_does():
    """docs/architecture.md's worked transform is tests/plugins/compressor_grouped: it declares a
    trait of its own (checked on the network) and the traits its output has, without editing compressor."""
    from compressor.transforms import network_traits, traits_found

    doc = (pathlib.Path(TESTS).parent / "docs" / "architecture.md").read_text()
    plugin = (pathlib.Path(PLUGINS) / "compressor_grouped" / "__init__.py").read_text()
    body = plugin.split("class Grouped(LayerTransform):", 1)[1]
    assert body.strip() in doc  # the class the docs show is the plugin's, line for line
    grouped = TRANSFORMS.get("grouped")
    assert grouped.__module__ == "compressor_grouped" and "no-divisible-conv" in network_traits()
    odd = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.Conv2d(5, 2, 1))
    assert traits_found(odd) == {"no-divisible-conv"} and traits_found(unet(base_width=8)) == set()
    with pytest.raises(TransformError, match="no layer could be changed"):
        apply(odd, [{"name": "grouped"}], (1, 3, 16, 16))
    # prune after it: the grouped convs and what is coupled to them are kept (torch-pruning breaks on them)
    with pytest.raises(TransformError, match=r"step 2 \(prune\): .*grouped conv .* which torch-pruning cannot narrow"):
        apply(unet(base_width=8, norm="batch"), [{"name": "grouped"}, {"name": "prune", "ratio": 0.5}], (1, 3, 32, 32))
    partly, records = apply(unet(base_width=8, norm="batch"), [{"name": "grouped", "groups": 4, "include": "encoder.0.*"},
                                                                 {"name": "prune", "ratio": 0.5}], (1, 3, 32, 32))
    assert records[1].params_after < 0.6 * records[1].params_before and partly(torch.zeros(1, 3, 32, 32)).shape[1] == 2


def test_a_budgeted_generic_search_with_the_plugins_runs_its_trials(tmp_path):
    """generic draws the plugins' transforms, its smallest recipe builds (prune is not drawn after
    grouped: it refuses what grouped leaves), and the budget check lets the search start."""
    from search_helpers import tiny_experiment

    from compressor.pipeline import run_search
    from compressor.study import trial_records

    experiment = tiny_experiment(tmp_path, ("budget.max_params=40k",), space="generic", n_trials=3)
    result = run_search(experiment, echo=lambda line: None)
    records = trial_records(result.study)
    # a combination that does not compose on this network fails with the refusal, and the search goes on
    assert len(records) >= 3 and all(record.status in ("complete", "infeasible") or "no layer could be changed"
                                     in record.failure for record in records), [(r.status, r.failure) for r in records]
    assert sum(record.status == "complete" for record in records) >= 2
    assert all({"grouped", "low_rank"} <= set(trial.params) for trial in result.study.trials[1:])  # drawn after the starts


def test_generic_leaves_out_of_its_smallest_candidate_a_step_that_does_not_compose(monkeypatch):
    """A transform of another package that refuses the narrow network the other steps leave, without
    declaring it: the smallest recipe turns it off (its unchanged() choice) instead of stopping every budgeted search."""
    from compressor.transforms import Change, Transform

    class NeedsWide(Transform):
        """Refuses a network of fewer than 100k parameters (as a pruned one is)."""

        name = "needs_wide"
        search_order = 60  # after prune

        def transform(self, model, example_input):
            if sum(parameter.numel() for parameter in model.parameters()) < 100_000:
                raise TransformError(f"needs_wide: {type(model).__name__} is too narrow")
            return model, Change(changed=["(whole network)"])

    monkeypatch.setitem(TRANSFORMS._items, "needs_wide", NeedsWide)
    context = SearchContext(unet(base_width=16), torch.zeros(1, 3, 32, 32), "unet")
    space = SPACES.get("generic")
    choices = space.smallest(context)
    assert choices["needs_wide"] is False and choices["levels_removed"] > 0  # only the step that broke is off
    steps = [step.name for step in space.fixed(choices, context).steps]
    assert "needs_wide" not in steps and {"downsample_depth", "fire"} <= set(steps)
    apply(context.model, space.fixed(choices, context), context.example)  # and it builds


def test_when_torch_pruning_fails_on_the_grouped_network_too_the_first_failure_is_said(monkeypatch):
    """prune's second try (grouped convs kept) builds torch-pruning's graph again: if that fails
    as well, the first failure is the one-line refusal, not a traceback of the second."""
    import torch_pruning

    def broken(*args, **kwargs):
        raise IndexError("index 63 is out of bounds")

    monkeypatch.setattr(torch_pruning.DependencyGraph, "build_dependency", broken)
    model = unet(base_width=8, norm="batch")
    with pytest.raises(TransformError, match=r"prune: torch-pruning cannot prune UNet: IndexError: index 63"):
        apply(model, [{"name": "grouped", "groups": 2, "include": "decoder.*"}, {"name": "prune", "ratio": 0.5}],
              (1, 3, 32, 32))


def test_generic_weighs_its_smallest_candidate_without_a_step_that_keeps_prune_out():
    """grouped leaves grouped convs, which prune refuses, so generic never prunes after it: its
    smallest candidate is the one without grouped and with prune at 0.9, when that is smaller."""
    context = SearchContext(unet(base_width=8), torch.zeros(1, 3, 64, 64), "unet")
    space = SPACES.get("generic")
    choices = space.smallest(context)
    steps = [step.name for step in space.fixed(choices, context).steps]
    assert choices["grouped"] is False and steps[-1] == "prune" and "grouped" not in steps
    smallest, _ = apply(context.model, space.fixed(choices, context), context.example, count_flops=False)
    grouped, _ = apply(context.model, space.fixed({**choices, "grouped": True}, context), context.example,
                       count_flops=False)
    assert sum(p.numel() for p in smallest.parameters()) < sum(p.numel() for p in grouped.parameters())
