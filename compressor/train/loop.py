"""The training loop: :func:`train` with intermediate evaluations a callback can stop on."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from compressor.api_inputs import as_network, check_data
from compressor.batchnorm import reestimate_on
from compressor.data.base import SegmentationData
from compressor.errors import CompressorError, ConfigError, first_line
from compressor.metrics import SegmentationMetrics
from compressor.models.construction import check_runs_within
from compressor.outputs import model_output
from compressor.threads import torch_threads
from compressor.train.checkpoints import save_checkpoint
from compressor.train.config import TrainConfig
from compressor.train.determinism import deterministic_kernels, resolve_device
from compressor.train.evaluation import evaluate, forward_checked
from compressor.train.losses import class_weights, dice_loss, distillation_loss, weighted_cross_entropy
from compressor.train.plateau import Plateau
from compressor.train.precision import autocast, resolve_precision
from compressor.train.resume import load_state, save_state, state_key
from compressor.transforms.feature_hints import FeatureHints

log = logging.getLogger(__name__)

__all__ = ["TrainingError", "StopTraining", "Callback", "TrainResult", "evaluation_steps", "train", "reestimate_batchnorm"]


class TrainingError(CompressorError):
    """Training failed (a non-finite loss or gradient); names the step and the reason."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"training failed at step {step}: {reason}")
        self.step = step
        self.reason = reason


class StopTraining(Exception):
    """Raised by a callback to end training now; the last evaluation becomes the result."""


