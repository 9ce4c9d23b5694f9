"""trace_with_shapes: the shapes it records, and its refusal of a graph that does not stand for the model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

import compressor
from compressor.outputs import declare_output
from compressor.transforms.base import TransformError
from compressor.transforms.graph import node_shape, trace_with_shapes


class TwoHeads(nn.Module):
    """A tuple output, a shape read in forward, an up-sampling: what node metadata must carry through."""

    def __init__(self) -> None:
        super().__init__()
        declare_output(self, 0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Conv2d(24, 2, 1)
        self.aux = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        stem = torch.relu(self.stem(x))
        deep = self.down(stem)
        up = nn.functional.interpolate(deep, size=x.shape[-2:], mode="nearest")
        return self.head(torch.cat([stem, up], dim=1)), self.aux(deep)


class CoordinatesCat(nn.Module):
    """Concatenates a registered buffer (a coordinate map) with features: a node torch.fx adds without a proxy."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.register_buffer("coords", torch.randn(1, 8, 16, 16))
        self.fuse = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.fuse(torch.cat([self.stem(x), self.coords], dim=1)))


class LateInPlace(nn.Module):
    """Changes a kept tensor's shape in place after the output is computed: its node's shape is what it was made with."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        stem = self.stem(x)
        out = self.head(stem)
        stem.unsqueeze_(0)
        return out


class ScratchReuse(nn.Module):
    """Scales by a tensor it then changes in place outside the graph: the graph holds the changed constant."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        scale = torch.ones(1, 8, 1, 1)
        features = self.stem(x) * scale
        scale.mul_(0.5)
        return self.head(features * scale)


class AuxNoise(nn.Module):
    """Draws random numbers for an output nobody reads (the declared one is ``out``)."""

    def __init__(self) -> None:
        super().__init__()
        declare_output(self, "out")
        self.stem = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        out = self.stem(x)
        return {"out": out, "sample": out + torch.randn_like(out)}


class TensorCheck(nn.Module):
    """Doubles its output where ``isinstance`` sees a tensor: eager does, a tracer's proxy does not."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y * 2 if isinstance(y, torch.Tensor) else y


class Counter(nn.Module):
    """Adds how often it was called: state a graph bakes in as a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x) + self.calls


@pytest.mark.parametrize("make", [lambda: compressor.unet(base_width=4), TwoHeads, CoordinatesCat, LateInPlace],
                         ids=["unet", "two_heads", "buffer", "late_in_place"])
def test_each_node_has_the_shape_a_run_of_the_graph_gives(make):
    torch.manual_seed(0)
    model = make().eval()
    example = torch.randn(1, 3, 16 if make is CoordinatesCat else 32, 16 if make is CoordinatesCat else 32)
    graph = trace_with_shapes(model, example, transform="skip_fusion")
    again = copy.deepcopy(graph)
    with torch.no_grad():  # as the capture runs
        ShapeProp(again).propagate(example)
    recorded = {node.name: (node.meta.get("tensor_meta"), node.meta.get("type")) for node in graph.graph.nodes}
    propagated = {node.name: (node.meta.get("tensor_meta"), node.meta.get("type")) for node in again.graph.nodes}
    assert recorded == propagated
    shapes = [node_shape(node) for node in graph.graph.nodes if node.op == "call_module"]
    assert len(shapes) >= 2 and all(shape is not None and len(shape) == 4 for shape in shapes)


@pytest.mark.parametrize("model", [TensorCheck(), Counter(), ScratchReuse()], ids=["isinstance", "state", "constant"])
def test_a_graph_that_computes_something_else_than_the_model_is_refused(model):
    with pytest.raises(TransformError) as raised:
        trace_with_shapes(model, torch.randn(1, 3, 16, 16), transform="skip_fusion")
    assert str(raised.value) == (
        f"skip_fusion: the captured graph of {type(model).__name__} computes something else than the model (its "
        "forward() depends on something the graph cannot hold); refusing to rewrite it"
    )


@pytest.mark.parametrize("training", [True, False])
def test_the_graph_is_left_in_the_models_mode(training):
    model = TwoHeads().train(training)
    graph = trace_with_shapes(model, torch.randn(1, 3, 16, 16), transform="skip_fusion")
    assert model.training is training and graph.training is training
    assert all(module.training is training for module in graph.modules())


def test_a_buffer_beside_features_is_fused_as_a_skip():
    network, records = compressor.apply(CoordinatesCat().eval(), [{"name": "skip_fusion"}], (1, 3, 16, 16))
    assert records[0].changed and network(torch.zeros(1, 3, 16, 16)).shape == (1, 2, 16, 16)


def test_a_forward_that_draws_random_numbers_leaves_the_random_state_a_run_of_the_graph_leaves():
    """The capture, the model's run and the graph's run each draw once: a build after it starts its new layers
    from the random state it always did."""
    model, example = AuxNoise().eval(), torch.randn(1, 3, 16, 16)
    torch.manual_seed(3)
    trace_with_shapes(model, example, transform="skip_fusion")
    after = torch.random.get_rng_state()
    torch.manual_seed(3)
    with torch.no_grad():
        for _ in range(3):
            model(example)
    assert torch.equal(after, torch.random.get_rng_state())
