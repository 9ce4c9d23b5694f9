"""The built-in search spaces: functions ``(trial, context) -> Recipe``, registered by name.

``unet_family`` is the Micro-Net paper's axes on the reference U-Net; ``generic`` draws
from every registered transform that applies to any other network. They reach
:data:`compressor.spaces.SPACES` through this distribution's ``compressor.search_spaces``
entry points (``setup.cfg``), as a space of another package would.
"""

from __future__ import annotations

from compressor.spaces import SPACES, SearchContext, SearchSpace, register_space
from search_spaces import generic, unet_family  # noqa: F401  (registers the spaces)

__all__ = ["SPACES", "SearchContext", "SearchSpace", "register_space"]
