"""Evaluation on whole validation scenes: an overlapping sliding window, probabilities averaged."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from compressor.api_inputs import as_network, check_data
from compressor.data.base import Scene, SegmentationData
from compressor.data.tiling import window_starts
from compressor.errors import ConfigError, InputSizeError, first_line
from compressor.metrics import IGNORE_INDEX, ConfusionMatrix, SegmentationMetrics
from compressor.models.construction import check_runs_within
from compressor.outputs import model_output
from compressor.train.config import TrainConfig
from compressor.train.precision import autocast, resolve_precision

__all__ = ["predict_scene", "evaluate", "window_corners", "scene_share"]


def forward_checked(model: nn.Module, images: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The first forward pass, with a clear error if the model does not fit the data."""
    try:
        logits = model_output(model, images)
    except RuntimeError as error:
        first = first_line(error)
        raise ConfigError(f"the model cannot run on a batch of shape {tuple(images.shape)}: {first}") from None
    expected = (images.shape[0], num_classes, *images.shape[2:])
    if tuple(logits.shape) != expected:
        raise ConfigError(
            f"the model maps input {tuple(images.shape)} to {tuple(logits.shape)}; "
            f"training needs {expected} (one logit map per class, same height and width)"
        )
    return logits


@torch.inference_mode()
def predict_scene(
    model: nn.Module,
    scene: Scene,
    data: SegmentationData,
    *,
    window: int = 256,
    overlap: int = 32,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Class probabilities for every pixel of ``scene``, ``(classes, H, W)`` float32.

    Windows of ``window`` pixels (smaller for a smaller scene) cover the scene with
    ``overlap`` pixels shared between neighbours; the last row and column of windows
    are aligned with the border. Where windows overlap their probabilities are averaged.
    The model is run as it is (call ``model.eval()`` first). A model that refuses the smaller
    windows of a scene narrower than ``window`` (an smp FPN wants sides divisible by 32) gets
    them padded to ``window`` by reflection, and its output cropped back.

    Raises:
        ConfigError: the model refuses windows of ``window`` pixels.
    """
    total, hits = _summed_probabilities(model, scene, data, window=window, overlap=overlap, batch_size=batch_size,
                                        device=device)
    return total / hits


def window_corners(scene: Scene, window: int, overlap: int, share: float = 1.0) -> list[tuple[int, int]]:
    """The top-left corners of the sliding windows over ``scene`` (row by row), or a fixed ``share`` of
    them: ``ceil(share * n)`` spread evenly over the list, the first and the last included, the same
    whatever the model and the run (what a search's rung evaluations read, so trials compare alike).

    Example:
        >>> from compressor.data.base import Scene
        >>> import numpy as np
        >>> scene = Scene("s", np.zeros((238, 900, 1), np.float32), np.zeros((238, 900), np.uint8))
        >>> window_corners(scene, 256, 32), window_corners(scene, 256, 32, share=0.5)
        ([(0, 0), (0, 224), (0, 448), (0, 644)], [(0, 0), (0, 644)])
    """
    height, width = _window_size(scene, window)
    stride_y, stride_x = max(1, height - overlap), max(1, width - overlap)
    corners = [
        (top, left)
        for top in window_starts(scene.height, height, stride_y)
        for left in window_starts(scene.width, width, stride_x)
    ]
    if share >= 1.0:
        return corners
    kept = max(1, math.ceil(share * len(corners)))
    return [corners[index] for index in sorted({round(index) for index in np.linspace(0, len(corners) - 1, kept)})]


def _window_size(scene: Scene, window: int) -> tuple[int, int]:
    """The height and width of ``scene``'s sliding windows: ``window``, or the scene's side where it is smaller."""
    return min(window, scene.height), min(window, scene.width)


def scene_share(scene: Scene, labels: np.ndarray, window: int, overlap: int, share: float) -> float:
    """``share`` if that share of ``scene``'s windows (:func:`window_corners`) covers a pixel of
    every class its ``labels`` hold (unlabelled pixels aside), else 1: the whole scene, so that a
    subsample never scores a class as absent that the scene has."""
    if share >= 1.0:
        return 1.0
    height, width = _window_size(scene, window)
    covered = np.zeros(labels.shape[:2], dtype=bool)
    for top, left in window_corners(scene, window, overlap, share):
        covered[top:top + height, left:left + width] = True
    labelled = labels != IGNORE_INDEX
    every, sampled = np.unique(labels[labelled]), np.unique(labels[labelled & covered])
    return share if np.array_equal(every, sampled) else 1.0


@torch.inference_mode()
def _summed_probabilities(
    model: nn.Module,
    scene: Scene,
    data: SegmentationData,
    *,
    window: int,
    overlap: int,
    batch_size: int,
    device: torch.device | str,
    share: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The class probabilities of the windows :func:`window_corners` gives, summed where they overlap
    ``(classes, H, W)``, and how many windows cover each pixel ``(H, W)`` (0 outside a ``share``)."""
    height, width = _window_size(scene, window)
    corners = window_corners(scene, window, overlap, share)
    total = np.zeros((data.num_classes, scene.height, scene.width), dtype=np.float32)
    hits = np.zeros((scene.height, scene.width), dtype=np.float32)
    padded: tuple[int, int] | None = None
    for start in range(0, len(corners), batch_size):
        chunk = corners[start:start + batch_size]
        windows = np.stack([data.normalization(scene.read(top, left, height, width)[0]) for top, left in chunk])
        if start:
            probabilities = _probabilities(model, windows, padded, device)
        else:  # the first batch decides whether the windows need padding
            padded, probabilities = _first_batch(model, windows, window, device)
        for (top, left), probability in zip(chunk, probabilities):
            total[:, top:top + height, left:left + width] += probability
            hits[top:top + height, left:left + width] += 1
    return total, hits


def _probabilities(
    model: nn.Module, windows: np.ndarray, padded: tuple[int, int] | None, device: torch.device | str
) -> np.ndarray:
    """Class probabilities of a batch of windows, run padded to ``padded`` and cropped back."""
    height, width = windows.shape[-2:]
    if padded is not None:
        pads = [(0, 0), (0, 0), (0, padded[0] - height), (0, padded[1] - width)]
        windows = np.pad(windows, pads, mode="symmetric")
    logits = model_output(model, torch.from_numpy(windows).to(device))
    return logits.float().softmax(dim=1).cpu().numpy()[..., :height, :width]


def _first_batch(
    model: nn.Module, windows: np.ndarray, window: int, device: torch.device | str
) -> tuple[tuple[int, int] | None, np.ndarray]:
    """The padding the windows need (``None``: none, else ``(window, window)``) and their probabilities.

    Only windows clipped to a smaller scene are tried padded; any other failure (out of memory, a
    full-size window the model refuses) is the model's own error, raised as it is.
    """
    if windows.shape[-2:] == (window, window):
        return None, _probabilities(model, windows, None, device)
    try:
        return None, _probabilities(model, windows, None, device)
    except (RuntimeError, InputSizeError) as error:  # the model's own check, or a captured graph's
        if _not_about_size(error):
            raise
        refusal = first_line(error)
    try:
        return (window, window), _probabilities(model, windows, (window, window), device)
    except (RuntimeError, InputSizeError) as error:
        if _not_about_size(error):
            raise
        raise ConfigError(
            f"the model cannot run on evaluation windows of {tuple(windows.shape[-2:])} pixels ({refusal}) nor "
            f"padded to {window}x{window} ({first_line(error)}); set train.eval_window to a size it accepts"
        ) from None


def _not_about_size(error: BaseException) -> bool:
    """An error that no window size would cure: out of memory, or a Ctrl-C torch wrapped."""
    text = str(error)
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text or "KeyboardInterrupt" in text


def evaluate(
    model: nn.Module, data: SegmentationData, config: TrainConfig | None = None, *, split: str = "val",
    share: float = 1.0,
) -> SegmentationMetrics:
    """Metrics of ``model`` over every labelled pixel of every scene of ``split`` (sliding window).

    ``split`` is ``val`` (what training and search choose by) or ``test`` (the held-out
    region, for reported numbers only). ``share`` < 1 reads only that share of each scene's
    windows (:func:`window_corners`: a fixed subsample, the same for every model) and scores
    the pixels they cover: a cheaper estimate, what a search's rungs compare trials by. A scene
    whose share of windows would miss a class its labels hold is read whole (:func:`scene_share`:
    decided by the labels alone, so again the same for every model). The model is evaluated in
    eval mode and returned to the mode it was in, its forward passes in ``config``'s
    :attr:`~.TrainConfig.evaluation_precision` (bf16 autocast, or fp32; probabilities and the
    confusion matrix always in float32).

    Raises:
        DataError: ``split="test"`` on data without a test region.
    """
    model = as_network(model, "evaluate")
    check_data(data, "evaluate")
    config = config or TrainConfig()
    check_runs_within(model, (config.eval_batch_size, data.in_channels, config.eval_window, config.eval_window))
    scenes = data.scenes(split)
    device = next((parameter.device for parameter in model.parameters()), torch.device("cpu"))
    precision = resolve_precision(config.evaluation_precision, device)
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(data.num_classes)
    try:
        with autocast(device, precision):
            for scene in scenes:
                labels = scene.class_indices()
                read = scene_share(scene, labels, config.eval_window, config.eval_overlap, share)
                total, hits = _summed_probabilities(
                    model, scene, data, window=config.eval_window, overlap=config.eval_overlap,
                    batch_size=config.eval_batch_size, device=device, share=read,
                )
                predicted = total.argmax(axis=0)  # the argmax of the sum: of the mean
                if read < 1.0:
                    covered = hits > 0
                    predicted, labels = predicted[covered], labels[covered]
                matrix.update(predicted, labels)
    finally:
        model.train(was_training)
    return matrix.compute(data.class_names)
