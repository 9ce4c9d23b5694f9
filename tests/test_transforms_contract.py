"""The contract every transform keeps, on every test network (parametrized over the registry)."""

from __future__ import annotations

import itertools

import pytest
import torch

from compressor import TRANSFORMS, TransformError, apply, measure, unet
from compressor.transforms import network_traits, traits_found
from compressor.transforms.selection import LayerTransform

from networks import NETWORKS, TRAITS

SHAPE = (2, 3, 32, 32)

# Every registered transform, built-in or from an installed package's entry point (the test
# plugin in tests/plugins is one), with the parameters it gives as its example.
NAMES = TRANSFORMS.names()


def example(name: str) -> dict:
    return {"name": name, **TRANSFORMS.get(name).example}


def expected_refusal(name: str, traits: set[str]) -> str | None:
    """The message a transform must refuse with on a network with ``traits`` (None: it must work)."""
    return next((pattern for trait, pattern in TRANSFORMS.get(name).refuses.items() if trait in traits), None)


def build(network: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return NETWORKS[network]()


def test_the_suite_covers_every_transform_and_trait():
    assert {"separable", "fire", "dilation", "downsample_depth", "prune", "skip_fusion"} <= set(NAMES)
    assert set(TRAITS) == set(NETWORKS)
    vocabulary = network_traits()  # the built-in traits and those the registered transforms declare
    assert set().union(*TRAITS.values()) <= set(vocabulary)
    for name in NAMES:  # a transform speaks the shared vocabulary of traits
        cls = TRANSFORMS.get(name)
        assert set(cls.refuses) | set(cls.produces) <= set(vocabulary), name


def test_the_suite_covers_enough_kinds_of_network():
    third_party = [name for name in NETWORKS if name.startswith("monai_")]
    assert len(NETWORKS) - 2 >= 5 and len(third_party) >= 2


def _snapshot(model: torch.nn.Module) -> tuple[str, dict[str, torch.Tensor]]:
    return repr(model), {key: value.clone() for key, value in model.state_dict().items()}


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("name", NAMES)
def test_transform_keeps_the_contract_or_refuses_clearly(name, network):
    model = build(network)
    structure, weights = _snapshot(model)
    inputs = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    refusal_pattern = expected_refusal(name, TRAITS[network] | traits_found(model))
    if refusal_pattern:
        with pytest.raises(TransformError, match=refusal_pattern) as refusal:
            apply(model, [example(name)], inputs)
        message = str(refusal.value)
        module_names = [n for n, _ in model.named_modules() if n]
        assert "\n" not in message
        assert type(model).__name__ in message or "node '" in message or any(n in message for n in module_names)
    else:
        new_model, records = apply(model, [example(name)], inputs)
        (record,) = records
        # output shape kept; forward and backward work
        new_model.train()
        output = new_model(inputs)
        assert output.shape == model.eval()(inputs).shape
        output.float().pow(2).mean().backward()
        grads = [p.grad for p in new_model.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
        # something changed, and the record says what
        assert record.changed
        # the record's numbers are those of a fresh measure()
        before, after = measure(model, SHAPE), measure(new_model, SHAPE)
        assert (record.params_before, record.flops_before) == (before.params, before.flops)
        assert (record.params_after, record.flops_after) == (after.params, after.flops)
    # the input model is untouched either way
    assert repr(model) == structure
    assert all(torch.equal(weights[key], value) for key, value in model.state_dict().items())


@pytest.mark.parametrize("name", [n for n in NAMES if issubclass(TRANSFORMS.get(n), LayerTransform)])
def test_a_selection_that_matches_nothing_is_reported(name):
    with pytest.raises(TransformError, match=r"no .* layer of UNet matches include=\['no_such_layer\*'\]"):
        apply(build("unet"), [{**example(name), "include": "no_such_layer*"}], SHAPE)


def test_min_channels_and_exclude_narrow_the_selection():
    model = build("unet")
    _, (record,) = apply(model, [{"name": "separable", "min_channels": 32, "exclude": "decoder.*"}], SHAPE)
    assert record.changed and all(not name.startswith("decoder.") for name in record.changed)
    for name in record.changed:
        conv = model.get_submodule(name)
        assert min(conv.in_channels, conv.out_channels) >= 32


PAIRS = list(itertools.permutations(NAMES, 2))


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a}>{b}" for a, b in PAIRS])
def test_pairs_of_transforms_compose_or_refuse_clearly(first, second):
    """On U-Net, the second step refuses exactly where the first leaves a trait it refuses
    (``separable`` leaves no dense conv for ``fire``, and a cat feeding a grouped conv)."""
    model = unet(base_width=8, norm="batch")
    recipe = [example(first), example(second)]
    pattern = expected_refusal(second, TRAITS["unet"] | traits_found(model) | TRANSFORMS.get(first).produces)
    if pattern:
        with pytest.raises(TransformError, match=rf"step 2 \({second}\): .*{pattern}"):
            apply(model, recipe, SHAPE)
        return
    new_model, records = apply(model, recipe, SHAPE, count_flops=False)  # FLOPs: the single-step test
    assert len(records) == 2 and records[0].params_after == records[1].params_before
    assert records[1].changed
    assert new_model(torch.randn(SHAPE)).shape == (2, 2, 32, 32)
