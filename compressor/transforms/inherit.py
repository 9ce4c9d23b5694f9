"""Weight inheritance: a replacement layer starts as the closest structured approximation
of the trained layer it replaces, computed from that layer's weights alone.

Each function fills the weights of a freshly built replacement from the original layer:

* :func:`inherit_separable`: a k x k conv -> depthwise + pointwise, by a truncated SVD of
  each input channel's ``(out, k*k)`` slice of the kernel (exact when that slice has rank
  at most the depth multiplier, e.g. a kernel that is an outer product per input channel);
* :func:`inherit_fire`: a k x k conv -> fire module, squeeze from the leading left singular
  vectors of the kernel's input-channel unfolding, expands from the kernel projected onto
  them (the 1x1 expand from the sum of the projected taps: its response to a locally
  constant input); the squeeze's ReLU is kept exact by pairing each direction with its
  negative, ``relu(z) - relu(-z) = z``;
* :func:`inherit_fused`: ``conv(cat([a, b, ...]))`` -> ``conv'(a + b + ...)`` from the mean
  of the kernel's chunks (the least-squares choice when the tensors are uncorrelated with
  equal variance); a wider tensor is first averaged down by groups of channels
  (:func:`group_average`) and its chunk folded to match;
* :func:`identity_like`: a new 1x1 conv that passes its first channels through.

A batch norm inside a replacement starts as the identity (a fresh one is, in eval mode, up
to its epsilon), so the approximation holds for the replacement as built; an instance or
group norm inside it normalizes whatever it gets, so through one the approximation is
only rough (the record's layer errors say how rough).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from compressor.models.blocks import SeparableConv2d
    >>> conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    >>> with torch.no_grad():   # one spatial filter per input channel: a separable kernel
    ...     _ = conv.weight.copy_(torch.randn(8, 4, 1, 1) * torch.randn(1, 4, 3, 3))
    >>> separable = SeparableConv2d(4, 8, 3, padding=1)
    >>> inherit_separable(conv, separable)
    >>> x = torch.randn(1, 4, 8, 8)
    >>> bool(torch.allclose(separable(x), conv(x), atol=1e-5))
    True
"""

from __future__ import annotations

import torch
from torch import nn

from compressor.models.blocks import Fire, SeparableConv2d
from compressor.transforms.kernel_memo import input_channel_svd, input_gram_eigenvectors

__all__ = ["inherit_separable", "inherit_fire", "inherit_fused", "group_average", "identity_like"]


@torch.no_grad()
def inherit_separable(conv: nn.Conv2d, separable: SeparableConv2d) -> None:
    """Sets ``separable``'s depthwise and pointwise weights from ``conv`` (groups 1).

    For input channel ``i`` the slice ``W[:, i]`` (``out x k*k``) is factorized as
    ``sum_j s_j u_j v_j^T`` over its ``m`` leading singular triplets (``m`` the depth
    multiplier): the depthwise filters of channel ``i`` are ``sqrt(s_j) v_j`` and the
    pointwise weights reading them ``sqrt(s_j) u_j``. The bias is copied.
    """
    weight = conv.weight.detach().double()
    out_channels, in_channels, kh, kw = weight.shape
    multiplier = separable.depthwise.out_channels // in_channels
    # the leading triplets, kept for the next build of the same kernel (a search's next candidate from the parent)
    u, s, vh = input_channel_svd(conv.weight, multiplier)  # (I, O, r), (I, r), (I, r, k*k)
    rank = s.shape[1]
    root = s.sqrt()
    # Filters beyond the kernel's rank keep their random start and are read with weight 0: the
    # output is unchanged, and both sides still get gradients (zeros on both would never train).
    depthwise = separable.depthwise.weight.detach().double().reshape(in_channels, multiplier, kh * kw).clone()
    depthwise[:, :rank] = vh[:, :rank] * root[:, :, None]
    pointwise = torch.zeros(out_channels, in_channels, multiplier, dtype=weight.dtype)
    pointwise[:, :, :rank] = (u[:, :, :rank] * root[:, None, :]).permute(1, 0, 2)
    separable.depthwise.weight.copy_(depthwise.reshape(in_channels * multiplier, 1, kh, kw))
    separable.pointwise.weight.copy_(pointwise.reshape(out_channels, in_channels * multiplier, 1, 1))
    _copy_bias(conv, separable.pointwise)


