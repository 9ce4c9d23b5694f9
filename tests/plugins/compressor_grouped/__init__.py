"""The worked example of docs/architecture.md, packaged as a third party would: ``grouped``
makes each dense k x k conv a grouped one. One file, and an entry point in its metadata::

    [compressor.transforms]
    grouped = compressor_grouped:Grouped

It declares the traits it refuses and leaves without editing compressor: a trait of its own
(``no-divisible-conv``, checked on the network) and the built-in ``grouped-conv`` its output has
(``prune`` refuses a network whose every prunable layer is coupled to a grouped conv). The tests
run it through the contract suite and a budgeted ``generic`` search (tests/test_plugins.py).
"""

from __future__ import annotations

import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.transforms import Change, Trait, register_transform
from compressor.transforms.selection import LayerTransform, replace_submodule

__all__ = ["Grouped"]


def _divisible(conv: nn.Conv2d, groups: int) -> bool:
    return conv.groups == 1 and max(conv.kernel_size) > 1 and not conv.in_channels % groups \
        and not conv.out_channels % groups


@register_transform("grouped")
class Grouped(LayerTransform):
    """Replaces each dense k x k Conv2d whose widths allow it with a conv of ``groups`` groups."""

    example = {"groups": 2}
    traits = {"no-divisible-conv": Trait(
        "no dense k x k conv whose widths divide by 2",
        found=lambda model: not any(isinstance(m, nn.Conv2d) and _divisible(m, 2) for m in model.modules()),
    )}
    refuses = {"no-dense-conv": r"no layer could be changed", "no-divisible-conv": r"no layer could be changed"}
    produces = frozenset({"grouped-conv", "concat-into-other"})  # a cat now feeds a grouped conv

    def __init__(self, *, groups: int = 2, **selection) -> None:
        super().__init__(**selection)
        if groups < 2:
            raise ConfigError(f"grouped: groups must be >= 2, got {groups}")
        self.groups = groups

    def transform(self, model, example_input):
        change = Change()
        for name, conv in self.selected(model):
            if conv.groups != 1 or max(conv.kernel_size) == 1:
                self.skip(change, name, "is grouped or 1x1 already")
                continue
            if conv.in_channels % self.groups or conv.out_channels % self.groups:
                self.skip(change, name, f"has widths not divisible by {self.groups}")
                continue
            grouped = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                                padding=conv.padding, dilation=conv.dilation, groups=self.groups,
                                bias=conv.bias is not None)
            step_in, step_out = conv.in_channels // self.groups, conv.out_channels // self.groups
            with torch.no_grad():  # keep the diagonal blocks of the dense kernel
                for group in range(self.groups):
                    outputs = slice(group * step_out, (group + 1) * step_out)
                    inputs = slice(group * step_in, (group + 1) * step_in)
                    grouped.weight[outputs] = conv.weight[outputs, inputs]
                if conv.bias is not None:
                    grouped.bias.copy_(conv.bias)
            replace_submodule(model, name, grouped.to(conv.weight.device))
            change.changed.append(name)
        self.require_changes(model, change)
        return model, change
