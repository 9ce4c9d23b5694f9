"""How well a transformed layer reproduces the layer it replaced, and refitting it on real activations.

Both work layer by layer on a batch of images: the input model is run once with hooks
that keep, for every changed layer, the input it received and the output it gave (or,
for a layer the transform added, the tensors its :class:`Counterpart` names).

* :func:`layer_errors`: the replacement, fed the input model's own input to that layer,
  against the input model's output there: ``||y' - y|| / ||y||``.
* :func:`calibrate`: in execution order, each replacement's last linear conv is refitted
  by least squares (a small ridge keeps it well posed) so that, fed the
  *transformed* network's input at that point, it reproduces the input model's output; the
  refitted output is passed on, so later layers compensate for earlier errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compressor.outputs import model_output
from compressor.transforms.least_squares import linear_tail, ridge_solve, tail_inputs, write_solution

__all__ = [
    "Counterpart", "layer_errors", "calibrate", "output_error", "relative_error", "counterparts_of", "batches_of",
]


@dataclass(frozen=True)
class Counterpart:
    """Where, in the input model, a changed layer's input and target output are.

    Attributes:
        input_layer: the layer of the input model whose tensor feeds this one.
        input_side: ``"input"`` (what ``input_layer`` received) or ``"output"`` (what it gave).
        target_layer: the layer of the input model whose output this one should reproduce.
        adapt: maps the input model's tensor to what the changed layer takes (for example
            ``a + b`` from ``cat([a, b])``); None: as it is.
    """

    input_layer: str
    target_layer: str
    input_side: str = "input"
    adapt: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def same(cls, name: str, adapt: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Counterpart:
        """The layer replaced one of the same name."""
        return cls(input_layer=name, target_layer=name, adapt=adapt)


def relative_error(approximation: torch.Tensor, reference: torch.Tensor) -> float | None:
    """``||approximation - reference|| / ||reference||``; None when the reference is all zeros."""
    norm = float(reference.detach().double().norm())
    if norm == 0.0 or approximation.shape != reference.shape:
        return None
    return float((approximation.detach().double() - reference.detach().double()).norm()) / norm


@torch.no_grad()
def output_error(original: nn.Module, candidate: nn.Module, images: torch.Tensor) -> float | None:
    """Relative error of the whole network's output (eval mode), transformed against input model."""
    return relative_error(_run_eval(candidate, images), _run_eval(original, images))


@torch.no_grad()
def layer_errors(
    original: nn.Module, candidate: nn.Module, counterparts: dict[str, Counterpart], images: torch.Tensor
) -> dict[str, float]:
    """Relative output error of each changed layer on ``images`` (see the module's docstring).

    Layers whose counterpart cannot be found or whose shapes do not line up (a pruned
    layer has other widths) are left out.
    """
    captured = _capture(original, counterparts, images)
    errors = {}
    for name, counterpart in counterparts.items():
        module = _submodule(candidate, name)
        pair = _pair(captured, counterpart)
        if module is None or pair is None:
            continue
        inputs, target = pair
        was_training = module.training
        module.eval()
        try:
            error = relative_error(module(inputs), target)
        except RuntimeError:  # widths changed (pruning): no layer-to-layer comparison
            error = None
        finally:
            module.train(was_training)
        if error is not None:
            errors[name] = round(error, 6)
    return errors


@torch.no_grad()
def calibrate(
    original: nn.Module, candidate: nn.Module, counterparts: dict[str, Counterpart], images: torch.Tensor,
    *, ridge: float = 1e-4, max_rows: int = 32768,
) -> list[str]:
    """Refits the changed layers of ``candidate`` in place on ``images``; returns the names refitted.

    Layers that are not a plain conv (groups 1), a :class:`SeparableConv2d` or a
    :class:`Fire` without inner norms, or whose target shape does not match, are left as
    they are.
    """
    captured = _capture(original, counterparts, images, inputs=False)
    refitted: list[str] = []

    def hook_for(name: str, target: torch.Tensor) -> Callable:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if not isinstance(output, torch.Tensor) or output.shape != target.shape:
                return None
            if not _refit(module, args[0], target, ridge=ridge, max_rows=max_rows):
                return None
            refitted.append(name)
            return module.forward(args[0])  # not module(...): that would call this hook again
        return hook

    targets = {name: captured.get((counterpart.target_layer, "output")) for name, counterpart in counterparts.items()}
    _run_with_hooks(candidate, images, {name: hook_for(name, target) for name, target in targets.items() if target is not None})
    return refitted


def _refit(module: nn.Module, inputs: torch.Tensor, target: torch.Tensor, *, ridge: float, max_rows: int) -> bool:
    """The convolutions of ``module``'s :func:`~compressor.transforms.least_squares.linear_tail` refitted from the
    inputs they get when ``module`` is fed ``inputs``; whether all of them were."""
    tail = linear_tail(module, max_features=None)
    if tail is None:
        return False
    refitted = [_least_squares(conv, fed, target[:, channels], ridge=ridge, max_rows=max_rows)
                for (conv, channels), fed in zip(tail, tail_inputs(module, inputs))]
    return all(refitted)


