"""Least-squares reconstruction: the last linear layers of each replacement solved in closed form.

A replacement whose output is made by convolutions with nothing after them (a plain conv that
took another's place, a separable conv's pointwise, a fire module's two expands when it ends
without a norm or an activation) gives an output that is linear in those convolutions' weights
once their inputs are fixed. Their weights can then be solved for, as channel pruning's
feature-map reconstruction does (He et al. 2017; ThiNet, Luo et al. 2017): the inputs the student
gives them and the teacher's tensor at the point, over the calibration images, make the normal
equations ``(X^T W X + l I) w = X^T W y`` (``W``: the class-balanced pixel weights, ``l``: a small
ridge), one small system per convolution, accumulated batch by batch in float64.

A pass runs the student once over the calibration images and solves every point's system with
the inputs that pass gave; the next pass feeds each point what the solved points before it now
give (so later points make up for earlier errors, as ``source: student`` does for the Adam
methods). A convolution whose solution does not lower its own weighted error keeps its weights.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(4, 3, 3, padding=1)
    >>> target = nn.Conv2d(4, 3, 3, padding=1)
    >>> x = torch.randn(16, 4, 8, 8)
    >>> system = NormalEquations(conv, slice(0, 3))
    >>> system.add(x, target(x).detach(), None)
    >>> system.solve_into()
    True
    >>> bool(torch.allclose(conv(x), target(x), atol=1e-3))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compressor.models.blocks import Fire, SeparableConv2d

__all__ = ["MAX_FEATURES", "NormalEquations", "linear_tail", "ridge_solve", "tail_inputs", "write_solution"]

#: A convolution whose unfolded input has more features than this is left alone: its system is
#: features x features in float64 (4608: 170 MB, a 512-channel 3x3 conv).
MAX_FEATURES = 4608
#: The ridge, relative to the mean of the system's diagonal: enough to solve a system with dead inputs.
RIDGE = 1e-5
#: Rows of the unfolded input handled at once, whole images (the memory of one chunk: about ROWS x features doubles).
ROWS = 1 << 16


def linear_tail(module: nn.Module, *, max_features: int | None = MAX_FEATURES) -> list[tuple[nn.Conv2d, slice]] | None:
    """The convolutions whose outputs are ``module``'s output as they are (side by side along the channels,
    nothing after them), each with the output channels it makes; None when ``module`` is not so made, or one
    of them cannot be solved here (grouped, a padding mode other than zeros, more input features than
    ``max_features``: None, any)."""
    if isinstance(module, nn.Conv2d):
        tail = [(module, slice(0, module.out_channels))]
    elif isinstance(module, SeparableConv2d):
        tail = [(module.pointwise, slice(0, module.pointwise.out_channels))]
    elif isinstance(module, Fire) and all(isinstance(part, nn.Identity) for part in
                                          (module.act, module.expand1x1.norm, module.expand1x1.act,
                                           module.expand3x3.norm, module.expand3x3.act)):
        split = module.expand1x1.conv.out_channels
        tail = [(module.expand1x1.conv, slice(0, split)),
                (module.expand3x3.conv, slice(split, split + module.expand3x3.conv.out_channels))]
    else:
        return None
    for conv, _ in tail:
        if type(conv) is not nn.Conv2d or conv.groups != 1 or conv.padding_mode != "zeros" or _padding(conv) is None:
            return None
        if max_features is not None and _input_features(conv) > max_features:
            return None
    return tail


def tail_inputs(module: nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    """What each convolution of ``module``'s :func:`linear_tail` is fed when ``module`` is fed ``inputs``."""
    if isinstance(module, SeparableConv2d):
        return [module.act(module.norm(module.depthwise(inputs)))]
    if isinstance(module, Fire):
        squeezed = module.squeeze(inputs)
        return [squeezed, squeezed]
    return [inputs]


def ridge_solve(gram: torch.Tensor, cross: torch.Tensor, ridge: float) -> torch.Tensor | None:
    """The solution of ``(gram + r I) w = cross``, ``r`` being ``ridge`` times the mean of ``gram``'s diagonal
    (a tiny floor keeps an all-zero system posed); None when it is not finite."""
    strength = ridge * float(gram.diagonal().mean()) + 1e-12
    identity = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    solution = torch.linalg.solve(gram + strength * identity, cross)
    return solution if torch.isfinite(solution).all() else None


