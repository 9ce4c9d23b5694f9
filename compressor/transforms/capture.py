"""Graph capture that follows the example input through the model's Python.

``torch.fx.symbolic_trace`` refuses any ``if`` on a traced value, and many published
networks check their input's size in ``forward`` (segmentation_models_pytorch's FPN,
DeepLabV3+, Linknet, UNet++: ``if h % output_stride != 0: raise``). ``torch.export``
follows such checks by specializing to static shapes, but its graph is one of ATen
operators with the modules flattened away, and the graph transforms here replace
*modules*. So this tracer is torch.fx's (a graph of ``call_module`` nodes named after
the model's layers) that also runs the example input alongside: every node carries its
real value, and where Python needs a concrete answer (``if``, ``len``, iteration,
``torch.jit.isinstance``) it gets the example's, as torch.export with static shapes does.
A branch on tensor *data* (not shapes) is refused: no graph can stand for it.

The graph is exact for inputs that take the same branches as the example (for a size
check, any size that passes it); :func:`capture` records each branch it followed, with
its source line, so the caller can say so.
"""

from __future__ import annotations

import contextlib
import linecache
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx.node import map_aggregate
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from compressor.errors import first_line

__all__ = ["CaptureError", "Captured", "capture", "tensor_meta"]

_TORCH_DIR = str(Path(torch.__file__).parent)


