"""Model files that cannot run code: weights as tensors, the architecture as data, rebuilt on load.

A file written by :func:`save_model` holds the network's ``state_dict``, its
:mod:`~compressor.origin` (the builder it came from, its arguments, the transform steps
applied since and the input shape they were traced at), the declared output and JSON-like
metadata. :func:`load_saved` reads it with ``torch.load(weights_only=True)`` (tensors and
plain containers only: no object of the file's choosing is ever built) and rebuilds the
network: the builder is a registered model, an ``nn.Module`` class or a function of a known
model package (``segmentation_models_pytorch``, ``torchvision.models``, ``monai.networks``,
``timm``), the steps are registered transforms with checked parameters.

A pickled module (what compressor wrote before, or ``save_model(..., pickle=True)``) runs
code stored in the file when loaded, so it is loaded only with ``trust=True`` (``--trust``
on the command line); so is a file whose builder is anything else (your own network class:
register it as a model, a ``compressor.models`` entry point, and its files load without trust).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.annotations import annotate, network_name
from compressor.api_inputs import as_network
from compressor.bounds import check_plain_size, shown
from compressor.errors import CompressorError, ConfigError, UntrustedModelError, first_line
from compressor.io import atomic_write
from compressor.models import build_model
from compressor.models.construction import UNTRUSTED_FILE, ConstructionLimitError, steps_budget
from compressor.models.policy import TRUSTED_MODEL_PACKAGES, building_from
from compressor.origin import Origin, origin_of, set_origin
from compressor.outputs import declare_output, declared_output
from compressor.tensor_files import PickledObjectsError, read_tensor_file
from compressor.train.checkpoints import weights_mismatch
from compressor.transforms import TRANSFORMS, apply
from compressor.units import parse_shape

__all__ = ["SavedModel", "save_model", "load_model", "load_saved", "load_hint", "is_model_file", "TRUSTED_MODEL_PACKAGES"]

_FORMAT = "compressor.model/2"
#: the largest example input a file's steps are traced again at without trust (1x4x512x512; compressor
#: applies its steps at the cost's input size, 224 by default)
_MAX_TRACE_ELEMENTS = 1 << 20
_PICKLED = "compressor.model/1"


@dataclass
class SavedModel:
    """What :func:`load_saved` returns: the module and what it was made from."""

    model: nn.Module
    recipe: dict[str, Any] | None = None
    base: str | None = None
    input_shape: tuple[int, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def save_model(
    path: str | Path,
    model: nn.Module,
    *,
    recipe: Any = None,
    base: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    metadata: dict[str, Any] | None = None,
    pickle: bool = False,
) -> Path:
    """Saves the network's weights and architecture (as data), with its recipe, atomically.

    Args:
        path: destination file.
        model: a network compressor built (:func:`compressor.build_model`, :func:`compressor.unet`,
            :func:`compressor.apply`, a loaded model file), which knows its origin.
        recipe: a :class:`~compressor.transforms.Recipe` or its plain data (for the record).
        base: the spec of the model the recipe was applied to (for the record).
        input_shape: the example input shape the model was transformed and costed at.
        metadata: anything else JSON-like (costs, metrics).
        pickle: write the whole module as a pickle instead (any network; loading it then needs
            ``trust=True``).

    Raises:
        ConfigError: ``model`` has no origin (compressor did not build it) and ``pickle`` is off.
    """
    if isinstance(path, nn.Module) and isinstance(model, (str, Path)):
        raise ConfigError(f"save_model: the path comes first, save_model({str(model)!r}, network) (torch.save's "
                          "order is the other way round)")
    if not isinstance(path, (str, Path)):
        raise ConfigError(f"save_model: path is a {type(path).__name__}, not a file path")
    model = as_network(model, "save_model")
    if recipe is not None and hasattr(recipe, "to_data"):
        recipe = recipe.to_data()
    record = {
        "recipe": recipe, "base": base, "input_shape": list(input_shape) if input_shape else None,
        # plain JSON types only: the file must load with weights_only=True
        "metadata": json.loads(json.dumps(dict(metadata or {}), default=str)),
    }
    if pickle:
        payload = {"format": _PICKLED, "model": model, **record}
        return atomic_write(path, lambda file: torch.save(payload, file))
    origin = origin_of(model)
    if origin is None:
        kind, name = type(model), network_name(model)
        specs = "(a registered name, a model class or a factory's import path)"
        pickle = "save it as a pickle (pickle=True), which loads only with trust=True"
        if isinstance(model, torch.fx.GraphModule):  # a network compressor changed, from one it did not build
            raise ConfigError(
                f"cannot save {name} as data: it is a transformed {name}, which compressor did not build; build "
                f"{name} with compressor.build_model(SPEC, ARGS) {specs}, load its weights and transform that; or "
                f"{pickle}")
        spec = "SPEC" if "<locals>" in kind.__qualname__ or kind.__module__ == "__main__" else (
            f"'{kind.__module__}:{kind.__qualname__}'")  # a class in a script or a function has no import path
        raise ConfigError(
            f"cannot save {kind.__name__} as data: compressor does not know how it was built; build it with "
            f"compressor.build_model({spec}, ARGS) {specs} and load its weights; or {pickle}")
    try:  # the architecture must be plain data too, or the file would not load with weights_only
        json.dumps(origin.to_dict())
    except (TypeError, ValueError) as error:
        raise ConfigError(f"cannot save {type(model).__name__} as data: its builder's arguments are not plain data "
                          f"({error}); save it as a pickle (pickle=True), which loads only with trust=True") from None
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    _check_rebuilds(model, origin, state)
    payload = {"format": _FORMAT, "origin": origin.to_dict(), "output": declared_output(model), "state_dict": state,
               **record}
    return atomic_write(path, lambda file: torch.save(payload, file))


def is_model_file(path: str | Path) -> bool:
    """Whether ``path`` is a model file :func:`save_model` wrote (rather than a weights checkpoint);
    read weights-only, nothing in it runs."""
    try:
        payload = read_tensor_file(Path(path), what="model file")
    except PickledObjectsError:  # only model files of the old format (or pickle=True) are pickles
        return True
    except ConfigError:
        return False
    return isinstance(payload, dict) and payload.get("format") in (_FORMAT, _PICKLED)


def load_saved(path: str | Path, *, map_location: str | torch.device = "cpu", trust: bool = False) -> SavedModel:
    """Loads a file written by :func:`save_model`: the network rebuilt, with its recipe and metadata.

    Args:
        trust: also load a pickled module, or call a builder that is neither registered, a model
            class nor a known model package's function; both run code the file chose. Only for
            files you trust.

    Raises:
        ConfigError: the file is missing, not a compressor model file, or its weights do not fit.
        UntrustedModelError: it would run code of the file's choosing and ``trust`` is off.
    """
    path = Path(path)
    try:
        payload = read_tensor_file(path, what="model file", map_location=map_location)
    except PickledObjectsError:  # objects beyond tensors and plain data: a pickled module, or worse
        if not trust:
            raise UntrustedModelError(
                f"{path}: a pickled model (compressor's old format, or saved with pickle=True): loading it runs "
                "code stored in the file, which is done only for a file you trust (trust=True)"
            ) from None
        payload = _load_pickle(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") not in (_FORMAT, _PICKLED):
        raise ConfigError(f"{path}: not a model file saved by compressor ({_what_it_holds(payload)})")
    model = payload.get("model") if payload["format"] == _PICKLED else _rebuild(path, payload, trust=trust)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{path}: not a model file saved by compressor (it holds no network)")
    return SavedModel(
        model=model, recipe=payload.get("recipe"), base=payload.get("base") if isinstance(payload.get("base"), str) else None,
        input_shape=_input_shape(path, payload.get("input_shape")),
        metadata=payload.get("metadata") if isinstance(payload.get("metadata"), dict) else {},
    )


def load_model(path: str | Path, *, map_location: str | torch.device = "cpu", trust: bool = False) -> nn.Module:
    """Loads the network saved by :func:`save_model` (or ``compressor apply --out``); see :func:`load_saved`.

    Example:
        >>> import tempfile, os, compressor
        >>> path = os.path.join(tempfile.mkdtemp(), "model.pt")
        >>> small, _ = compressor.apply(compressor.unet(base_width=4), [{"name": "fire"}], (1, 3, 32, 32))
        >>> _ = compressor.save_model(path, small)
        >>> type(compressor.load_model(path)).__name__
        'UNet'
    """
    return load_saved(path, map_location=map_location, trust=trust).model


def load_hint(path: str | Path) -> str:
    """How the file ``path`` (just written by :func:`save_model`) loads, for the line that says where it
    went: ``compressor.load_model(PATH)``, or with ``trust=True`` where loading it runs code the file
    names (a builder of the user's own, a pickle). Decided by loading it without trust."""
    call = f"compressor.load_model({str(path)!r}"
    try:
        load_saved(path)
    except ConstructionLimitError as error:  # a size or time beyond a file's limits: said as it is
        reason = first_line(error)
    except UntrustedModelError:
        reason = "it runs code of yours (a builder of your own, or a pickle), which a file does only when trusted"
    except CompressorError as error:  # an input shape beyond what a file's steps are traced again at, say
        reason = first_line(error)
    else:
        return f"load with {call})"
    return f"load with {call}, trust=True) or --trust: {reason}"


def _load_pickle(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001 - a missing class, a corrupted file
        raise ConfigError(f"{path}: cannot load model file: {type(error).__name__}: {first_line(error)}") from None


def _rebuild(path: Path, payload: dict[str, Any], *, trust: bool) -> nn.Module:
    """The network a format-2 file describes, with its weights; built under the policy of
    :mod:`compressor.models.policy` unless ``trust``."""
    origin_data, state, output = payload.get("origin"), payload.get("state_dict"), payload.get("output")
    try:  # before anything walks or prints them
        check_plain_size([origin_data, output], "its architecture")
    except ConfigError as error:
        raise ConfigError(f"{path}: a damaged model file ({error})") from None
    if not isinstance(origin_data, dict) or not isinstance(origin_data.get("base"), str):
        raise ConfigError(f"{path}: a damaged model file (its architecture is not a mapping naming a builder)")
    if not isinstance(state, dict) or not all(isinstance(key, str) and isinstance(value, torch.Tensor)
                                              and value.device.type != "meta" for key, value in state.items()):
        raise ConfigError(f"{path}: a damaged model file (its state_dict is not a mapping of names to tensors)")
    long = next((key for key in state if len(key) > 1024), None)
    if long is not None:
        raise ConfigError(f"{path}: a damaged model file (a weight's name of {len(long):,} characters)")
    odd = next((key for key, value in state.items()
                if value.layout != torch.strided or value.is_nested or value.is_quantized), None)
    if odd is not None:  # a network's weights are dense tensors; torch's errors on the others are tracebacks
        raise ConfigError(f"{path}: a damaged model file (its weight {shown(odd, 60)} is a "
                          f"{'nested' if state[odd].is_nested else 'quantized' if state[odd].is_quantized else 'sparse'}"
                          " tensor, not a dense one)")
    if output is not None and (isinstance(output, bool) or not isinstance(output, (str, int))):
        raise ConfigError(f"{path}: a damaged model file (its declared output {shown(output)} is not a key or an index)")
    shape = origin_data.get("input_shape")
    if shape is not None and (not isinstance(shape, (list, tuple)) or
                              not all(isinstance(size, int) and not isinstance(size, bool) for size in shape)):
        raise ConfigError(f"{path}: a damaged model file (its input shape {shown(shape)} is not a list of sizes)")
    try:
        origin = Origin.from_dict(origin_data)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{path}: a damaged model file ({type(error).__name__}: {first_line(error)})") from None
    if not isinstance(origin_data.get("args") or {}, dict) or not all(
            isinstance(step, dict) and isinstance(step.get("name"), str) for step in origin.steps):
        raise ConfigError(f"{path}: a damaged model file (its builder arguments or steps are not mappings)")
    if origin.steps and origin.input_shape is None:
        raise ConfigError(f"{path}: a damaged model file (transform steps without the input shape they ran at)")
    if origin.input_shape is not None:
        parse_shape(origin.input_shape, what=f"{path}: its input shape")
        if math.prod(origin.input_shape) > _MAX_TRACE_ELEMENTS and not trust:  # the steps are traced again at it
            raise ConfigError(f"{path}: its transform steps ran at input shape {origin.input_shape}, more than the "
                              f"{_MAX_TRACE_ELEMENTS:,} values a file's steps are traced again at")
    # A network many times larger than the file's own tensors is not what the file holds (a pruned
    # network may be a thousand times smaller than the one it was pruned from; not more). Counted in
    # stored bytes: a tensor expanded from one value is one value.
    stored = sum({value.untyped_storage()._cdata: value.untyped_storage().nbytes() for value in state.values()}.values())
    with building_from(str(path), trust=trust, max_params=max(50_000_000, 1000 * stored // 4)):
        base = declare_output(build_model(origin.base, origin.args), output)
        try:
            with contextlib.nullcontext() if trust or not origin.steps else steps_budget(str(path)):
                model = _architecture(base, origin)
        except CompressorError as error:  # the budget, raised inside a transform and named as its failure
            limit = next((cause for cause in _causes(error) if isinstance(cause, ConstructionLimitError)), None)
            if limit is not None:
                raise limit from None
            if str(error).startswith(f"{path}:"):
                raise
            raise type(error)(f"{path}: {error}") from None  # a step the file recorded that does not apply
    mismatch = weights_mismatch(model.state_dict(), state)
    if mismatch:
        raise ConfigError(f"{path}: its weights do not fit the network rebuilt from its architecture: {mismatch}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ConfigError(f"{path}: its weights do not load into the network rebuilt from its architecture: "
                          f"{first_line(error)}") from None
    model = set_origin(model.eval(), origin)
    return model if trust else annotate(model, UNTRUSTED_FILE, str(path))  # run once on meta before it runs


def _causes(error: BaseException) -> list[BaseException]:
    found, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        found.append(error)
        error = error.__cause__ or error.__context__
    return found


def _input_shape(path: Path, shape: Any) -> tuple[int, ...] | None:
    if not shape:
        return None
    if not isinstance(shape, (list, tuple)):
        raise ConfigError(f"{path}: a damaged model file (its input shape is {shown(shape)}, not a list of sizes)")
    return parse_shape(tuple(shape), what=f"{path}: its input shape")


def _what_it_holds(payload: Any) -> str:
    if isinstance(payload, dict) and payload and all(isinstance(value, torch.Tensor) for value in payload.values()):
        return "it holds a state_dict: weights without the network"
    if isinstance(payload, dict) and "state_dict" in payload:
        return "it holds a checkpoint: weights without the network"
    return f"it holds a {type(payload).__name__}"


def _architecture(base: nn.Module, origin: Origin) -> nn.Module:
    """``base`` with ``origin``'s steps applied again (the weights are whatever they are: they are
    replaced, so new layers start at random and nothing is refitted)."""
    if not origin.steps:
        return base
    steps = [{**_recorded_before(step), **step,
              **{key: value for key, value in (("init", "random"), ("calibrate", 0)) if key in step}}
             for step in origin.steps]
    # only the architecture is wanted: no layer errors (half the time of building again), no output checks (the
    # weights loaded into it must fit tensor for tensor, which says more than an output shape)
    model, _ = apply(base, steps, origin.input_shape, count_flops=False, diagnostics=False, check_each_step=False,
                     check_output=False)
    return model


def _recorded_before(step: dict[str, Any]) -> dict[str, Any]:
    """What a step recorded before some of its transform's parameters existed was built with."""
    transform = TRANSFORMS.get_or_none(step["name"])
    return dict(getattr(transform, "recorded_before", {})) if transform is not None else {}


def _check_rebuilds(model: nn.Module, origin: Origin, state: dict[str, torch.Tensor]) -> None:
    """Refuses to write a file that would not load: the architecture built again from ``origin`` must
    have exactly ``state``'s tensors (a layer a transform changed without recording it would not)."""
    try:
        rebuilt = _architecture(build_model(origin.base, origin.args), origin).state_dict()
    except CompressorError as error:
        raise ConfigError(f"cannot save {type(model).__name__} as data: its architecture does not build again "
                          f"({first_line(error)}); save it as a pickle (pickle=True)") from None
    wrong = [key for key in state if key not in rebuilt or rebuilt[key].shape != state[key].shape]
    wrong += [key for key in rebuilt if key not in state]
    if wrong:
        raise ConfigError(f"cannot save {type(model).__name__} as data: built again from its recipe, it differs at "
                          f"{', '.join(wrong[:3])}; save it as a pickle (pickle=True), which loads only with trust=True")
