"""Which tensor of a model's output is the segmentation.

Many networks return more than one tensor: torchvision's segmentation models return a
dict (``{"out": ..., "aux": ...}``), others a tuple (masks and class labels). Cost,
transforms, training, distillation and export all read the one tensor chosen here: the
declared key or index if the model has one (:func:`declare_output`), else ``"out"`` of a
dict, else the only tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from compressor.annotations import annotate, annotation
from compressor.errors import ClassCountError, ConfigError, OutputChoiceError, first_line

__all__ = [
    "OUTPUT_ATTRIBUTE", "declare_output", "declared_output", "primary_output", "model_output", "parse_output_key",
    "check_fits", "returned_tensors",
]

#: The model attribute holding the declared output key (kept by deep copies and saving).
OUTPUT_ATTRIBUTE = "compressor_output"


def declare_output(model: nn.Module, key: str | int | None) -> nn.Module:
    """Marks which entry of ``model``'s output is the segmentation; returns ``model``.

    Example:
        >>> import compressor
        >>> model = declare_output(compressor.unet(base_width=4), "out")
        >>> declared_output(model)
        'out'
    """
    return annotate(model, OUTPUT_ATTRIBUTE, key)


def declared_output(model: nn.Module) -> str | int | None:
    """The key or index declared on ``model``, or None."""
    return annotation(model, OUTPUT_ATTRIBUTE)


def parse_output_key(text: str | int | None) -> str | int | None:
    """``"0"`` -> 0 (a tuple index), ``"out"`` -> ``"out"``, None -> None."""
    if text is None or isinstance(text, int):
        return text
    text = str(text).strip()
    return int(text) if text.lstrip("-").isdigit() else text


def primary_output(output: Any, key: str | int | None = None, *, what: str = "the model") -> torch.Tensor:
    """The segmentation tensor of a model's ``output``.

    Raises:
        ConfigError: the output has no tensor, or several and none is declared or named
            ``out``, or the declared key is not there (the message lists what there is).

    Example:
        >>> x = torch.zeros(1, 2, 4, 4)
        >>> primary_output({"out": x, "aux": x + 1}) is x
        True
        >>> primary_output((x, torch.zeros(1, 5)), 0) is x
        True
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        if key is not None:
            if key not in output:
                raise ConfigError(f"{what} returns a dict with keys {_listed(output)}; it has no output {key!r}")
            return _tensor(output[key], key, what)
        if "out" in output:
            return _tensor(output["out"], "out", what)
        tensors = [name for name, value in output.items() if isinstance(value, torch.Tensor)]
        if len(tensors) == 1:
            return output[tensors[0]]
        raise OutputChoiceError(
            f"{what} returns a dict with keys {_listed(output)} and none is 'out'; the segmentation's key is not declared"
        )
    if isinstance(output, (tuple, list)):
        if key is not None:
            if not isinstance(key, int) or not -len(output) <= key < len(output):
                raise ConfigError(f"{what} returns a {type(output).__name__} of {len(output)}; it has no output {key!r}")
            return _tensor(output[key], key, what)
        indices = [index for index, value in enumerate(output) if isinstance(value, torch.Tensor)]
        if len(indices) == 1:
            return output[indices[0]]
        raise OutputChoiceError(
            f"{what} returns a {type(output).__name__} of {len(output)} outputs; the segmentation's index is not declared"
        )
    raise ConfigError(f"{what} returns {type(output).__name__}, not a tensor, a dict or a tuple of tensors")


def model_output(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model(images)``'s segmentation tensor, by the key declared on ``model``."""
    return primary_output(model(images), declared_output(model), what=type(model).__name__)


def check_fits(network: nn.Module, data: Any, *, what: str = "the model") -> None:
    """Runs ``network`` on one training patch of ``data`` (a ``SegmentationData``): one line,
    before any training, if it cannot segment that data (input channels, classes, output size).

    Raises:
        ConfigError: naming ``what``, what it gives and what the data needs.
    """
    image = data.train[0][0][None]
    expected = (1, data.num_classes, *image.shape[2:])
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            output = model_output(network, image)
    except ConfigError as error:
        raise ConfigError(f"{what}: {error}") from None
    except RuntimeError as error:
        first = first_line(error)
        raise ConfigError(
            f"{what} cannot run on the data's patches {tuple(image.shape)} ({data.in_channels} channels): {first}"
        ) from None
    finally:
        network.train(was_training)
    shape = tuple(output.shape)
    if len(shape) == 4 and shape[0] == 1 and shape[1] != data.num_classes:
        raise ClassCountError(
            f"{what} outputs {shape[1]} classes but the data has {data.num_classes} ({', '.join(data.class_names)})",
            classes=data.num_classes,
        )
    if shape != expected:
        raise ConfigError(
            f"{what} maps a patch {tuple(image.shape)} to {shape}; the data needs {expected} "
            "(one logit map per class, at the input's height and width)"
        )


def _tensor(value: Any, key: str | int, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ConfigError(f"{what}'s output {key!r} is a {type(value).__name__}, not a tensor")
    return value


def _listed(output: Mapping) -> str:
    return ", ".join(repr(key) for key in output) or "(none)"


def returned_tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output, however nested in tuples, lists and dicts, in order.

    Example:
        >>> x = torch.zeros(1)
        >>> len(returned_tensors({"out": x, "aux": (x, [x, "label"])}))
        3
    """
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [tensor for item in value for tensor in returned_tensors(item)]
    if isinstance(value, dict):
        return [tensor for item in value.values() for tensor in returned_tensors(item)]
    return []
