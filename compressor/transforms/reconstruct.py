"""Reconstruction: the parts of a transformed network that the recipe changed are trained, each on its
own and cheaply, to give what the network they came from gave at that point, before any end-to-end
fine-tuning.

Weight inheritance starts a replacement at the closest approximation the trained layer's
weights alone allow; on a deep residual network that is often far off (a fire module standing
for a trained 3x3 conv keeps a small part of it), and the errors compound through the
network. Reconstruction fixes each changed point (see :mod:`~compressor.transforms.boundaries`)
on unlabelled calibration images, against the teacher's tensor there:

* ``layer``: each changed layer alone (as post-training quantization's layer-wise
  reconstruction does, with the weights free instead of rounded);
* ``block``: each enclosing block (a residual block: conv, norm, activation and the
  residual add together, as BRECQ and block-wise NAS distillation do);
* ``hints``: the whole student at once, its tensors at every changed block and its output
  pulled towards the teacher's (FitNets-style hints, on calibration images, no labels);
* ``lstsq``: no Adam: each changed layer whose output its last convolutions make as they are
  (a plain conv, a separable conv's pointwise, a fire module's expands) has those convolutions
  solved in closed form, as channel pruning's feature-map reconstruction does
  (:mod:`~compressor.transforms.least_squares`), layer after layer, each fed by the student
  with the layers before it solved. ``steps``, ``lr``, ``source`` and ``precision`` do not
  apply (the systems are accumulated and solved in float64); the layers it cannot solve keep
  their inherited weights. The norms before each point are re-estimated once a point before it
  has changed (its inputs then have the statistics the solved points give); at the end, the
  student keeps whichever is closer to the teacher's output on the calibration images: every
  norm re-estimated, or the norms as the solve left them (those at and after the last solved
  point with the statistics they came with). A least-squares fit has less spread than its
  target (what it cannot fit is left out), and a norm re-estimated on the fit's outputs divides
  by that smaller spread and scales them back up (``choose_norms``; on torchvision's DeepLabV3,
  fire solved: 0.37 as left, 0.67 re-estimated; on the project's U-Net the re-estimated norms
  are kept).

``source`` says where a point's input comes from: ``student`` (the student's own tensor
there, after the points before it were reconstructed, so later points compensate for
earlier errors) or ``teacher`` (the teacher's tensor: every point independent). Each point
minimizes ``||f(x) - y||^2 / ||y||^2`` with Adam; a point that ends worse than it started
keeps its starting weights. Batch norms inside what is trained normalize by the batch's
statistics while it trains (what fine-tuning will see), and every batch norm of the student
is re-estimated on the calibration images after each point, so the points after it see
the statistics of the reconstructed tensors, not those of the inherited ones.

Example:
    >>> import torch
    >>> from torch import nn
    >>> teacher = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    >>> student = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    >>> student[2].load_state_dict(teacher[2].state_dict())
    <All keys matched successfully>
    >>> report = reconstruct(teacher, student, torch.randn(8, 3, 8, 8), method="layer", steps=50)
    >>> report.points, report.errors_after["0"] <= report.errors_before["0"]
    (['0'], True)
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compressor.batchnorm import reestimate_on
from compressor.outputs import model_output
from compressor.train.precision import autocast
from compressor.transforms.boundaries import (
    capture_calls,
    changed_points,
    eval_mode,
    in_mode,
    shared_boundaries,
)
from compressor.transforms.feature_hints import (
    FeatureTap,
    device_of,
    relative_mse,
    weights_of,
)
from compressor.transforms.least_squares import NormalEquations, linear_tail

__all__ = ["METHODS", "SOURCES", "Reconstruction", "reconstruct", "output_gap", "teacher_logits"]

#: The reconstruction methods (``none`` leaves the inherited weights as they are).
METHODS = ("none", "layer", "block", "hints", "lstsq")
#: Where a point's input comes from.
SOURCES = ("student", "teacher")
#: An output error below this leaves nothing to reconstruct (an exact inheritance is left exact).
CLOSE_ENOUGH = 1e-3
#: ``hints`` keeps the teacher's tensors on the calibration images when they fit in this many bytes,
#: so the teacher runs once per image instead of at every Adam step (each step ran it again)
TEACHER_CACHE_BYTES = 2 * 1024**3


@dataclass
class Reconstruction:
    """What :func:`reconstruct` did.

    Attributes:
        method, source, steps, precision: the settings it ran with.
        points: the changed points, in the student's order.
        errors_before, errors_after: each point's relative error (student's tensor there
            against the teacher's, the student fed its own input) before and after.
        output_error_before, output_error_after: the same for the network's output, each class
            the teacher predicts weighted the same (:func:`output_gap`).
        norms_reestimated: after a ``hints`` or ``lstsq`` fit that was kept, whether every batch norm was
            re-estimated on the calibration images at the end (False: ``lstsq`` kept them as its solve left
            them, which was closer); None otherwise: nothing kept, no norm with running statistics, or
            ``layer`` and ``block``, which re-estimate after every point.
        output_error_as_solved, output_error_reestimated: ``lstsq`` choosing between the two (``choose_norms``):
            the output error with the norms as the solve left them, and with all of them re-estimated (None
            where it did not choose).
        seconds: wall time.
    """

    method: str
    source: str
    steps: int
    precision: str = "fp32"
    points: list[str] = field(default_factory=list)
    errors_before: dict[str, float] = field(default_factory=dict)
    errors_after: dict[str, float] = field(default_factory=dict)
    output_error_before: float | None = None
    output_error_after: float | None = None
    norms_reestimated: bool | None = None
    output_error_as_solved: float | None = None
    output_error_reestimated: float | None = None
    seconds: float = 0.0

    def far(self, threshold: float) -> dict[str, float]:
        """The points still above ``threshold`` after reconstruction (the replacements that cannot start close)."""
        return {name: error for name, error in self.errors_after.items() if error > threshold}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reconstruct(
    teacher: nn.Module, student: nn.Module, images: torch.Tensor | list[torch.Tensor], *,
    method: str = "block", source: str = "student", steps: int = 200, lr: float = 1e-3, batch_size: int = 8,
    balance: bool = True, teacher_cache_bytes: int = TEACHER_CACHE_BYTES, precision: str = "fp32",
    choose_norms: bool = True,
) -> Reconstruction:
    """Trains ``student``'s changed points in place to reproduce ``teacher``'s tensors there.

    Args:
        teacher: the network the student was transformed from (never changed).
        student: the transformed network; its changed points are trained, nothing else.
        images: unlabelled calibration images, one tensor ``(N, C, H, W)`` or a list of batches.
        method: ``layer``, ``block``, ``hints`` or ``none`` (see the module's docstring).
        source: ``student`` or ``teacher``: where each point's input comes from.
        steps: Adam steps per point (``hints``: for the whole network).
        lr: Adam's peak rate (a cosine decay to 0 over ``steps``).
        batch_size: images per step, drawn in turn from ``images``.
        balance: weight each position by the inverse frequency of the class the teacher
            predicts there (see :func:`pixel_weights`); else every position counts the same,
            and a rare class is drowned by the background.
        teacher_cache_bytes: the teacher's tensors at every point and its output are computed on every
            image once and kept when they fit in this many bytes: the errors before and after, each
            ``hints`` step and each point's target (``layer``, ``block`` fed by the student) read them
            (else the teacher runs for each of those, as with 0).
        precision: the student's forward passes while it trains: ``fp32``, or ``bf16`` (autocast, as
            ``train.precision``; the losses, the teacher's tensors and every error reported in float32).
        choose_norms: ``lstsq`` only: keep the batch norms as the solve left them where that gives an output
            closer to the teacher's than all of them re-estimated (False: always re-estimated, as a study made
            before build version 7 reconstructs).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    started = time.perf_counter()
    images = images if isinstance(images, torch.Tensor) else torch.cat(list(images)) if len(images) else torch.empty(0)
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError("reconstruction needs calibration images, got none")
    device = device_of(student, images.device)
    images, teacher = images.to(device), _on(teacher, device)
    report = Reconstruction(method=method, source=source, steps=steps, precision=precision)
    boundaries = shared_boundaries(teacher, student, images[:2])
    report.points = [] if method == "none" else changed_points(
        teacher, student, boundaries, "layer" if method in ("layer", "lstsq") else "block")
    with eval_mode(teacher):  # the teacher's tensors at every point and its output, run once for every use below
        kept = _teacher_tensors(teacher, images, report.points, batch_size, teacher_cache_bytes)
    wanted = None if kept is None else kept[0]
    targets = list(kept[1].split(batch_size)) if kept is not None else teacher_logits(teacher, images, batch_size)
    report.errors_before = _point_errors(teacher, student, images, report.points, batch_size, wanted=wanted)
    report.output_error_before = output_gap(teacher, student, images, batch_size, targets=targets)
    report.errors_after, report.output_error_after = dict(report.errors_before), report.output_error_before
    if not report.points or (steps < 1 and method != "lstsq") or (
            report.output_error_before is not None and report.output_error_before <= CLOSE_ENOUGH):
        report.seconds = time.perf_counter() - started
        return report
    start = copy.deepcopy(student.state_dict())  # parameters and batch-norm statistics, as given
    weights = weights_of(targets) if balance else None
    changed = False
    with eval_mode(teacher, student):
        if method == "hints":
            changed = _fit_whole(teacher, student, images, report.points, weights, steps=steps, lr=lr, batch_size=batch_size,
                                 kept=kept, precision=precision)
        elif method == "lstsq":
            changed = _fit_least_squares(teacher, student, images, report.points, weights, batch_size=batch_size,
                                         wanted=wanted)
        else:
            for name in report.points:
                if source == "student" and wanted is not None and name in wanted:  # its output, kept: not run again
                    target = ((), {}, wanted[name])
                else:
                    target = _batched(lambda rows, name=name: capture_calls(
                        teacher, rows, [name], stop_after=name, inputs=source == "teacher")[name], images, batch_size)
                if _fit_point(student.get_submodule(name), _inputs(student, images, name, target, source, batch_size),
                              target[2], weights, steps=steps, lr=lr, batch_size=batch_size, precision=precision):
                    changed = True
                    reestimate_on(student, images.split(batch_size))  # the points after it see these statistics
    refits = changed and method in ("hints", "lstsq")  # then every norm takes the statistics the fitted tensors have
    norms = [module for module in student.modules() if refits and isinstance(module, nn.modules.batchnorm._BatchNorm)
             and module.running_mean is not None]  # (a norm without running statistics has none to re-estimate)
    solved = None  # lstsq: the output error with the norms as the solve left them, and their statistics
    if norms and method == "lstsq" and choose_norms:
        solved = output_gap(teacher, student, images, batch_size, targets=targets), _statistics(norms)
    if refits:
        reestimate_on(student, images.split(batch_size))
    after = output_gap(teacher, student, images, batch_size, targets=targets) if changed else report.output_error_before
    reestimated = bool(norms)
    if solved is not None:
        report.output_error_as_solved, report.output_error_reestimated = solved[0], after
        if solved[0] is not None and (after is None or solved[0] < after):
            _restore(norms, solved[1])  # the fit's own spread, not scaled back up by statistics taken from it
            after, reestimated = solved[0], False
    if after is None or report.output_error_before is None or not after < report.output_error_before:
        student.load_state_dict(start)  # no closer as a whole (in eval mode): the student as it came
    else:
        report.norms_reestimated = reestimated if norms else None
        report.errors_after = _point_errors(teacher, student, images, report.points, batch_size, wanted=wanted)
        report.output_error_after = after
    report.seconds = time.perf_counter() - started
    return report