@torch.no_grad()
def _least_squares(
    conv: nn.Conv2d, inputs: torch.Tensor, target: torch.Tensor, *, ridge: float, max_rows: int
) -> bool:
    """Ridge least squares of ``conv``'s weights (and bias) so that ``conv(inputs) ~ target``.

    The ridge is ``ridge`` times the mean input energy. It pulls towards zero, not towards
    the inherited weights: those can be far off in scale (an identity-like bridge standing
    for a whole deep path), and a pull towards them in barely excited directions costs more
    than it keeps. Returns False (weights untouched) when the shapes do not line up.
    """
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    count = inputs.shape[0]
    out_channels = conv.out_channels
    columns_per_image = max(1, max_rows // count)
    generator = torch.Generator().manual_seed(0)
    gram = cross = None
    for index in range(count):
        columns = F.unfold(
            inputs[index:index + 1], conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride
        )[0].T.double()  # (positions, in * kh * kw)
        outputs = target[index].reshape(out_channels, -1).T.double()
        if columns.shape[0] != outputs.shape[0]:
            return False
        if columns.shape[0] > columns_per_image:
            keep = torch.randperm(columns.shape[0], generator=generator)[:columns_per_image].to(columns.device)
            columns, outputs = columns[keep], outputs[keep]
        if conv.bias is not None:
            columns = torch.cat([columns, columns.new_ones(columns.shape[0], 1)], dim=1)
        gram = columns.T @ columns if gram is None else gram + columns.T @ columns
        cross = columns.T @ outputs if cross is None else cross + columns.T @ outputs
    assert gram is not None and cross is not None
    solution = ridge_solve(gram, cross, ridge)
    if solution is None:
        return False
    write_solution(conv, solution)
    return True


def _capture(
    model: nn.Module, counterparts: dict[str, Counterpart], images: torch.Tensor, *, inputs: bool = True
) -> dict[tuple[str, str], torch.Tensor]:
    """``(layer, "input" | "output") -> tensor`` for the layers the counterparts name (called once only)."""
    wanted: dict[str, set[str]] = {}
    for counterpart in counterparts.values():
        wanted.setdefault(counterpart.target_layer, set()).add("output")
        if inputs:
            wanted.setdefault(counterpart.input_layer, set()).add(counterpart.input_side)
    captured: dict[tuple[str, str], torch.Tensor] = {}
    calls: dict[str, int] = {}

    def hook_for(name: str, sides: set[str]) -> Callable:
        def hook(_module: nn.Module, args: tuple, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            if "input" in sides and args and isinstance(args[0], torch.Tensor):
                captured[(name, "input")] = args[0].detach().clone()
            if "output" in sides and isinstance(output, torch.Tensor):
                captured[(name, "output")] = output.detach().clone()
        return hook

    _run_with_hooks(model, images, {name: hook_for(name, sides) for name, sides in wanted.items()})
    shared = {name for name, count in calls.items() if count > 1}  # weights used twice: no single target
    return {key: value for key, value in captured.items() if key[0] not in shared}


def _pair(
    captured: dict[tuple[str, str], torch.Tensor], counterpart: Counterpart
) -> tuple[torch.Tensor, torch.Tensor] | None:
    inputs = captured.get((counterpart.input_layer, counterpart.input_side))
    target = captured.get((counterpart.target_layer, "output"))
    if inputs is None or target is None:
        return None
    if counterpart.adapt is not None:
        inputs = counterpart.adapt(inputs)
    return inputs, target


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _run_with_hooks(model: nn.Module, images: torch.Tensor, hooks: dict[str, Callable]) -> None:
    """Runs ``model`` on ``images`` (eval mode) with a forward hook on each named layer that exists."""
    handles = []
    for name, hook in hooks.items():
        module = _submodule(model, name)
        if module is not None:
            handles.append(module.register_forward_hook(hook))
    try:
        _run_eval(model, images)
    finally:
        for handle in handles:
            handle.remove()


def _run_eval(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model_output(model, images)
    finally:
        model.train(was_training)


def counterparts_of(
    names: Iterable[str], given: dict[str, Counterpart | None] | None = None
) -> dict[str, Counterpart]:
    """A counterpart for every changed layer: the transform's own, else the layer of the same name.

    A transform maps a layer to None when nothing in the input model is comparable (a conv
    that now runs at another resolution); that layer is neither measured nor refitted.
    """
    given = given or {}
    found = {name: given.get(name, Counterpart.same(name)) for name in names}
    return {name: counterpart for name, counterpart in found.items() if counterpart is not None}


def batches_of(images: torch.Tensor | Sequence[torch.Tensor], count: int) -> torch.Tensor:
    """The first ``count`` batches of ``images`` (one tensor, or a list of batches) as one tensor."""
    if isinstance(images, torch.Tensor):
        return images
    return torch.cat(list(images)[:count], dim=0)
