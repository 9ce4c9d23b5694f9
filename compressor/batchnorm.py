"""Batch-norm statistics recomputed for a network whose layers changed under them."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["reestimate_on"]


class _Stop(Exception):
    """Ends a forward pass at the module the re-estimation stops before."""


@torch.no_grad()
def reestimate_on(model: nn.Module, batches: Iterable[torch.Tensor], *, before: nn.Module | None = None) -> int:
    """Recomputes every batch norm's running mean and variance from ``batches`` of images.

    The statistics are reset and averaged over the batches (cumulative, not the usual
    moving average), the weights are not touched, and the model goes back to its mode.
    Returns the number of batch-norm layers re-estimated (0, and nothing run, without any).

    ``before``: each pass stops when that module is called, and only the batch norms that ran
    before it are re-estimated; the others keep their statistics (what a layer-by-layer
    reconstruction needs for the next layer's inputs, at a part of a pass's cost).
    """
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = {norm: norm.momentum for norm in norms}
    touched: list[nn.Module] = []

    def reset(norm: nn.Module, _args: tuple) -> None:
        if norm not in touched:  # its first call in this re-estimation: from nothing, cumulative
            touched.append(norm)
            norm.reset_running_stats()
            norm.momentum = None

    def stop(_module: nn.Module, _args: tuple) -> None:
        raise _Stop

    handles = [norm.register_forward_pre_hook(reset) for norm in norms if norm is not before]  # stopped at: not reset
    if before is not None:
        handles.append(before.register_forward_pre_hook(stop))
    device = next((parameter.device for parameter in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.train()
    try:
        for images in batches:
            try:
                model(images.to(device))
            except _Stop:
                pass
    finally:
        for handle in handles:
            handle.remove()
        for norm in touched:
            norm.momentum = momenta[norm]
        model.train(was_training)
    return len(touched)
