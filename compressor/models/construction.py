"""The limits a network built from a model file or a study is built under (the policy of
:mod:`compressor.models.policy`): its size counted on the ``meta`` device first, a budget of live
tensor bytes and seconds while it builds, and nothing downloaded."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

from compressor.errors import UntrustedModelError
from compressor.models import policy  # its limits are read when used (the tests lower them)
from compressor.models.policy import DataSource, refusal

__all__ = ["ConstructionLimitError", "construction_budget", "steps_budget", "check_size", "no_downloads",
           "check_runs_within", "RUN_BYTES", "UNTRUSTED_FILE"]


class ConstructionLimitError(UntrustedModelError):
    """Building a network from a file or a study took more memory or time than it may."""


class _Budget(TorchDispatchMode):
    """Watches every tensor op while a network from a file or a study is built: the bytes of the
    tensors that are alive (every new storage an op returns, on any device, counted until it is
    freed) and the time taken; past either limit the op raises :class:`ConstructionLimitError`.

    A factory op (``empty``, ``zeros``...) is checked before it allocates; any other op that makes a
    new tensor (``arange``, ``cat``, ``repeat``, ``tensor`` from a list...) right after, so one op
    can overshoot by its own output (which torch refuses to allocate when it exceeds the machine).
    """

    def __init__(self, max_bytes: int, seconds: float, what: str, source: DataSource, doing: str = "build") -> None:
        super().__init__()
        self.max_bytes, self.deadline, self.what, self.source = max_bytes, time.monotonic() + seconds, what, source
        self.doing = doing
        self.seconds, self.live = seconds, 0
        self.storages: list[tuple[StorageWeakRef, int]] = []

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """No ``torch._dynamo.disable`` around :meth:`__torch_dispatch__`: nothing built under this mode is
        compiled, and the wrapper's first call imports torch._dynamo, about 1.3 s of every model file's loading."""
        return False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if time.monotonic() > self.deadline:
            raise refusal(self.source, f"{self.what} took more than {self.seconds:.0f} s to {self.doing}",
                          kind=ConstructionLimitError)
        inputs = list(_tensors((args, kwargs)))
        self._admit(_requested_bytes(func, args, kwargs) or _predicted_bytes(func, args, kwargs, inputs))
        output = func(*args, **kwargs)
        given = {_storage_key(value) for value in inputs}
        for value in _tensors(output):
            if _storage_key(value) not in given:
                storage = value.untyped_storage()
                given.add(_storage_key(value))
                self.storages.append((StorageWeakRef(storage), storage.nbytes()))
                self._admit(0, counted=storage.nbytes())
        return output

    def _admit(self, upcoming: int, *, counted: int = 0) -> None:
        self.live += counted
        if self.live + upcoming <= self.max_bytes:
            return
        self.storages = [(ref, size) for ref, size in self.storages if not ref.expired()]  # what is still alive
        self.live = sum(size for _, size in self.storages)
        if self.live + upcoming > self.max_bytes:
            raise refusal(self.source, f"{self.what} asks for more than {self.max_bytes / 2**30:.1f} GiB of tensors "
                                       f"while it {'is built' if self.doing == 'build' else 'runs'}",
                          kind=ConstructionLimitError)


def _storage_key(tensor: torch.Tensor) -> int:
    try:
        return tensor.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):  # a tensor without storage (a sparse or wrapper tensor)
        return id(tensor)


def _requested_bytes(func: Any, args: tuple, kwargs: dict) -> int:
    """The bytes a factory op (``empty``, ``zeros``, ``full``...) is about to allocate, else 0."""
    name = getattr(func, "__name__", "")
    if not name.startswith(_FACTORIES):
        return 0
    sizes = next((value for value in args if isinstance(value, (list, tuple))), None)
    if sizes is None:
        return 0
    try:
        count = math.prod(int(size) for size in sizes)
    except (TypeError, ValueError):
        return 0
    dtype = kwargs.get("dtype") or torch.get_default_dtype()
    return count * (dtype.itemsize if isinstance(dtype, torch.dtype) else 4)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in an op's arguments or output (tuples, lists and mappings of them), in order."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _on_meta(value: Any) -> Any:
    """``value`` with every tensor replaced by a ``meta`` tensor of its shape, dtype and strides."""
    if isinstance(value, torch.Tensor):
        return value if value.device.type == "meta" else value.to("meta")
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_on_meta(item) for item in value)
    if isinstance(value, dict):
        return {key: _on_meta(item) for key, item in value.items()}
    return value


_KINDS: dict[Any, str] = {}  # op -> how its output is sized: none, inputs, broadcast, meta


def _kind(func: Any) -> str:
    kind = _KINDS.get(func)
    if kind is None:
        returns = getattr(getattr(func, "_schema", None), "returns", None)
        if returns is not None and not any("Tensor" in str(value.type) and value.alias_info is None for value in returns):
            kind = "none"  # no new tensor: a number (allclose), a view, an in-place op
        elif getattr(func, "__name__", "").startswith(("cat.", "stack.")):
            kind = "inputs"
        elif torch.Tag.pointwise in getattr(func, "tags", ()):
            kind = "broadcast"
        else:
            kind = "meta"
        _KINDS[func] = kind
    return kind


def _predicted_bytes(func: Any, args: tuple, kwargs: dict, tensors: list[torch.Tensor]) -> int:
    """The bytes of the new tensors any other op will return, found by running it on ``meta`` copies of its tensors
    first (shapes only: nothing computed, nothing allocated), so that one op (a convolution to 65,536 channels) is
    refused before it allocates, not after; 0 where the op cannot run on ``meta`` (its output's size depends on its
    values): that op is counted right after it runs, as before."""
    if not tensors or all(value.device.type == "meta" for value in tensors):
        return 0
    kind = _kind(func)
    if kind == "none":
        return 0
    # Worked out for the ops whose meta kernel is Python code that would import torch._dynamo (1.3 s of a load):
    if kind == "inputs":  # cat, stack: the inputs' bytes
        return sum(value.numel() * value.element_size() for value in tensors)
    if kind == "broadcast":  # the inputs broadcast together (a row plus a column: far more than either)
        size = max(max(value.element_size() for value in tensors), 4)
        shapes = {value.shape for value in tensors}
        if len(shapes) == 1:
            return tensors[0].numel() * size
        try:
            return math.prod(torch.broadcast_shapes(*shapes)) * size
        except RuntimeError:  # shapes that do not broadcast: the op itself says so
            return 0
    try:
        meta_args, meta_kwargs = _on_meta((args, kwargs))
        output = func(*meta_args, **meta_kwargs)
    except Exception:  # noqa: BLE001 - no meta kernel, or a value-dependent size
        return 0
    given = {_storage_key(value) for value in _tensors((meta_args, meta_kwargs))}
    new = {_storage_key(value): value.untyped_storage().nbytes() for value in _tensors(output)
           if _storage_key(value) not in given}
    return sum(new.values())


_FACTORIES = ("empty", "zeros", "ones", "full", "rand", "randn", "randint", "new_empty", "new_zeros", "new_ones",
              "new_full")


@contextlib.contextmanager
def construction_budget(what: str, source: DataSource, *, max_bytes: int | None = None,
                        seconds: float | None = None, doing: str = "build") -> Iterator[None]:
    """While inside, the live tensors may hold at most ``max_bytes`` (default ``4 x source.max_params``
    plus 64 MiB) and the work take at most ``seconds`` (default :data:`BUILD_SECONDS`); past either
    it stops with :class:`ConstructionLimitError`."""
    limit = 4 * source.max_params + (64 << 20) if max_bytes is None else max_bytes
    with _Budget(limit, policy.BUILD_SECONDS if seconds is None else seconds, what, source, doing):
        yield


#: what a network read from a file may hold in tensors while it runs once: 8 GiB, at most half this machine's memory
RUN_BYTES = min(8 << 30, (os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2)

#: the annotation a network read from a file without trust carries: the file's name
UNTRUSTED_FILE = "compressor_untrusted_file"


def check_runs_within(model: nn.Module, shape: tuple[int, ...], *, training: bool = False,
                      max_bytes: int | None = None) -> None:
    """For a network read from a model file without trust (:data:`UNTRUSTED_FILE`): runs it once on the ``meta``
    device at ``shape`` (shapes only: nothing computed, nothing allocated) and refuses it when its tensors would
    hold more than ``max_bytes`` (:data:`RUN_BYTES`) at once: a file's arguments (65,536 classes) can make one
    forward pass need tens of GB. ``training``: with gradients, so the activations a backward pass keeps count
    too. A network that cannot run on ``meta`` (its forward reads a value) runs once for real under the same
    budget, each op sized before it runs. Any other network is left as it is; a shape checked once is not again.

    Raises:
        ConstructionLimitError: it would need more.
    """
    name = vars(model).get(UNTRUSTED_FILE)
    if name is None:
        return
    checked = _CHECKED.setdefault(model, set())
    if (tuple(shape), training) in checked:
        return
    limit = RUN_BYTES if max_bytes is None else max_bytes
    state = {key: value.to("meta") for key, value in [*model.named_parameters(), *model.named_buffers()]}
    budget = construction_budget(f"its network at input {tuple(shape)}", DataSource(name), max_bytes=limit,
                                 seconds=policy.STEPS_SECONDS, doing="run")
    was_training = model.training
    try:
        with budget, torch.set_grad_enabled(training):
            try:
                torch.func.functional_call(model, state, (torch.empty(shape, device="meta"),))
            except ConstructionLimitError:
                raise
            except Exception:  # noqa: BLE001 - a forward that reads its values: once for real, each op sized first
                model.eval()
                model(torch.zeros(shape))
    except ConstructionLimitError:
        raise
    except Exception:  # noqa: BLE001 - it does not run at this shape: the command that runs it says why
        return
    finally:
        model.train(was_training)
    checked.add((tuple(shape), training))


#: the shapes each network was checked at, by the network itself: not kept on it, where a deep copy, and a network
#: ``apply`` makes from it, would carry shapes checked for another architecture
_CHECKED: weakref.WeakKeyDictionary[nn.Module, set[tuple[tuple[int, ...], bool]]] = weakref.WeakKeyDictionary()


def steps_budget(path: str) -> contextlib.AbstractContextManager[None]:
    """The budget the file ``path``'s transform steps are applied again under (:data:`STEPS_BYTES`,
    :data:`STEPS_SECONDS`): a step's parameters may ask for a network far larger than its base."""
    return construction_budget(f"{path}'s transform steps", DataSource(path), max_bytes=policy.STEPS_BYTES,
                               seconds=policy.STEPS_SECONDS)


