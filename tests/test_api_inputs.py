"""What the Python API takes where the command line takes text: a recipe file or one step for ``apply`` and
``compress``, an experiment file for ``compress``, an example tensor for ``measure``."""

from __future__ import annotations

import pytest
import torch
import yaml
from search_helpers import write_tiny_experiment

import compressor
from compressor.errors import ConfigError

SHAPE = (1, 3, 32, 32)


def small() -> torch.nn.Module:
    torch.manual_seed(0)
    return compressor.unet(base_width=8).eval()


def params(recipe) -> int:
    network, _ = compressor.apply(small(), recipe, SHAPE, count_flops=False, diagnostics=False)
    return sum(p.numel() for p in network.parameters())


def test_apply_takes_a_step_as_the_command_line_writes_it_or_a_recipe_file(tmp_path):
    assert params("fire") == params([{"name": "fire"}]) < params([{"name": "prune", "ratio": 0.5}]) < params([])
    assert params("prune:ratio=0.5") == params([{"name": "prune", "ratio": 0.5}])
    path = tmp_path / "mine.yml"
    path.write_text(yaml.safe_dump({"transforms": [{"name": "separable"}, {"name": "prune", "ratio": 0.3}]}))
    assert params(str(path)) == params(path) == params([{"name": "separable"}, {"name": "prune", "ratio": 0.3}])


def test_a_step_is_a_step_whatever_file_sits_beside_and_a_file_is_read_by_any_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fire").write_text("not a recipe")  # a script named like the transform does not shadow it
    assert params("fire") == params([{"name": "fire"}])
    assert params(["separable", "prune:ratio=0.3"]) == params([{"name": "separable"}, {"name": "prune", "ratio": 0.3}])
    (tmp_path / "mine").write_text(yaml.safe_dump({"transforms": [{"name": "separable"}]}))  # no suffix: a file
    (tmp_path / "MINE.YAML").write_text(yaml.safe_dump({"transforms": [{"name": "separable"}]}))
    assert params("mine") == params("MINE.YAML") == params([{"name": "separable"}])
    long_step = "fire:include=[" + ",".join(f"encoder.{index}.conv" for index in range(40)) + "]"
    assert len(long_step) > 255 and compressor.transforms.engine.as_recipe(long_step).steps[0].name == "fire"


@pytest.mark.parametrize(("recipe", "message"), [
    ("missing.yaml", r"missing.yaml"),
    ("firee", r"^recipe 'firee': no such recipe file, and no transform of that name; valid names: dilation, "),
    ("recipes/mine", r"^recipe 'recipes/mine': no such recipe file"),
    (".", r"^recipe '.' is a folder, not a recipe file$"),
    ("x" * 300, r"no such recipe file"),
    ("prune:ratio", r"prune:ratio"),
])
def test_a_recipe_given_as_text_that_is_no_recipe_is_refused_by_name(recipe, message):
    with pytest.raises(ConfigError, match=message):
        compressor.apply(small(), recipe, SHAPE)


def test_measure_takes_an_example_input_for_its_shape():
    network = small()
    by_tensor, by_shape = compressor.measure(network, torch.randn(SHAPE)), compressor.measure(network, SHAPE)
    assert (by_tensor.params, by_tensor.flops, by_tensor.input_shape) == (by_shape.params, by_shape.flops, SHAPE)
    assert by_tensor.flops > 0


def test_compress_takes_an_experiment_file_and_refuses_anything_else_by_name(tmp_path):
    config = write_tiny_experiment(tmp_path / "tiny.yaml", tmp_path / "run")
    result = compressor.compress(small(), "prune:ratio=0.3", str(config))
    assert result.student_cost.params < result.teacher_cost.params
    with pytest.raises(ConfigError, match="nope.yaml"):
        compressor.compress(small(), "fire", tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="^compress: experiment must be an Experiment or the path of an experiment "
                                          "file, got dict$"):
        compressor.compress(small(), "fire", {"data": {"name": "synthetic"}})


def test_a_step_that_makes_the_network_larger_says_so():
    _, records = compressor.apply(small(), [{"name": "fire", "squeeze_ratio": 2}], SHAPE, diagnostics=False)
    assert records[0].params_after > records[0].params_before
    rise = records[0].params_after / records[0].params_before - 1
    assert f"params rose {rise:.1%} with this step" in records[0].notes
    _, records = compressor.apply(small(), "fire", SHAPE, diagnostics=False)
    assert not any(note.startswith("params rose") for note in records[0].notes)


