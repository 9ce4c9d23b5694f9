"""What the Python API's functions are handed, checked at the door: a network where a network is
expected, data where data is. The usual slips (the ``(network, records)`` pair :func:`compressor.apply`
returns, a model file's path, a state_dict, ``save_model``'s arguments in ``torch.save``'s order) get a
message that names the slip and the fix, not an ``AttributeError`` from deep inside torch."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from compressor.errors import ConfigError

__all__ = ["as_network", "check_data"]


def as_network(value: Any, where: str, *, argument: str = "model") -> nn.Module:
    """``value`` when it is an ``nn.Module``; otherwise a :class:`ConfigError` naming what it is.

    >>> as_network((nn.Identity(), []), "measure")
    Traceback (most recent call last):
    ...
    compressor.errors.ConfigError: measure: model is a tuple (Identity, list), not a network: apply returns (network, records); pass the network: network, records = compressor.apply(...)
    """
    if isinstance(value, nn.Module):
        return value
    head = f"{where}: {argument} is {_what(value)}, not a network"
    if isinstance(value, tuple) and value and isinstance(value[0], nn.Module):
        raise ConfigError(f"{head}: apply returns (network, records); pass the network: "
                          "network, records = compressor.apply(...)")
    if isinstance(value, (str, Path)):
        raise ConfigError(f"{head}: load the file first, network = compressor.load_model({str(value)!r})")
    if isinstance(value, Mapping) and "state_dict" in value:
        raise ConfigError(f"{head}: a checkpoint holds weights, not the network; build the network and "
                          "load_state_dict(checkpoint['state_dict']) into it")
    if isinstance(value, Mapping):
        raise ConfigError(f"{head}: a state_dict holds weights, not the network; build the network and "
                          "load_state_dict into it")
    raise ConfigError(f"{head} (an nn.Module is expected)")


def check_data(value: Any, where: str) -> None:
    """Refuses anything but a built :class:`~compressor.data.SegmentationData` as ``data``."""
    from compressor.data.base import SegmentationData  # the data package only when a function is called

    if isinstance(value, SegmentationData):
        return
    raise ConfigError(f"{where}: data is {_what(value)}, not a dataset: build it with "
                      "compressor.data.from_arrays(...) or load_experiment(FILE).data.build()")


def _what(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, (str, Path)):
        return f"the path {str(value)!r}"
    if isinstance(value, tuple):
        inner = ", ".join(type(item).__name__ for item in value[:3]) + (", ..." if len(value) > 3 else "")
        return f"a tuple ({inner})"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