class CaptureError(Exception):
    """The model cannot be captured; ``where`` is the module and source line at fault."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.where = where


@dataclass
class Captured:
    """A captured graph, the real value of each node on the example, and the branches followed.

    Attributes:
        meta: each node's ``(tensor_meta, type)`` as torch.fx's ``ShapeProp`` records them, taken when the
            node's value was made (an in-place op later in ``forward`` does not change it), the tensors the
            graph reads as attributes (buffers, constants) included.
        mutated: the attributes the graph reads whose tensors were changed in place while tracing (by an
            op the graph holds or not): its values then need not be what running the graph gives.
    """

    graph_module: torch.fx.GraphModule
    values: dict[torch.fx.Node, Any]
    branches: list[str] = field(default_factory=list)
    meta: dict[torch.fx.Node, tuple[Any, type]] = field(default_factory=dict)
    mutated: list[str] = field(default_factory=list)


class _ConcreteTracer(torch.fx.Tracer):
    """A ``torch.fx.Tracer`` whose proxies carry the real values of one example input."""

    def __init__(self, example_inputs: tuple[Any, ...]) -> None:
        super().__init__()
        self.example_inputs = list(example_inputs)
        self.values: dict[torch.fx.Node, Any] = {}
        self.meta: dict[torch.fx.Node, tuple[Any, type]] = {}
        self.versions: dict[torch.fx.Node, int] = {}  # of the tensors the graph reads as attributes
        self.branches: list[str] = []

    def _record(self, node: torch.fx.Node, value: Any) -> None:
        self.values[node] = value
        self.meta[node] = (tensor_meta(value), type(value))
        if node.op == "get_attr" and isinstance(value, torch.Tensor):
            version = _version(value)
            if version is not None:
                self.versions[node] = version

    def mutated(self) -> list[str]:
        """The attributes read by the graph whose tensors changed in place since they were read."""
        return [str(node.target) for node, version in self.versions.items()
                if _version(self.values[node]) != version]

    # -- values -----------------------------------------------------------------------
    def _real(self, argument: Any) -> Any:
        if isinstance(argument, torch.fx.Proxy):
            return self.values[argument.node]
        if isinstance(argument, torch.fx.Node):
            return self.values[argument]
        if isinstance(argument, (list, tuple)):
            items = [self._real(item) for item in argument]
            return type(argument)(items) if not hasattr(argument, "_fields") else type(argument)(*items)
        if isinstance(argument, dict):
            return {key: self._real(value) for key, value in argument.items()}
        if isinstance(argument, slice):
            return slice(self._real(argument.start), self._real(argument.stop), self._real(argument.step))
        return argument

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        real_args, real_kwargs = self._real(tuple(args)), self._real(dict(kwargs))
        with _unpatched():
            value = self._compute(kind, target, args, real_args, real_kwargs)
        self._record(proxy.node, value)
        return proxy

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if kind == "get_attr":  # a buffer or a tensor constant, which torch.fx adds without a proxy
            with _unpatched():
                self._record(node, _fetch(self.root, target))
        return node

    def _compute(self, kind: str, target: Any, args: tuple, real_args: tuple, real_kwargs: dict) -> Any:
        if kind == "placeholder":
            value = self.example_inputs.pop(0) if self.example_inputs else (args[0] if args else None)
        elif kind == "get_attr":
            value = _fetch(self.root, target)
        elif kind == "call_function":
            value = target(*real_args, **real_kwargs)
        elif kind == "call_method":
            value = getattr(real_args[0], target)(*real_args[1:], **real_kwargs)
        elif kind == "call_module":
            value = self.root.get_submodule(target)(*real_args, **real_kwargs)
        else:
            value = None
        return value

    # -- where Python needs a concrete answer ----------------------------------------
    def to_bool(self, obj: torch.fx.Proxy) -> bool:
        value = self.values[obj.node]
        if isinstance(value, torch.Tensor):
            raise torch.fx.proxy.TraceError(
                "forward() branches on a tensor's values (not its shape); no single graph stands for it"
            )
        self.branches.append(_caller_line())
        return bool(value)

    def iter(self, obj: torch.fx.Proxy) -> Iterator:
        value = self.values[obj.node]
        if isinstance(value, torch.Tensor):
            return super().iter(obj)
        if isinstance(value, dict):
            return iter(list(value))  # a dict iterates over its keys, which are constants
        return iter([obj[index] for index in range(len(value))])

    def keys(self, obj: torch.fx.Proxy) -> Any:
        value = self.values[obj.node]
        return value.keys() if isinstance(value, dict) else super().keys(obj)


def capture(model: nn.Module, example_input: torch.Tensor) -> Captured:
    """Traces ``model`` on ``example_input`` into a ``GraphModule`` (layers keep their names).

    Raises:
        CaptureError: naming the innermost module being traced and the source line of the
            model's code that could not be followed.
    """
    tracer = _ConcreteTracer((example_input,))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _python_sees_values(tracer):
            graph = tracer.trace(model)
    except Exception as error:  # noqa: BLE001 - tracing runs the user's code
        module = next(reversed(tracer.module_stack), "") if getattr(tracer, "module_stack", None) else ""
        where = ", ".join(part for part in (f"module {module!r}" if module else "", _model_line(error)) if part)
        raise CaptureError(first_line(error), where) from None
    finally:
        model.train(was_training)
    name = type(model).__name__
    # A saved GraphModule is rebuilt by re-tracing its generated code (straight-line, no
    # branches left) with the tracer class recorded here: the plain one needs no example.
    graph._tracer_cls = torch.fx.Tracer
    graph_module = torch.fx.GraphModule(tracer.root, graph, name)
    values = {node: tracer.values.get(node) for node in graph_module.graph.nodes}
    meta = {node: tracer.meta[node] for node in graph_module.graph.nodes if node in tracer.meta}
    return Captured(graph_module, values, tracer.branches, meta, tracer.mutated())


def tensor_meta(value: Any) -> Any:
    """``value``'s metadata as torch.fx's ShapeProp records it in ``node.meta["tensor_meta"]`` (each tensor's
    shape, dtype, strides...; a tuple or dict of them for a tuple or dict), None where it holds no tensor."""
    found = False

    def extract(obj: Any) -> Any:
        nonlocal found
        if isinstance(obj, torch.Tensor):
            found = True
            return _extract_tensor_metadata(obj)
        return obj

    meta = map_aggregate(value, extract)
    return meta if found else None


def _version(tensor: torch.Tensor) -> int | None:
    try:
        return tensor._version
    except RuntimeError:  # an inference tensor keeps no version: it cannot be changed in place outside inference mode
        return None


def _unpatched() -> contextlib.AbstractContextManager:
    """While fx traces, ``nn.Module.__call__`` and ``__getattr__`` are patched to build the
    graph; computing a real value must run with them undone. torch.fx does this with a
    private helper (kept since torch 2.0); without it, real values are computed patched,
    which fails, and the failure is reported as a capture error."""
    revert = getattr(torch.fx._symbolic_trace, "_maybe_revert_all_patches", None)
    return revert() if revert is not None else contextlib.nullcontext()


@contextlib.contextmanager
def _python_sees_values(tracer: _ConcreteTracer) -> Iterator[None]:
    """While tracing, ``len(proxy)`` and ``torch.jit.isinstance(proxy, T)`` answer for the
    proxy's real value (MONAI's BasicUNet asks both to pick its skip connection)."""
    original_isinstance, original_len = torch.jit.isinstance, torch.fx.Proxy.__len__

    def concrete_isinstance(obj: Any, target_type: Any) -> bool:
        if isinstance(obj, torch.fx.Proxy) and obj.node in tracer.values:
            obj = tracer.values[obj.node]
        return original_isinstance(obj, target_type)

    def concrete_len(proxy: torch.fx.Proxy) -> int:
        # The length of a shape or a list of features is the network's structure, fixed for inputs
        # of the example's rank: not a branch worth a note.
        value = tracer.values.get(proxy.node) if proxy.tracer is tracer else None
        if value is None or isinstance(value, torch.Tensor):
            return original_len(proxy)
        return len(value)

    torch.jit.isinstance, torch.fx.Proxy.__len__ = concrete_isinstance, concrete_len
    try:
        yield
    finally:
        torch.jit.isinstance, torch.fx.Proxy.__len__ = original_isinstance, original_len


def _fetch(root: nn.Module, target: str) -> Any:
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _caller_line() -> str:
    """The model's source line that asked for a concrete value (outside torch)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith((_TORCH_DIR, __file__)):
        frame = frame.f_back
    if frame is None:
        return "?"
    return _describe(frame.f_code.co_filename, frame.f_lineno)


def _model_line(error: BaseException) -> str:
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if not frame.filename.startswith(_TORCH_DIR)]
    frames = [frame for frame in frames if frame.filename != __file__]
    if not frames:
        return ""
    frame = frames[-1]
    return f"at {_describe(frame.filename, frame.lineno)}"


def _describe(filename: str, lineno: int | None) -> str:
    parts = Path(filename).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else filename
    linecache.checkcache(filename)  # a file edited since it was cached is read again
    code = linecache.getline(filename, lineno or 0).strip()
    return f"{short}:{lineno}" + (f" ({code})" if code else "")

