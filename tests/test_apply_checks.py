"""The output-shape check of ``apply``: after every step (``check_each_step``, the default), or, as a
search builds, after the last step only, with the same network and the same errors."""

from __future__ import annotations

import optuna
import pytest
import torch
from search_helpers import tiny_experiment
from torch import nn

from compressor.candidates.builder import CandidateBuilder, Init, build_candidate
from compressor.models import unet
from compressor.transforms import TRANSFORMS, Change, Recipe, Transform, TransformError, apply, engine
from search_spaces import SPACES, SearchContext
from search_spaces.unet_family import MICRONET_CHOICES


class Widen(Transform):
    """Gives the network's last layer twice its outputs: the output's shape changes (a broken transform)."""

    name = "widen"

    def transform(self, model, example_input):
        last = model[-1]
        model[-1] = nn.Conv2d(last.in_channels, 2 * last.out_channels, 1)
        return model, Change(changed=["2"])


class Touch(Transform):
    """Changes the first layer's weights, nothing else."""

    name = "touch"

    def transform(self, model, example_input):
        with torch.no_grad():
            model[0].weight.mul_(0.5)
        return model, Change(changed=["0"])


class WantsTwo(Transform):
    """Fails on a network whose last layer does not make 2 outputs, as a step may after one that broke it."""

    name = "wants_two"
    error = TransformError

    def transform(self, model, example_input):
        if model[-1].out_channels != 2:
            raise self.error(f"wants_two: the last layer makes {model[-1].out_channels} outputs")
        return model, Change(changed=["2"])


class WantsTwoCrashing(WantsTwo):
    name = "wants_two_crashing"
    error = RuntimeError


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    for transform in (Widen, Touch, WantsTwo, WantsTwoCrashing):
        monkeypatch.setitem(TRANSFORMS._items, transform.name, transform)


def small_network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))


def error_of(recipe: list[dict], *, check_each_step: bool) -> str:
    with pytest.raises(TransformError) as caught:
        apply(small_network(), recipe, (1, 3, 16, 16), count_flops=False, diagnostics=False,
              check_each_step=check_each_step)
    return str(caught.value)


@pytest.fixture
def checks(monkeypatch):
    """The networks ``apply`` runs to check an output shape, by what it calls them."""
    seen: list[str] = []
    original = engine._output_shape

    def counted(model, example, what):
        seen.append(what)
        return original(model, example, what)

    monkeypatch.setattr(engine, "_output_shape", counted)
    return seen


@pytest.mark.parametrize("init", ["inherit", "random"])
def test_a_search_build_checks_the_output_once_and_builds_the_same_network(checks, init):
    """unet_family's recipes built as a search builds them (no diagnostics, no FLOPs) check only the
    input model and the last network, and give the network checking every step gives, weight for
    weight (random layers included: the checks take nothing from the random state)."""
    context = SearchContext(unet(base_width=8, norm="batch"), torch.zeros(1, 3, 64, 64), "unet")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(3):
        trial = study.ask()
        recipe = SPACES.get("unet_family")(trial, context)
        built = {}
        for every in (True, False):
            checks.clear()
            torch.manual_seed(7)
            built[every], _ = apply(context.model, recipe, context.example, count_flops=False, init=init,
                                    diagnostics=False, check_each_step=every)
            runs = list(checks)
        study.tell(trial, 0.0)
        assert runs == ["the input model", "the last step"], runs
        assert len(recipe.steps) >= 3  # so every step checked would have been more runs
        checked, deferred = built[True].state_dict(), built[False].state_dict()
        assert checked.keys() == deferred.keys()
        assert all(torch.equal(checked[key], deferred[key]) for key in checked)
        assert built[False](context.example).shape == (1, 2, 64, 64)


