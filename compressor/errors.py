"""Errors that mean "the user asked for something that cannot be done".

The CLI turns any :class:`CompressorError` into one line on stderr and exit code 2,
so every message must name the thing at fault (file, key, layer, value) on its own.
"""

from __future__ import annotations

__all__ = ["CompressorError", "ConfigError", "ModelLoadError", "BudgetError", "first_line"]


class CompressorError(Exception):
    """Base class of every error caused by user input rather than by a bug."""


class ConfigError(CompressorError, ValueError):
    """A configuration value (shape, unit, key) is malformed."""


class ModelLoadError(CompressorError):
    """A model name or import path cannot be turned into an ``nn.Module``."""


class BudgetError(ConfigError):
    """A budget limit is malformed (bad unit, negative or zero)."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name if it has none): what a one-line
    error quotes of a failure raised by the user's model or a library.

    Example:
        >>> first_line(RuntimeError("shapes do not match\\nat node 3"))
        'shapes do not match'
        >>> first_line(KeyError())
        'KeyError'
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
