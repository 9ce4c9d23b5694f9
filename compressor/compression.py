"""Compress a trained network: transform it keeping its weights, calibrate, fine-tune with distillation.

:func:`compress` is what ``compressor compress`` runs: the trained network is the teacher;
a copy goes through the recipe with weight inheritance (each new layer the closest
approximation of the trained layer it replaces, refitted on training patches when
``finetune.calibrate`` asks), its batch norms are re-estimated, and it is fine-tuned with
the experiment's ``finetune:`` settings, distilling from the teacher. Teacher and student
are evaluated on the same validation pixels.

Example:
    >>> import compressor
    >>> experiment = compressor.Experiment.from_dict({
    ...     "data": {"name": "synthetic", "labels": "binary", "patch_size": 32, "train_images": 16,
    ...              "val_images": 1, "val_size": 32},
    ...     "train": {"steps": 2, "batch_size": 2, "progress": False, "eval_window": 32, "eval_overlap": 0},
    ...     "finetune": {"bn_reestimate": 1, "reconstruct_steps": 10}})  # a short example: 300 by default
    >>> teacher = compressor.unet(in_channels=3, base_width=4, norm="batch")
    >>> result = compress(teacher, [{"name": "separable"}], experiment)
    >>> result.student_cost.params < result.teacher_cost.params
    True
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.api_inputs import as_network, check_data
from compressor.cost import Cost, measure
from compressor.data.base import SegmentationData
from compressor.errors import ConfigError
from compressor.experiment import Experiment, load_experiment, without_finetuning
from compressor.finetune import calibration_batches, with_calibration
from compressor.floor import Floor
from compressor.metrics import SegmentationMetrics
from compressor.models.construction import check_runs_within
from compressor.outputs import check_fits
from compressor.tables import format_table
from compressor.threads import torch_threads
from compressor.train import (
    TrainResult,
    deterministic_kernels,
    evaluate,
    reestimate_batchnorm,
    resolve_device,
    seed_everything,
    train,
)
from compressor.train.precision import resolve_precision
from compressor.transforms import Recipe, TransformRecord, apply
from compressor.transforms.engine import as_recipe
from compressor.transforms.reconstruct import Reconstruction, output_gap, reconstruct
from compressor.units import format_count

__all__ = ["CompressResult", "compress"]


@dataclass
class CompressResult:
    """What :func:`compress` produced.

    Attributes:
        student: the compressed, fine-tuned network (CPU, eval mode).
        records: what each step of the recipe did, with its layer errors.
        teacher_metrics: the original network on the validation data.
        inherited_metrics: the student before fine-tuning (batch norms re-estimated, and
            reconstructed when ``finetune.reconstruct`` asks).
        result: the fine-tuning run; ``result.metrics`` is the student's final evaluation.
        teacher_cost, student_cost: params and FLOPs at the experiment's cost input size.
        distilled: whether the fine-tuning distilled from the teacher.
        seconds: wall time of each phase (``evaluate``: the teacher and the start on validation; ``transform``,
            ``reconstruct``, ``finetune``, ``test`` where the data has a test region, ``scratch`` when asked).
        example_shape: the input shape the recipe was applied (and the records costed) at.
        teacher_test_metrics, student_test_metrics: teacher and fine-tuned student on the
            data's test region, evaluated once at the end (None: the data has none).
        start_error: the student's output error against the teacher (relative, on the
            calibration patches) after the recipe and the batch norms' re-estimation, before any
            reconstruction.
        bn_reestimated: the batches the student's batch norms were re-estimated on after the recipe
            (``finetune.bn_reestimate``; 0: none, or a student without batch norms).
        reconstruction: what the reconstruction did (None: ``finetune.reconstruct: none``).
        max_start_error: above this output error after reconstruction the student "does
            not start close" (``finetune.max_start_error``).
        scratch: the same architecture trained from random weights for the same steps
            (``compare_scratch``; None otherwise); ``scratch_test_metrics`` on the test region.
        floor: the best constant prediction's score on the validation pixels, plus
            ``search.min_gain``: a student at or below it learned nothing (:attr:`learned`).
    """

    student: nn.Module
    records: list[TransformRecord]
    teacher_metrics: SegmentationMetrics
    inherited_metrics: SegmentationMetrics
    result: TrainResult
    teacher_cost: Cost
    student_cost: Cost
    distilled: bool
    seconds: dict[str, float]
    example_shape: tuple[int, ...] = ()
    teacher_test_metrics: SegmentationMetrics | None = None
    student_test_metrics: SegmentationMetrics | None = None
    start_error: float | None = None
    bn_reestimated: int = 0
    reconstruction: Reconstruction | None = None
    max_start_error: float = 1.0
    scratch: TrainResult | None = None
    scratch_test_metrics: SegmentationMetrics | None = None
    floor: Floor = dataclasses.field(default_factory=Floor)

    @property
    def learned(self) -> bool:
        """Whether the fine-tuned student's validation score is above the floor."""
        return self.floor.passes(self.student_metrics.score)

    @property
    def verdict(self) -> str:
        """``below floor`` (the student learned nothing), ``kept`` (within ``search.min_gain`` of
        the teacher or above it) or ``lost`` (above the floor, below the teacher)."""
        if not self.learned:
            return "below floor"
        if self.student_metrics.score >= self.teacher_metrics.score - self.floor.margin:
            return "kept"
        return "lost"

    @property
    def student_metrics(self) -> SegmentationMetrics:
        return self.result.metrics

    @property
    def output_error(self) -> float | None:
        """The student's output error against the teacher when fine-tuning starts."""
        return self.reconstruction.output_error_after if self.reconstruction is not None else self.start_error

    @property
    def starts_close(self) -> bool | None:
        """Whether the student starts within ``max_start_error`` of the teacher (None: not measured)."""
        return None if self.output_error is None else self.output_error <= self.max_start_error

    def knowledge_lines(self) -> list[str]:
        """What the report says about what the student kept: its output error against the teacher
        before and after reconstruction, its score against the teacher's and against scratch."""
        metric = self.teacher_metrics.score_name
        lines = [self.verdict_line()]
        if self.start_error is not None:
            line = f"output error against the teacher: {self.start_error:.3f} after the recipe"
            if self.bn_reestimated:  # part of where the student starts from, not of the recipe
                line += f" and its batch norms re-estimated ({self.bn_reestimated} batches)"
            if self.reconstruction is not None and self.reconstruction.output_error_after is not None:
                rec = self.reconstruction
                steps = "closed form" if rec.method == "lstsq" else f"{rec.steps} steps"  # lstsq takes no Adam step
                if rec.norms_reestimated is False:  # lstsq: closer with the norms as the solve left them
                    steps += ", batch norms as solved"
                line += (f", {rec.output_error_after:.3f} after reconstruction ({rec.method}, {len(rec.points)} changed "
                         f"{'layer' if rec.method in ('layer', 'lstsq') else 'block'}s, {steps}"
                         f"{', bf16' if rec.precision == 'bf16' and rec.method != 'lstsq' else ''}, {rec.seconds:.0f} s)")
            lines.append(line)
        if self.starts_close is False:
            far = self.reconstruction.far(self.max_start_error) if self.reconstruction is not None else {}
            worst = ", ".join(f"{name} {error:.2f}" for name, error in sorted(far.items(), key=lambda item: -item[1])[:3])
            lines.append(
                f"the student does not start close to the teacher (output error {self.output_error:.3f} > "
                f"finetune.max_start_error {self.max_start_error:g}): it keeps little of what the teacher knew; "
                + ("try finetune.reconstruct: hints or block, or a milder recipe" if self.reconstruction is None
                   else "try finetune.reconstruct: hints, or a milder recipe" if self.reconstruction.method == "lstsq"
                   else "try more reconstruct_steps, or a milder recipe")
                + (f"; farthest: {worst}" if worst else ""))
        gap = self.student_metrics.score - self.teacher_metrics.score
        line = f"student against teacher: {gap:+.3f} {metric} (inherited {self.inherited_metrics.score:.3f}, fine-tuned {self.student_metrics.score:.3f}, teacher {self.teacher_metrics.score:.3f})"
        if self.scratch is not None:
            line += (f"; against the same architecture from scratch ({self.scratch.steps_done} steps): "
                     f"{self.student_metrics.score - self.scratch.metrics.score:+.3f} (scratch {self.scratch.metrics.score:.3f})")
        if self.student_test_metrics is not None and self.teacher_test_metrics is not None:
            line = line.replace("student against teacher: ", "student against teacher, validation: ", 1)
            test = (f"student against teacher, test: {self.student_test_metrics.score - self.teacher_test_metrics.score:+.3f} "
                    f"{metric} (fine-tuned {self.student_test_metrics.score:.3f}, teacher {self.teacher_test_metrics.score:.3f})")
            if self.scratch_test_metrics is not None:
                test += (f"; against scratch {self.student_test_metrics.score - self.scratch_test_metrics.score:+.3f} "
                         f"(scratch {self.scratch_test_metrics.score:.3f})")
            lines += [line, test]
            return lines
        lines.append(line)
        return lines

    def verdict_line(self) -> str:
        """One line on whether the student is a model: above the floor, and how much of the
        teacher's gain over the floor it kept."""
        metric, student, teacher = self.teacher_metrics.score_name, self.student_metrics.score, self.teacher_metrics.score
        floor = self.floor.describe(metric) or f"a model needs {metric} above 0"
        if not self.learned:
            line = (f"the student learned nothing: {metric} {student:.3f} is not above the floor ({floor}); "
                    "it is no model")
            if not self.floor.passes(teacher):
                return line + f"; the teacher ({teacher:.3f}) is not above it either: train it longer first"
            advice = [] if self.reconstruction is not None else ["finetune.reconstruct: hints"]
            line += "; try " + " or ".join([*advice, "more fine-tuning steps (--steps auto)", "a milder recipe"])
            return line + ("" if self.scratch is not None else
                           "; --compare-scratch shows whether this architecture learns at all in as many steps")
        # the share of the teacher's gain it kept, where the teacher has one (a teacher at the floor would make it 47000%)
        kept = (f", {(student - self.floor.constant) / (teacher - self.floor.constant):.0%} of the teacher's gain over "
                "the floor" if self.floor.passes(teacher) else f"; the teacher ({teacher:.3f}) is not above the floor")
        words = {"kept": "kept the teacher's score", "lost": "is a model, below the teacher"}[self.verdict]
        line = f"the student {words}: {metric} {student:.3f} against {teacher:.3f}{kept} (floor: {floor})"
        if self.verdict == "lost" and self.scratch is None:
            line += "; --compare-scratch shows whether the teacher's weights helped"
        return line

    def table(self, label: str = "teacher") -> str:
        """Teacher, inherited student and fine-tuned student side by side (validation, and test where the data has one)."""
        metric = self.teacher_metrics.score_name
        tuned = f"fine-tuned {self.result.steps_done} steps"
        if self.result.best_step == 0:  # nothing better than the start on validation: the start kept
            tuned += " (none better on validation than the start, which is kept)"
        elif self.result.best_step is not None:
            tuned += f" (best at {self.result.best_step}{', plateau' if self.result.converged else ', max_steps'})"
        tuned += ", distilled" if self.distilled else ""
        tested = self.student_test_metrics is not None and self.teacher_test_metrics is not None
        headers = ["model", "params", "FLOPs", f"val {metric}" if tested else metric,
                   *(["mIoU"] if metric != "mIoU" else []), *([f"test {metric}"] if tested else []),
                   "params ratio", "FLOPs ratio", "time"]
        rows = []
        for name, cost, metrics, test, seconds in (
            (label, self.teacher_cost, self.teacher_metrics, self.teacher_test_metrics, None),
            ("student, inherited" + (f" + reconstructed ({self.reconstruction.method})" if self.reconstruction else ""),
             self.student_cost, self.inherited_metrics, None, self.seconds["transform"] + self.seconds.get("reconstruct", 0.0)),
            (f"student, {tuned}", self.student_cost, self.student_metrics, self.student_test_metrics, self.seconds["finetune"]),
            *([(f"same architecture from scratch, {self.scratch.steps_done} steps", self.student_cost, self.scratch.metrics,
                self.scratch_test_metrics, self.seconds.get("scratch"))] if self.scratch is not None else []),
        ):
            rows.append([
                name, format_count(cost.params), format_count(cost.flops), f"{metrics.score:.3f}",
                *([f"{metrics.miou:.3f}"] if metric != "mIoU" else []),
                *(["-" if test is None else f"{test.score:.3f}"] if tested else []),
                f"{self.teacher_cost.params / max(cost.params, 1):.1f}x", f"{self.teacher_cost.flops / max(cost.flops, 1):.1f}x",
                "-" if seconds is None else f"{seconds:.0f} s",
            ])
        shape = "x".join(str(size) for size in self.student_cost.input_shape)
        return format_table(
            headers, rows,
            title=f"compression at input {shape} (ratio = teacher / model; FLOPs: one multiply-add = one flop)",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "teacher": {"metrics": self.teacher_metrics.to_dict(), "cost": self.teacher_cost.to_dict(modules=False)},
            "inherited": {"metrics": self.inherited_metrics.to_dict()},
            "student": {"metrics": self.student_metrics.to_dict(), "cost": self.student_cost.to_dict(modules=False),
                        "train": self.result.to_dict()},
            "records": [record.to_dict() for record in self.records],
            **({"test": {"teacher": self.teacher_test_metrics.to_dict(), "student": self.student_test_metrics.to_dict()}}
               if self.teacher_test_metrics is not None and self.student_test_metrics is not None else {}),
            "start_error": self.start_error,
            "bn_reestimated": self.bn_reestimated,
            "output_error": self.output_error,
            "starts_close": self.starts_close,
            **({"reconstruction": self.reconstruction.to_dict()} if self.reconstruction is not None else {}),
            **({"scratch": {"metrics": self.scratch.metrics.to_dict(), "train": self.scratch.to_dict(),
                            **({"test": self.scratch_test_metrics.to_dict()} if self.scratch_test_metrics is not None else {})}}
               if self.scratch is not None else {}),
            "floor": {"constant": self.floor.constant, "constant_class": self.floor.constant_class,
                      "margin": self.floor.margin, "threshold": self.floor.threshold},
            "learned": self.learned,
            "verdict": self.verdict,
            "distilled": self.distilled,
            "seconds": {key: round(value, 2) for key, value in self.seconds.items()},
        }


