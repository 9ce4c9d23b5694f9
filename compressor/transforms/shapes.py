"""Shapes seen while a model runs: which conv runs at which resolution, in what order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ConvCall", "conv_calls"]


@dataclass(frozen=True)
class ConvCall:
    """One call of a conv layer during a forward pass."""

    name: str
    module: nn.Conv2d
    input_size: tuple[int, int]
    output_size: tuple[int, int]


def conv_calls(model: nn.Module, example_input: torch.Tensor) -> list[ConvCall]:
    """Runs ``model`` once and lists its ``Conv2d`` calls in execution order.

    A layer called several times (weight sharing) is listed at its first call only.
    """
    calls: list[ConvCall] = []
    seen: set[int] = set()
    names = {id(module): name for name, module in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        calls.append(ConvCall(names[id(module)], module, tuple(inputs[0].shape[-2:]), tuple(output.shape[-2:])))

    run_hooked(model, example_input, [m for m in model.modules() if type(m) is nn.Conv2d], hook)
    return calls


def run_hooked(
    model: nn.Module, example_input: torch.Tensor, modules: list[nn.Module],
    hook: Callable[[nn.Module, tuple, object], None],
) -> None:
    """Runs ``model`` once on ``example_input`` in eval mode without gradients, with ``hook`` as a
    forward hook on each of ``modules``; the hooks and the train/eval mode are restored after."""
    handles = [module.register_forward_hook(hook) for module in modules]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