@torch.no_grad()
def inherit_fire(conv: nn.Conv2d, fire: Fire) -> None:
    """Sets ``fire``'s squeeze and expands from ``conv`` (groups 1, square odd kernel).

    ``P`` (``in x r``) holds the ``r`` leading left singular vectors of the kernel unfolded
    along its input channels; the squeeze computes ``P^T x`` (and ``-P^T x`` beside it when
    the squeeze ends with a ReLU and is at least 2 wide, so ``r`` is half the squeeze width),
    the k x k expand applies the projected kernel ``W P`` to it, and the 1x1 expand the sum of
    the projected kernel's taps. With ``r`` at least the rank of that unfolding, the k x k
    expand's outputs are exact. Squeeze channels beyond ``r`` keep their random start and
    are read with weight 0, so they do not change the output and still train.
    """
    weight = conv.weight.detach().double()
    out_channels, in_channels = weight.shape[:2]
    squeeze_conv = fire.squeeze.conv
    squeeze_width = squeeze_conv.out_channels
    paired = not isinstance(fire.squeeze.act, nn.Identity) and squeeze_width >= 2
    rank = min(squeeze_width // 2 if paired else squeeze_width, in_channels)
    # The leading left singular vectors of the kernel unfolded along its input channels, kept for
    # the next build of the same kernel (a search's next candidate from the same parent).
    vectors = input_gram_eigenvectors(conv.weight)
    basis = vectors[:, :rank]  # (in, r), orthonormal columns, largest eigenvalues first
    projected = torch.einsum("oikl,ir->orkl", weight, basis)  # (out, r, k, k)
    # Squeeze channels left over (an odd width, a width above the input's rank) keep their random
    # start and are read with weight 0: exact, and still trainable.
    squeeze = squeeze_conv.weight.detach().double().reshape(squeeze_width, in_channels).clone()
    squeeze[:rank] = basis.T
    if paired:
        squeeze[rank:2 * rank] = -basis.T
    squeeze_conv.weight.copy_(squeeze[:, :, None, None])
    if squeeze_conv.bias is not None:
        squeeze_conv.bias[: 2 * rank if paired else rank] = 0
    split = fire.expand1x1.conv.out_channels
    for expand, kernel in ((fire.expand1x1.conv, projected[:split].sum(dim=(2, 3), keepdim=True)),
                           (fire.expand3x3.conv, projected[split:])):
        full = torch.zeros(expand.weight.shape, dtype=weight.dtype)
        full[:, :rank] = kernel
        if paired:
            full[:, rank:2 * rank] = -kernel
        expand.weight.copy_(full)
    if conv.bias is not None:
        for expand, part in ((fire.expand1x1.conv, conv.bias[:split]), (fire.expand3x3.conv, conv.bias[split:])):
            if expand.bias is not None:
                expand.bias.copy_(part)


@torch.no_grad()
def inherit_fused(conv: nn.Conv2d, fused: nn.Conv2d, widths: list[int] | None = None) -> None:
    """``fused``'s kernel is the mean of the input-channel chunks of ``conv``'s (two halves by
    default; one chunk per concatenated tensor of ``widths``); the bias is copied.

    A chunk wider than ``fused`` is for a tensor projected down to ``fused``'s width by
    :func:`group_average` (channel ``j`` the mean of a group of ``k`` channels): its
    kernel is folded by summing each group, which reproduces it when a group's channels
    are alike.
    """
    width = fused.in_channels
    widths = widths or [width, width]
    chunks = torch.split(conv.weight, widths, dim=1)
    folded = [chunk if chunk.shape[1] == width else _fold(chunk, width) for chunk in chunks]
    fused.weight.copy_(torch.stack(folded).mean(dim=0))
    _copy_bias(conv, fused)


def _fold(kernel: torch.Tensor, width: int) -> torch.Tensor:
    """``(out, k * width, kh, kw)`` -> ``(out, width, kh, kw)``, summing each group of ``k`` inputs."""
    group = kernel.shape[1] // width
    return kernel[:, :group * width].reshape(kernel.shape[0], width, group, *kernel.shape[2:]).sum(dim=2)


@torch.no_grad()
def group_average(projection: nn.Conv2d) -> None:
    """A 1x1 conv from ``k * n`` to ``n`` channels whose output ``j`` is the mean of inputs
    ``j*k .. j*k+k-1`` (inputs past ``k * n`` are dropped); the bias starts at zero."""
    width, wide = projection.out_channels, projection.in_channels
    group = wide // width
    projection.weight.zero_()
    for j in range(width):
        projection.weight[j, j * group:(j + 1) * group, 0, 0] = 1.0 / group
    if projection.bias is not None:
        projection.bias.zero_()


@torch.no_grad()
def identity_like(conv: nn.Conv2d) -> None:
    """A 1x1 conv that copies input channel ``i`` to output channel ``i`` (for ``i`` below
    both widths); the other outputs start at zero."""
    conv.weight.zero_()
    count = min(conv.in_channels, conv.out_channels)
    index = torch.arange(count)
    conv.weight[index, index, 0, 0] = 1.0
    if conv.bias is not None:
        conv.bias.zero_()


def _copy_bias(source: nn.Conv2d, target: nn.Conv2d) -> None:
    if source.bias is not None and target.bias is not None:
        target.bias.copy_(source.bias)
