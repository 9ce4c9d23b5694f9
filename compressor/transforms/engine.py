"""``apply``: run a recipe on a model, step by step, without touching the input."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from compressor.api_inputs import as_network
from compressor.cost import Cost, measure
from compressor.errors import ConfigError, first_line, is_wrapped_interrupt
from compressor.models.construction import check_runs_within
from compressor.origin import origin_of, set_origin
from compressor.outputs import declare_output, declared_output, primary_output
from compressor.registry import UnknownNameError
from compressor.transforms.base import TRANSFORMS, Transform, TransformError, TransformRecord
from compressor.transforms.calibration import (
    batches_of,
    calibrate,
    counterparts_of,
    layer_errors,
    output_error,
)
from compressor.transforms.recipe import Recipe, TransformSpec, parse_transform_option, plain_params

__all__ = ["apply", "as_recipe", "input_output_shape"]


def apply(
    model: nn.Module,
    recipe: Recipe | Transform | Iterable[TransformSpec | Transform] | list | str | Path,
    example_input: torch.Tensor | tuple[int, ...],
    *,
    count_flops: bool = True,
    init: str | None = None,
    calibration: torch.Tensor | Sequence[torch.Tensor] | None = None,
    diagnostics: bool = True,
    check_each_step: bool = True,
    known_output_shape: tuple[int, ...] | None = None,
    check_output: bool = True,
) -> tuple[nn.Module, list[TransformRecord]]:
    """Applies every step of ``recipe`` to a copy of ``model``.

    Each step validates before it changes anything, works on its own deep copy where the
    network before it is still read (diagnostics, calibration, an optional step), and must
    keep the model's contract: the output for ``example_input`` has the same shape as
    before. Each record carries fvcore params/FLOPs before and after the step (one
    multiply-add = one flop) at ``example_input``'s shape.

    Args:
        model: any ``nn.Module`` taking one tensor; never modified.
        recipe: a :class:`Recipe`, a configured :class:`Transform` (``Separable(mid_activation=True)``)
            or a list of them, plain data accepted by :meth:`Recipe.from_data`, a recipe file, or one
            step as the command line's ``--transform`` writes it (``"fire"``, ``"prune:ratio=0.5"``):
            :func:`as_recipe`.
        example_input: a tensor, or its shape, used for tracing, shapes and costs.
        count_flops: count FLOPs with fvcore before and after each step (a search, which
            measures the result anyway, turns this off; the records then have FLOPs 0).
        init: ``inherit`` or ``random``: how new layers start, for every step that has an
            ``init`` parameter and does not set it (None: each transform's default, inherit).
        calibration: real images, one batch ``(N, C, H, W)`` or a list of batches. Each
            record's layer errors are measured on the first batch (on ``example_input``
            without it); a step with ``calibrate: K`` refits its layers on the first K.
        diagnostics: measure each step's layer errors and output error (shown by ``apply`` and
            ``compress``). A search, which shows none, turns them off: they cost more than the
            transforms themselves (5.3 s of 6.5 s for the paper's recipe on U-Net at 64x64, one
            thread); the records then have no errors.
        check_each_step: run the network after each step to check that its output shape is kept. A
            search turns this off: the output is then checked after the last step, and after a step
            that runs the network anyway (diagnostics, calibration, FLOPs, an ``optional`` step). Each
            check is a forward pass of a network near the input model's size (18% of building a
            quickstart candidate). When a step fails, or the last check does, after unchecked steps,
            the steps before the failing one are applied again from the same random state with every
            check, so the error names the step at fault, as with this on. (A step that changes the
            output's shape and a later one that puts it back pass unchecked; no built-in transform
            can put it back.)
        known_output_shape: ``model``'s output shape at ``example_input`` (:func:`input_output_shape`),
            which every step's output is checked against, where the caller has it: a search builds
            every candidate from one parent, so it runs the parent once for it, not once a build.
            None: ``model`` is run to find it.
        check_output: with this off (and ``check_each_step`` off), the output shape is checked only after a step
            that runs the network anyway (calibration, diagnostics, FLOPs, an ``optional`` step): not before the
            first step nor after the last. Loading a model file turns it off, since the weights it then loads
            must fit the rebuilt network tensor for tensor: two forward passes at the file's input shape (1.6 s
            of loading a U-Net-based file at 224x224) that would refuse nothing more.

    Returns:
        ``(new_model, records)``; ``new_model`` is in the input model's train/eval mode.

    Raises:
        TransformError: a step does not apply to this network (the message names the
            step and the layer). An ``optional`` step that does not apply is skipped
            instead: its record has ``skipped_step`` (the reason) and changes nothing.
        ConfigError: the recipe is malformed, or a step asks for calibration and no
            images were given.

    Example:
        >>> import compressor
        >>> small, records = compressor.apply(
        ...     compressor.unet(base_width=8), [{"name": "separable"}], (1, 3, 32, 32))
        >>> records[0].params_after < records[0].params_before
        True
    """
    model = as_network(model, "apply")
    recipe = as_recipe(recipe)
    example = _example_tensor(model, example_input)
    check_runs_within(model, tuple(example.shape))  # a network read from a file without trust: its memory first
    settings = {"count_flops": count_flops, "init": init, "calibration": calibration, "diagnostics": diagnostics,
                "known_output_shape": known_output_shape, "check_output": check_output or check_each_step}
    if check_each_step:
        return _apply_steps(model, recipe, example, check_each_step=True, **settings)
    random_state = torch.random.get_rng_state()
    try:
        return _apply_steps(model, recipe, example, check_each_step=False, **settings)
    except _Unchecked as unchecked:
        failure, failed_at = unchecked.error, unchecked.step
    if is_wrapped_interrupt(failure):  # a Ctrl-C that torch wrapped: stop now
        raise failure
    # a step failed, or the last check did, after steps whose output went unchecked: the steps before it again,
    # from the same random state, with every check, so that the error names the step at fault as it does with
    # them (the failing step itself is not run again: it may be slow, a prune to its time limit)
    with torch.random.fork_rng(devices=[]):
        torch.random.set_rng_state(random_state)
        _apply_steps(model, recipe, example, check_each_step=True, stop_before=failed_at, **settings)
    raise failure  # the steps before it were fine: the error as it came


def as_recipe(recipe: Recipe | Transform | Iterable[TransformSpec | Transform | str] | list | str | Path) -> Recipe:
    """A :class:`Recipe` from any form :func:`apply` and :func:`~compressor.compress` take: a recipe, a configured
    transform, a list of specs or transforms, plain data (:meth:`Recipe.from_data`), one step in the command
    line's form (``"fire"``, ``"prune:ratio=0.5"``: a string that starts with a transform's name) or a list of
    them, or the path of a recipe file (any other string: ``.yaml``, ``.yml``, ``.json``, or a file that exists).

    Example:
        >>> as_recipe("prune:ratio=0.5").steps[0].params
        {'ratio': 0.5}

    Raises:
        ConfigError: a file that cannot be read, a string that names neither a transform nor a file, a
            malformed step or recipe (naming it).
    """
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Transform):
        return Recipe.of([recipe])
    if isinstance(recipe, str) and recipe.partition(":")[0].strip() in TRANSFORMS.names():
        return Recipe.of([parse_transform_option(recipe)])  # a step, whatever file of that name sits here
    if isinstance(recipe, (str, Path)):
        path = Path(recipe)
        if path.suffix.lower() in RECIPE_SUFFIXES or _exists(path, "is_file"):
            return Recipe.load(path)
        if _exists(path, "is_dir"):
            raise ConfigError(f"recipe {str(recipe)!r} is a folder, not a recipe file")
        raise ConfigError(f"recipe {str(recipe)!r}: no such recipe file, and no transform of that name; valid names: "
                          f"{', '.join(TRANSFORMS.names())}")
    if isinstance(recipe, (list, tuple)) and recipe and all(isinstance(item, str) for item in recipe):
        return Recipe.of([parse_transform_option(item) for item in recipe])  # steps as the command line writes them
    return Recipe.of(recipe) if _is_specs(recipe) else Recipe.from_data(recipe)


#: what makes a string a recipe file's path rather than a step (``fire``, ``prune:ratio=0.5``)
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")


def _exists(path: Path, kind: str) -> bool:
    try:
        return getattr(path, kind)()
    except OSError:  # a name too long for the file system: no such file
        return False


class _Unchecked(Exception):
    """Step ``step`` (0-based; the number of steps: the last check) failed with ``error`` after a step whose
    output shape went unchecked."""

    def __init__(self, error: Exception, step: int) -> None:
        super().__init__(str(error))
        self.error, self.step = error, step


def _apply_steps(
    model: nn.Module, recipe: Recipe, example: torch.Tensor, *, count_flops: bool, init: str | None,
    calibration: torch.Tensor | Sequence[torch.Tensor] | None, diagnostics: bool, check_each_step: bool,
    known_output_shape: tuple[int, ...] | None, check_output: bool = True, stop_before: int | None = None,
) -> tuple[nn.Module, list[TransformRecord]]:
    """:func:`apply`'s steps, on the resolved recipe and example; with ``check_each_step`` off, an error after a
    step whose output shape went unchecked comes as :class:`_Unchecked`. ``stop_before``: only the steps before
    that one (0-based) run."""
    shape = tuple(example.shape)
    was_training = model.training
    found: list[tuple[int, ...]] = [tuple(known_output_shape)] if known_output_shape is not None else []

    def reference_shape() -> tuple[int, ...]:  # the input model's output shape, found when first needed
        if not found:
            found.append(_output_shape(model, example, "the input model"))
        return found[0]

    if check_output:
        reference_shape()  # before any step: a model that does not run on the example says so first
    current = model
    cost_of = (lambda network: measure(network, shape)) if count_flops else _params_only
    current_cost = cost_of(current)
    images = _error_images(calibration, example)
    records: list[TransformRecord] = []
    origin = origin_of(model)
    unchecked = False  # a step's output shape not checked yet (check_each_step off)
    reached = 0
    try:
        for index, spec in enumerate(recipe.steps):
            reached = index
            if stop_before is not None and index >= stop_before:
                break
            step = f"step {index + 1} ({spec.name})"
            transform = _with_init(spec, init).build(where=step)
            batches = getattr(transform, "calibrate", 0)
            if batches and calibration is None:
                raise ConfigError(
                    f"{step}: calibrate: {batches} needs real images, which compressor compress and a search with "
                    "search.init: inherit take from the training patches (from Python: apply(..., calibration=images))"
                )
            # the network before the step is kept where something reads it: the input model (never modified), the
            # diagnostics and the calibration (which compare the two), an optional step (skipped if it fails)
            keep_before = current is model or diagnostics or batches or spec.optional
            candidate = (copy.deepcopy(current) if keep_before else current).eval()
            try:
                transform.check(candidate, example)
                candidate, change = transform.transform(candidate, example)
            except TransformError as error:
                if not spec.optional:
                    raise TransformError(f"{step}: {error}") from None
                records.append(_skipped(spec, transform, current_cost, str(error)))
                continue
            declare_output(candidate, declared_output(model))  # a traced graph does not carry it
            if check_each_step or spec.optional or batches or diagnostics or count_flops:  # else after the last
                output_shape = _output_shape(candidate, example, step)
                if output_shape != reference_shape():
                    reason = f"output shape changed from {reference_shape()} to {output_shape}; refusing"
                    if not spec.optional:
                        raise TransformError(f"{step}: {reason}")
                    records.append(_skipped(spec, transform, current_cost, f"{spec.name}: {reason}"))
                    continue
                unchecked = False
            else:
                unchecked = check_output
            counterparts = counterparts_of(change.changed, change.counterparts)
            if batches:
                calibration_images = batches_of(calibration, batches).to(example.device)
                refitted = calibrate(current, candidate, counterparts, calibration_images)
                change.notes.append(
                    f"calibrated {len(refitted)} of {len(counterparts)} changed layers by least squares "
                    f"on {calibration_images.shape[0]} images"
                )
            errors = layer_errors(current, candidate, counterparts, images) if diagnostics else {}
            network_error = output_error(current, candidate, images) if diagnostics else None
            cost = cost_of(candidate)
            if cost.params > current_cost.params:  # fire at squeeze_ratio 2, say: allowed, and said
                change.notes.append(f"params rose {cost.params / max(current_cost.params, 1) - 1:.1%} with this step")
            if count_flops and cost.flops > current_cost.flops:
                change.notes.append(f"FLOPs rose {cost.flops / max(current_cost.flops, 1) - 1:.1%} with this step")
            records.append(
                TransformRecord(
                    transform=spec.name,
                    params=plain_params(transform.params),
                    changed=list(change.changed),
                    removed=list(change.removed),
                    skipped=dict(change.skipped),
                    notes=list(change.notes),
                    params_before=current_cost.params,
                    params_after=cost.params,
                    flops_before=current_cost.flops,
                    flops_after=cost.flops,
                    errors=errors,
                    output_error=None if network_error is None else round(network_error, 6),
                )
            )
            current, current_cost = candidate, cost
            if origin is not None:
                step_data = {"name": spec.name, **plain_params(transform.params), **transform.replay(candidate)}
                origin = origin.then(step_data, shape)
        reached = len(recipe.steps)
        if unchecked and _output_shape(current, example, "the last step") != reference_shape():
            raise TransformError("the output shape changed")  # the checked run names the step
    except Exception as error:  # noqa: BLE001 - whatever a step raised, after an unchecked one: the checked run
        if unchecked:
            raise _Unchecked(error, reached) from None
        raise
    if current is model:
        current = copy.deepcopy(model)
    current.train(was_training)
    return set_origin(current, origin), records


def input_output_shape(model: nn.Module, example_input: torch.Tensor | tuple[int, ...]) -> tuple[int, ...]:
    """The shape of ``model``'s output at ``example_input`` that :func:`apply` keeps (its declared output's).

    Raises:
        ConfigError: the model does not run on the example, or its output has no single segmentation tensor.
    """
    return _output_shape(model, _example_tensor(model, example_input), "the input model")


def _skipped(spec: TransformSpec, transform, cost: Cost, reason: str) -> TransformRecord:
    """The record of an optional step that did not apply: nothing changed, and why."""
    return TransformRecord(
        transform=spec.name, params=plain_params(transform.params), changed=[], removed=[], skipped={}, notes=[],
        params_before=cost.params, params_after=cost.params, flops_before=cost.flops, flops_after=cost.flops,
        skipped_step=reason,
    )


def _with_init(spec: TransformSpec, init: str | None) -> TransformSpec:
    """``spec`` with ``init`` filled in, if its transform takes one and the recipe left it out."""
    if init is None or "init" in spec.params:
        return spec
    try:
        names = {parameter.name for parameter in TRANSFORMS.get(spec.name).parameters()}
    except UnknownNameError:
        return spec  # spec.build names the problem
    return TransformSpec(spec.name, {**spec.params, "init": init}, spec.optional) if "init" in names else spec


def _error_images(calibration: torch.Tensor | Sequence[torch.Tensor] | None, example: torch.Tensor) -> torch.Tensor:
    """What layer errors are measured on: the first calibration batch, else the example input."""
    if calibration is None:
        return example
    images = calibration if isinstance(calibration, torch.Tensor) else next(iter(calibration), None)
    if images is None or images.ndim != example.ndim or images.shape[1:2] != example.shape[1:2]:
        raise ConfigError(
            f"calibration images must be batches shaped like the example input {tuple(example.shape)} "
            f"(any batch size, height, width), got {None if images is None else tuple(images.shape)}"
        )
    return images.to(example.device)


def _params_only(model: nn.Module) -> Cost:
    count = sum(parameter.numel() for parameter in model.parameters())
    return Cost(params=count, trainable_params=count, flops=0, input_shape=())


def _is_specs(recipe: object) -> bool:
    return isinstance(recipe, (list, tuple)) and all(isinstance(item, TransformSpec) for item in recipe) and bool(recipe)


def _example_tensor(model: nn.Module, example_input: torch.Tensor | tuple[int, ...]) -> torch.Tensor:
    if isinstance(example_input, torch.Tensor):
        return example_input.detach()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.randn(tuple(example_input), generator=torch.Generator().manual_seed(0)).to(device)


def _output_shape(model: nn.Module, example: torch.Tensor, what: str) -> tuple[int, ...]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(example)
    except TransformError:
        raise
    except Exception as error:  # noqa: BLE001 - report any failure of the model as the user's input
        message = first_line(error)
        kind = TransformError if what.startswith("step") else ConfigError
        raise kind(f"{what}: forward pass failed at input {tuple(example.shape)}: {message}") from error
    finally:
        model.train(was_training)
    try:
        return tuple(primary_output(output, declared_output(model), what=what).shape)
    except ConfigError as error:
        if not what.startswith("step"):
            raise  # the input model's own, as its class says (an output to choose: OutputChoiceError, with its advice)
        raise TransformError(str(error)) from None