def test_every_step_is_checked_by_default_and_where_a_step_runs_the_network_anyway(checks):
    apply(small_network(), [{"name": "touch"}, {"name": "touch"}], (1, 3, 16, 16), count_flops=False,
          diagnostics=False)
    assert checks == ["the input model", "step 1 (touch)", "step 2 (touch)"]
    for settings in ({"diagnostics": True}, {"count_flops": True}):
        checks.clear()
        apply(small_network(), [{"name": "touch"}, {"name": "touch"}], (1, 3, 16, 16),
              **{"count_flops": False, "diagnostics": False, **settings}, check_each_step=False)
        assert checks == ["the input model", "step 1 (touch)", "step 2 (touch)"], settings


@pytest.mark.parametrize("recipe", [
    [{"name": "touch"}, {"name": "widen"}, {"name": "touch"}],  # found by the last check
    [{"name": "touch"}, {"name": "widen"}, {"name": "wants_two"}],  # a later step fails on it first
    [{"name": "touch"}, {"name": "widen"}, {"name": "wants_two_crashing"}],  # ... with an error of its own
    [{"name": "widen"}, {"name": "touch", "optional": True}, {"name": "touch"}],  # an optional step checks
], ids=["last-check", "later-step-fails", "later-step-crashes", "optional-step-after"])
def test_the_error_names_the_step_that_changed_the_output_either_way(recipe):
    expected = "step 2 (widen)" if recipe[1]["name"] == "widen" else "step 1 (widen)"
    message = f"{expected}: output shape changed from (1, 2, 16, 16) to (1, 4, 16, 16); refusing"
    assert error_of(recipe, check_each_step=True) == message
    assert error_of(recipe, check_each_step=False) == message


def test_a_step_that_refuses_after_unchecked_steps_is_its_own_error(checks):
    """Steps 1 and 2 are fine and go unchecked; step 3 refuses: the recipe runs again with every check,
    which finds steps 1 and 2 fine, and the error is step 3's, as with every check."""
    recipe = [{"name": "touch"}, {"name": "touch"}, {"name": "wants_two"}]
    network = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
    with pytest.raises(TransformError, match=r"^step 3 \(wants_two\): wants_two: the last layer makes 3 outputs$"):
        apply(network, recipe, (1, 3, 16, 16), count_flops=False, diagnostics=False, check_each_step=False)
    assert checks == ["the input model", "the input model", "step 1 (touch)", "step 2 (touch)"]


def test_an_optional_step_that_changes_the_output_is_skipped_either_way():
    for every in (True, False):
        network, records = apply(small_network(), [{"name": "touch"}, {"name": "widen", "optional": True}],
                                 (1, 3, 16, 16), count_flops=False, diagnostics=False, check_each_step=every)
        assert network(torch.zeros(1, 3, 16, 16)).shape == (1, 2, 16, 16)
        assert records[1].skipped_step == "widen: output shape changed from (1, 2, 16, 16) to (1, 4, 16, 16); refusing"


