"""Batch norm folded into the convolutions before it, on the exported ONNX graph.

PyTorch's exporter folds a batch norm that directly follows a convolution; it leaves those
that follow a concatenation of convolutions, which is how a fire module ends (squeeze, two
expand convolutions concatenated, then the norm). Here each ``BatchNormalization`` whose
input is made only for it by a ``Conv`` / ``ConvTranspose`` (ungrouped), or by a channel
``Concat`` of such convolutions, becomes a scale and shift of those convolutions' weights and
biases. In eval mode a batch norm is ``y = a * x + b`` per channel, with ``a = gamma /
sqrt(var + eps)`` and ``b = beta - mean * a``; a convolution followed by it is the
convolution with its output channel ``c`` scaled by ``a[c]`` and ``b[c]`` added to its bias.
What cannot be folded (a norm after an addition, a grouped transposed convolution) is left
and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FoldReport", "fold_batch_norms"]


@dataclass(frozen=True)
class FoldReport:
    """How many batch norms were folded, and how many are left in the graph."""

    folded: int
    left: int

    def describe(self) -> str:
        """``18 batch norms folded into convolutions, 0 left``."""
        if not self.folded and not self.left:
            return "no batch norm"
        return f"{self.folded} batch norm{'s' if self.folded != 1 else ''} folded into convolutions, {self.left} left"


def fold_batch_norms(model: Any, *, already_folded: int = 0) -> FoldReport:
    """Folds, in place, every foldable ``BatchNormalization`` of the ONNX ``model`` (a ModelProto).

    ``already_folded``: norms the exporter folded itself, added to the count.
    """
    from onnx import numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    identity_of = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "Identity"}
    producer = {output: node for node in graph.node for output in node.output}
    uses = Counter(name for node in graph.node for name in node.input)
    uses.update(output.name for output in graph.output)

    def constant(name: str) -> np.ndarray | None:
        while name not in initializers and name in identity_of:
            name = identity_of[name]
        return numpy_helper.to_array(initializers[name]) if name in initializers else None

    def foldable_conv(name: str) -> Any:
        node = producer.get(name)
        if node is None or uses[name] != 1 or node.op_type not in ("Conv", "ConvTranspose"):
            return None
        group = next((attribute.i for attribute in node.attribute if attribute.name == "group"), 1)
        if node.op_type == "ConvTranspose" and group != 1:
            return None
        if constant(node.input[1]) is None or (len(node.input) > 2 and node.input[2] and constant(node.input[2]) is None):
            return None
        return node

    folded, removed = 0, []
    for norm in [node for node in graph.node if node.op_type == "BatchNormalization"]:
        training = any(attribute.name == "training_mode" and attribute.i for attribute in norm.attribute)
        if len(norm.output) != 1 or training:  # training-mode norm: batch statistics, running ones are outputs
            continue
        parameters = [constant(name) for name in norm.input[1:5]]
        if any(value is None for value in parameters):
            continue
        gamma, beta, mean, var = (value.astype(np.float64) for value in parameters)
        epsilon = next((attribute.f for attribute in norm.attribute if attribute.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + epsilon)
        shift = beta - mean * scale
        convs = _convs_feeding(norm.input[0], producer, uses, foldable_conv)
        if convs is None or sum(_out_channels(conv, constant) for conv in convs) != scale.shape[0]:
            continue
        start = 0
        for conv in convs:
            width = _out_channels(conv, constant)
            _scale_conv(conv, scale[start:start + width], shift[start:start + width], graph, constant)
            start += width
        # the norm's consumers now read what fed it
        for node in graph.node:
            for index, name in enumerate(node.input):
                if name == norm.output[0]:
                    node.input[index] = norm.input[0]
        for output in graph.output:
            if output.name == norm.output[0]:  # the norm was the graph's output: rename its input instead
                _rename_output(graph, norm.input[0], norm.output[0])
        removed.append(norm)
        folded += 1
    for norm in removed:
        graph.node.remove(norm)
    _drop_unused_initializers(graph)
    left = sum(1 for node in graph.node if node.op_type == "BatchNormalization")
    return FoldReport(folded=folded + already_folded, left=left)


def _convs_feeding(name: str, producer: dict, uses: Counter, foldable_conv: Any) -> list | None:
    conv = foldable_conv(name)
    if conv is not None:
        return [conv]
    node = producer.get(name)
    if node is None or node.op_type != "Concat" or uses[name] != 1:
        return None
    axis = next((attribute.i for attribute in node.attribute if attribute.name == "axis"), None)
    if axis != 1:
        return None
    convs = [foldable_conv(part) for part in node.input]
    return None if any(conv is None for conv in convs) else convs


def _out_channels(conv: Any, constant: Any) -> int:
    weight = constant(conv.input[1])
    return weight.shape[0] if conv.op_type == "Conv" else weight.shape[1]


def _scale_conv(conv: Any, scale: np.ndarray, shift: np.ndarray, graph: Any, constant: Any) -> None:
    from onnx import numpy_helper

    weight = constant(conv.input[1])
    bias = constant(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(scale.shape[0], weight.dtype)
    axis_shape = [1] * weight.ndim
    axis_shape[0 if conv.op_type == "Conv" else 1] = -1  # Conv: (out, in/g, ...); ConvTranspose: (in, out, ...)
    new_weight = (weight.astype(np.float64) * scale.reshape(axis_shape)).astype(weight.dtype)
    new_bias = (bias.astype(np.float64) * scale + shift).astype(weight.dtype)
    names = {tensor.name for tensor in graph.initializer}
    weight_name, bias_name = _fresh(f"{conv.name or conv.output[0]}.folded_weight", names), ""
    names.add(weight_name)
    bias_name = _fresh(f"{conv.name or conv.output[0]}.folded_bias", names)
    graph.initializer.extend([numpy_helper.from_array(new_weight, weight_name), numpy_helper.from_array(new_bias, bias_name)])
    conv.input[1] = weight_name
    if len(conv.input) > 2:
        conv.input[2] = bias_name
    else:
        conv.input.append(bias_name)


def _fresh(name: str, taken: set[str]) -> str:
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}.{number}"
    return candidate


def _rename_output(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        for index, name in enumerate(node.output):
            if name == old:
                node.output[index] = new
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new


def _drop_unused_initializers(graph: Any) -> None:
    # Identity nodes alias initializers: drop the dead ones first, then what nothing reads
    while True:
        used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
        dead = [node for node in graph.node if node.op_type == "Identity" and node.output[0] not in used]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    for tensor in [tensor for tensor in graph.initializer if tensor.name not in used]:
        graph.initializer.remove(tensor)
