"""Errors that mean "the user asked for something that cannot be done".

The CLI turns any :class:`CompressorError` into one line on stderr and exit code 2,
so every message must name the thing at fault (file, key, layer, value) on its own.
"""

from __future__ import annotations

__all__ = ["CompressorError", "ConfigError", "ModelLoadError", "BudgetError"]


class CompressorError(Exception):
    """Base class of every error caused by user input rather than by a bug."""


class ConfigError(CompressorError, ValueError):
    """A configuration value (shape, unit, key) is malformed."""


class ModelLoadError(CompressorError):
    """A model name or import path cannot be turned into an ``nn.Module``."""


class BudgetError(ConfigError):
    """A budget limit is malformed (bad unit, negative or zero)."""
