"""Atomic file writes: a temporary file in the same folder, then a rename.

A crash or an error mid-write never leaves a half-written file in place, and whatever
was there before stays intact until the new content is complete.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import yaml

from compressor.errors import CompressorError, ConfigError, first_line

__all__ = ["atomic_write", "atomic_write_text", "WriteError", "read_yaml"]


class WriteError(CompressorError, OSError):
    """A file could not be written (the message names it and says why); what was there is intact."""


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Calls ``write(file)`` on a temporary file next to ``path``, then renames it over ``path``.

    Raises:
        WriteError: the folder cannot be made, or the file cannot be written or put in place
            (an ``OSError``: a folder in the way, no permission, a full disk).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _write_error(path, error) from error
    try:
        os.chmod(temporary, _mode_for(path))  # mkstemp makes 0600; keep what a plain open() would give
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise _write_error(path, error) from error
        raise
    return path


def check_writable(path: str | Path) -> Path:
    """Raises the :class:`WriteError` that writing ``path`` would, before any long work (nothing is created).

    Catches a file standing for one of its folders, a folder in the way, and a folder that
    exists but cannot be written to.
    """
    path = Path(path)
    existing = next((parent for parent in path.parents if parent.exists()), None)
    if existing is not None and not existing.is_dir():
        raise WriteError(f"cannot write {path}: {existing} is a file, not a folder")
    if path.is_dir():
        raise WriteError(f"cannot write {path}: a folder of that name is in the way")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise WriteError(f"cannot write {path}: {existing} is not writable")
    return path


def _write_error(path: Path, error: OSError) -> WriteError:
    blocker = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocker is not None:
        reason = f"{blocker} is a file, not a folder"
    elif path.is_dir():
        reason = "a folder of that name is in the way"
    else:
        reason = error.strerror or str(error)
    return WriteError(f"cannot write {path}: {reason}")


def _mode_for(path: Path) -> int:
    """The mode of the file being replaced, else 0666 less the process's umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda file: file.write(text.encode()))


def read_yaml(path: str | Path, *, what: str, formats: str = "YAML") -> object:
    """The data of a YAML (or JSON) file: UTF-8 text, each key at most once in a mapping.

    Raises:
        ConfigError: ``path: cannot read <what>: <why>`` (also: not UTF-8 text), ``path: not
            valid <formats> at line N``, or ``path: duplicate key 'k' at line N (first at line M)``.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read {what}: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: cannot read {what}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})"
        ) from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except DuplicateKeyError as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid {formats}{line}") from None
    except ValueError as error:  # an integer of more digits than Python converts (4300)
        raise ConfigError(f"{path}: not valid {formats}: {first_line(error)}") from None


class DuplicateKeyError(yaml.YAMLError):
    """A mapping of a YAML file gives a key twice (PyYAML would keep the last, silently)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing a key given twice in one mapping (:class:`DuplicateKeyError`).

    A key a merge (``<<: *defaults``) brings in may be given again: that is what merges are for.

    Example:
        >>> yaml.load("a: 1\\nb: {c: 2}", Loader=UniqueKeyLoader)
        {'a': 1, 'b': {'c': 2}}
        >>> yaml.load("{a: 1, a: 2}", Loader=UniqueKeyLoader)
        Traceback (most recent call last):
        ...
        compressor.io.DuplicateKeyError: duplicate key 'a' at line 1 (first at line 1)
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            first_lines: dict[object, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = first_lines.get(key)
                except TypeError:  # an unhashable key: SafeLoader says so
                    continue
                if first is not None:
                    raise DuplicateKeyError(f"duplicate key {key!r} at line {line} (first at line {first})")
                first_lines[key] = line
        return super().construct_mapping(node, deep=deep)
