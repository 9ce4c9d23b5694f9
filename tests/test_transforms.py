"""What each transform does, checked against hand-computed structure."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compressor import TransformError, apply, micronet, unet
from compressor.errors import ConfigError
from compressor.models import Fire, SeparableConv2d

from networks import NETWORKS, TinyClassifier

SHAPE = (1, 3, 32, 32)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_separable_keeps_geometry_and_counts_match_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=2, dilation=2, bias=True))
    new, (record,) = apply(model, [{"name": "separable", "mid_norm": "batch", "mid_activation": True}], (1, 3, 17, 17))
    block = new[0]
    assert isinstance(block, SeparableConv2d) and record.changed == ["0"]
    assert block.depthwise.stride == (2, 2) and block.depthwise.dilation == (2, 2) and block.depthwise.padding == (2, 2)
    assert isinstance(block.norm, nn.BatchNorm2d) and isinstance(block.act, nn.ReLU)
    # depthwise 3*9, batch norm 2*3, pointwise 3*16 + bias 16
    assert record.params_after == 3 * 9 + 2 * 3 + 3 * 16 + 16


def test_fire_replaces_convs_with_the_same_contract():
    model = unet(base_width=16)
    new, (record,) = apply(model, [{"name": "fire", "squeeze_ratio": 0.125, "expand3x3_share": 0.25}], SHAPE)
    fire = new.get_submodule("encoder.1.0.conv")
    original = model.get_submodule("encoder.1.0.conv")
    assert isinstance(fire, Fire)
    assert fire.squeeze.conv.in_channels == original.in_channels
    assert fire.squeeze.conv.out_channels == original.out_channels // 8
    assert fire.expand3x3.conv.out_channels == original.out_channels // 4
    assert fire.expand1x1.conv.out_channels + fire.expand3x3.conv.out_channels == original.out_channels
    assert len(record.changed) == 18  # every 3x3 conv of U-Net; the 1x1 head is left alone
    assert "head" in record.skipped


def test_fire_skips_valid_padded_convs_and_strict_refuses_them():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=0))
    _, (record,) = apply(model, ["fire"], (1, 3, 12, 12))
    assert record.changed == ["0"] and "not 'same'" in record.skipped["1"]
    with pytest.raises(TransformError, match=r"layer '1' has padding \(0, 0\) that is not 'same'"):
        apply(model, [{"name": "fire", "strict": True}], (1, 3, 12, 12))


def test_dilation_lays_micronet_cascades_over_stages():
    model = micronet(base_width=8, encoder_rates=(1, 1, 1, 1), decoder_rates=(1, 1, 1))
    new, (record,) = apply(model, [{"name": "dilation", "rates": [1, 1, 2, 3]}], (1, 3, 32, 32))
    encoder_rates = [f.expand3x3.conv.dilation[0] for f in new.encoder[0]]
    decoder_rates = [f.expand3x3.conv.dilation[0] for f in new.decoder[2]]
    assert encoder_rates == [1, 1, 2, 3] and decoder_rates == [3, 2, 1]
    # the bottleneck stage and the deepest decoder stage run at one resolution: one cascade of 7 convs
    assert [f.expand3x3.conv.dilation[0] for f in new.encoder[2]] == [1, 1, 2, 3]
    assert [f.expand3x3.conv.dilation[0] for f in new.decoder[0]] == [1, 1, 2]
    for fire in new.encoder[0]:
        conv = fire.expand3x3.conv
        assert conv.padding[0] == conv.dilation[0]  # "same" for 3x3
    assert record.params_after == record.params_before
    x = torch.randn(1, 3, 32, 32)
    assert not torch.allclose(new.eval()(x), model.eval()(x))


def test_downsample_depth_cuts_the_deepest_level_of_unet():
    model = unet(base_width=8)
    new, (record,) = apply(model, [{"name": "downsample_depth", "levels": 1}], SHAPE)
    removed = count(model.encoder[4]) + count(model.ups[0])
    bridge = 64 * 64  # 1x1 conv from the level-3 encoder output (64 ch) to what ups.0 made (64 ch)
    assert record.params_after == record.params_before - removed + bridge
    assert {"encoder.4", "pools.3", "ups.0"} <= set(record.removed)
    assert record.changed == ["downsample_bridge_0"]
    assert sum(isinstance(m, nn.MaxPool2d) for m in new.modules()) == 3
    assert new(torch.randn(1, 3, 20, 28)).shape == (1, 2, 20, 28)  # the padding multiple shrank to 8


def test_downsample_depth_refuses_more_levels_than_exist():
    with pytest.raises(TransformError, match="has 2 down-sampling level"):
        apply(micronet(base_width=8), [{"name": "downsample_depth", "levels": 3}], SHAPE)


def test_stride_to_dilation_flattens_a_classifier_deeplab_style():
    torch.manual_seed(0)
    model = TinyClassifier()
    new, (record,) = apply(model, [{"name": "downsample_depth", "levels": 1, "stride_to_dilation": True}], SHAPE)
    strided, last = new.features[7], new.features[10]
    assert strided.stride == (1, 1) and last.dilation == (2, 2) and last.padding == (2, 2)
    assert record.params_after == record.params_before
    assert record.flops_after > record.flops_before  # the last level now runs at twice the resolution


def test_stride_to_dilation_refuses_encoder_decoders():
    with pytest.raises(TransformError, match="up-samples out of the flattened levels .* cut the levels instead"):
        apply(unet(base_width=8), [{"name": "downsample_depth", "stride_to_dilation": True}], SHAPE)


def test_skip_fusion_turns_unet_concatenations_into_additions():
    model = unet(base_width=8)
    new, (record,) = apply(model, ["skip_fusion"], SHAPE)
    assert record.changed == [f"decoder.{i}.0.conv" for i in range(4)]
    for index in range(4):
        old_conv, new_conv = model.decoder[index][0].conv, new.get_submodule(f"decoder.{index}.0.conv")
        assert new_conv.in_channels == old_conv.in_channels // 2
    assert "torch.cat" not in new.code and "add" in new.code


def test_prune_reaches_its_target_and_protects_the_head():
    model = unet(base_width=16, norm="batch")
    new, (record,) = apply(model, [{"name": "prune", "ratio": 0.5, "steps": 40}], SHAPE)
    assert 0.45 <= 1 - record.params_after / record.params_before <= 0.6
    assert new.head.out_channels == 2
    assert "head" in record.skipped


def test_uniform_prune_is_a_width_multiplier_and_round_to_holds():
    model = unet(base_width=16, norm="batch")
    new, _ = apply(model, [{"name": "prune", "ratio": 0.4, "scope": "uniform", "round_to": 4}], SHAPE)
    widths = [m.out_channels for name, m in new.named_modules() if isinstance(m, nn.Conv2d) and name != "head"]
    originals = [m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and name != "head"]
    assert all(width % 4 == 0 for width in widths)
    shares = {round(width / original, 2) for width, original in zip(widths, originals)}
    assert len(shares) <= 2 and max(shares) < 1  # every layer keeps (about) the same share


def test_random_prune_is_deterministic_by_seed():
    torch.manual_seed(0)
    base = unet(base_width=8)

    def kept(seed):
        new, _ = apply(base, [{"name": "prune", "importance": "random", "seed": seed}], SHAPE)
        return [m.weight for m in new.modules() if isinstance(m, nn.Conv2d)]

    first, again, other = kept(1), kept(1), kept(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # the same channels, same weights
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, other))  # another seed, others


def test_prune_ranks_channels_by_lamp_by_default():
    """LAMP is the default ranking (magnitude rankings fine-tuned to IoU 0 at 90%, see _importance):
    the default keeps the channels LAMP keeps, which are not those of L1 or L2."""
    torch.manual_seed(0)
    base = unet(base_width=8)

    def kept(**importance):
        new, _ = apply(base, [{"name": "prune", "ratio": 0.7, **importance}], SHAPE)
        return [m.weight for m in new.modules() if isinstance(m, nn.Conv2d)]

    def same(a, b):
        return all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b, strict=True))

    default, lamp = kept(), kept(importance="lamp")
    assert same(default, lamp)
    assert not same(lamp, kept(importance="l1")) and not same(lamp, kept(importance="l2"))


@pytest.mark.parametrize("network", ["monai_basic_unet", "monai_unet"])
def test_prune_works_on_monai_unets_where_torch_pruning_alone_fails(network):
    torch.manual_seed(0)
    model = NETWORKS[network]()
    new, (record,) = apply(model, [{"name": "prune", "ratio": 0.5}], (2, 3, 32, 32))
    assert record.params_after < 0.6 * record.params_before
    new(torch.randn(2, 3, 32, 32)).sum().backward()


def test_a_step_that_breaks_shapes_is_refused_and_named():
    with pytest.raises(TransformError, match=r"^step 2 \(downsample_depth\)"):
        apply(micronet(base_width=8), [{"name": "dilation"}, {"name": "downsample_depth", "levels": 5}], SHAPE)


def test_bad_parameters_name_the_key():
    with pytest.raises(ConfigError, match=r"transforms\[0\] \(fire\): squeeze_ratio: expected number, got 'big'"):
        apply(unet(base_width=8), [{"name": "fire", "squeeze_ratio": "big"}], SHAPE)
    with pytest.raises(ConfigError, match="fire: squeeze_ratio must be in"):
        apply(unet(base_width=8), [{"name": "fire", "squeeze_ratio": 9.0}], SHAPE)


class _FunctionalHead(torch.nn.Module):
    """A DeepLab-like network without a decoder: its head up-samples x4 with F.interpolate."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.deep = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.head(self.conv(self.deep(self.stem(x))))
        return torch.nn.functional.interpolate(y, scale_factor=4.0, mode="bilinear", align_corners=False)


