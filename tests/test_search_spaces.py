"""Search spaces: recipes drawn with Optuna's FixedTrial and real samplers, applied to real networks."""

from __future__ import annotations

import optuna
import pytest
import torch

from compressor.cost import measure
from compressor.errors import ConfigError
from compressor.models import unet
from compressor.registry import UnknownNameError
from compressor.transforms import TRANSFORMS, apply
from search_spaces import SPACES, SearchContext
from search_spaces.generic import applicable
from search_spaces.unet_family import MICRONET_CHOICES

from networks import ResidualStridedNet, TinyClassifier

EXAMPLE = torch.zeros(1, 3, 64, 64)


@pytest.fixture(scope="module")
def unet_context():
    torch.manual_seed(0)
    return SearchContext(unet(base_width=8, norm="batch"), EXAMPLE, "unet")


def test_registry_lists_the_spaces_and_rejects_unknown_names():
    assert {"unet_family", "generic"} <= set(SPACES.names())
    with pytest.raises(UnknownNameError, match="unknown search space 'nope'; valid names: .*unet_family"):
        SPACES.get("nope")


def test_micronet_choices_give_the_papers_recipe_on_the_reference_unet():
    context = SearchContext(unet(), torch.zeros(1, 3, 64, 64), "unet")
    recipe = SPACES.get("unet_family").fixed(MICRONET_CHOICES, context)
    assert [step.name for step in recipe.steps] == ["downsample_depth", "skip_fusion", "fire", "dilation"]
    assert recipe.steps[0].params == {"levels": 2}
    small, _ = apply(context.model, recipe, context.example, count_flops=False)
    params = measure(small, (1, 3, 64, 64)).params
    # The transformed U-Net lands near Micro-Net's 1.06M: 2 levels cut, fire modules, added skips.
    assert 500_000 < params < 1_055_920


def test_each_level_choice_changes_only_that_levels_modules(unet_context):
    space = SPACES.get("unet_family")
    choices = {**MICRONET_CHOICES, "levels_removed": 0, "skip": "concat", "dilation": "none",
               **{f"conv_L{level}": "standard" for level in range(5)}, "conv_L1": "separable"}
    recipe = space.fixed(choices, unet_context)
    assert [step.name for step in recipe.steps] == ["separable"]
    _, records = apply(unet_context.model, recipe, unet_context.example, count_flops=False)
    changed = set(records[0].changed)
    assert changed == {"encoder.1.0.conv", "encoder.1.1.conv", "decoder.2.0.conv", "decoder.2.1.conv"}


def test_levels_that_were_cut_get_no_choice(unet_context):
    space = SPACES.get("unet_family")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(12):
        trial = study.ask()
        space(trial, unet_context)
        levels = 5 - trial.params["levels_removed"]
        assert {key for key in trial.params if key.startswith("conv_L")} == {f"conv_L{i}" for i in range(levels)}
        study.tell(trial, 0.0)


def test_sampled_unet_family_recipes_apply_and_keep_the_output_shape(unet_context):
    space = SPACES.get("unet_family")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    base_params = measure(unet_context.model, (1, 3, 64, 64)).params
    for _ in range(6):
        trial = study.ask()
        recipe = space(trial, unet_context)
        network, _ = apply(unet_context.model, recipe, unet_context.example, count_flops=False)
        assert network(unet_context.example).shape == (1, 2, 64, 64)
        if trial.params["prune"] >= 0.5 or trial.params["levels_removed"] >= 2:
            assert measure(network, (1, 3, 64, 64)).params < base_params
        study.tell(trial, 0.0)


def test_smallest_candidate_is_smaller_than_any_sampled_one(unet_context):
    space = SPACES.get("unet_family")
    smallest, _ = apply(unet_context.model, space.smallest_recipe(unet_context), EXAMPLE, count_flops=False)
    floor = measure(smallest, (1, 3, 64, 64)).params
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(4):
        trial = study.ask()
        network, _ = apply(unet_context.model, space(trial, unet_context), EXAMPLE, count_flops=False)
        assert measure(network, (1, 3, 64, 64)).params >= floor
        study.tell(trial, 0.0)


def test_a_fixed_trial_missing_a_choice_is_a_clear_error(unet_context):
    with pytest.raises(ConfigError, match="search space 'unet_family'"):
        SPACES.get("unet_family").fixed({"levels_removed": 1}, unet_context)


def test_describe_is_short_and_names_every_axis():
    line = SPACES.get("unet_family").describe({**MICRONET_CHOICES, "prune": 0.3})
    assert line == "cut 2, add, convs FFF (fire .25/.5), dil 1-1-2-3, prune .3"


def test_generic_offers_only_what_applies_to_a_classifier():
    torch.manual_seed(0)
    context = SearchContext(TinyClassifier(), torch.zeros(1, 3, 32, 32), "networks:TinyClassifier")
    found = applicable(context)
    assert found["downsample_depth"] == 0 and not found["skip_fusion"]  # nothing to pair, no concatenation
    assert found["separable"] and found["fire"] and found["prune"]
    # low_rank: the plugin installed for the tests (tests/plugins), sampled like the built-in transforms
    trial = optuna.trial.FixedTrial({"conv": "separable", "dilation": "none", "low_rank": False, "prune": 0.5})
    recipe = SPACES.get("generic")(trial, context)
    assert [step.name for step in recipe.steps] == ["separable", "prune"]
    network, _ = apply(context.model, recipe, context.example, count_flops=False)
    assert network(context.example).shape == context.model(context.example).shape


def test_generic_on_a_residual_encoder_decoder_samples_recipes_that_apply(monkeypatch):
    # the built-in transforms and low_rank; the grouped plugin leaves no dense conv for low_rank on
    # this network (no trait can say it of every network: such a trial fails with the reason)
    monkeypatch.delitem(TRANSFORMS._items, "grouped", raising=False)
    torch.manual_seed(0)
    context = SearchContext(ResidualStridedNet(), torch.zeros(1, 3, 32, 32), "networks:ResidualStridedNet")
    space = SPACES.get("generic")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    applied = 0
    for _ in range(5):
        trial = study.ask()
        recipe = space(trial, context)
        assert all(step.name in {"downsample_depth", "skip_fusion", "separable", "fire", "dilation", "low_rank", "prune"}
                   for step in recipe.steps)
        network, _ = apply(context.model, recipe, context.example, count_flops=False)
        applied += network(context.example).shape == (1, 2, 32, 32)
        study.tell(trial, 0.0)
    assert applied == 5
