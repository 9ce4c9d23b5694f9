from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn

from compressor import ModelLoadError, build_model, micronet, unet
from compressor.errors import ConfigError
from compressor.models import Fire, SeparableConv2d


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_unet_has_the_papers_parameter_count():
    assert count(unet()) == 31_024_960


def test_micronet_has_the_papers_parameter_count_and_ratio():
    assert count(micronet()) == 1_055_920
    assert round(count(unet()) / count(micronet()), 2) == 29.38


def test_micronet_structure_follows_the_paper():
    model = micronet()
    fires = [m for m in model.encoder.modules() if isinstance(m, Fire)]
    assert len(fires) == 12
    assert [f.expand3x3.conv.dilation[0] for f in fires[:4]] == [1, 1, 2, 3]
    assert [f.expand1x1.conv.out_channels + f.expand3x3.conv.out_channels for f in fires[::4]] == [64, 128, 256]
    assert [f.squeeze.conv.out_channels for f in fires[::4]] == [16, 32, 64]
    assert len(model.pools) == 2
    decoder_rates = [f.expand3x3.conv.dilation[0] for f in model.decoder[0]]
    assert decoder_rates == [3, 2, 1]
    assert [up.out_channels for up in model.ups] == [128, 64]


@pytest.mark.parametrize("builder", [unet, micronet])
@pytest.mark.parametrize("size", [(64, 64), (50, 37), (17, 33)])
def test_any_input_size_is_padded_and_cropped_back(builder, size):
    model = builder(base_width=8)
    out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 2, *size)


def test_padding_does_not_change_the_divisible_part():
    torch.manual_seed(0)
    model = unet(base_width=4, depth=2).eval()
    image = torch.randn(1, 3, 15, 15)
    # 15 does not divide by 2**2: the input is zero-padded at the bottom and right to 16 and the
    # output cropped back, so it is the 16x16 computation on the padded image, cropped.
    padded = torch.nn.functional.pad(image, (0, 1, 0, 1))
    output = model(image)
    assert output.shape[-2:] == (15, 15)
    assert torch.allclose(output, model(padded)[..., :15, :15], atol=1e-6)


@pytest.mark.parametrize("builder", [unet, micronet])
def test_options_change_the_network(builder):
    model = builder(in_channels=1, num_classes=5, base_width=8, depth=1, norm="batch", bias=True)
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 5, 32, 32)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(model.pools) == 1
    assert count(model) < count(builder(in_channels=1, num_classes=5, base_width=8, depth=2))


@pytest.mark.parametrize("builder", [unet, micronet])
def test_reference_models_trace_with_torch_fx(builder):
    model = builder(base_width=4)
    graph_module = torch.fx.symbolic_trace(model)
    image = torch.randn(1, 3, 20, 20)
    assert torch.allclose(graph_module(image), model(image))


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="norm"):
        unet(norm="layer")
    with pytest.raises(ConfigError, match="depth"):
        micronet(depth=-1)
    with pytest.raises(ConfigError, match="base_width"):
        unet(base_width=0)


def test_separable_conv_keeps_the_conv_contract():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=2, dilation=2)
    separable = SeparableConv2d(8, 16, 3, stride=2, padding=2, dilation=2, mid_norm="batch", mid_activation=True)
    image = torch.randn(2, 8, 15, 15)
    assert separable(image).shape == conv(image).shape
    assert count(separable) < count(conv)


def test_fire_keeps_the_conv_contract_and_splits_channels():
    fire = Fire(16, 30, squeeze_ratio=0.5, expand3x3_share=0.3, stride=2, dilation=3)
    assert fire.squeeze.conv.out_channels == 15
    assert fire.expand3x3.conv.out_channels == 9
    assert fire.expand1x1.conv.out_channels == 21
    assert fire(torch.randn(1, 16, 15, 15)).shape == nn.Conv2d(16, 30, 3, 2, 1)(torch.randn(1, 16, 15, 15)).shape


def test_build_model_by_name_and_import_path():
    assert isinstance(build_model("unet", {"base_width": 4}), nn.Module)
    model = build_model("torch.nn:Conv2d", {"in_channels": 3, "out_channels": 2, "kernel_size": 1})
    assert isinstance(model, nn.Conv2d)


@pytest.mark.parametrize(
    ("spec", "args", "message"),
    [
        ("resnet", {}, "unknown model 'resnet'"),
        ("no.such.module:fn", {}, "cannot import module 'no.such.module'"),
        ("torch.nn:NoSuchThing", {}, "has no attribute 'NoSuchThing'"),
        ("math:pi", {}, "not a callable"),
        ("builtins:dict", {"x": 4}, "returned dict, not a torch.nn.Module"),
        ("unet", {"widht": 3}, "failed to build"),
        ("torch.nn:", {}, "must look like"),
    ],
)
def test_build_model_errors_name_the_problem(spec, args, message):
    with pytest.raises(ModelLoadError, match=message):
        build_model(spec, args)
