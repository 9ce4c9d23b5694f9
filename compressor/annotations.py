"""Plain values kept on a module (its declared output, its origin) that survive copies.

``copy.deepcopy`` of a ``torch.fx.GraphModule`` (what graph-rewriting transforms return)
rebuilds it from its graph and keeps only its ``meta`` dict of extra attributes, so a value
is stored in both the module's ``__dict__`` and, on a graph module, its ``meta``.

Example:
    >>> import copy, torch.fx
    >>> graph = torch.fx.symbolic_trace(torch.nn.ReLU())
    >>> _ = annotate(graph, "compressor_note", 3)
    >>> annotation(copy.deepcopy(graph), "compressor_note")
    3
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["annotate", "annotation", "network_name", "NETWORK_NAME"]

#: the class name of the network a captured graph was made from (a graph module's own class is ``GraphModule``)
NETWORK_NAME = "compressor_network_name"


def annotate(model: nn.Module, key: str, value: Any) -> nn.Module:
    """Keeps ``value`` on ``model`` under ``key`` (None removes it); returns ``model``."""
    meta = vars(model).get("meta")
    if value is None:
        vars(model).pop(key, None)
        if isinstance(meta, dict):
            meta.pop(key, None)
        return model
    object.__setattr__(model, key, value)  # __dict__ directly: nn.Module would do the same for plain values
    if isinstance(meta, dict):
        meta[key] = value
    return model


def annotation(model: nn.Module, key: str) -> Any:
    """The value kept on ``model`` under ``key``, or None."""
    if key in vars(model):
        return vars(model)[key]
    meta = vars(model).get("meta")
    return meta.get(key) if isinstance(meta, dict) else None


def network_name(model: nn.Module) -> str:
    """How messages name ``model``: its class, or for a captured graph the class of the network it was made from."""
    return annotation(model, NETWORK_NAME) or type(model).__name__
