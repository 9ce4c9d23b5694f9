"""Arrays decoded from a pinned source, kept in the cache so that later runs need neither the decoder nor its time.

A task whose files take a library to decode (JPEG 2000 bands and GeoPackage polygons: rasterio,
pyogrio) stores what it decoded as one ``.npz`` in the cache folder, named by a key over
everything the arrays depend on (the source's hashes, the bands chosen, :data:`DECODED_VERSION`).
A later run loads it without importing those libraries, so a machine that cannot install them
(a lent GPU machine with no network and a 64 MiB carry) runs the task from the file alone.

The file holds plain arrays (read with ``allow_pickle=False``: it can hold no code) and the
sha256 of their bytes; a file that does not match its digest, or holds other shapes or dtypes
than asked, is not used: the task decodes again and writes it anew.

Example:
    >>> import tempfile, numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> path = decoded_path(folder, "demo", {"source": "abc"})
    >>> store_decoded(path, {"image": np.zeros((2, 3, 1), np.uint16)})
    >>> load_decoded(path, {"image": ((2, 3, 1), np.uint16)})["image"].shape
    (2, 3, 1)
    >>> load_decoded(path, {"image": ((2, 3, 4), np.uint16)}) is None  # other shapes than asked: not used
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from compressor.data.cache import cache_dir
from compressor.io import WriteError, atomic_write

__all__ = ["DECODED_VERSION", "decoded_path", "load_decoded", "store_decoded"]

#: Part of every key: raised when a decoder's output changes, so that no older file is read for it.
DECODED_VERSION = 1
_DIGEST = "sha256"

logger = logging.getLogger(__name__)


def decoded_path(directory: str | Path | None, name: str, depends_on: dict[str, Any]) -> Path:
    """The file in the cache folder (:func:`~compressor.data.cache.cache_dir`) for ``name``'s arrays
    decoded from what ``depends_on`` describes (JSON-serialisable: hashes, band names)."""
    key = hashlib.sha256(json.dumps({"version": DECODED_VERSION, **depends_on}, sort_keys=True).encode()).hexdigest()
    return cache_dir(directory) / "decoded" / f"{name}-{key[:20]}.npz"


def _digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def load_decoded(path: Path, expected: dict[str, tuple[tuple[int, ...] | None, Any]]) -> dict[str, np.ndarray] | None:
    """The arrays in ``path`` if it holds exactly ``expected`` (name -> (shape or None for any, dtype)) and
    matches its digest; ``None`` if there is no such file or it does not hold that (the caller decodes again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:  # no pickle: the file holds data, never code
            if not isinstance(stored, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            arrays = {name: stored[name] for name in stored.files if name != _DIGEST}
            digest = str(stored[_DIGEST]) if _DIGEST in stored.files else ""
    except Exception as error:  # noqa: BLE001 - whatever a damaged file raises (zlib, zip, numpy, memory): decode again
        logger.warning("%s: not a readable decoded file (%s); decoding again", path, error)
        return None
    if not all(isinstance(array, np.ndarray) for array in arrays.values()):
        logger.warning("%s: holds something other than arrays; decoding again", path)
        return None
    wanted = set(arrays) == set(expected) and all(
        arrays[name].dtype == np.dtype(dtype) and (shape is None or arrays[name].shape == tuple(shape))
        for name, (shape, dtype) in expected.items())
    if not wanted or digest != _digest(arrays):
        logger.warning("%s: %s; decoding again", path, "other arrays than asked" if not wanted else "its digest does not match")
        return None
    return arrays


def store_decoded(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``arrays`` and their digest to ``path`` (atomically). A cache that cannot be written costs
    the next run its decoding, not this run: the failure is logged."""
    payload = {**arrays, _DIGEST: np.array(_digest(arrays))}
    try:
        atomic_write(path, lambda file: np.savez_compressed(file, **payload))
    except WriteError as error:
        logger.warning("%s; the next run decodes again", error)