def test_a_search_builds_its_candidates_checking_the_last_network_only(tmp_path, checks):
    experiment = tiny_experiment(tmp_path)
    context = SearchContext(unet(base_width=8), torch.zeros(1, 3, 32, 32), "unet")
    recipe = SPACES.get("unet_family").fixed(MICRONET_CHOICES, context)
    network = build_candidate(experiment, experiment.model, recipe, in_channels=3, num_classes=2)
    assert len(recipe.steps) == 4 and checks == ["the input model", "the last step"]
    assert network(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_a_builder_runs_its_base_once_for_every_build(tmp_path, checks):
    """Every candidate of a study starts from one base: its output shape is found at the first build only,
    and a second builder finds it again (nothing kept between studies)."""
    experiment = tiny_experiment(tmp_path)
    base = unet(base_width=8)
    context = SearchContext(base, torch.zeros(1, 3, 64, 64), "unet")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    recipes = [SPACES.get("unet_family")(study.ask(), context) for _ in range(3)]
    builder = CandidateBuilder(experiment, experiment.model, in_channels=3, num_classes=2, base=base, init=Init("inherit"))
    networks = [builder.build(recipe) for recipe in recipes]
    assert checks == ["the input model"] + ["the last step"] * 3
    assert all(network(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64) for network in networks)
    checks.clear()
    fresh = CandidateBuilder(experiment, experiment.model, in_channels=3, num_classes=2, base=base)
    assert fresh.build(Recipe(())) is base and checks == []  # an empty recipe runs nothing
    fresh.build(recipes[0])
    assert checks == ["the input model", "the last step"]


def test_a_known_output_shape_is_what_every_step_is_checked_against():
    with pytest.raises(TransformError, match=r"^step 1 \(touch\): output shape changed from \(1, 4, 16, 16\) to "
                                             r"\(1, 2, 16, 16\); refusing$"):
        apply(small_network(), [{"name": "touch"}], (1, 3, 16, 16), count_flops=False, diagnostics=False,
              known_output_shape=(1, 4, 16, 16))


class Refuses(Transform):
    """Always refuses, and counts how often it ran (a prune that runs into its time limit, say)."""

    name = "refuses"
    runs = 0
    error = TransformError("refuses: never")

    def transform(self, model, example_input):
        type(self).runs += 1
        raise self.error


def test_a_failing_step_is_not_run_again_and_a_wrapped_ctrl_c_stops_at_once(checks, monkeypatch):
    """The run again with every check stops before the step that failed; a Ctrl-C that torch wrapped in a
    RuntimeError is not followed by any run again."""
    monkeypatch.setitem(TRANSFORMS._items, "refuses", Refuses)
    monkeypatch.setattr(Refuses, "runs", 0)
    with pytest.raises(TransformError, match=r"^step 3 \(refuses\): refuses: never$"):
        apply(small_network(), [{"name": "touch"}, {"name": "touch"}, {"name": "refuses"}], (1, 3, 16, 16),
              count_flops=False, diagnostics=False, check_each_step=False)
    assert Refuses.runs == 1
    checks.clear()
    monkeypatch.setattr(Refuses, "error", RuntimeError("KeyboardInterrupt: caught in a C++ callback"))
    with pytest.raises(RuntimeError, match="KeyboardInterrupt"):
        apply(small_network(), [{"name": "touch"}, {"name": "refuses"}], (1, 3, 16, 16),
              count_flops=False, diagnostics=False, check_each_step=False)
    assert checks == ["the input model"] and Refuses.runs == 2


def test_without_check_output_only_a_step_that_needs_the_check_runs_the_network(checks):
    """``check_output=False`` (a model file's rebuild): no run before the first step or after the last; an
    optional step still runs the network, against the input model's shape found then, and is skipped as
    with every check on. ``check_each_step`` overrides it."""
    network, _ = apply(small_network(), [{"name": "touch"}, {"name": "touch"}], (1, 3, 16, 16), count_flops=False,
                       diagnostics=False, check_each_step=False, check_output=False)
    assert checks == [] and network(torch.zeros(1, 3, 16, 16)).shape == (1, 2, 16, 16)
    network, records = apply(small_network(), [{"name": "touch"}, {"name": "widen", "optional": True}],
                             (1, 3, 16, 16), count_flops=False, diagnostics=False, check_each_step=False,
                             check_output=False)
    assert checks == ["step 2 (widen)", "the input model"]
    assert records[1].skipped_step == "widen: output shape changed from (1, 2, 16, 16) to (1, 4, 16, 16); refusing"
    checks.clear()
    apply(small_network(), [{"name": "touch"}], (1, 3, 16, 16), count_flops=False, diagnostics=False,
          check_output=False)
    assert checks == ["the input model", "step 1 (touch)"]


def test_a_model_file_is_rebuilt_without_running_its_network(tmp_path, checks):
    import compressor

    torch.manual_seed(0)
    network, _ = compressor.apply(unet(base_width=8), ["fire", "prune:ratio=0.3"], (1, 3, 32, 32), diagnostics=False)
    path = compressor.save_model(tmp_path / "small.pt", network)
    checks.clear()
    loaded = compressor.load_model(path)
    assert checks == []
    example = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded(example), network.eval()(example))
