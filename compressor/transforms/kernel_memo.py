"""A kernel's factorization kept between builds, keyed by the kernel's bytes.

A search builds every candidate from the same trained parent, and each inheriting ``fire`` step
factorizes the parent kernels it replaces again: on the quickstart's U-Net, the eigenvectors of
the (1024 x 1024) Gram matrix of a bottleneck kernel take most of a second on one core, in every
trial that keeps all of the down-samplings. :func:`input_gram_eigenvectors` computes them once per kernel
and hands the same tensor back whenever the same kernel comes again, whoever asks: the key is the
SHA-256 of the kernel's bytes (with its shape and dtype), so a kernel changed in place, a retrained
parent or another network never meets a stale entry. A build that meets a kept factorization gives
bit for bit the network of the build that computed it (the factorization itself can differ in its
last bits with the number of threads, which a search keeps for all of its trials).

The memo holds at most :data:`LIMIT_BYTES` of eigenvectors (the least recently used go first) and
only kernels on the CPU (on a GPU the factorization is cheap next to the copy that hashing needs).
:func:`clear` empties it; :func:`stats` says how it has served.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import torch

__all__ = ["LIMIT_BYTES", "input_gram_eigenvectors", "clear", "stats"]

#: the most eigenvector bytes kept (the quickstart's U-Net needs about 60 MB for every kernel)
LIMIT_BYTES = 256 * 2**20
#: kernels smaller than this are factorized each time: hashing them costs about as much
SMALLEST_KEPT = 2**16

_entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_held = 0
_counts = {"hits": 0, "misses": 0}
_lock = threading.Lock()


def input_gram_eigenvectors(kernel: torch.Tensor) -> torch.Tensor:
    """The eigenvectors of ``U @ U.T``, ``U`` the conv ``kernel`` (``out x in x kh x kw``) unfolded
    along its input channels (``in x out*kh*kw``) in float64: columns, largest eigenvalue first.

    They are the left singular vectors of ``U``, far cheaper this way than by an SVD of ``U`` for
    wide layers. The returned tensor may be shared with earlier and later calls: read it, do not
    change it.
    """
    kernel = kernel.detach()
    key = _key(kernel)
    if key is not None:
        with _lock:
            found = _entries.get(key)
            if found is not None:
                _entries.move_to_end(key)
                _counts["hits"] += 1
                return found
            _counts["misses"] += 1
    unfolded = kernel.double().transpose(0, 1).reshape(kernel.shape[1], -1)
    _values, vectors = torch.linalg.eigh(unfolded @ unfolded.T)
    vectors = vectors.flip(1)
    if key is not None:
        _keep(key, vectors)
    return vectors


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


def _key(kernel: torch.Tensor) -> tuple | None:
    if kernel.device.type != "cpu" or kernel.numel() < SMALLEST_KEPT:
        return None
    data = kernel.detach().contiguous()
    digest = hashlib.sha256(data.reshape(-1).view(torch.uint8).numpy()).digest()
    return ("input_gram_eigenvectors", tuple(data.shape), str(data.dtype), digest)


def _keep(key: tuple, vectors: torch.Tensor) -> None:
    global _held
    size = vectors.numel() * vectors.element_size()
    if size > LIMIT_BYTES:
        return
    with _lock:
        if key in _entries:
            return
        _entries[key] = vectors
        _held += size
        while _held > LIMIT_BYTES:
            _old, evicted = _entries.popitem(last=False)
            _held -= evicted.numel() * evicted.element_size()
