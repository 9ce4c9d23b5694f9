from __future__ import annotations

import json

import pytest

from compressor import Recipe
from compressor.errors import ConfigError
from compressor.transforms import TransformSpec, parse_transform_option


def test_yaml_and_json_round_trip(tmp_path):
    recipe = Recipe.from_data([{"name": "dilation", "rates": [1, 2, 5]}, {"name": "prune", "ratio": 0.3}])
    for suffix in (".yaml", ".json"):
        path = tmp_path / f"recipe{suffix}"
        recipe.save(path)
        assert Recipe.load(path) == recipe
    assert json.loads((tmp_path / "recipe.json").read_text())["transforms"][0]["rates"] == [1, 2, 5]


def test_hash_is_stable_and_ignores_spelled_out_defaults():
    short = Recipe.from_data(["fire"])
    spelled = Recipe.from_data([{"name": "fire", "squeeze_ratio": 0.25, "include": "*"}])
    other = Recipe.from_data([{"name": "fire", "squeeze_ratio": 0.5}])
    assert short.hash() == spelled.hash() != other.hash()
    assert len(short.hash()) == 16 and short.hash() == Recipe.from_data(["fire"]).hash()


def test_order_matters_to_the_hash():
    a = Recipe.from_data(["fire", "skip_fusion"])
    b = Recipe.from_data(["skip_fusion", "fire"])
    assert a.hash() != b.hash()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("transforms:\n  - name: firee\n", r"recipe.yaml: transforms\[0\] \(firee\): unknown transform 'firee'; valid names: dilation, downsample_depth, fire"),
        ("transforms:\n  - name: fire\n    squeze_ratio: 0.5\n", r"transforms\[0\] \(fire\): unknown key 'squeze_ratio'; valid keys: include"),
        ("transforms:\n  - name: prune\n    ratio: lots\n", r"transforms\[0\] \(prune\): ratio: expected number, got 'lots'"),
        ("transforms:\n  - name: prune\n    scope: everywhere\n", r"scope: expected one of 'global', 'uniform'"),
        ("steps: []\n", r"unknown key 'steps'"),
        ("transforms: [fire\n", r"not valid YAML or JSON at line"),
        ("transforms:\n  - 12\n", r"expected a mapping with a 'name'"),
    ],
)
def test_malformed_recipes_name_the_file_and_key(tmp_path, content, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        Recipe.load(path)


def test_missing_recipe_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read recipe"):
        Recipe.load(tmp_path / "nope.yaml")


def test_cli_transform_option_parsing():
    assert parse_transform_option("prune:ratio=0.5,scope=uniform") == TransformSpec("prune", {"ratio": 0.5, "scope": "uniform"})
    assert parse_transform_option("separable") == TransformSpec("separable", {})
    with pytest.raises(ConfigError, match="must look like key=value"):
        parse_transform_option("prune:ratio")


def test_short_form_for_tables():
    recipe = Recipe.from_data([{"name": "downsample_depth", "levels": 2}, {"name": "dilation", "rates": [1, 2, 5]}])
    assert recipe.short() == "downsample_depth(levels=2) > dilation(rates=1-2-5)"
    assert Recipe().short() == "(identity)"


def test_parameters_added_later_leave_stored_recipe_hashes_as_they_were():
    """Studies store recipe hashes (a finished twin is found by it). ``overwrite`` (dilation), ``project``
    (skip_fusion) and ``time_limit`` (prune) came later: at their defaults they stay out of the hash, so
    these hashes, computed by the version before them, still hold; set, they change it."""
    paper = [{"name": "downsample_depth", "levels": 2}, {"name": "skip_fusion"}, {"name": "fire", "squeeze_ratio": 0.25},
             {"name": "dilation", "rates": [1, 2, 5]}, {"name": "prune", "ratio": 0.7}]
    assert Recipe.from_data(paper).hash() == "9654373bae3ed05d"
    assert Recipe.from_data([{"name": "prune", "ratio": 0.5, "importance": "l1"}]).hash() == "7a5b3c2377e8a01d"
    assert Recipe.from_data([{"name": "dilation"}]).hash() == "ba205b1bcfc0f0a7"
    assert Recipe.from_data([{"name": "dilation", "overwrite": True}]).hash() != "ba205b1bcfc0f0a7"
    # optional decides refusal, not what an applying step builds: the paper's recipe file kept its hash
    assert Recipe.from_data([{"name": "dilation", "optional": True}]).hash() == "ba205b1bcfc0f0a7"
    assert Recipe.load("experiments/recipes/micronet_like.yaml").hash() == "c85ccd7a59a34880"


def test_optional_steps_round_trip_and_strict_false_makes_every_step_optional(tmp_path):
    recipe = Recipe.from_data({"strict": False, "transforms": ["fire", {"name": "prune", "ratio": 0.5}]})
    assert [step.optional for step in recipe.steps] == [True, True]
    assert recipe.short() == "fire? > prune(ratio=0.5)?"
    recipe.save(tmp_path / "r.yaml")
    assert Recipe.load(tmp_path / "r.yaml") == recipe
    mixed = Recipe.from_data([{"name": "fire", "optional": True}, "prune"])
    assert [step.optional for step in mixed.steps] == [True, False]
    assert Recipe.of(mixed.steps) == mixed