@torch.no_grad()
def write_solution(conv: nn.Conv2d, solution: torch.Tensor) -> None:
    """Writes a features x outputs ``solution`` (weights in ``conv.weight``'s order, then the bias) into ``conv``."""
    weights = solution[: solution.shape[0] - (conv.bias is not None)]
    conv.weight.copy_(weights.T.reshape(conv.weight.shape).to(conv.weight.dtype))
    if conv.bias is not None:
        conv.bias.copy_(solution[-1].to(conv.bias.dtype))


def _input_features(conv: nn.Conv2d) -> int:
    """The unfolded input's features: one per input channel and kernel tap."""
    return conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]


def _padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """The zero padding of ``conv`` as numbers (``same`` with an odd kernel, ``valid``); None if not symmetric."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        if any(size % 2 == 0 for size in conv.kernel_size) or conv.stride != (1, 1):
            return None
        return tuple(dilation * (size - 1) // 2 for size, dilation in zip(conv.kernel_size, conv.dilation))
    return tuple(conv.padding)


class NormalEquations:
    """``X^T W X``, ``X^T W y`` and ``y^T W y`` of one convolution's least-squares fit, added to batch by batch.

    Args:
        conv: the convolution whose weights are solved for.
        channels: the channels of the point's output it makes.
    """

    def __init__(self, conv: nn.Conv2d, channels: slice) -> None:
        self.channels = channels
        features, outputs = _input_features(conv) + (conv.bias is not None), conv.out_channels  # the bias: a column of ones
        self.gram = torch.zeros(features, features, dtype=torch.float64)
        self.cross = torch.zeros(features, outputs, dtype=torch.float64)
        self.squares = torch.zeros(outputs, dtype=torch.float64)
        self.conv = conv

    def add(self, inputs: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> None:
        """Adds a batch: ``inputs`` what the convolution was fed, ``target`` its channels of the teacher's tensor,
        ``weights`` the ``(N, 1, H, W)`` pixel weights (averaged down to the target's size) or None."""
        wanted = target.detach().double().cpu()
        if weights is not None:
            scale = F.adaptive_avg_pool2d(weights.detach().double().cpu(), wanted.shape[-2:])
        else:
            scale = torch.ones(wanted.shape[0], 1, *wanted.shape[-2:], dtype=torch.float64)
        positions = wanted.shape[-2:].numel()
        step = max(1, ROWS // max(positions, 1))  # images unfolded at once: about ROWS rows
        for start in range(0, inputs.shape[0], step):
            self._add_rows(inputs[start:start + step], wanted[start:start + step], scale[start:start + step])

    def _add_rows(self, inputs: torch.Tensor, wanted: torch.Tensor, scale: torch.Tensor) -> None:
        conv = self.conv
        columns = F.unfold(inputs.detach().double().cpu(), conv.kernel_size, dilation=conv.dilation, padding=_padding(conv),
                           stride=conv.stride)  # (N, C*kh*kw, L), channel-major like conv.weight.reshape(out, -1)
        rows = columns.transpose(1, 2).reshape(-1, columns.shape[1])
        if conv.bias is not None:
            rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
        if wanted.shape[-2:].numel() * wanted.shape[0] != rows.shape[0]:
            raise ValueError(f"the target's {tuple(wanted.shape)} positions are not the convolution's output's")
        values = wanted.flatten(2).transpose(1, 2).reshape(-1, wanted.shape[1])
        weight = scale.flatten()[:, None]
        weighted = rows * weight
        self.gram += rows.T @ weighted
        self.cross += weighted.T @ values
        self.squares += (values * values * weight).sum(dim=0)

    def error(self, solution: torch.Tensor) -> float:
        """The weighted squared error of ``solution`` (features x outputs) on what was added."""
        return float((solution * (self.gram @ solution)).sum() - 2 * (solution * self.cross).sum() + self.squares.sum())

    def current(self) -> torch.Tensor:
        """The convolution's weights (and bias) as a features x outputs solution."""
        conv = self.conv
        current = conv.weight.detach().double().cpu().reshape(conv.out_channels, -1).T
        if conv.bias is not None:
            current = torch.cat([current, conv.bias.detach().double().cpu()[None]], dim=0)
        return current

    @torch.no_grad()
    def solve_into(self) -> bool:
        """Solves the ridge-regularised system and writes the solution into the convolution, if it lowers the
        weighted error of what was added (else the weights stay). Returns whether they changed."""
        if float(self.squares.sum()) <= 0:
            return False
        try:
            solution = ridge_solve(self.gram, self.cross, RIDGE)
        except RuntimeError:  # singular even with the ridge: nothing to learn here
            return False
        if solution is None or not self.error(solution) < self.error(self.current()):
            return False
        write_solution(self.conv, solution)
        return True