def test_downsample_depth_refuses_to_remove_every_level_and_says_how_many_it_can():
    network = compressor.unet(base_width=4, depth=2)
    with pytest.raises(compressor.TransformError) as refused:
        compressor.apply(network, [{"name": "downsample_depth", "levels": 2}], SHAPE)
    assert str(refused.value) == (
        "step 1 (downsample_depth): downsample_depth: UNet has 2 down-sampling level(s) at input (1, 3, 32, 32); "
        "removing all of them would leave its first and last layers and a 1x1 bridge, nothing at a coarser "
        "resolution; remove at most 1 (or set all_levels=true)")
    for step in ({"name": "downsample_depth", "levels": 1}, {"name": "downsample_depth", "levels": 2, "all_levels": True}):
        smaller, records = compressor.apply(network, [step], SHAPE)
        assert records[0].params_after < records[0].params_before
        assert smaller(torch.zeros(SHAPE)).shape == (1, 2, 32, 32)
    # the paper's recipe, every step optional, skips the cut there and applies the rest
    _, records = compressor.apply(network, "experiments/recipes/micronet_like.yaml", SHAPE, diagnostics=False)
    assert records[0].skipped_step.startswith("downsample_depth: UNet has 2 down-sampling level(s)")
    assert all(record.skipped_step is None for record in records[1:])


def test_files_and_studies_made_before_the_refusal_rebuild_as_they_were(tmp_path):
    """A saved file whose step cut every level, recorded before ``all_levels`` existed, loads; a study of an
    earlier build version rebuilds such a recipe; the recipe's hash does not change."""
    from compressor.candidates.versions import BUILD_VERSION, REFUSES_ALL_LEVELS, as_built_for
    from compressor.transforms import Recipe

    network = compressor.unet(base_width=4, depth=2)
    built, _ = compressor.apply(network, [{"name": "downsample_depth", "levels": 2, "all_levels": True}], SHAPE)
    path = compressor.save_model(tmp_path / "cut.pt", built)
    payload = torch.load(path, weights_only=True)
    (step,) = payload["origin"]["steps"]
    assert step.pop("all_levels") is True  # as a file of the day before records it
    torch.save(payload, path)
    loaded = compressor.load_model(path)
    assert torch.equal(loaded(torch.ones(SHAPE)), built(torch.ones(SHAPE)))
    recipe = Recipe.from_data([{"name": "downsample_depth", "levels": 2}])
    assert recipe.hash() == Recipe.from_data([{"name": "downsample_depth", "levels": 2, "all_levels": False}]).hash()
    for version in range(1, REFUSES_ALL_LEVELS):
        assert dict(as_built_for(recipe, version).steps[0].params) == {"levels": 2, "all_levels": True}
    for version in range(REFUSES_ALL_LEVELS, BUILD_VERSION + 1):
        assert as_built_for(recipe, version) is recipe


class StridedFirst(torch.nn.Module):
    """Down-samples at once, as MONAI's UNet does: cutting its level feeds the input to a new 1x1 bridge,
    registered after the layer the first conv in modules() then is."""

    def __init__(self) -> None:
        super().__init__()
        self.down = torch.nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.up = torch.nn.Upsample(scale_factor=2)
        self.head = torch.nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x):
        return self.head(self.up(self.down(x)))


def test_the_cli_reads_a_networks_input_channels_from_where_its_input_goes():
    """``cost``, ``deploy`` and ``apply`` without an input shape take the channels from the recipe's record, or
    from the conv a captured graph feeds its input to, not from the first conv registered."""
    from compressor.cli.common import default_input_shape

    step = {"name": "downsample_depth", "levels": 1, "all_levels": True}
    student, _ = compressor.apply(StridedFirst(), [step], (1, 1, 32, 32))
    assert isinstance(student, torch.fx.GraphModule)
    assert next(m for m in student.modules() if isinstance(m, torch.nn.Conv2d)).in_channels == 8
    assert default_input_shape(student) == (1, 1, 224, 224)
    normed = torch.nn.Sequential(torch.nn.BatchNorm2d(1), StridedFirst())  # the input reaches a norm first
    student, _ = compressor.apply(normed, [{"name": "downsample_depth", "levels": 1, "all_levels": True}], (1, 1, 32, 32))
    assert default_input_shape(student) == (1, 1, 224, 224)
    # a network compressor built records the shape its steps were applied at: that comes first
    from compressor.origin import Origin, set_origin

    recorded = set_origin(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1)), Origin("unet", {}, (), (1, 7, 32, 32)))
    assert default_input_shape(recorded, 64) == (1, 7, 64, 64)


