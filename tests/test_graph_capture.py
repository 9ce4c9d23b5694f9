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


@pytest.mark.parametrize("make", [lambda: compressor.unet(base_width=4), TwoHeads], ids=["unet", "two_heads"])
def test_each_node_has_the_shape_a_run_of_the_graph_gives(make):
    torch.manual_seed(0)
    model = make().eval()
    example = torch.randn(1, 3, 32, 32)
    graph = trace_with_shapes(model, example, transform="skip_fusion")
    again = copy.deepcopy(graph)
    with torch.no_grad():  # as the capture runs
        ShapeProp(again).propagate(example)
    recorded = {node.name: (node.meta.get("tensor_meta"), node.meta.get("type")) for node in graph.graph.nodes}
    propagated = {node.name: (node.meta.get("tensor_meta"), node.meta.get("type")) for node in again.graph.nodes}
    assert recorded == propagated
    shapes = [node_shape(node) for node in graph.graph.nodes if node.op == "call_module"]
    assert len(shapes) > 3 and all(shape is not None and len(shape) == 4 for shape in shapes)


@pytest.mark.parametrize("model", [TensorCheck(), Counter()], ids=["isinstance", "state"])
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