def _running(norm: nn.Module) -> list[torch.Tensor]:
    """A norm's running statistics: all that a re-estimation changes."""
    return [buffer for buffer in (norm.running_mean, norm.running_var, norm.num_batches_tracked) if buffer is not None]


def _statistics(norms: list[nn.Module]) -> list[list[torch.Tensor]]:
    """A copy of each norm's running statistics."""
    return [[buffer.clone() for buffer in _running(norm)] for norm in norms]


def _restore(norms: list[nn.Module], statistics: list[list[torch.Tensor]]) -> None:
    for norm, kept in zip(norms, statistics):
        for buffer, value in zip(_running(norm), kept):
            buffer.copy_(value)


def _on(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` if it is on ``device``, else a copy there (the caller's model stays where it is)."""
    return model if device_of(model, device) == device else copy.deepcopy(model).to(device)


def _batched(capture, images: torch.Tensor, batch_size: int) -> tuple[tuple, dict, torch.Tensor | None]:
    """``capture(rows)`` (an ``(args, kwargs, output)`` call) on each batch of ``images``, the batch
    dimension of every tensor joined: the network's activations one batch at a time."""
    parts = [capture(rows) for rows in images.split(batch_size)]
    return _joined([part[0] for part in parts]), _joined([part[1] for part in parts]), _joined([part[2] for part in parts])


def _joined(parts: list) -> Any:
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts) if first.ndim else first
    if isinstance(first, tuple):
        return tuple(_joined([part[index] for part in parts]) for index in range(len(first)))
    if isinstance(first, list):
        return [_joined([part[index] for part in parts]) for index in range(len(first))]
    if isinstance(first, dict):
        return {key: _joined([part[key] for part in parts]) for key in first}
    return first


def _inputs(student: nn.Module, images: torch.Tensor, name: str, teacher_call: tuple, source: str, batch_size: int) -> tuple:
    """What point ``name`` is fed: the teacher's input there if ``source`` is ``teacher`` and the
    student's module takes it (a point whose input widths changed cannot), else the student's own."""
    if source == "teacher":
        args, kwargs, _ = teacher_call
        try:
            with torch.no_grad(), eval_mode(student):
                student.get_submodule(name)(*_rows(args, slice(0, 1), images.shape[0]), **_rows(kwargs, slice(0, 1), images.shape[0]))
            return teacher_call
        except (RuntimeError, ValueError, TypeError):
            pass
    return _batched(lambda rows: capture_calls(student, rows, [name], stop_after=name, outputs=False)[name], images, batch_size)


def _fit_point(
    module: nn.Module, inputs: tuple, target: torch.Tensor | None, weights: torch.Tensor | None, *,
    steps: int, lr: float, batch_size: int, precision: str = "fp32",
) -> bool:
    """Adam on ``module``'s parameters so that ``module(*args, **kwargs)`` gives ``target``; the starting
    weights are kept when the fit ends no better than it began. Returns whether the module changed."""
    args, kwargs, _ = inputs
    parameters = [parameter for parameter in module.parameters() if parameter.requires_grad]
    if target is None or not parameters:
        return False
    count = target.shape[0]

    def loss_on(rows: slice | torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        with autocast(target.device, precision):
            output = module(*_rows(args, rows, count), **_rows(kwargs, rows, count))
        return relative_mse(output, target[rows], None if weights is None else weights[rows])

    return _fit_or_undo(module, parameters, loss_on, count, steps=steps, lr=lr, batch_size=batch_size, precision=precision)


def _fit_whole(
    teacher: nn.Module, student: nn.Module, images: torch.Tensor, points: list[str], weights: torch.Tensor | None, *,
    steps: int, lr: float, batch_size: int, kept: tuple[dict[str, torch.Tensor], torch.Tensor] | None,
    precision: str = "fp32",
) -> bool:
    """Adam on all of ``student``: its tensors at ``points`` and its output towards the teacher's (kept
    only if better than the start). ``kept``: the teacher's tensors on ``images`` (:func:`_teacher_tensors`);
    None: the teacher runs at every step. Returns whether the student changed."""
    parameters = [parameter for parameter in student.parameters() if parameter.requires_grad]
    count = images.shape[0]

    def teacher_on(rows: slice | torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if kept is not None:
            features, output = kept
            return {name: tensor[rows] for name, tensor in features.items()}, output[rows]
        with torch.no_grad(), FeatureTap(teacher, points) as reference:
            output = model_output(teacher, images[rows])
        return reference.outputs, output

    def loss_on(rows: slice | torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        features, output = teacher_on(rows)
        with FeatureTap(student, points) as tap, autocast(images.device, precision):
            produced = model_output(student, images[rows])
        weight = None if weights is None else weights[rows]
        terms = [relative_mse(tap.outputs[name], features[name], weight)
                 for name in points if name in tap.outputs and name in features]
        terms.append(relative_mse(produced, output, weight))
        return torch.stack(terms).mean()

    return _fit_or_undo(student, parameters, loss_on, count, steps=steps, lr=lr, batch_size=batch_size, precision=precision)


@torch.no_grad()
def _fit_least_squares(
    teacher: nn.Module, student: nn.Module, images: torch.Tensor, points: list[str], weights: torch.Tensor | None, *,
    batch_size: int, wanted: dict[str, torch.Tensor] | None,
) -> bool:
    """``lstsq``: point after point in the student's order, the last convolutions of each that has them
    (:func:`~.least_squares.linear_tail`) solved in closed form against the teacher's tensor there, from the
    inputs the student gives them with the points before it solved (the student run up to the point in eval mode,
    its batch norms re-estimated up to it once a point before it has changed, as ``layer`` and ``block`` re-estimate
    after each point; the caller re-estimates them all at the end). ``wanted``: the teacher's tensors at the points
    on every image, kept (else the teacher runs with each batch). Returns whether the student changed."""
    changed = False
    for name in points:
        tail = linear_tail(student.get_submodule(name))
        if not tail:
            continue
        if changed:  # this point's inputs with the statistics the solved points give (the norms up to it)
            reestimate_on(student, images.split(batch_size), before=student.get_submodule(name))
        systems = [NormalEquations(conv, channels) for conv, channels in tail]
        fed: list[list[torch.Tensor]] = [[] for _ in tail]
        handles = [conv.register_forward_pre_hook(lambda _module, args, into=into: into.append(args[0]))
                   for (conv, _), into in zip(tail, fed)]
        usable = True
        try:
            start = 0
            for rows in images.split(batch_size):
                for into in fed:
                    into.clear()
                capture_calls(student, rows, [name], stop_after=name, inputs=False)  # the student up to the point
                if wanted is not None and name in wanted:
                    target = wanted[name][start:start + len(rows)]
                else:
                    target = capture_calls(teacher, rows, [name], stop_after=name, inputs=False).get(name, (None, None, None))[2]
                weight = None if weights is None else weights[start:start + len(rows)]
                start += len(rows)
                if target is None or target.ndim != 4 or any(len(into) != 1 for into in fed):
                    usable = False  # not run once on this batch, or no map to match: left as it is
                    break
                for system, into in zip(systems, fed):
                    system.add(into[0], target[:, system.channels], weight)
        except ValueError:  # the teacher's tensor there is not this layer's output's shape
            usable = False
        finally:
            for handle in handles:
                handle.remove()
        if usable and any([system.solve_into() for system in systems]):
            changed = True
    return changed


@torch.no_grad()
def _teacher_tensors(
    teacher: nn.Module, images: torch.Tensor, points: list[str], batch_size: int, limit: int,
) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
    """The teacher's tensors at ``points`` and its output on every image (run batch by batch, as it is), or
    None (the teacher then runs at every step) when they would take more than ``limit`` bytes (judged on
    the first batch), or cannot be kept row by row: a tensor that is not batch-first (an attention block's
    ``(HW, N, C)``), a point not run on every batch, or run more than once on one. A teacher whose eval mode still normalizes by the
    batch (``track_running_stats=False``) is kept as these fixed batches gave it."""
    if limit <= 0:
        return None
    count = images.shape[0]
    kept: dict[Any, torch.Tensor] = {}  # filled batch by batch: the memory of the kept tensors, not twice it
    start = 0
    for rows in images.split(batch_size):
        with FeatureTap(teacher, points) as tap:
            output = model_output(teacher, rows)
        produced = {**tap.outputs, _OUTPUT: output}
        if any(tensor.ndim == 0 or tensor.shape[0] != len(rows) for tensor in produced.values()):
            return None
        if any(count > 1 for count in tap.calls.values()):  # which call's tensor is the point's is not one answer
            return None
        if not kept:
            if sum(tensor.numel() * tensor.element_size() for tensor in produced.values()) / len(rows) * count > limit:
                return None
            kept = {name: tensor.new_empty((count, *tensor.shape[1:])) for name, tensor in produced.items()}
        if produced.keys() != kept.keys() or any(tensor.shape[1:] != kept[name].shape[1:]
                                                 for name, tensor in produced.items()):
            return None
        for name, tensor in produced.items():
            kept[name][start:start + len(rows)] = tensor
        start += len(rows)
    output = kept.pop(_OUTPUT)
    return kept, output


_OUTPUT = object()  # the key of the teacher's output among its kept tensors (no point can be named so)


def _fit_or_undo(
    model: nn.Module, parameters: list[nn.Parameter], loss_on, count: int, *, steps: int, lr: float, batch_size: int,
    precision: str = "fp32",
) -> bool:
    """Adam on ``parameters`` for ``loss_on(rows, precision)`` (the student's passes in ``precision``), ``model``'s
    batch norms on batch statistics; the loss over all ``count`` rows (``loss_on(rows)``: in fp32, batch by batch:
    the memory of one batch) before and after, and ``model`` back as it was (parameters and statistics) unless it
    ended lower. Returns whether it changed."""
    def whole() -> float:
        with torch.no_grad():
            return sum(float(loss_on(rows)) * len(rows) for rows in torch.arange(count).split(batch_size)) / count

    saved = copy.deepcopy(model.state_dict())  # before any pass in train mode touches the statistics
    with norms_training(model):
        before = whole()
        _adam(parameters, loss_on, count, steps=steps, lr=lr, batch_size=batch_size, precision=precision)
        after = whole()
    if not math.isfinite(after) or after >= before:
        model.load_state_dict(saved)
        return False
    return True


def _adam(parameters: list[nn.Parameter], loss_on, count: int, *, steps: int, lr: float, batch_size: int,
          precision: str) -> None:
    optimizer = torch.optim.Adam(parameters, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(count, generator=generator)
    position = 0
    for _ in range(steps):
        if position + batch_size > count:
            order, position = torch.randperm(count, generator=generator), 0
        rows = order[position:position + batch_size]
        position += batch_size
        loss = loss_on(rows, precision)
        if not torch.isfinite(loss):
            return
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


@contextmanager
def norms_training(model: nn.Module) -> Iterator[None]:
    """The batch norms of ``model`` normalize by the batch's statistics inside the block (the rest
    stays in its mode); each is back in its own mode after it."""
    with in_mode((module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)),
                 training=True):
        yield


def _rows(value: object, rows: slice | torch.Tensor, count: int) -> Any:
    """``value`` with every tensor of batch size ``count`` cut to ``rows``."""
    if isinstance(value, torch.Tensor):
        return value[rows] if value.ndim and value.shape[0] == count else value
    if isinstance(value, tuple):
        return tuple(_rows(item, rows, count) for item in value)
    if isinstance(value, list):
        return [_rows(item, rows, count) for item in value]
    if isinstance(value, dict):
        return {key: _rows(item, rows, count) for key, item in value.items()}
    return value


@torch.no_grad()
def _point_errors(
    teacher: nn.Module, student: nn.Module, images: torch.Tensor, points: list[str], batch_size: int = 8, *,
    wanted: dict[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Each point's relative error, both networks run on their own, batch by batch (their tensors at
    every point at once on a few images: the memory of one batch). ``wanted``: the teacher's tensors
    on every image, kept (:func:`_teacher_tensors`), so the teacher is not run again."""
    squares: dict[str, list[float]] = {name: [0.0, 0.0] for name in points}
    start = 0
    for batch in images.split(batch_size):
        produced = capture_calls(student, batch, points, inputs=False)
        if wanted is None:
            targets = {name: call[2] for name, call in capture_calls(teacher, batch, points, inputs=False).items()}
        else:
            targets = {name: tensor[start:start + len(batch)] for name, tensor in wanted.items()}
        start += len(batch)
        for name in points:
            output, target = produced.get(name, (None, None, None))[2], targets.get(name)
            if output is None or target is None or output.shape != target.shape:
                squares.pop(name, None)
                continue
            if name in squares:
                squares[name][0] += float((output.double() - target.double()).pow(2).sum())
                squares[name][1] += float(target.double().pow(2).sum())
    return {name: round(math.sqrt(error / reference), 6) for name, (error, reference) in squares.items() if reference > 0}


@torch.no_grad()
def teacher_logits(
    teacher: nn.Module, images: torch.Tensor, batch_size: int = 8, *, device: torch.device | None = None,
) -> list[torch.Tensor]:
    """The teacher's output on ``images``, batch by batch, in eval mode, run on ``device`` (a copy of
    the teacher there if it is elsewhere; default: where the teacher is): what :func:`output_gap`
    compares a student with. A search computes it once for all its candidates, on their device."""
    device = device or device_of(teacher, images.device)
    teacher, images = _on(teacher, device), images.to(device)
    with eval_mode(teacher):
        return [model_output(teacher, batch) for batch in images.split(batch_size)]


@torch.no_grad()
def output_gap(
    teacher: nn.Module, student: nn.Module, images: torch.Tensor, batch_size: int = 8, *,
    targets: list[torch.Tensor] | None = None,
) -> float | None:
    """The student's output error against the teacher on ``images``: the relative error of the logits,
    each pixel weighted by :func:`pixel_weights` (every class the teacher predicts counts the same, so
    a student that loses a rare class is far off even when the background is right); both in eval
    mode. ``targets``: the teacher's output as :func:`teacher_logits` gives it (the teacher is not run
    again). None when the teacher's output is all zeros."""
    device = device_of(student, images.device)
    images = images.to(device)
    if targets is None:
        targets = teacher_logits(teacher, images, batch_size, device=device)
    batches = list(torch.arange(images.shape[0]).split(batch_size))
    if [len(target) for target in targets] != [len(rows) for rows in batches]:
        raise ValueError(f"output_gap: targets of {[len(target) for target in targets]} images for batches of "
                         f"{[len(rows) for rows in batches]}: not the teacher's output on these images at this batch size")
    if not targets:
        return None
    targets = [target.to(device) for target in targets]
    weights = weights_of(targets)  # pixel_weights, from the targets at hand
    error = reference = 0.0
    with eval_mode(student):
        for rows, target in zip(batches, targets):
            output = model_output(student, images[rows])
            if output.shape != target.shape:
                return None
            weight = None if weights is None else weights[rows]
            error += float(relative_mse(output, target, weight) * _reference(target, weight))
            reference += float(_reference(target, weight))
    return None if reference == 0 else round(math.sqrt(error / reference), 6)


def _reference(target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    squares = target.double().pow(2)
    if weights is not None and target.ndim == 4:
        squares = squares * F.adaptive_avg_pool2d(weights, target.shape[-2:])
    return squares.sum()
