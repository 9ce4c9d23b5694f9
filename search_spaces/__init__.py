"""Search spaces: functions ``(trial, context) -> Recipe``, registered by name.

``unet_family`` is the Micro-Net paper's axes on the reference U-Net; ``generic`` draws
from the transforms that apply to any other network.
"""

from __future__ import annotations

from search_spaces import generic, unet_family  # noqa: F401  (registers the spaces)
from search_spaces.base import SPACES, SearchContext, SearchSpace, register_space

__all__ = ["SPACES", "SearchContext", "SearchSpace", "register_space"]
