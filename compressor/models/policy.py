"""What a model file or a study may ask to build: data, never code, unless the user trusts it.

A model file (:mod:`compressor.saving`) and a study (``compressor worker``, ``export``,
``confirm``) name the network to build as a builder and its keyword arguments. Whoever wrote the
file or the study chose both, so while they are built (inside :func:`building_from`) every call of
:func:`compressor.build_model` obeys this policy, as ``torch.load(weights_only=True)`` obeys one
for tensors:

- **the builder** is a registered model (``unet``, ``micronet``, a ``compressor.models`` entry
  point), or a model class of segmentation_models_pytorch, torchvision, MONAI or timm (or a
  torchvision model builder), named by one attribute; anything else runs code of the file's
  choosing;
- **its arguments** describe the architecture: each name is on the allowlist of its library
  (:data:`ARCHITECTURE_ARGS`; a registered model's own parameters), no name mentions a URL,
  download, cache, folder, path, file, hub or overlay, and each value is a plain value (a bool,
  a bounded number, None, a short word, or a short list or mapping of those): no URL, no path;
- **weights are off**: ``encoder_weights``, ``weights``, ``weights_backbone``, ``pretrained`` and
  ``pretrained_backbone`` may only be None or false, and are set so when the builder has them
  (a file's weights come from the file; a study's parent from its weights file);
- **no default reads a file**: a class whose own default names a file or a URL is refused;
- **the size is counted first**: the network is built on PyTorch's ``meta`` device (no memory)
  and refused above a parameter bound, before anything is allocated; every build (meta or real)
  runs under a budget of live tensor bytes and seconds (:func:`compressor.models.construction.construction_budget`), so a class
  that cannot be built on the meta device, or loops for long, is stopped as well;
- **nothing is fetched**: while it builds, torch.hub's folder is an empty throwaway one and
  every ``urllib`` download (``http``, ``file``...) is refused, so a library that tries to fetch
  weights fails instead of writing or reading anything.

With ``trust`` (``--trust``) none of this applies: the builder is called with the stored
arguments, as the user's own Python would.

Example:
    >>> import compressor
    >>> with building_from("model.pt", trust=False):
    ...     compressor.build_model("unet", {"base_width": 4}).head.in_channels
    4
    >>> with building_from("model.pt", trust=False):
    ...     compressor.build_model("unet", {"base_width": "/etc/passwd"})
    Traceback (most recent call last):
    ...
    compressor.errors.UntrustedModelError: model.pt: argument base_width of unet: '/etc/passwd' is a path or a URL; a model file or a study holds the architecture as plain values; built so only from a file or study you trust (trust=True)
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from compressor.bounds import shown
from compressor.errors import ModelLoadError, UntrustedModelError, first_line

__all__ = [
    "building_from", "current_source", "DataSource", "check_builder", "checked_args", "refusal",
    "TRUSTED_MODEL_PACKAGES", "ARCHITECTURE_ARGS", "WEIGHT_ARGS", "MAX_PARAMS", "BUILD_SECONDS", "STEPS_SECONDS",
    "STEPS_BYTES",
]

#: packages whose model classes a file or a study may name (and torchvision's model builders)
TRUSTED_MODEL_PACKAGES = ("segmentation_models_pytorch.", "torchvision.models.", "monai.networks.", "timm.models.")

#: arguments that load weights, and the value that keeps them off
WEIGHT_ARGS: dict[str, Any] = {
    "encoder_weights": None, "weights": None, "weights_backbone": None, "pretrained": False, "pretrained_backbone": False,
}

_COMMON = frozenset({"in_channels", "num_classes", "classes", "out_channels", "dropout", "activation", "act", "norm",
                     "bias", "groups", "kernel_size", "stride", "strides", "padding", "dilation", "depth", "depths",
                     "channels", "features", "layers", "num_layers", "num_heads", "mlp_ratio", "drop_rate",
                     "norm_layer_name", "spatial_dims"})

#: the architecture arguments a file or a study may give a library's builders (plus their weight
#: arguments, off); anything else needs trust
ARCHITECTURE_ARGS: dict[str, frozenset[str]] = {
    "segmentation_models_pytorch.": _COMMON | {
        "encoder_name", "encoder_depth", "encoder_output_stride", "encoder_output_indices", "encoder_weights",
        "decoder_channels", "decoder_use_norm", "decoder_use_batchnorm", "decoder_attention_type",
        "decoder_interpolation", "decoder_atrous_rates", "decoder_aspp_separable", "decoder_aspp_dropout",
        "decoder_dropout", "decoder_pyramid_channels", "decoder_segmentation_channels", "decoder_merge_policy",
        "decoder_pab_channels", "decoder_fusion_channels", "decoder_intermediate_channels", "decoder_readout",
        "psp_out_channels", "psp_use_batchnorm", "psp_dropout", "upsampling", "aux_params",
    },
    "torchvision.models.": _COMMON | {
        "weights", "weights_backbone", "progress", "aux_loss", "num_keypoints", "trainable_backbone_layers",
        "width_mult", "stochastic_depth_prob", "zero_init_residual", "width_per_group", "replace_stride_with_dilation",
        "aux_logits", "transform_input", "init_weights", "memory_efficient", "num_init_features", "growth_rate",
        "block_config", "bn_size", "version", "layer_scale", "patch_size", "image_size", "hidden_dim", "mlp_dim",
        "attention_dropout", "representation_size", "window_size", "embed_dim", "partition_size", "dropout_aux",
        "last_channel", "reduced_tail", "dilated", "inter_channels", "quantize",
    },
    "monai.networks.": _COMMON | {
        "up_kernel_size", "num_res_units", "adn_ordering", "upsample", "img_size", "feature_size", "hidden_size",
        "mlp_dim", "proj_type", "pos_embed", "pos_embed_type", "norm_name", "conv_block", "res_block", "dropout_rate",
        "window_size", "qkv_bias", "attn_drop_rate", "dropout_path_rate", "normalize", "use_checkpoint", "downsample",
        "use_v2", "init_filters", "blocks_down", "blocks_up", "upsample_mode", "filters", "deep_supervision",
        "deep_supr_num", "trans_bias", "decoder_channels", "decoder_bias", "backbone", "pretrained", "is_pad",
        "interp_mode", "block", "block_inplanes", "conv1_t_size", "conv1_t_stride", "no_max_pool", "shortcut_type",
        "widen_factor", "n_input_channels", "growth_rate", "init_features", "bn_size", "block_config",
        "dropout_prob", "dropout_prob_down", "dropout_prob_up", "dropout_dim", "reduction", "kernels",
        "upsample_kernel_size", "act_name", "num_groups", "dimensions", "out_classes", "np_out_channels", "mode",
        "freeze_encoder", "norm_num_groups", "num_channels", "num_res_blocks", "attention_levels", "inter_channels",
        "num_blocks", "width_coefficient", "depth_coefficient", "drop_connect_rate", "depth_divisor", "image_size",
        "decoder_padding", "adapt_standard_resnet", "use_conv_final", "n_layers", "patch_size",
        "num_channel_initial", "extract_levels", "pooling", "concat_skip", "encode_kernel_sizes", "acti_type",
        "layer_params", "channel_matching", "out_shape", "global_resp_norm", "bias_downsample",
    },
    "timm.models.": _COMMON | {
        "in_chans", "drop_path_rate", "global_pool", "output_stride", "out_indices", "img_size", "patch_size",
        "embed_dim", "qkv_bias", "stem_type", "stem_width", "base_width", "cardinality", "dims", "width_multiplier",
        "block_args", "channel_multiplier", "depth_multiplier", "pretrained",
    },
}

# Words that name a way to fetch, read or write something: never an architecture argument.
_FETCHING_WORDS = {"url", "urls", "pretrained", "weights", "weight", "checkpoint", "ckpt", "cache", "dir", "dirs",
                   "path", "paths", "file", "files", "filename", "hub", "overlay", "download", "repo", "cfg"}
_HARMLESS = {"init_weights"}  # a bool: initialize at random, or not
# Where the tensors are made: the network is built on the CPU (a meta device leaves it without weights).
_PLACEMENT = {"device", "dtype", "factory_kwargs"}
# A default that names a file (``sam_vit_b_01ec64.pth``) or a URL: the class reads it unless told otherwise.
_NAMES_A_FILE = re.compile(r"[/\\:]|\.[A-Za-z][A-Za-z0-9]{0,4}$")
#: seconds a network from a file or a study may take to build (each of the meta and the real build)
BUILD_SECONDS = 30.0

#: parameters a network built from a file or a study may have at most (counted on the meta device)
MAX_PARAMS = 500_000_000
_MAX_INT = 1 << 16  # channels, classes, sizes, counts of layers: never more in an architecture
_MAX_FLOAT = 1e6
_MAX_WORD = 64
_MAX_ITEMS = 64
_MAX_DEPTH = 4
_MAX_NODES = 4096
#: seconds and bytes a file's transform steps may take when they are applied again
STEPS_SECONDS = 120.0
STEPS_BYTES = 4 * MAX_PARAMS + (64 << 20)
_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


@dataclass(frozen=True)
class DataSource:
    """Where the builder and arguments being built came from.

    Attributes:
        name: the file or study, for messages (``model.pt``, ``study 'quickstart'``).
        max_params: the parameter bound of a network built from it.
        replaces_weights: the network's weights are replaced after it is built (a model file; a
            study whose candidates inherit from a parent's weights file), so pretrained weights
            are turned off without changing anything; otherwise a builder that would start from
            downloaded weights is refused rather than built otherwise.
    """

    name: str
    max_params: int = MAX_PARAMS
    replaces_weights: bool = True


_SOURCE: ContextVar[DataSource | None] = ContextVar("compressor_model_source", default=None)


@contextlib.contextmanager
def building_from(
    name: str, *, trust: bool, max_params: int = MAX_PARAMS, replaces_weights: bool = True
) -> Iterator[None]:
    """While inside, :func:`compressor.build_model` builds under this policy (unless ``trust``)."""
    if trust:
        token = _SOURCE.set(None)
    else:
        token = _SOURCE.set(DataSource(name, max_params=min(max_params, MAX_PARAMS), replaces_weights=replaces_weights))
    try:
        yield
    finally:
        _SOURCE.reset(token)


def current_source() -> DataSource | None:
    """The file or study whose network is being built under the policy, or None (the user's own code)."""
    return _SOURCE.get()


def trusted_package(module_name: str) -> str | None:
    """The entry of :data:`TRUSTED_MODEL_PACKAGES` that ``module_name`` belongs to, or None."""
    return next((prefix for prefix in TRUSTED_MODEL_PACKAGES
                 if module_name == prefix.rstrip(".") or module_name.startswith(prefix)), None)


def import_module_of(spec: str) -> Any:
    """The module of ``package.module:callable``, imported.

    Raises:
        ModelLoadError: it cannot be imported here (missing, or a library that fails to import).
    """
    module_name = spec.partition(":")[0]
    try:
        return importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - ImportError, or whatever the module raises
        advice = ""
        top = module_name.split(".")[0]
        if isinstance(error, ModuleNotFoundError) and error.name == top and _in_current_folder(top):
            advice = (f"; {top} is in the current folder, which Python does not search from the compressor command: "
                      "run it with PYTHONPATH=. (or pip install your package)")
        raise ModelLoadError(f"cannot import module {module_name!r} of model {spec!r}: {first_line(error)}{advice}") from None


def _in_current_folder(name: str) -> bool:
    """Whether ``name.py`` or a package folder ``name/`` is in the current folder."""
    here = Path.cwd()
    return (here / f"{name}.py").is_file() or (here / name / "__init__.py").is_file()


def check_builder(spec: str, *, registered: bool, source: DataSource) -> None:
    """Refuses a builder that would run code of the file's choosing.

    Decided from the name before anything else is imported: a registered model; or a model class
    (an ``nn.Module`` subclass defined in the package it is named from) or a torchvision model
    builder, of one of :data:`TRUSTED_MODEL_PACKAGES`, named by a single attribute.

    Raises:
        UntrustedModelError: any other builder.
        ModelLoadError: a trusted package's module that cannot be imported.
    """
    if registered:
        return
    module_name, _, attribute = spec.partition(":")
    package = trusted_package(module_name)
    if package is not None and attribute.isidentifier():
        try:
            module = import_module_of(spec)
        except ModelLoadError as error:
            raise ModelLoadError(f"{source.name}: {error}") from None
        builder = getattr(module, attribute, None)
        defined_in = str(getattr(builder, "__module__", "") or "")
        if defined_in == package.rstrip(".") or defined_in.startswith(package):
            if isinstance(builder, type) and issubclass(builder, nn.Module):
                return
            if package == "torchvision.models." and attribute in _torchvision_models():
                return
    raise UntrustedModelError(
        f"{source.name}: its network is built by {spec!r}, which is neither a registered model nor a model class of "
        f"{', '.join(prefix.rstrip('.') for prefix in TRUSTED_MODEL_PACKAGES)}; building it would import or call it, "
        "which is done only for a file or study you trust, or register the builder as a model "
        "(a compressor.models entry point)"
    )


def checked_args(
    spec: str, builder: Callable[..., Any], args: Mapping[str, Any], *, registered: bool, source: DataSource
) -> dict[str, Any]:
    """``args`` checked against the policy, with the builder's weight arguments set to their off value.

    Raises:
        UntrustedModelError: an argument that is not an architecture argument, names a way to
            fetch or write something, or holds anything but a plain value; a builder whose own
            default names a file or a URL; a builder that would start from downloaded weights in
            a study whose weights are not replaced.
    """
    parameters = _parameters(builder)
    allowed: Any = parameters if registered else ARCHITECTURE_ARGS[trusted_package(spec.partition(":")[0]) or ""]
    if registered and _takes_any_keyword(builder):  # installed code that takes any keyword: the checks below hold
        allowed = _Everything()
    build_args: dict[str, Any] = {}
    nodes = [_MAX_NODES]  # values left to visit, across every argument (a pickle may share one list many times)
    for name, value in args.items():
        where = f"argument {name} of {spec}"
        if not isinstance(name, str) or not name.isidentifier():
            raise refusal(source, f"{where} is not a keyword")
        if name in WEIGHT_ARGS:
            if value not in (None, False):
                raise refusal(source, f"{where} is {shown(value)}, which loads weights; a network is built from a file or "
                                      f"a study with them off ({name}={WEIGHT_ARGS[name]})")
            build_args[name] = WEIGHT_ARGS[name]  # the library's own off value (smp reads False as "load")
            continue
        if name in _PLACEMENT or (_fetching(name) and not (name in allowed and not registered)):
            raise refusal(source, f"{where} names a download, a cache, a file or a device, not the architecture")
        if name not in allowed:
            kind = "a parameter of the model" if registered else \
                f"an architecture argument compressor knows for {spec.split('.')[0]}"
            raise refusal(source, f"{where} is not {kind}")
        build_args[name] = _checked_value(value, where, source, nodes=nodes)
    for name, parameter in parameters.items():
        if name in args:
            continue
        if name in WEIGHT_ARGS:
            if parameter.default not in (None, False, inspect.Parameter.empty) and not source.replaces_weights:
                raise refusal(source, f"{spec} starts from downloaded weights ({name} defaults to {parameter.default!r}) "
                                      "and this study's candidates start from that network's weights; building it "
                                      "without them would not build the study's network")
            build_args[name] = WEIGHT_ARGS[name]
        elif isinstance(parameter.default, str) and _NAMES_A_FILE.search(parameter.default):
            raise refusal(source, f"{spec} reads {parameter.default!r} by default ({name}); a network is built from a "
                                  "file or a study only when it reads nothing")
    return build_args


def _parameters(builder: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The builder's named keyword parameters (``**kwargs`` gives none)."""
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):
        return {}
    return {name: parameter for name, parameter in signature.parameters.items()
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)}


