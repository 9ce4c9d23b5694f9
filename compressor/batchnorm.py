"""Batch-norm statistics recomputed for a network whose layers changed under them."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["reestimate_on"]


@torch.no_grad()
def reestimate_on(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Recomputes every batch norm's running mean and variance from ``batches`` of images.

    The statistics are reset and averaged over the batches (cumulative, not the usual
    moving average), the weights are not touched, and the model goes back to its mode.
    Returns the number of batch-norm layers re-estimated (0, and nothing run, without any).
    """
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    device = next((parameter.device for parameter in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.train()
    try:
        for images in batches:
            model(images.to(device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    return len(norms)