def check_size(spec: str, builder: Callable[..., Any], args: Mapping[str, Any], source: DataSource) -> None:
    """Builds the network on the ``meta`` device (no memory) and refuses it above ``source.max_params``.

    The meta build runs under :func:`construction_budget` too (a constructor may loop for long over
    tiny layers). A builder that cannot build on the meta device (it computes on its tensors'
    values, as smp's Segformer does) is left to the real build, which runs under the same budget.

    Raises:
        UntrustedModelError: too many parameters, or too much time or memory to build.
    """
    try:
        with construction_budget(spec, source), torch.device("meta"):
            model = builder(**args)
        count = sum(parameter.numel() for parameter in model.parameters()
                    if not isinstance(parameter, nn.parameter.UninitializedParameter))
    except ConstructionLimitError:
        raise
    except Exception:  # noqa: BLE001 - not buildable without memory; the real build says what is wrong
        return
    if count > source.max_params:
        raise refusal(source, f"{spec} with these arguments has {count:,} parameters, more than the {source.max_params:,} "
                              "a model file or a study may build")


_DOWNLOADS = threading.RLock()


class _RefuseDownloads(urllib.request.BaseHandler):
    def default_open(self, request: urllib.request.Request) -> None:
        raise urllib.error.URLError(f"downloads are off while a network is built from a file or a study "
                                    f"({request.full_url})")


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """While inside, torch.hub's folder is an empty throwaway one and urllib fetches nothing.

    torch.hub (``load_state_dict_from_url``, ``download_url_to_file``) opens every URL, ``file://``
    included, through urllib's installed opener: one that refuses every request is installed,
    and the hub folder, where a cached download would be found and unpickled, is empty. The
    Hugging Face hub (timm's weights) is put in offline mode when it is loaded.
    """
    with _DOWNLOADS, tempfile.TemporaryDirectory(prefix="compressor-no-hub-") as hub:
        previous_hub = getattr(torch.hub, "_hub_dir", None)
        previous_opener = getattr(urllib.request, "_opener", None)
        hf_constants = _loaded_module("huggingface_hub.constants")
        previous_offline = getattr(hf_constants, "HF_HUB_OFFLINE", None)
        refusing = urllib.request.OpenerDirector()
        refusing.add_handler(_RefuseDownloads())
        torch.hub.set_dir(hub)
        urllib.request.install_opener(refusing)
        if hf_constants is not None:
            hf_constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            torch.hub._hub_dir = previous_hub
            urllib.request._opener = previous_opener
            if hf_constants is not None:
                hf_constants.HF_HUB_OFFLINE = previous_offline


def _loaded_module(name: str) -> Any:
    import sys

    return sys.modules.get(name)
