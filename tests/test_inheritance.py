"""Weight inheritance: replacements start from the weights of the layers they replace, and the
records measure how close they come (exact where the factorization is exact, better than a
random start on a trained network, better again after calibration on real images)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compressor import TransformError, apply, unet
from compressor.errors import ConfigError
from compressor.models import Fire, SeparableConv2d
from compressor.transforms.calibration import output_error, relative_error
from compressor.transforms.inherit import identity_like, inherit_fire, inherit_fused, inherit_separable

SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These tensors are tiny: one thread is as fast, and stays fast when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smooth_images(count: int, channels: int = 3, size: int = 16) -> torch.Tensor:
    """Noise averaged over 5x5 windows: neighbouring pixels correlate, as in real images."""
    return F.avg_pool2d(torch.randn(count, channels, size + 4, size + 4), 5, stride=1) * 2.0


def set_weight(conv: nn.Conv2d, weight: torch.Tensor) -> None:
    with torch.no_grad():
        conv.weight.copy_(weight)


@torch.no_grad()
def error(candidate: nn.Module, reference: nn.Module, x: torch.Tensor) -> float:
    return relative_error(candidate.eval()(x), reference.eval()(x))


# separable ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("stride", "dilation"), [(1, 1), (2, 1), (1, 2)])
def test_separable_reproduces_a_kernel_separable_per_input_channel(stride, dilation):
    """weight[o, i] = a[o, i] * k[i]: depth multiplier 1 is exact, bias included, at any stride and dilation."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, stride=stride, padding=dilation, dilation=dilation, bias=True)
    set_weight(conv, torch.randn(8, 4, 1, 1) * torch.randn(1, 4, 3, 3))
    with torch.no_grad():
        conv.bias.copy_(torch.randn(8) * 3)
    separable = SeparableConv2d(4, 8, 3, stride=stride, padding=dilation, dilation=dilation, bias=True)
    inherit_separable(conv, separable)
    x = torch.randn(2, 4, 11, 11)
    with torch.no_grad():
        assert torch.allclose(separable(x), conv(x), atol=1e-5)
    assert torch.equal(separable.pointwise.bias, conv.bias)


def test_separable_error_falls_with_the_depth_multiplier_and_vanishes_at_k_squared():
    """On a random 3x3 kernel the error never rises from multiplier 1 to 9, and 9 = 3*3 is exact."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, padding=1, bias=True)
    x = torch.randn(4, 6, 16, 16)
    errors = []
    for multiplier in range(1, 10):
        separable = SeparableConv2d(6, 10, 3, padding=1, bias=True, depth_multiplier=multiplier)
        inherit_separable(conv, separable)
        errors.append(error(separable, conv, x))
    assert errors[0] > 0.3  # a random kernel is far from separable
    assert all(later <= earlier + 1e-7 for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-5


def test_apply_inherits_separable_by_default_and_init_random_does_not():
    """Through apply: inherited is exact on a separable kernel, random is far off; a recipe's own init wins."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=True))
    set_weight(model[0], torch.randn(8, 4, 1, 1) * torch.randn(1, 4, 3, 3))
    shape = (2, 4, 12, 12)
    _, (inherited,) = apply(model, ["separable"], shape)
    _, (random,) = apply(model, ["separable"], shape, init="random")
    _, (explicit,) = apply(model, [{"name": "separable", "init": "inherit"}], shape, init="random")
    assert inherited.errors["0"] < 1e-5 and inherited.output_error < 1e-5
    assert random.errors["0"] > 0.5 and random.output_error > 0.5
    assert random.params["init"] == "random"
    assert explicit.errors["0"] < 1e-5


# fire --------------------------------------------------------------------------------------


