from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from compressor import measure, micronet, unet
from compressor.errors import ConfigError


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)

    def forward(self, x):
        return x + self.conv(x)


@pytest.mark.parametrize(
    ("module", "shape", "expected_flops"),
    [
        # k*k*Cin*Cout*Hout*Wout
        (nn.Conv2d(3, 8, 3, padding=1, bias=False), (1, 3, 10, 10), 3 * 8 * 9 * 100),
        # stride 2: output 5x5
        (nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), (1, 3, 10, 10), 3 * 8 * 9 * 25),
        # depthwise: one input channel per output channel
        (nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), (1, 8, 10, 10), 8 * 9 * 100),
        # dilated without padding: output (10 - 2*2) = 6
        (nn.Conv2d(3, 8, 3, dilation=2, bias=False), (1, 3, 10, 10), 3 * 8 * 9 * 36),
        # dilated with same padding keeps 10x10
        (nn.Conv2d(3, 8, 3, dilation=2, padding=2, bias=False), (1, 3, 10, 10), 3 * 8 * 9 * 100),
        # transposed 2x2 stride 2: every input pixel multiplies a Cin x Cout x 2 x 2 kernel
        (nn.ConvTranspose2d(4, 6, 2, stride=2, bias=False), (1, 4, 5, 5), 4 * 6 * 4 * 25),
        # linear on a batch of 2
        (nn.Linear(10, 5, bias=False), (2, 10, 1), 2 * 10 * 5),
        # batch of 3 triples a conv
        (nn.Conv2d(2, 2, 1, bias=False), (3, 2, 4, 4), 3 * 2 * 2 * 16),
    ],
    ids=["conv", "strided", "depthwise", "dilated", "dilated-same", "transposed", "linear", "batch"],
)
def test_flops_of_tiny_nets_match_hand_counts(module, shape, expected_flops):
    if isinstance(module, nn.Linear):
        module = nn.Sequential(nn.Flatten(), module)
        cost = measure(module, shape)
    else:
        cost = measure(module, shape)
    assert cost.flops == expected_flops
    assert cost.params == sum(p.numel() for p in module.parameters())


def test_by_module_is_keyed_by_dotted_names_and_sums_up():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), Residual())
    cost = measure(model, (1, 3, 8, 8))
    assert cost.by_module[""].flops == cost.flops
    assert cost.by_module["0"].flops == 3 * 4 * 9 * 64
    assert cost.by_module["2.conv"].flops == 4 * 4 * 9 * 64
    assert cost.by_module["2.conv"].params == 4 * 4 * 9
    assert set(cost.top_level()) == {"0", "1", "2"}


def test_unsupported_ops_are_listed_not_dropped():
    cost = measure(nn.Sequential(Residual(), nn.MaxPool2d(2)), (1, 4, 8, 8))
    assert cost.unsupported_ops == {"aten::add": 1, "aten::max_pool2d": 1}


def test_activation_bytes_count_each_distinct_leaf_output_once():
    # conv output 1x4x8x8 float32, ReLU in place (same storage), pool output 1x4x4x4
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
    cost = measure(model, (1, 3, 8, 8))
    assert cost.activation_bytes == (4 * 64 + 4 * 16) * 4


def test_reference_models_at_224_match_the_design_numbers():
    big, small = measure(unet(), (1, 3, 224, 224)), measure(micronet(), (1, 3, 224, 224))
    assert big.params == 31_024_960 and small.params == 1_055_920
    assert big.flops / 1e9 == pytest.approx(36.9, abs=0.05)
    assert small.flops / 1e9 == pytest.approx(7.2, abs=0.05)
    assert small.ratios_to(big)["params"] == pytest.approx(29.38, abs=0.005)


class OneSlowCallInFive(nn.Conv2d):
    """A conv that stalls 80 ms on every fifth call: any 5 timed passes hold exactly one stall."""

    calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls % 5 == 0:
            time.sleep(0.08)
        return super().forward(x)


def test_latency_is_a_median_of_the_requested_runs():
    """One stalled pass in five moves a mean by 16 ms; the median stays at the usual pass, the
    90th percentile shows the stall."""
    cost = measure(OneSlowCallInFive(3, 4, 3), (1, 3, 16, 16), latency_runs=5, threads=1)
    assert cost.latency_runs == 5
    assert 0 < cost.latency_ms < 8 and cost.latency_p90_ms > 40
    assert measure(nn.Conv2d(3, 4, 3), (1, 3, 16, 16)).latency_ms is None


def test_measure_restores_training_mode_and_leaves_weights_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure(model, (2, 3, 8, 8))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_shape_the_model_cannot_take_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"cannot run on input shape \(1, 5, 8, 8\)"):
        measure(nn.Conv2d(3, 4, 3), (1, 5, 8, 8))
    with pytest.raises(ConfigError, match="input shape"):
        measure(nn.Conv2d(3, 4, 3), "1,3,x")


def test_to_dict_is_plain_data():
    import json

    data = measure(nn.Conv2d(3, 4, 3), (1, 3, 8, 8)).to_dict()
    assert json.loads(json.dumps(data))["params"] == 3 * 4 * 9 + 4


class ReturnsAnObject(nn.Module):
    """Runs eagerly, but jit tracing (fvcore's way of counting) refuses its output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x), object()


def test_a_model_fvcore_cannot_trace_is_a_clear_error_and_keeps_no_hook():
    model = ReturnsAnObject()
    with pytest.raises(ConfigError, match=r"fvcore cannot trace ReturnsAnObject at input shape \(1, 1, 8, 8\)"):
        measure(model, (1, 1, 8, 8))
    for module in model.modules():  # neither our activation hooks nor fvcore's scope hooks stay behind
        assert not module._forward_hooks and not module._forward_pre_hooks, module


def test_activation_bytes_and_flops_come_from_one_forward_pass():
    calls = []
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True))
    model[0].register_forward_hook(lambda *_: calls.append(1))
    cost = measure(model, (1, 3, 8, 8))
    assert len(calls) == 1
    assert cost.flops == 3 * 4 * 9 * 64 and cost.activation_bytes == 4 * 64 * 4
    assert len(model[0]._forward_hooks) == 1  # the caller's own hook is left where it was


class HooksItselfThenFails(nn.Module):
    """Registers a hook of its own during the forward, then returns what jit tracing refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    hooked = False

    def forward(self, x):
        if not self.hooked:  # during fvcore's trace, beside its hooks and ours
            self.hooked = True
            self.conv.register_forward_hook(lambda *_: None)
        return self.conv(x), object()


def test_a_failed_trace_removes_fvcores_hooks_and_leaves_the_models_own():
    model = HooksItselfThenFails()
    with pytest.raises(ConfigError, match="fvcore cannot trace"):
        measure(model, (1, 1, 8, 8))
    assert len(model.conv._forward_hooks) == 1  # the model's own hook stays
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert not model.conv._forward_pre_hooks
