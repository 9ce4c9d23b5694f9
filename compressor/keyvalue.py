"""``key=value`` text, the one way the command line and overrides give settings.

Values are read as YAML (``8``, ``true``, ``null``, ``[1, 2, 5]``); text YAML cannot read
stays text. Used by ``--model-arg``, ``--transform NAME:key=value,...`` and ``--set``.

Example:
    >>> parse_pairs(["norm=batch", "width=8"], what="model argument")
    {'norm': 'batch', 'width': 8}
    >>> split_outside_brackets("rates=[1,2,5],include=encoder.*")
    ['rates=[1,2,5]', 'include=encoder.*']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from compressor.errors import ConfigError

__all__ = ["parse_value", "parse_pair", "parse_pairs", "split_outside_brackets"]


def parse_value(text: str) -> Any:
    """``text`` read as YAML; empty text is ``""``, and text YAML cannot read stays as it is
    (also an integer of more digits than Python converts)."""
    if not text.strip():
        return ""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):
        return text


def parse_pair(text: str, *, what: str, form: str = "key=value") -> tuple[str, Any]:
    """``(key, value)`` of one ``key=value``.

    Raises:
        ConfigError: no ``=`` or an empty key; the message quotes ``text`` as ``what``.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{what} {text!r} must look like {form}")
    return key.strip(), parse_value(value)


def parse_pairs(pairs: Iterable[str], *, what: str) -> dict[str, Any]:
    """A dict of several ``key=value`` (a later key wins)."""
    return dict(parse_pair(pair, what=what) for pair in pairs)


def split_outside_brackets(text: str) -> list[str]:
    """``text`` split at the commas that are not inside brackets or braces (empty parts dropped)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{("
        depth -= char in "]})"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return [part for part in parts if part.strip()]