def low_rank_conv(in_channels: int, out_channels: int, rank: int, *, bias: bool = True) -> nn.Conv2d:
    """A 3x3 conv whose kernel unfolded along its input channels has rank ``rank``."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
    basis = torch.randn(in_channels, rank)
    mixing = torch.randn(out_channels, rank, 3, 3)
    set_weight(conv, torch.einsum("ir,orkl->oikl", basis, mixing))
    return conv


def test_fire_kxk_expand_is_exact_when_the_squeeze_holds_the_kernel_rank():
    """Rank-3 kernel: a squeeze of 6 (3 directions, each paired with its negative) makes the 3x3 half exact;
    a squeeze of 4 (rank 2) does not."""
    torch.manual_seed(0)
    conv = low_rank_conv(12, 10, rank=3)
    x = torch.randn(2, 12, 9, 9)
    wide = Fire(12, 10, squeeze_ratio=0.6, bias=True, activation=False)
    narrow = Fire(12, 10, squeeze_ratio=0.4, bias=True, activation=False)
    assert wide.squeeze.conv.out_channels == 6 and narrow.squeeze.conv.out_channels == 4
    inherit_fire(conv, wide)
    inherit_fire(conv, narrow)
    split = wide.expand1x1.conv.out_channels
    with torch.no_grad():
        target = conv(x)[:, split:]
        assert torch.allclose(wide(x)[:, split:], target, atol=1e-5)
        assert relative_error(narrow(x)[:, split:], target) > 1e-2


def test_fire_is_exact_for_a_centre_only_kernel():
    """A kernel non-zero only in its centre tap is a 1x1 conv: the sum of taps is exact, so the whole fire is."""
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 8, 3, padding=1, bias=True)
    centre = torch.zeros(8, 5, 3, 3)
    centre[:, :, 1, 1] = torch.randn(8, 5)
    set_weight(conv, centre)
    fire = Fire(5, 8, squeeze_ratio=1.25, bias=True, activation=False)  # squeeze 10: all 5 input directions
    inherit_fire(conv, fire)
    x = torch.randn(2, 5, 7, 7)
    with torch.no_grad():
        assert torch.allclose(fire(x), conv(x), atol=1e-5)


def test_fire_1x1_expand_answers_a_constant_input_like_the_kernel():
    """Kernel constant over its taps, input constant over space: away from the zero-padded border the
    1x1 expand (sum of taps) and so the whole fire are exact; on the border the 1x1 half is not."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    set_weight(conv, torch.randn(6, 4, 1, 1).expand(6, 4, 3, 3))
    fire = Fire(4, 6, squeeze_ratio=4 / 3, bias=True, activation=False)  # squeeze 8: all 4 directions
    inherit_fire(conv, fire)
    x = torch.randn(1, 4, 1, 1).expand(1, 4, 8, 8).contiguous()
    split = fire.expand1x1.conv.out_channels
    with torch.no_grad():
        got, want = fire(x), conv(x)
    assert torch.allclose(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], atol=1e-5)
    assert not torch.allclose(got[:, :split, 0, :], want[:, :split, 0, :], atol=1e-3)


def test_fire_error_falls_as_the_squeeze_widens():
    """Random 3x3 kernel, image-like input: the whole fire output gets closer at every wider squeeze."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=True)
    x = smooth_images(4, channels=16, size=24)
    errors = []
    for ratio in (0.25, 0.5, 1.0, 2.0):
        fire = Fire(16, 16, squeeze_ratio=ratio, bias=True, activation=False)
        inherit_fire(conv, fire)
        errors.append(error(fire, conv, x))
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors


# skip_fusion -------------------------------------------------------------------------------


class Twin(nn.Module):
    """``fuse(cat([a, b]))`` with ``b`` equal to ``a`` (``same``) or made by a second stem."""

    def __init__(self, same: bool) -> None:
        super().__init__()
        self.same = same
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.other = nn.Conv2d(3, 4, 3, padding=1)
        self.fuse = nn.Conv2d(8, 5, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.stem(x)
        b = a if self.same else self.other(x)
        return self.fuse(torch.cat([a, b], dim=1))


def test_skip_fusion_is_exact_when_both_halves_are_equal():
    """cat([a, a]) -> a + a = 2a with the mean of the kernel halves gives back the original output."""
    torch.manual_seed(0)
    model = Twin(same=True).eval()
    shape = (2, 3, 10, 10)
    new, (record,) = apply(model, ["skip_fusion"], shape)
    _, (random,) = apply(model, ["skip_fusion"], shape, init="random")
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.allclose(new(x), model(x), atol=1e-5)
    assert record.changed == ["fuse"]
    assert record.errors["fuse"] < 1e-5 and record.output_error < 1e-5
    assert random.errors["fuse"] > 0.5 and random.output_error > 0.5


class WideTwin(nn.Module):
    """``fuse(cat([a, b]))`` with ``b`` twice as wide as ``a``: each channel of ``a`` repeated."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.fuse = nn.Conv2d(12, 5, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.stem(x)
        return self.fuse(torch.cat([a, a.repeat_interleave(2, dim=1)], dim=1))


