"""The contract every transform keeps, on every test network (parametrized over the registry)."""

from __future__ import annotations

import itertools

import pytest
import torch

from compressor import TRANSFORMS, TransformError, apply, measure, unet
from compressor.transforms.selection import LayerTransform

from networks import NETWORKS

SHAPE = (2, 3, 32, 32)

# Parameters each transform is exercised with; every registered transform must appear here.
PARAMS = {
    "separable": {},
    "fire": {},
    "dilation": {"rates": [1, 2, 3]},
    "downsample_depth": {"levels": 1},
    "prune": {"ratio": 0.3},
    "skip_fusion": {},
}

# Where a transform must refuse, and the reason its message must give. Everything else must work.
REFUSALS = {
    ("skip_fusion", "micronet"): r"feeds ReLU, not a plain Conv2d",  # its only cats are inside fire modules
    ("skip_fusion", "grouped_instance"): r"has no torch.cat",
    ("skip_fusion", "classifier"): r"has no torch.cat",
    ("skip_fusion", "monai_segresnet"): r"has no torch.cat",
    ("skip_fusion", "monai_unet"): r"feeds ConvTranspose2d, not a plain Conv2d",  # its up-sampling reads the cat
    ("downsample_depth", "classifier"): r"nothing to pair.*stride_to_dilation",
    # each stride-1 3x3 conv is alone at its resolution: the cascade's first rate, 1, is its rate already
    ("dilation", "classifier"): r"already has the rate it gives .*nothing to change",
}


def build(network: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return NETWORKS[network]()


def test_every_registered_transform_is_exercised():
    assert set(PARAMS) == set(TRANSFORMS.names())


def test_the_suite_covers_enough_kinds_of_network():
    third_party = [name for name in NETWORKS if name.startswith("monai_")]
    assert len(NETWORKS) - 2 >= 5 and len(third_party) >= 2


def _snapshot(model: torch.nn.Module) -> tuple[str, dict[str, torch.Tensor]]:
    return repr(model), {key: value.clone() for key, value in model.state_dict().items()}


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("name", list(PARAMS))
def test_transform_keeps_the_contract_or_refuses_clearly(name, network):
    model = build(network)
    structure, weights = _snapshot(model)
    example = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    expected_refusal = REFUSALS.get((name, network))
    if expected_refusal:
        with pytest.raises(TransformError, match=expected_refusal) as refusal:
            apply(model, [{"name": name, **PARAMS[name]}], example)
        message = str(refusal.value)
        module_names = [n for n, _ in model.named_modules() if n]
        assert "\n" not in message
        assert type(model).__name__ in message or "node '" in message or any(n in message for n in module_names)
    else:
        new_model, records = apply(model, [{"name": name, **PARAMS[name]}], example)
        (record,) = records
        # output shape kept; forward and backward work
        new_model.train()
        output = new_model(example)
        assert output.shape == model.eval()(example).shape
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


@pytest.mark.parametrize("name", [n for n in PARAMS if issubclass(TRANSFORMS.get(n), LayerTransform)])
def test_a_selection_that_matches_nothing_is_reported(name):
    with pytest.raises(TransformError, match=r"no .* layer of UNet matches include=\['no_such_layer\*'\]"):
        apply(build("unet"), [{"name": name, "include": "no_such_layer*", **PARAMS[name]}], SHAPE)


def test_min_channels_and_exclude_narrow_the_selection():
    model = build("unet")
    _, (record,) = apply(model, [{"name": "separable", "min_channels": 32, "exclude": "decoder.*"}], SHAPE)
    assert record.changed and all(not name.startswith("decoder.") for name in record.changed)
    for name in record.changed:
        conv = model.get_submodule(name)
        assert min(conv.in_channels, conv.out_channels) >= 32


PAIRS = list(itertools.permutations(PARAMS, 2))

# Ordered pairs that must refuse at their second step, and why; every other pair must compose.
PAIR_REFUSALS = {
    ("separable", "fire"): r"step 2 \(fire\): .*is grouped",  # nothing but depthwise and 1x1 convs left
    ("separable", "skip_fusion"): r"step 2 \(skip_fusion\): .*feeds a grouped conv",
}


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a}>{b}" for a, b in PAIRS])
def test_pairs_of_transforms_compose_or_refuse_clearly(first, second):
    model = unet(base_width=8, norm="batch")
    recipe = [{"name": first, **PARAMS[first]}, {"name": second, **PARAMS[second]}]
    refusal = PAIR_REFUSALS.get((first, second))
    if refusal:
        with pytest.raises(TransformError, match=refusal):
            apply(model, recipe, SHAPE)
        return
    new_model, records = apply(model, recipe, SHAPE)
    assert len(records) == 2 and records[0].params_after == records[1].params_before
    assert records[1].changed
    assert new_model(torch.randn(SHAPE)).shape == (2, 2, 32, 32)
