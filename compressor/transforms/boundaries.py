"""Where a transformed network and the network it came from can be compared: the boundaries they share.

A *boundary* is a named module that both networks call exactly once on a batch, with a
tensor output of the same shape in both: at that point the student's tensor stands for the
teacher's. The recipe changed some of them (another type, other settings, other or
different weights): those are the *changed* points. Two granularities:

* ``layer``: the innermost changed boundaries (a ``SeparableConv2d`` that replaced a conv
  under the conv's name, a conv whose input channels were pruned);
* ``block``: for each of those, the closest enclosing boundary (a residual block, a
  conv-norm-activation unit), so that what follows the changed layer inside the block (its
  norm, its activation, the residual add) is reconstructed with it. Where no enclosing
  module is called as a whole (a traced network calls its leaves directly), the layer itself.

Example:
    >>> import torch
    >>> from torch import nn
    >>> teacher = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()), nn.Conv2d(8, 2, 1))
    >>> student = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU()), nn.Conv2d(8, 2, 1))
    >>> student[1].load_state_dict(teacher[1].state_dict())
    <All keys matched successfully>
    >>> found = shared_boundaries(teacher, student, torch.randn(2, 3, 8, 8))
    >>> changed_points(teacher, student, found, "layer"), changed_points(teacher, student, found, "block")
    (['0.0'], ['0'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from compressor.outputs import model_output

__all__ = ["GRANULARITIES", "shared_boundaries", "changed_points", "capture_calls", "eval_mode", "in_mode"]

#: The granularities :func:`changed_points` knows.
GRANULARITIES = ("layer", "block")


def shared_boundaries(teacher: nn.Module, student: nn.Module, images: torch.Tensor) -> list[str]:
    """The names of the modules both networks call once on ``images`` with same-shaped tensor outputs,
    batch first (one row per image: what is compared image by image), in the order the student
    calls them (the root module, ``""``, is left out). One image is run twice, to tell the batch."""
    if images.shape[0] == 1:
        images = torch.cat([images, images])
    teacher_shapes = _called_once(teacher, images)
    student_shapes = _called_once(student, images)
    return [name for name, shape in student_shapes.items()
            if teacher_shapes.get(name) == shape and shape and shape[0] == images.shape[0]]


def changed_points(teacher: nn.Module, student: nn.Module, boundaries: list[str], granularity: str) -> list[str]:
    """The boundaries whose student module differs from the teacher's, at ``granularity``
    (``layer`` or ``block``, see the module's docstring), in the student's order, none inside another."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    shared = set(boundaries)
    changed = [name for name in boundaries if _differs(teacher.get_submodule(name), student.get_submodule(name))]
    innermost = [name for name in changed if not any(_inside(other, name) for other in changed if other != name)]
    if granularity == "block":
        innermost = [_enclosing(name, shared) or name for name in innermost]
    chosen = set(innermost)
    return [name for name in boundaries if name in chosen and not any(_inside(name, other) for other in chosen if other != name)]


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Every model in eval mode inside the block, each back in its own mode after it."""
    with in_mode(models, training=False):
        yield


@contextmanager
def in_mode(modules: Iterable[nn.Module], *, training: bool) -> Iterator[None]:
    """Each of ``modules`` in training (or eval) mode inside the block, each back in its own mode after it."""
    modules = list(modules)
    modes = [module.training for module in modules]
    for module in modules:
        module.train(training)
    try:
        yield
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once what was wanted is captured."""


@torch.no_grad()
def capture_calls(
    model: nn.Module, images: torch.Tensor, names: list[str], *, outputs: bool = True, stop_after: str | None = None,
    inputs: bool = True,
) -> dict[str, tuple[tuple, dict, torch.Tensor | None]]:
    """``name -> (args, kwargs, output)`` of each named module's call on ``images`` (eval mode).

    ``stop_after``: the forward pass ends as soon as that module is called (without
    ``outputs``: before it runs, its input is all that is wanted) or has returned (with
    ``outputs``), which saves the rest of the network. ``inputs=False`` keeps no inputs
    (``args`` and ``kwargs`` are then empty).
    """
    captured: dict[str, tuple[tuple, dict, torch.Tensor | None]] = {}
    handles = []

    def pre_hook_for(name: str) -> Callable:
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured[name] = (_detached(args), _detached(kwargs), None) if inputs else ((), {}, None)
            if name == stop_after and not outputs:
                raise _Stop
        return hook

    def hook_for(name: str) -> Callable:
        def hook(_module: nn.Module, _args: tuple, _kwargs: dict, output: object) -> None:
            if name in captured and outputs and isinstance(output, torch.Tensor):
                args, kwargs, _ = captured[name]
                captured[name] = (args, kwargs, output.detach())
            if name == stop_after:
                raise _Stop
        return hook

    for name in names:
        module = model.get_submodule(name)
        handles.append(module.register_forward_pre_hook(pre_hook_for(name), with_kwargs=True))
        handles.append(module.register_forward_hook(hook_for(name), with_kwargs=True))
    try:
        with eval_mode(model):
            model_output(model, images)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _detached(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(item) for item in value)
    if isinstance(value, list):
        return [_detached(item) for item in value]
    if isinstance(value, dict):
        return {key: _detached(item) for key, item in value.items()}
    return value


@torch.no_grad()
def _called_once(model: nn.Module, images: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """``name -> output shape`` of the named modules called exactly once, with a tensor output, in call order."""
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    handles = []

    def hook_for(name: str) -> Callable:
        def hook(_module: nn.Module, _args: tuple, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else None
        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook_for(name)))
    try:
        with eval_mode(model):
            model_output(model, images)
    finally:
        for handle in handles:
            handle.remove()
    return {name: shape for name, shape in shapes.items() if calls[name] == 1 and shape is not None}


def _differs(teacher: nn.Module, student: nn.Module) -> bool:
    """Whether the student's module computes something else than the teacher's (type, settings, weights)."""
    if type(teacher) is not type(student) or teacher.extra_repr() != student.extra_repr():
        return True
    ours, theirs = dict(student.named_parameters()), dict(teacher.named_parameters())
    if ours.keys() != theirs.keys():
        return True
    for name, parameter in ours.items():
        other = theirs[name]
        if parameter.shape != other.shape or not torch.equal(parameter.detach().cpu(), other.detach().cpu()):
            return True
    for (name, module), (_, other) in zip(student.named_modules(), teacher.named_modules()):
        if name and (type(module) is not type(other) or module.extra_repr() != other.extra_repr()):
            return True
    return sum(1 for _ in student.named_modules()) != sum(1 for _ in teacher.named_modules())


def _inside(name: str, outer: str) -> bool:
    """Whether module ``name`` lies inside module ``outer`` (both qualified names)."""
    return name.startswith(outer + ".")


def _enclosing(name: str, shared: set[str]) -> str | None:
    """The closest proper ancestor of ``name`` that is a shared boundary, if any."""
    parts = name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        ancestor = ".".join(parts[:end])
        if ancestor in shared:
            return ancestor
    return None