def test_skip_fusion_through_a_projection_is_exact_when_each_group_is_alike():
    """The wider tensor is projected to the narrow width by group means and the fused kernel folds
    that chunk by summing each group: with the channels of every group alike the output is unchanged."""
    torch.manual_seed(0)
    model = WideTwin().eval()
    shape = (2, 3, 10, 10)
    new, (record,) = apply(model, ["skip_fusion"], shape)
    projections = [m for name, m in new.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [(p.in_channels, p.out_channels) for p in projections] == [(8, 4)]
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.allclose(new(x), model(x), atol=1e-5)
    assert record.output_error < 1e-5


def test_skip_fusion_starts_from_the_mean_of_the_kernel_halves():
    """With different halves the fused kernel is their mean and the bias is kept; the output is close, not equal."""
    torch.manual_seed(0)
    model = Twin(same=False).eval()
    new, (record,) = apply(model, ["skip_fusion"], (2, 3, 10, 10))
    weight = model.fuse.weight
    assert torch.allclose(new.fuse.weight, (weight[:, :4] + weight[:, 4:]) / 2)
    assert torch.equal(new.fuse.bias, model.fuse.bias)
    assert 1e-3 < record.errors["fuse"] < math.inf


def test_inherit_fused_matches_a_hand_made_fused_conv():
    """inherit_fused on its own: fused(a + b) equals the conv with the mean halves, by hand."""
    torch.manual_seed(0)
    conv, fused = nn.Conv2d(6, 2, 3, padding=1), nn.Conv2d(3, 2, 3, padding=1)
    inherit_fused(conv, fused)
    a = torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        by_hand = F.conv2d(2 * a, (conv.weight[:, :3] + conv.weight[:, 3:]) / 2, conv.bias, padding=1)
        assert torch.allclose(fused(2 * a), conv(torch.cat([a, a], dim=1)), atol=1e-5)
        assert torch.allclose(fused(2 * a), by_hand, atol=1e-6)


# dilation ----------------------------------------------------------------------------------


def test_dilation_counts_only_the_convs_whose_rate_changes():
    """Rates [1] would change nothing and are refused; with [1, 2] only every second conv of a
    stage changes, and only those are reported and measured; a changed rate changes the output."""
    torch.manual_seed(0)
    model = unet(base_width=4)
    with pytest.raises(TransformError, match="already has the rate it gives"):
        apply(model, [{"name": "dilation", "rates": [1]}], SHAPE, count_flops=False)
    new, (record,) = apply(model, [{"name": "dilation", "rates": [1, 2]}], SHAPE, count_flops=False)
    spatial = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(spatial) == 18 and len(record.changed) == 9
    assert all(new.get_submodule(name).dilation == (2, 2) for name in record.changed)
    assert all(new.get_submodule(name).dilation == (1, 1) for name in set(spatial) - set(record.changed))
    assert set(record.errors) == set(record.changed)
    assert record.output_error > 1e-2


# downsample_depth --------------------------------------------------------------------------


def test_identity_like_passes_the_first_channels_through():
    """Channel i to channel i below both widths, everything else zero, bias zero."""
    torch.manual_seed(0)
    for in_channels, out_channels in ((6, 4), (4, 6)):
        conv = nn.Conv2d(in_channels, out_channels, 1, bias=True)
        identity_like(conv)
        expected = torch.eye(out_channels, in_channels)[:, :, None, None]
        assert torch.equal(conv.weight, expected) and not conv.bias.any()


def test_downsample_depth_bridge_starts_identity_like():
    """init inherit: the new 1x1 bridge has weight[i, i] = 1 and zeros elsewhere; init random does not."""
    torch.manual_seed(0)
    model = unet(base_width=4)
    new, (record,) = apply(model, [{"name": "downsample_depth"}], SHAPE, count_flops=False)
    random, _ = apply(model, [{"name": "downsample_depth", "init": "random"}], SHAPE, count_flops=False)
    bridge = new.get_submodule("downsample_bridge_0")
    assert record.changed == ["downsample_bridge_0"]
    assert bridge.weight.shape == (32, 32, 1, 1)
    assert torch.equal(bridge.weight[:, :, 0, 0], torch.eye(32))
    assert not torch.equal(random.get_submodule("downsample_bridge_0").weight[:, :, 0, 0], torch.eye(32))


def test_downsample_depth_calibration_fits_the_bridge_to_the_deep_path():
    """calibrate: 1 refits the bridge to the removed deep path's output on the images: its error there drops below
    the identity-like start's, and below 1 (what an all-zero bridge scores)."""
    torch.manual_seed(0)
    model = unet(base_width=4)
    images = smooth_images(6, size=32)
    _, (plain,) = apply(model, [{"name": "downsample_depth"}], SHAPE, calibration=images, count_flops=False)
    _, (fitted,) = apply(
        model, [{"name": "downsample_depth", "calibrate": 1}], SHAPE, calibration=images, count_flops=False
    )
    before, after = plain.errors["downsample_bridge_0"], fitted.errors["downsample_bridge_0"]
    assert after < before and after < 1.0
    assert any("calibrated 1 of 1" in note for note in fitted.notes)


def test_calibrate_without_images_is_a_one_line_config_error():
    """Asking for calibration without calibration images is refused before anything runs."""
    with pytest.raises(ConfigError, match="calibrate") as caught:
        apply(unet(base_width=4), [{"name": "downsample_depth", "calibrate": 1}], SHAPE, calibration=None)
    assert "\n" not in str(caught.value)
    assert "calibration=" in str(caught.value)


# a trained network -------------------------------------------------------------------------


def regression_target(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(3 * F.avg_pool2d(x[:, :1] - x[:, 1:2], 3, stride=1, padding=1)) + 0.5 * x[:, 2:3] ** 2


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    """Three 3x3 convs with ReLUs, fitted for 150 Adam steps to a smooth non-linear map of image-like inputs."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 1, 3, padding=1),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        x = smooth_images(16)
        loss = F.mse_loss(net(x), regression_target(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x = smooth_images(64)
    with torch.no_grad():
        assert F.mse_loss(net(x), regression_target(x)) < 0.1 * regression_target(x).var()  # it did learn
    return net.eval()


TOY = (1, 3, 16, 16)


def test_separable_at_full_rank_keeps_a_trained_network(trained):
    """Depth multiplier 9 on 3x3 convs is exact: layer and output errors ~0."""
    torch.manual_seed(0)
    images = smooth_images(8)
    new, (record,) = apply(trained, [{"name": "separable", "depth_multiplier": 9}], TOY, calibration=images)
    assert set(record.errors) == {"0", "2", "4"}
    assert max(record.errors.values()) < 1e-5 and record.output_error < 1e-5
    assert output_error(trained, new, smooth_images(8)) < 1e-5


def test_fire_inherited_beats_a_random_start_on_a_trained_network(trained):
    """A wide squeeze (ratio 2) that inherits is much closer to the trained network than a random fire."""
    torch.manual_seed(0)
    images = smooth_images(8)
    recipe = [{"name": "fire", "squeeze_ratio": 2.0}]
    inherited, (record,) = apply(trained, recipe, TOY, calibration=images)
    random, (random_record,) = apply(trained, recipe, TOY, calibration=images, init="random")
    assert record.changed == ["0", "2"] and "4" in record.skipped  # one output channel: no fire
    assert record.output_error < 0.5 * random_record.output_error
    held_out = smooth_images(16)
    assert output_error(trained, inherited, held_out) < 0.5 * output_error(trained, random, held_out)


def test_calibration_on_real_images_lowers_the_fire_error(trained):
    """calibrate: 2 refits both fires on two batches; the output error drops, on those and on new images."""
    torch.manual_seed(0)
    batches = [smooth_images(16), smooth_images(16)]
    plain, (plain_record,) = apply(trained, [{"name": "fire", "squeeze_ratio": 1.0}], TOY, calibration=batches)
    fitted, (fitted_record,) = apply(
        trained, [{"name": "fire", "squeeze_ratio": 1.0, "calibrate": 2}], TOY, calibration=batches
    )
    assert any("calibrated 2 of 2 changed layers" in note and "on 32 images" in note for note in fitted_record.notes)
    assert fitted_record.output_error < plain_record.output_error
    held_out = smooth_images(32)
    assert output_error(trained, fitted, held_out) < output_error(trained, plain, held_out)


def test_prune_keeps_the_surviving_weights(trained):
    """After pruning 30% of the params the output is closer than the same pruned widths re-initialized."""
    torch.manual_seed(0)
    images = smooth_images(8)
    pruned, (record,) = apply(trained, [{"name": "prune", "ratio": 0.3}], TOY, calibration=images)
    assert record.params_after < record.params_before
    assert pruned[0].out_channels < 16  # channels did go
    for module in pruned.modules():
        if isinstance(module, nn.Conv2d):
            module.reset_parameters()
    assert record.output_error < output_error(trained, pruned, images)


# records -----------------------------------------------------------------------------------


@pytest.mark.parametrize("transform", ["separable", "fire", "skip_fusion"])
def test_every_changed_layer_has_a_finite_error(transform):
    """Each changed layer of U-Net gets one error entry, finite and >= 0; max_error is the largest of them."""
    torch.manual_seed(0)
    _, (record,) = apply(unet(base_width=4), [transform], SHAPE, count_flops=False)
    assert record.changed and set(record.errors) == set(record.changed)
    assert all(math.isfinite(value) and value >= 0 for value in record.errors.values())
    assert record.output_error is not None and math.isfinite(record.output_error)
    name, worst = record.max_error()
    assert worst == max(record.errors.values()) and record.errors[name] == worst


def test_inherited_slots_beyond_the_kernels_rank_still_train():
    """A squeeze one channel wide, or an odd one, and depthwise filters beyond the rank: exact and trainable."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 8, 8, 8)
    for ratio in (0.125, 0.625):  # squeeze widths 1 and 5
        fire = Fire(8, 8, squeeze_ratio=ratio, activation=False)
        inherit_fire(conv, fire)
        fire(x).square().sum().backward()
        assert all(float(parameter.grad.abs().sum()) > 0 for parameter in fire.parameters())
    separable = SeparableConv2d(8, 4, 3, padding=1, depth_multiplier=6)
    narrow = nn.Conv2d(8, 4, 3, padding=1, bias=False)  # rank <= 4 per input channel: 2 spare filters each
    inherit_separable(narrow, separable)
    assert torch.allclose(separable(x), narrow(x), atol=1e-5)
    separable(x).square().sum().backward()
    spare = separable.pointwise.weight.grad.reshape(4, 8, 6)[:, :, 4:]
    assert float(spare.abs().sum()) > 0  # read with weight 0 at first, but they learn
