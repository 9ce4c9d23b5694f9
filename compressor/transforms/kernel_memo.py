"""A kernel's factorization kept between builds, keyed by the kernel's bytes.

A search builds every candidate from the same trained parent, and each inheriting ``fire`` or
``separable`` step factorizes the parent kernels it replaces again: on the quickstart's U-Net, the
eigenvectors of the (1024 x 1024) Gram matrix of a bottleneck kernel take most of a second on one
core, its per-input-channel SVDs 0.2 s, in every trial that keeps all of the down-samplings.
:func:`input_gram_eigenvectors` (``fire``'s) and :func:`input_channel_svd` (``separable``'s) compute
them once per kernel and hand a copy back whenever the same kernel comes again, whoever asks: the key is the
SHA-256 of the kernel's bytes (with its shape and dtype), so a kernel changed in place, a retrained
parent or another network never meets a stale entry. The number of torch threads is part of the key
too (a matrix product's last bits can depend on it), so a build served from the memo is bit for bit
what computing it again would give. Each caller gets its own copy of the kept tensor.

The memo holds at most :data:`LIMIT_BYTES` of factors (the least recently used go first) and
only kernels on the CPU (on a GPU the factorization is cheap next to the copy that hashing needs).
:func:`clear` empties it; :func:`stats` says how it has served.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import torch

__all__ = ["LIMIT_BYTES", "input_gram_eigenvectors", "input_channel_svd", "clear", "stats"]

#: the most bytes of factors kept (the quickstart's U-Net, every kernel of it factorized both ways: 22 + 28 MB)
LIMIT_BYTES = 256 * 2**20
#: kernels smaller than this are factorized each time: hashing them costs about as much
SMALLEST_KEPT = 2**16

_entries: OrderedDict[tuple, tuple[torch.Tensor, ...]] = OrderedDict()
_held = 0
_counts = {"hits": 0, "misses": 0}
_lock = threading.Lock()


def input_gram_eigenvectors(kernel: torch.Tensor) -> torch.Tensor:
    """The eigenvectors of ``U @ U.T``, ``U`` the conv ``kernel`` (``out x in x kh x kw``) unfolded
    along its input channels (``in x out*kh*kw``) in float64: columns, largest eigenvalue first.

    They are the left singular vectors of ``U``, far cheaper this way than by an SVD of ``U`` for
    wide layers. Computed from the kernel's values in a contiguous layout, whatever its own, so a
    channels-last kernel gets what its contiguous copy gets. The tensor returned is the caller's
    own (a copy of the kept one).
    """

    def eigenvectors(data: torch.Tensor) -> tuple[torch.Tensor, ...]:
        unfolded = data.double().transpose(0, 1).reshape(data.shape[1], -1)
        _values, vectors = torch.linalg.eigh(unfolded @ unfolded.T)
        return (vectors.flip(1),)

    (vectors,) = _memoized("input_gram_eigenvectors", kernel, eigenvectors)
    return vectors


def input_channel_svd(kernel: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``rank`` leading singular triplets of each input channel's slice of the conv ``kernel``
    (``W[:, i]``, ``out x kh*kw``) in float64: ``u`` ``(in, out, r)``, ``s`` ``(in, r)``, ``vh``
    ``(in, r, kh*kw)``, ``r = min(rank, out, kh*kw)``; those of ``torch.linalg.svd`` of the slices,
    cut to ``r`` (what a depth multiplier of ``rank`` reads). From the kernel's values in a
    contiguous layout; the tensors returned are the caller's own.
    """

    def triplets(data: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out_channels, in_channels, kh, kw = data.shape
        slices = data.double().permute(1, 0, 2, 3).reshape(in_channels, out_channels, kh * kw)
        u, s, vh = torch.linalg.svd(slices, full_matrices=False)  # (I, O, m), (I, m), (I, m, k*k)
        return u[:, :, :kept].contiguous(), s[:, :kept].contiguous(), vh[:, :kept].contiguous()

    kept = min(rank, kernel.shape[0], kernel.shape[2] * kernel.shape[3])  # ranks beyond it keep the same triplets
    u, s, vh = _memoized(f"input_channel_svd:{kept}", kernel, triplets)
    return u, s, vh


def _memoized(kind: str, kernel: torch.Tensor, compute) -> tuple[torch.Tensor, ...]:
    """``compute(data)`` (a tuple of tensors), ``data`` the kernel made contiguous, from the memo when
    the same kernel met the same ``kind`` before; each tensor returned a copy of the kept one."""
    data = kernel.detach().resolve_conj().resolve_neg().contiguous()
    key = _key(kind, data)
    if key is not None:
        with _lock:
            found = _entries.get(key)
            if found is not None:
                _entries.move_to_end(key)
            _counts["hits" if found is not None else "misses"] += 1
        if found is not None:
            return tuple(tensor.clone() for tensor in found)
    with torch.inference_mode(False), torch.no_grad():  # plain tensors, whatever mode the caller is in
        factors = compute(data)
        if key is not None:
            _keep(key, tuple(tensor.clone() for tensor in factors))
    return factors


def clear() -> None:
    """Forgets every kept factorization."""
    global _held
    with _lock:
        _entries.clear()
        _held = 0
        _counts.update(hits=0, misses=0)


def stats() -> dict[str, int]:
    """``hits``, ``misses``, ``entries`` and ``bytes`` held, since the last :func:`clear`."""
    with _lock:
        return {**_counts, "entries": len(_entries), "bytes": _held}


def _key(kind: str, data: torch.Tensor) -> tuple | None:
    """The entry of a contiguous kernel: its bytes, shape and dtype, and the threads the factorization
    runs on (a matrix product's last bits can depend on them); None for a kernel not kept."""
    if data.device.type != "cpu" or data.numel() < SMALLEST_KEPT:
        return None
    digest = hashlib.sha256(data.reshape(-1).view(torch.uint8).numpy()).digest()
    return (kind, tuple(data.shape), str(data.dtype), torch.get_num_threads(), digest)


def _keep(key: tuple, factors: tuple[torch.Tensor, ...]) -> None:
    global _held
    size = _size(factors)
    if size > LIMIT_BYTES:
        return
    with _lock:
        if key in _entries:
            return
        _entries[key] = factors
        _held += size
        while _held > LIMIT_BYTES:
            _old, evicted = _entries.popitem(last=False)
            _held -= _size(evicted)


def _size(factors: tuple[torch.Tensor, ...]) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in factors)
