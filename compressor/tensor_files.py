"""Reading PyTorch files as data: tensors and plain containers, within the file's own size.

Every file compressor reads weights from (model files, checkpoints, a parent's weights, a
trial's kept weights) goes through :func:`read_tensor_file`:

- the file is sniffed first, so an ONNX file, a JSON or text file, or anything else that is not
  a PyTorch file is named as what it is (not "a pickle");
- a PyTorch file is a zip archive (``torch.save``'s format since PyTorch 1.6): the sizes its
  entries declare are summed before anything is read, and a file whose entries unpack to more
  bytes than the file holds (a compressed archive: ``torch.save`` stores, never deflates) is
  refused, so reading never takes more memory than the file's size;
- ``torch.load(weights_only=True)`` then builds tensors and plain containers only: an object of
  the file's choosing is never made (that is :class:`PickledObjectsError`, which a caller may turn
  into "pass --trust").

The pre-1.6 format (a bare pickle stream) declares its storages' sizes before their bytes and is
refused: re-save such a file with a current PyTorch.

Example:
    >>> import os, tempfile, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
    >>> torch.save({"weight": torch.ones(2)}, path)
    >>> read_tensor_file(path, what="weights file")["weight"].tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import re
import stat
import zipfile
from pathlib import Path
from pickle import UnpicklingError
from typing import Any

import torch

from compressor.errors import ConfigError, first_line

__all__ = ["read_tensor_file", "sniff", "PickledObjectsError", "NotATensorFileError"]

#: What a zip archive's headers may add beyond its entries' bytes (central directory, names).
_ZIP_OVERHEAD = 1 << 20


class NotATensorFileError(ConfigError):
    """The file is not a PyTorch file (it is ONNX, JSON, text, empty, or something else)."""


class PickledObjectsError(ConfigError):
    """A PyTorch file that holds objects beyond tensors and plain data: loading it would run code."""


def sniff(path: Path) -> str:
    """What the file looks like from its first bytes: ``zip`` (torch.save), ``pickle`` (PyTorch's
    format before 1.6), ``onnx``, ``json``, ``text``, ``empty`` or ``binary``."""
    with path.open("rb") as file:
        head = file.read(64)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"
    if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and b"\x12" in head[:4]):
        return "onnx"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "json"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    return "text"


_NOT_TORCH = {
    "onnx": "an ONNX file (what compressor deploy writes), not a PyTorch file",
    "json": "a JSON file, not a PyTorch file",
    "text": "a text file, not a PyTorch file",
    "empty": "an empty file",
    "binary": "not a PyTorch file (torch.save writes a zip archive)",
}


def read_tensor_file(path: str | Path, *, what: str, map_location: str | torch.device = "cpu") -> Any:
    """The content of a PyTorch file, read as data (tensors and plain containers only).

    Args:
        path: the file.
        what: what the file is meant to be (``model file``, ``checkpoint``), for the messages.

    Raises:
        ConfigError: no such file, or not a regular file.
        NotATensorFileError: ONNX, JSON, text, empty, an archive that unpacks beyond its size,
            PyTorch's pre-1.6 format, or a damaged file.
        PickledObjectsError: objects beyond tensors and plain data (a pickled module).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise ConfigError(f"{path}: no such {what}" if isinstance(error, FileNotFoundError)
                          else f"{path}: cannot read {what}: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{path}: not a {what} (a {'folder' if stat.S_ISDIR(mode) else 'special file'})")
    try:
        kind = sniff(path)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read {what}: {error.strerror or error}") from None
    if kind == "pickle":
        raise NotATensorFileError(f"{path}: a PyTorch file of the format before PyTorch 1.6, which is not read as "
                                  "data; load it with that PyTorch and save it again with a current one")
    if kind != "zip":
        raise NotATensorFileError(f"{path}: not a {what}: {_NOT_TORCH[kind]}")
    _check_unpacked_size(path, what)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except UnpicklingError as error:
        raise PickledObjectsError(f"{path}: a {what} holding objects beyond tensors and plain data "
                                  f"({_unsupported_global(error)}); loading it runs code stored in the file") from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds on a damaged file
        raise NotATensorFileError(f"{path}: a damaged {what} ({type(error).__name__}: {first_line(error)})") from None


def _check_unpacked_size(path: Path, what: str) -> None:
    """Refuses an archive whose entries unpack to more than the file holds (a compressed one)."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise NotATensorFileError(f"{path}: a damaged {what} (not a readable zip archive: {first_line(error)})") from None
    if unpacked > size + _ZIP_OVERHEAD:
        raise NotATensorFileError(
            f"{path}: a {what} whose entries unpack to {unpacked:,} bytes from {size:,} (a compressed archive; "
            "torch.save stores its tensors uncompressed), refused before reading"
        )


def _unsupported_global(error: UnpicklingError) -> str:
    """What the pickle wanted built (``it names torch.nn.modules.linear.Linear``), from torch's message."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return f"it names {found.group(1)}" if found else "a pickled object"