def compress(
    model: nn.Module,
    recipe: Recipe | list | str | Path,
    experiment: Experiment | str | Path,
    *,
    data: SegmentationData | None = None,
    distill: bool = True,
    cache_dir: str | Path | None = None,
    compare_scratch: bool = False,
    evaluate_at: tuple[float | int, ...] = (),
    resume: str | Path | None = None,
) -> CompressResult:
    """Transforms a trained ``model`` with ``recipe`` keeping its knowledge, and fine-tunes the result.

    Args:
        model: the trained network (never modified); it is the distillation teacher.
        recipe: a :class:`Recipe`, its plain data, a recipe file, or one step in the command line's form
            (``"fire"``; :func:`~compressor.transforms.engine.as_recipe`).
        experiment: the data, the training recipe (batch size, loss, evaluation) and the
            ``finetune:`` settings (steps, learning rate, batch-norm re-estimation,
            calibration, distillation weight and temperature): an :class:`Experiment` or its file.
        data: already built data (default: built from ``experiment.data``), such as images held in memory
            (:func:`compressor.data.from_arrays`); the recipe is then applied at its patch size.
        distill: distill from ``model`` while fine-tuning.
        cache_dir: the download cache.
        compare_scratch: also train the student's architecture from random weights, with
            the ``train:`` section, for as many steps as the fine-tuning took.
        evaluate_at: where the fine-tuning also evaluates (its learning curve), as :func:`~compressor.train.train` takes them.
        resume: a file that keeps the fine-tuning's state: the same call again goes on where an
            interrupted one stopped (the recipe and reconstruction are redone; the fine-tuning is not).

    Raises:
        ConfigError: the model does not fit the data (input channels, classes), a bad recipe.
        TransformError: a step does not apply to this network.
    """
    model = as_network(model, "compress")  # before the data is built: a slip costs no download
    if data is not None:
        check_data(data, "compress")
    recipe = as_recipe(recipe)
    if isinstance(experiment, (str, Path)):
        experiment = load_experiment(experiment)
    elif not isinstance(experiment, Experiment):
        raise ConfigError(f"compress: experiment must be an Experiment or the path of an experiment file, got "
                          f"{type(experiment).__name__}")
    data = data or experiment.data.build(cache_dir=cache_dir)
    settings = experiment.finetune
    if settings.feature_weight and not distill:
        raise ConfigError("finetune.feature_weight distills features from the teacher: it needs distillation "
                          "(drop --no-distill, or set finetune.feature_weight: 0)")
    config = settings.train_config(experiment.train, distill=distill)
    teacher = copy.deepcopy(model).cpu().eval()
    size = getattr(data.train, "patch_size", experiment.data.patch_size)  # data given in memory: its own patches
    # a teacher read from a file without trust: its memory training (gradients kept) and evaluating, first
    check_runs_within(teacher, (config.batch_size, data.in_channels, size, size), training=True)
    check_runs_within(teacher, (config.eval_batch_size, data.in_channels, config.eval_window, config.eval_window))
    check_fits(teacher, data)
    floor = Floor.by_rule(experiment.search.floor, data, "score", margin=experiment.search.min_gain)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    teacher_metrics = evaluate(teacher, data, config)
    seconds["evaluate"] = time.perf_counter() - started
    started = time.perf_counter()
    calibration = calibration_batches(data, max(1, settings.calibrate), batch_size=config.batch_size, seed=config.seed)
    example = torch.zeros(1, data.in_channels, size, size)
    seed_everything(config.seed)  # the new layers' random parts: the same for a seed, whatever ran before
    student, records = apply(
        teacher, with_calibration(recipe, settings.calibrate), example, init="inherit",
        calibration=calibration,
    )
    norms = reestimate_batchnorm(student, data, batches=settings.bn_reestimate, batch_size=config.batch_size,
                                 seed=config.seed)  # 0 where bn_reestimate is 0 or the student has none
    reestimated = settings.bn_reestimate if norms else 0
    seconds["transform"] = time.perf_counter() - started
    started = time.perf_counter()
    images = torch.cat(calibration_batches(data, settings.reconstruct_batches, batch_size=config.batch_size, seed=config.seed))
    method = settings.reconstruction("hints")
    device = resolve_device(config.device)
    with torch_threads(config.threads), deterministic_kernels(device):  # where and as the fine-tuning runs
        student.to(device)
        reconstruction = None if method == "none" else reconstruct(
            teacher, student, images, method=method, source=settings.reconstruct_source, steps=settings.reconstruct_steps,
            batch_size=config.batch_size, precision=resolve_precision(config.precision, device),
        )
        # the same measure on the same images: reconstruct's own, before it (the teacher is not run again)
        start_error = (output_gap(teacher, student, images, config.batch_size) if reconstruction is None
                       else reconstruction.output_error_before)
    seconds["reconstruct"] = time.perf_counter() - started
    started = time.perf_counter()
    inherited_metrics = evaluate(student, data, config)
    seconds["evaluate"] += time.perf_counter() - started  # the teacher's and the student's start, on validation
    started = time.perf_counter()
    tuning = dataclasses.replace(config, bn_reestimate=0)  # re-estimated once already, above
    result = train(student, data, tuning, teacher=teacher if distill else None, description="fine-tune",
                   evaluate_at=evaluate_at, resume=resume, start=inherited_metrics)
    seconds["finetune"] = time.perf_counter() - started
    tests: tuple[SegmentationMetrics | None, SegmentationMetrics | None] = (None, None)
    if data.test:
        started = time.perf_counter()
        tests = (evaluate(teacher, data, config, split="test"), evaluate(student, data, config, split="test"))
        seconds["test"] = time.perf_counter() - started
    scratch = scratch_test = None
    if compare_scratch:
        started = time.perf_counter()
        seed_everything(experiment.train.seed)
        # as a network is trained from scratch (no teacher), scored as the student is
        plain = dataclasses.replace(without_finetuning(experiment).train, eval_precision=config.evaluation_precision)
        fresh = from_scratch(student)
        scratch = train(fresh, data, plain.with_steps(result.steps_done), description="from scratch")
        scratch_test = evaluate(fresh, data, config, split="test") if data.test else None
        seconds["scratch"] = time.perf_counter() - started
    shape = experiment.cost_input_shape(data.in_channels)
    student = student.cpu().eval()
    return CompressResult(
        student=student, records=records, teacher_metrics=teacher_metrics, inherited_metrics=inherited_metrics,
        result=result, teacher_cost=measure(teacher, shape), student_cost=measure(student, shape),
        distilled=distill, seconds=seconds, example_shape=tuple(example.shape),
        teacher_test_metrics=tests[0], student_test_metrics=tests[1],
        start_error=None if start_error is None else round(start_error, 6), reconstruction=reconstruction,
        bn_reestimated=reestimated,
        max_start_error=settings.max_start_error, scratch=scratch, scratch_test_metrics=scratch_test, floor=floor,
    )


def from_scratch(network: nn.Module) -> nn.Module:
    """A copy of ``network`` with every layer's parameters drawn afresh (its ``reset_parameters``)
    and its batch norms' statistics reset: the same architecture, nothing learned.

    Example:
        >>> from torch import nn
        >>> conv = nn.Conv2d(2, 2, 3)
        >>> bool((from_scratch(conv).weight != conv.weight).any())
        True
    """
    fresh = copy.deepcopy(network)
    for module in fresh.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    return fresh


def finetuned(experiment: Experiment, steps: int | str | None, **changes: object) -> Experiment:
    """``experiment`` with ``finetune.steps`` and the other ``finetune`` settings given set (None: unchanged)."""
    changes = {key: value for key, value in {"steps": steps, **changes}.items() if value is not None}
    if not changes:
        return experiment
    return dataclasses.replace(experiment, finetune=dataclasses.replace(experiment.finetune, **changes))
