"""A transform from another package: ``low_rank`` factors each k x k conv into a rank-r pair.

This package is what a third party would ship: one file, and an entry point in its metadata
(``compressor_low_rank-0.1.0.dist-info/entry_points.txt`` here, written by pip from its
``setup.cfg``)::

    [compressor.transforms]
    low_rank = compressor_low_rank:LowRank

The tests put this folder on the path (as installing it would) and check that the transform
is listed by ``compressor transforms``, runs from a recipe, goes through the contract suite
and is sampled by the ``generic`` search space, with nothing in compressor/ naming it.
"""

from __future__ import annotations

import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.transforms import Change
from compressor.transforms.selection import LayerTransform, replace_submodule

__all__ = ["LowRank"]


class LowRank(LayerTransform):
    """Replaces each dense k x k ``Conv2d`` with a k x k conv to ``r`` channels and a 1 x 1 conv
    back, ``r = rank_ratio * min(out, in * k * k)``, initialised from the truncated SVD of
    the kernel (the best rank-r approximation of the layer).

    Args:
        rank_ratio: the share of the full rank kept (0 < ratio < 1).
    """

    name = "low_rank"
    example = {"rank_ratio": 0.5}
    refuses = {"no-dense-conv": r"no layer could be changed"}

    def __init__(self, *, rank_ratio: float = 0.5, **selection) -> None:
        super().__init__(**selection)
        if not 0 < rank_ratio < 1:
            raise ConfigError(f"low_rank: rank_ratio must be between 0 and 1, got {rank_ratio}")
        self.rank_ratio = rank_ratio

    def transform(self, model: nn.Module, example_input: torch.Tensor) -> tuple[nn.Module, Change]:
        change = Change()
        for name, conv in self.selected(model):
            if conv.groups != 1 or max(conv.kernel_size) == 1:
                self.skip(change, name, "is grouped or 1x1 (nothing to factor)")
                continue
            weight = conv.weight.detach().flatten(1)  # (out, in * k * k)
            rank = max(1, round(self.rank_ratio * min(weight.shape)))
            first = nn.Conv2d(conv.in_channels, rank, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                              dilation=conv.dilation, bias=False, padding_mode=conv.padding_mode)
            second = nn.Conv2d(rank, conv.out_channels, 1, bias=conv.bias is not None)
            u, s, vh = torch.linalg.svd(weight.float(), full_matrices=False)
            root = s[:rank].sqrt()
            with torch.no_grad():
                first.weight.copy_((root[:, None] * vh[:rank]).reshape(first.weight.shape))
                second.weight.copy_((u[:, :rank] * root[None, :]).reshape(second.weight.shape))
                if conv.bias is not None:
                    second.bias.copy_(conv.bias)
            replace_submodule(model, name, nn.Sequential(first, second).to(conv.weight.device))
            change.changed.append(name)
        self.require_changes(model, change)
        return model, change