def test_a_study_made_before_the_refusal_keeps_its_space():
    """The space of a study of an earlier build version is probed by its own rules: on a 2-level network its cut
    still goes to 2 levels, where a new study's stops at 1."""
    import functools

    from compressor.candidates.versions import as_built_for
    from compressor.spaces import SearchContext
    from compressor.transforms.downsample_depth import DownsampleDepth

    network, example = compressor.unet(base_width=4, depth=2), torch.zeros(SHAPE)
    assert DownsampleDepth.applicability(SearchContext(network, example, "unet")) == 1
    old = SearchContext(network, example, "unet", as_built=functools.partial(as_built_for, version=7))
    assert DownsampleDepth.applicability(old) == 2


PAIR_HINT = ("not a network: apply returns (network, records); pass the network: network, records = "
             "compressor.apply(...)")


def test_the_usual_slips_in_handing_a_network_over_are_named_with_their_fix(tmp_path):
    from compressor.deploy import deploy
    from compressor.train import train

    network = small()
    pair = compressor.apply(network, "fire", SHAPE, count_flops=False, diagnostics=False)
    slips = {  # each call, the whole message it must give
        "measure": (lambda: compressor.measure(pair, SHAPE), f"measure: model is a tuple (UNet, list), {PAIR_HINT}"),
        "apply": (lambda: compressor.apply(pair, "fire", SHAPE), f"apply: model is a tuple (UNet, list), {PAIR_HINT}"),
        # the model is looked at before the experiment file is read or its data fetched
        "compress": (lambda: compressor.compress(pair, "fire", tmp_path / "nope.yaml"),
                     f"compress: model is a tuple (UNet, list), {PAIR_HINT}"),
        "evaluate": (lambda: compressor.evaluate(pair, None), f"evaluate: model is a tuple (UNet, list), {PAIR_HINT}"),
        "deploy": (lambda: deploy(pair, tmp_path / "n.onnx", in_channels=3),
                   f"deploy: network is a tuple (UNet, list), {PAIR_HINT}"),
        "save_model": (lambda: compressor.save_model(tmp_path / "n.pt", pair),
                       f"save_model: model is a tuple (UNet, list), {PAIR_HINT}"),
        "a path": (lambda: compressor.measure("student.pt", SHAPE),
                   "measure: model is the path 'student.pt', not a network: load the file first, network = "
                   "compressor.load_model('student.pt')"),
        "a state_dict": (lambda: compressor.apply(network.state_dict(), "fire", SHAPE),
                         "apply: model is an OrderedDict, not a network: a state_dict holds weights, not the network; "
                         "build the network and load_state_dict into it"),
        "a checkpoint": (lambda: compressor.measure({"state_dict": network.state_dict(), "step": 3}, SHAPE),
                         "measure: model is a dict, not a network: a checkpoint holds weights, not the network; build "
                         "the network and load_state_dict(checkpoint['state_dict']) into it"),
        "torch.save's order": (lambda: compressor.save_model(network, tmp_path / "n.pt"),
                               f"save_model: the path comes first, save_model({str(tmp_path / 'n.pt')!r}, network) "
                               "(torch.save's order is the other way round)"),
        "no data": (lambda: compressor.evaluate(network, None),
                    "evaluate: data is None, not a dataset: build it with compressor.data.from_arrays(...) or "
                    "load_experiment(FILE).data.build()"),
        "data as a list": (lambda: train(network, [(torch.zeros(3, 8, 8), torch.zeros(8, 8))]),
                           "train: data is a list, not a dataset: build it with compressor.data.from_arrays(...) or "
                           "load_experiment(FILE).data.build()"),
    }
    for name, (call, message) in slips.items():
        with pytest.raises(ConfigError) as raised:
            call()
        assert str(raised.value) == message, name
    assert not list(tmp_path.iterdir())  # nothing written by any of them