def test_stride_to_dilation_rescales_a_functional_upsampling():
    model = _FunctionalHead()
    new, (record,) = apply(model, [{"name": "downsample_depth", "stride_to_dilation": True}], (1, 3, 32, 32))
    assert new(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    assert new.get_submodule("deep").stride == (1, 1) and new.get_submodule("conv").dilation == (2, 2)
    assert record.flops_after > record.flops_before


def test_a_search_builds_without_diagnostics_the_very_network_apply_shows():
    """``diagnostics=False`` (a search's builds) skips the layer and output errors nobody reads there,
    and changes nothing else: the same weights, the same records but the errors."""
    network = unet(base_width=4, norm="batch").eval()
    before, layout = copy.deepcopy(network.state_dict()), repr(network)
    recipe = [{"name": "skip_fusion"}, {"name": "fire"}, {"name": "prune", "ratio": 0.5}]
    torch.manual_seed(0)
    shown, shown_records = apply(network, recipe, (1, 3, 32, 32), init="inherit")
    torch.manual_seed(0)
    quiet, quiet_records = apply(network, recipe, (1, 3, 32, 32), init="inherit", diagnostics=False)
    assert [bool(record.errors) for record in shown_records] == [True, True, False]  # prune replaces no layer
    assert all(record.output_error is not None for record in shown_records)
    assert all(not record.errors and record.output_error is None for record in quiet_records)
    assert [r.params_after for r in shown_records] == [r.params_after for r in quiet_records]
    assert all(torch.equal(a, b) for a, b in zip(shown.state_dict().values(), quiet.state_dict().values()))
    # the steps after the first work in place there (no copy of the network before each), never on the input
    assert repr(network) == layout and all(torch.equal(before[key], value) for key, value in network.state_dict().items())


def test_an_input_model_with_an_output_to_choose_keeps_the_error_that_carries_the_clis_advice():
    """apply on a network returning two tensors raises OutputChoiceError (the CLI adds "--model-output KEY" for
    it), not a plain ConfigError that loses the advice."""
    from compressor.cli.advice import with_advice
    from compressor.errors import OutputChoiceError

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(3, 2, 3, padding=1)

        def forward(self, x):
            return self.a(x), self.b(x)

    with pytest.raises(OutputChoiceError, match="the input model returns a tuple of 2 outputs") as refused:
        apply(TwoHeads(), [{"name": "separable"}], (1, 3, 16, 16))
    assert with_advice(refused.value, "apply").endswith("; declare it with --model-output KEY (model.output in an experiment)")