def _takes_any_keyword(builder: Callable[..., Any]) -> bool:
    try:
        return any(parameter.kind == parameter.VAR_KEYWORD for parameter in inspect.signature(builder).parameters.values())
    except (TypeError, ValueError):
        return True


class _Everything:
    def __contains__(self, name: object) -> bool:
        return True


def _fetching(name: str) -> bool:
    return name not in _HARMLESS and bool(_FETCHING_WORDS & set(name.lower().split("_")))


def _checked_value(value: Any, where: str, source: DataSource, depth: int = 0, *, nodes: list[int]) -> Any:
    """``value`` if it is a plain value (bool, None, a bounded finite number, a short word, or a
    short list or mapping of those; :data:`_MAX_NODES` values in all), with weight keys inside a
    mapping set to their off value."""
    nodes[0] -= 1
    if nodes[0] < 0:
        raise refusal(source, f"{where}: the arguments hold more than {_MAX_NODES:,} values in all")
    if depth > _MAX_DEPTH:
        raise refusal(source, f"{where}: nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > _MAX_INT:
            raise refusal(source, f"{where}: {value} is out of range (at most {_MAX_INT:,} in size)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > _MAX_FLOAT:
            raise refusal(source, f"{where}: {value} is not a finite number of at most {_MAX_FLOAT:g} in size")
        return value
    if isinstance(value, str):
        if len(value) > _MAX_WORD:
            raise refusal(source, f"{where}: a string of {len(value)} characters (at most {_MAX_WORD})")
        if value and not _WORD.fullmatch(value) or value.startswith("."):
            raise refusal(source, f"{where}: {shown(value)} is a path or a URL; a model file or a study holds the "
                                  "architecture as plain values")
        return value
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_ITEMS:
            raise refusal(source, f"{where}: a list of {len(value)} items (at most {_MAX_ITEMS})")
        return type(value)(_checked_value(item, where, source, depth + 1, nodes=nodes) for item in value)
    if isinstance(value, Mapping):
        if len(value) > _MAX_ITEMS:
            raise refusal(source, f"{where}: a mapping of {len(value)} items (at most {_MAX_ITEMS})")
        checked = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise refusal(source, f"{where}: key {shown(key)} is not a name")
            if key in WEIGHT_ARGS and item in (None, False):
                checked[key] = WEIGHT_ARGS[key]
                continue
            if key in WEIGHT_ARGS or key in _PLACEMENT or _fetching(key):
                raise refusal(source, f"{where}: key {key} names a download, a cache, a file or a device")
            checked[key] = _checked_value(item, f"{where}.{key}", source, depth + 1, nodes=nodes)
        return checked
    raise refusal(source, f"{where}: a {type(value).__name__}, not a plain value")


def refusal(source: DataSource, reason: str, *, kind: type[UntrustedModelError] = UntrustedModelError
            ) -> UntrustedModelError:
    """The one-line refusal of ``reason`` for a network from ``source``."""
    return kind(f"{source.name}: {reason}; built so only from a file or study you trust (trust=True)")


def _torchvision_models() -> set[str]:
    import torchvision.models

    return set(torchvision.models.list_models())
