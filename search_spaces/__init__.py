"""Search spaces: functions ``(trial, context) -> Recipe``, registered by name."""

from __future__ import annotations

from compressor.registry import Registry

__all__ = ["SPACES"]

SPACES: Registry = Registry("search space")
