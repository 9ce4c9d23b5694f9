"""Human-readable numbers: ``300k``, ``1.5M``, ``2G`` in and out."""

from __future__ import annotations

import math
import operator
import re

from compressor.bounds import check_shape, shown
from compressor.errors import ConfigError

__all__ = ["parse_count", "format_count", "format_bytes", "parse_shape"]

_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_COUNT = re.compile(r"^\s*(-?[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)\s*$", re.IGNORECASE)


def parse_count(text: str | int | float, *, what: str = "value") -> float:
    """Parses a count with an optional SI suffix (k, M, G, T; case-insensitive).

    Example:
        >>> parse_count("1.5M")
        1500000.0

    Raises:
        ConfigError: naming ``what`` and the text, if it is not a non-negative number.
    """
    if isinstance(text, bool):
        raise ConfigError(f"{what}: expected a number, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _COUNT.match(str(text))
        if not match:
            raise ConfigError(
                f"{what}: cannot read {text!r} as a number (examples: 300k, 1.5M, 2G, 12.5)"
            )
        value = float(match.group(1)) * _SUFFIXES[match.group(2).lower()]
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what}: must be a finite non-negative number, got {text!r}")
    return value


def format_count(value: float | int | None, digits: int = 3) -> str:
    """Formats a count with an SI suffix: ``31024960 -> '31.02M'``."""
    if value is None:
        return "-"
    value = float(value)
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits - 1}f}{suffix}" if digits > 1 else f"{value / scale:.0f}{suffix}"
    return f"{value:.0f}" if value == int(value) else f"{value:.{digits}g}"


def format_bytes(value: float | int | None) -> str:
    """Formats a byte count in binary units: ``1536 -> '1.5 KiB'``."""
    if value is None:
        return "-"
    value = float(value)
    for suffix, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f} {suffix}"
    return f"{value:.0f} B"


def parse_shape(text: str | list[int] | tuple[int, ...], *, what: str = "input shape") -> tuple[int, ...]:
    """Parses ``"1,3,256,256"`` (or a sequence) into a tuple of positive ints, within the
    bounds of :func:`compressor.bounds.check_shape` (each at most 16384, 2**28 elements in all).

    Raises:
        ConfigError: naming ``what`` and the text, if an entry is not an integer in range, there
            are fewer than 3 dimensions, or too many elements.
    """
    parts = text.replace("x", ",").split(",") if isinstance(text, str) else list(text)
    label = shown(text if isinstance(text, str) else ",".join(shown(part, limit=20) for part in parts), limit=80)
    try:
        shape = tuple(_integer(part) for part in parts)
    except ValueError:
        raise ConfigError(f"{what} {label}: expected comma-separated integers like 1,3,256,256") from None
    if len(shape) < 3 or any(size < 1 for size in shape):
        raise ConfigError(f"{what} {label}: expected at least 3 positive integers like 1,3,256,256")
    return check_shape(shape, what)


def _integer(part: object) -> int:
    """An entry of a shape: an integer (NumPy's too), or text holding one; else ValueError."""
    if isinstance(part, str):
        return int(part.strip())
    if isinstance(part, bool):
        raise ValueError(part)
    try:
        return operator.index(part)
    except TypeError:
        raise ValueError(part) from None