Callback = Callable[[int, SegmentationMetrics], "bool | None"]
"""``callback(step, metrics)``: return False (or raise :class:`StopTraining`) to stop."""


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        metrics: the final evaluation, or the last intermediate one if stopped early; with
            ``steps: auto``, the evaluation of the best weights (those the model is left with).
        steps_done: optimizer steps taken.
        stopped_early: a callback stopped the run.
        history: ``(step, metrics)`` of every evaluation, in order: the learning curve.
        losses: the training loss of every step.
        train_seconds: wall time of the optimizer steps (data and augmentation included).
        eval_seconds: wall time of the evaluations.
        device: where it ran.
        threads: torch CPU threads it ran with.
        best_step: with ``steps: auto``, the step of the best validation score (the
            weights kept); None otherwise.
        converged: with ``steps: auto``, whether validation stopped improving before
            ``max_steps`` (False: the cap ended the run).
    """

    metrics: SegmentationMetrics
    steps_done: int
    stopped_early: bool
    history: list[tuple[int, SegmentationMetrics]]
    losses: list[float]
    train_seconds: float
    eval_seconds: float
    device: str
    threads: int
    best_step: int | None = None
    converged: bool = False

    @property
    def wall_seconds(self) -> float:
        return self.train_seconds + self.eval_seconds

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (the loss curve is kept, 4 significant digits)."""
        return {
            "metrics": self.metrics.to_dict(),
            "steps_done": self.steps_done,
            "stopped_early": self.stopped_early,
            "history": [{"step": step, **metrics.to_dict()} for step, metrics in self.history],
            "losses": [float(f"{loss:.4g}") for loss in self.losses],
            "train_seconds": round(self.train_seconds, 3),
            "eval_seconds": round(self.eval_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "device": self.device,
            "threads": self.threads,
            **({"best_step": self.best_step, "converged": self.converged} if self.best_step is not None else {}),
        }


def evaluation_steps(total_steps: int, at: Sequence[float | int]) -> list[int]:
    """Turns fractions of the run (floats in (0, 1)) and step numbers (ints) into sorted steps.

    The last step is always evaluated anyway and is left out.

    Example:
        >>> evaluation_steps(900, [1 / 9, 1 / 3, 450])
        [100, 300, 450]
    """
    steps = set()
    for point in at:
        if isinstance(point, float):
            if not 0 < point < 1:
                raise ConfigError(f"an evaluation fraction must be in (0, 1), got {point}")
            step = max(1, round(point * total_steps))
        else:
            step = int(point)
            if step < 1:
                raise ConfigError(f"an evaluation step must be >= 1, got {point}")
        if step < total_steps:
            steps.add(step)
    return sorted(steps)


def train(
    model: nn.Module,
    data: SegmentationData,
    config: TrainConfig | None = None,
    *,
    evaluate_at: Sequence[float | int] = (),
    callback: Callback | None = None,
    checkpoint_path: str | Path | None = None,
    description: str = "train",
    teacher: nn.Module | None = None,
    evaluate_at_share: float = 1.0,
    resume: str | Path | None = None,
    start: SegmentationMetrics | None = None,
) -> TrainResult:
    """Trains ``model`` in place on ``data`` and evaluates it on the whole validation set.

    Args:
        model: any module mapping ``(N, C, H, W)`` to logits ``(N, classes, H, W)``.
        data: training patches and validation scenes.
        config: the recipe (defaults: :class:`TrainConfig`).
        evaluate_at: extra evaluations during training, as fractions of the run
            (``1 / 9``) or step numbers; see :func:`evaluation_steps`.
        callback: called as ``callback(step, metrics)`` after each of those evaluations;
            returning False or raising :class:`StopTraining` ends the run there.
        checkpoint_path: if given, a checkpoint (weights, optimizer state, step,
            metrics) is written there after every evaluation; see :func:`save_checkpoint`.
        description: label of the progress bar.
        teacher: the model to distill from when ``config.distill`` is active (the caller
            resolves ``config.distill.teacher`` to a module); run in eval mode, never trained.
        evaluate_at_share: the evaluations at ``evaluate_at`` read this share of each
            validation scene's windows (a fixed subsample: :func:`.evaluation.window_corners`);
            the last evaluation, and those the plateau rule counts, read them all.
        resume: a file for the run's whole state, written at each evaluation; if it holds the
            state of this same training (settings, network, data), the run goes on from there
            (:mod:`compressor.train.resume`). Removed when the run ends.
        start: the validation metrics of ``model`` as it is given (a fine-tuning's starting network,
            already evaluated by the caller). With ``steps: auto`` the plateau rule counts them as
            the evaluation at step 0, so a run that finds nothing better on validation hands back
            the weights it started from (a converged network trained further stays as it was), and
            the learning curve starts at step 0.

    Returns:
        A :class:`TrainResult`; the model is left on the training device, in eval mode.

    Raises:
        TrainingError: the loss or the gradient norm stopped being finite.
        ConfigError: the model's output does not fit the data, or the teacher's output does
            not fit the model's (names the shapes); distillation asked for without a teacher.

    Example:
        >>> from compressor.data import SyntheticConfig
        >>> from compressor.models import micronet
        >>> data = SyntheticConfig(patch_size=16, val_images=1, val_size=32).build()
        >>> result = train(micronet(base_width=4, norm="batch"), data,
        ...                TrainConfig(steps=2, batch_size=2, progress=False), evaluate_at=[1])
        >>> [step for step, _ in result.history], result.steps_done
        ([1, 2], 2)
    """
    model = as_network(model, "train")
    check_data(data, "train")
    config = config or TrainConfig()
    if data.train is not None and hasattr(data.train, "patch_size"):  # a network read from a file without trust
        check_runs_within(model, (config.batch_size, data.in_channels, data.train.patch_size, data.train.patch_size),
                          training=True)
    device = resolve_device(config.device)
    limit = config.step_limit
    checkpoints = evaluation_steps(limit, evaluate_at)  # the caller's: the callback is asked there
    periodic = set(range(config.eval_every, limit, config.eval_every)) if config.auto else set()  # what patience counts
    evaluations = set(checkpoints) | periodic
    plateau = (Plateau(config.patience, config.min_delta, lower_rate=config.schedule == "plateau", smoothing=config.smoothing,
                         lr_patience=config.lr_patience)
               if config.auto else None)
    distill = config.distill if config.distill.active else None
    if distill is not None and teacher is None:
        raise ConfigError(f"train.distill.teacher is {config.distill.teacher!r} but no teacher model was given")
    if start is not None and plateau is not None and config.bn_reestimate:
        raise ValueError("train: start describes the network as given, and train.bn_reestimate would change it before "
                         "step 0; re-estimate first, then evaluate the start (as compress does)")
    precision = resolve_precision(config.precision, device)
    with torch_threads(config.threads) as threads, deterministic_kernels(device):
        generator = torch.Generator().manual_seed(config.seed)
        model.to(device).train()
        key = stored = None
        if resume is not None:  # keyed by the weights it starts from, before anything changes them
            key = state_key(config, model, data, device=device.type, precision=precision,
                            evaluation=resolve_precision(config.evaluation_precision, device),
                            teacher=teacher if distill is not None else None,
                            start=start.score if start is not None and plateau is not None else None)
            stored = load_state(resume, key)
        if distill is not None:
            # The caller's teacher (a search's parent, the base of every candidate) stays where it is.
            here = next((parameter.device for parameter in teacher.parameters()), device)
            teacher = (teacher if here == device else copy.deepcopy(teacher).to(device)).eval()
        if config.bn_reestimate and stored is None:
            reestimate_batchnorm(model, data, batches=config.bn_reestimate, batch_size=config.batch_size, seed=config.seed)
        hints = None
        if distill is not None and distill.feature_weight:
            hints = FeatureHints.between(model, teacher, data.train[0][0][None].to(device))
            if hints is None:
                log.warning("%s: distill.feature_weight is set, but the network and its teacher share no changed block "
                            "(no layer of the same name and output shape that differs): no feature distillation",
                            description)
        weights = class_weights(data.class_frequencies(), config.class_weights)
        weights = None if weights is None else weights.to(device)
        optimizer = _optimizer(model, config)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, plateau))
        history: list[tuple[int, SegmentationMetrics]] = []
        losses: list[float] = []
        train_seconds = eval_seconds = 0.0
        stopped = False
        step = 0
        if stored is not None:
            model.load_state_dict(stored["model"])
            optimizer.load_state_dict(stored["optimizer"])
            scheduler.load_state_dict(stored["scheduler"])
            if plateau is not None:
                plateau.load(stored["plateau"])
            history = [(done, SegmentationMetrics.from_dict(metrics)) for done, metrics in stored["history"]]
            losses, step = list(stored["losses"]), int(stored["step"])
            train_seconds, eval_seconds = float(stored["train_seconds"]), float(stored["eval_seconds"])
            torch.set_rng_state(stored["rng"])
            if stored.get("cuda_rng") is not None and device.type == "cuda":
                torch.cuda.set_rng_state(stored["cuda_rng"], device)
            log.info("%s: resumed at step %d from %s", description, step, resume)
        if stored is None and start is not None and plateau is not None:  # the start is a candidate for the best
            history.append((0, start))
            plateau.update(0, start.score, model)
        batches = _batches(data, config, generator, skip=step)  # the same draws as if it had never stopped
        progress = tqdm(total=limit, initial=step, desc=description, unit="step",
                        disable=None if config.progress else True, leave=False)
        try:
            while step < limit and not stopped and not (plateau is not None and plateau.converged):
                started = time.perf_counter()
                images, masks = next(batches)
                images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
                with FeatureHints.tap(hints, model) as student_features, autocast(device, precision):
                    logits = forward_checked(model, images, data.num_classes) if step == 0 else model_output(model, images)
                logits = logits.float()  # the losses in float32 whatever the forward's precision
                loss = weighted_cross_entropy(logits, masks, weights)
                if config.dice_weight:
                    loss = loss + config.dice_weight * dice_loss(logits, masks)
                if distill is not None:
                    with torch.no_grad(), FeatureHints.tap(hints, teacher) as teacher_features, autocast(device, precision):
                        target = _teacher_logits(teacher, images, logits) if step == 0 else model_output(teacher, images)
                    target = target.float()
                    loss = loss + distill.weight * distillation_loss(logits, target, distill.temperature)
                    if hints is not None:
                        loss = loss + distill.feature_weight * hints.loss(student_features, teacher_features, target)
                value = float(loss.detach())
                step += 1
                if not math.isfinite(value):
                    raise TrainingError(step, f"the loss is {value}; lower train.lr or check the data")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
                    if not math.isfinite(norm):
                        raise TrainingError(step, f"the gradient norm is {norm}; lower train.lr")
                optimizer.step()
                scheduler.step()
                losses.append(value)
                train_seconds += time.perf_counter() - started
                progress.update()
                if step % 10 == 0 or step == limit:
                    progress.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
                if step in evaluations:
                    started = time.perf_counter()
                    share = 1.0 if step in periodic else evaluate_at_share  # what the plateau counts is whole
                    metrics = evaluate(model, data, config, share=share)
                    eval_seconds += time.perf_counter() - started
                    history.append((step, metrics))
                    if plateau is not None and step in periodic:
                        plateau.update(step, metrics.score, model)
                        log.debug("%s: step %d, validation %s %.4f (best %.4f at step %s, %d without a gain)",
                                  description, step, metrics.score_name, metrics.score, plateau.best_score,
                                  plateau.best_step, plateau.bad)
                    if checkpoint_path is not None:
                        save_checkpoint(checkpoint_path, model, step=step, metrics=metrics, optimizer=optimizer)
                    if step in checkpoints and not (plateau is not None and plateau.converged):
                        stopped = _wants_stop(callback, step, metrics)  # a run at its plateau ends complete
                    if resume is not None and not stopped:  # after the callback's word: a resumed run does not skip it
                        resume = _keep_state(resume, key, {
                            "step": step, "model": {name: value.detach().cpu() for name, value in model.state_dict().items()},
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "plateau": None if plateau is None else plateau.state(),
                            "history": [[done, metrics.to_dict()] for done, metrics in history], "losses": losses,
                            "train_seconds": train_seconds, "eval_seconds": eval_seconds, "rng": torch.get_rng_state(),
                            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                        })
        finally:
            progress.close()
        if not stopped and (not history or history[-1][0] != step):
            started = time.perf_counter()
            history.append((step, evaluate(model, data, config)))
            eval_seconds += time.perf_counter() - started
            if plateau is not None:
                plateau.update(step, history[-1][1].score, model)
            if checkpoint_path is not None:
                save_checkpoint(checkpoint_path, model, step=step, metrics=history[-1][1], optimizer=optimizer)
        metrics = history[-1][1]
        if plateau is not None and not stopped:
            plateau.restore(model)
            metrics = dict(history)[plateau.best_step]
            if checkpoint_path is not None:  # the weights of the best step, without the last step's optimizer
                save_checkpoint(checkpoint_path, model, step=plateau.best_step, metrics=metrics)
        model.eval()
        if resume is not None:
            Path(resume).unlink(missing_ok=True)  # the run has ended: nothing to resume
        return TrainResult(
            metrics=metrics, steps_done=step, stopped_early=stopped, history=history, losses=losses,
            train_seconds=train_seconds, eval_seconds=eval_seconds, device=str(device), threads=threads,
            best_step=None if plateau is None or stopped else plateau.best_step,
            converged=plateau is not None and not stopped and plateau.converged,
        )


def _teacher_logits(teacher: nn.Module, images: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """The teacher's first output, with a clear error if it cannot be compared with the student's."""
    try:
        logits = model_output(teacher, images)
    except RuntimeError as error:
        first = first_line(error)
        raise ConfigError(f"the distillation teacher cannot run on a batch of shape {tuple(images.shape)}: {first}") from None
    if logits.shape != student_logits.shape:  # model_output gives a tensor, or says why not
        raise ConfigError(
            f"the distillation teacher maps input {tuple(images.shape)} to {tuple(logits.shape)}, the model being trained to "
            f"{tuple(student_logits.shape)}; they must match (same classes, same height and width)"
        )
    return logits


@torch.no_grad()
def reestimate_batchnorm(
    model: nn.Module, data: SegmentationData, *, batches: int, batch_size: int = 8, seed: int = 0
) -> int:
    """Recomputes every batch norm's running mean and variance from ``batches`` training batches.

    The statistics are reset and averaged over the batches (cumulative, not the usual
    moving average), the weights are not touched, and the model goes back to its mode. The
    patches are drawn with their own generator, so the training that follows sees the same
    batches as without it. Returns the number of batch-norm layers re-estimated.
    """
    if batches < 1:
        return 0
    generator = torch.Generator().manual_seed(seed + 7919)

    def drawn() -> Iterator[torch.Tensor]:
        for _ in range(batches):
            indices = torch.randint(0, len(data.train), (batch_size,), generator=generator).tolist()
            yield torch.stack([data.train[index][0] for index in indices])

    return reestimate_on(model, drawn())


def _wants_stop(callback: Callback | None, step: int, metrics: SegmentationMetrics) -> bool:
    if callback is None:
        return False
    try:
        return callback(step, metrics) is False
    except StopTraining:
        return True


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


def _schedule(config: TrainConfig, plateau: Plateau | None = None) -> Callable[[int], float]:
    """The learning rate's factor at each step: a linear warm-up, then the schedule (the plateau's drops read live)."""
    warmup = int(config.warmup_fraction * config.step_limit)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "plateau":
            return plateau.lr_scale if plateau is not None else 1.0
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, config.steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _keep_state(path: str | Path, key: dict[str, Any], state: dict[str, Any]) -> str | Path | None:
    """Writes the run's state; a failed write (a full disk) is said once and the run goes on without
    it (returns None: no further writes), rather than ending a training that would finish."""
    try:
        save_state(path, key, state)
    except (CompressorError, OSError) as error:
        log.warning("%s: the training state could not be written (%s): this run goes on, but cannot be resumed",
                    path, first_line(error))
        with contextlib.suppress(OSError):
            Path(path).unlink(missing_ok=True)  # an older state would resume from before this point
        return None
    return path


def _batches(
    data: SegmentationData, config: TrainConfig, generator: torch.Generator, *, skip: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled full batches; every epoch is a new permutation of the patches. The first
    ``skip`` batches are drawn but not made (a resumed run: the generator ends where it was)."""
    count = len(data.train)
    while True:
        order = torch.randperm(count, generator=generator).tolist()
        for start in range(0, max(count - config.batch_size, 0) + 1, config.batch_size):
            if skip:
                skip -= 1
                if config.augment:
                    torch.randint(0, 8, (len(order[start:start + config.batch_size]),), generator=generator)
                continue
            items = [data.train[index] for index in order[start:start + config.batch_size]]
            images = torch.stack([image for image, _ in items])
            masks = torch.stack([mask for _, mask in items])
            if config.augment:
                images, masks = _augment(images, masks, generator)
            yield images, masks


def _augment(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One of the 8 symmetries of the square for each patch: a flip, then 0-3 quarter turns."""
    choices = torch.randint(0, 8, (images.shape[0],), generator=generator).tolist()
    out_images, out_masks = [], []
    for image, mask, choice in zip(images, masks, choices):
        if choice >= 4:
            image, mask = image.flip(-1), mask.flip(-1)
        turns = choice % 4
        out_images.append(torch.rot90(image, turns, dims=(-2, -1)))
        out_masks.append(torch.rot90(mask, turns, dims=(-2, -1)))
    return torch.stack(out_images), torch.stack(out_masks)
