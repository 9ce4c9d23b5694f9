"""Training: it learns, it is deterministic, it fails loudly, it stops when told, it saves."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from monai.losses import DiceLoss
from torch import nn

from compressor.data import SyntheticConfig
from compressor.data.base import Scene
from compressor.errors import ConfigError
from compressor.metrics import ConfusionMatrix
from compressor.models import micronet, unet
from compressor.train import (
    CheckpointError,
    StopTraining,
    TrainConfig,
    TrainingError,
    class_weights,
    deterministic_kernels,
    dice_loss,
    evaluate,
    load_checkpoint,
    predict_scene,
    save_checkpoint,
    scene_share,
    seed_everything,
    train,
    window_corners,
)

FAST = TrainConfig(steps=6, batch_size=4, progress=False, eval_window=64, eval_overlap=16)


@pytest.fixture(scope="module")
def buildings():
    """Binary synthetic scenes: small patches, two 128x128 validation scenes."""
    return SyntheticConfig(labels="binary", patch_size=32, val_images=2, val_size=128, seed=1).build()


def _small_model(seed: int = 0, **kwargs) -> nn.Module:
    """A narrow U-Net: learns the synthetic buildings in seconds (a Micro-Net this narrow
    squeezes its fire modules to 2 channels and barely learns)."""
    seed_everything(seed)
    return unet(base_width=8, depth=3, norm="batch", **kwargs)


def test_a_short_training_clearly_beats_the_all_background_predictor(buildings):
    config = TrainConfig(steps=120, batch_size=8, progress=False, eval_window=128)
    result = train(_small_model(), buildings, config)
    background = ConfusionMatrix(2)
    for scene in buildings.val:
        labels = scene.class_indices()
        background.update(np.zeros_like(labels), labels)
    baseline = background.compute(buildings.class_names)
    assert baseline.iou_of("building") == 0.0
    assert result.metrics.iou_of("building") > 0.3, result.metrics.summary()
    assert result.metrics.miou > baseline.miou + 0.15
    assert result.metrics.mean_f1 > baseline.mean_f1 + 0.15
    assert np.mean(result.losses[-20:]) < 0.85 * np.mean(result.losses[:10])


def test_the_same_seed_gives_the_same_metrics(buildings):
    first = train(_small_model(seed=3), buildings, dataclasses.replace(FAST, seed=3))
    second = train(_small_model(seed=3), buildings, dataclasses.replace(FAST, seed=3))
    other = train(_small_model(seed=4), buildings, dataclasses.replace(FAST, seed=4))
    assert first.losses == second.losses
    assert first.metrics == second.metrics
    assert first.losses != other.losses


def test_a_nan_loss_is_a_training_error_naming_the_step(buildings):
    config = dataclasses.replace(FAST, optimizer="sgd", lr=1e30, momentum=0.0, grad_clip=None)
    with pytest.raises(TrainingError, match=r"training failed at step \d+: the loss is (nan|inf)") as error:
        train(_small_model(), buildings, config)
    assert 1 < error.value.step <= FAST.steps


def test_an_infinite_gradient_is_a_training_error(buildings):
    class Steep(nn.Module):
        """Finite logits and loss, but gradients whose norm overflows float32."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * 1e30

    with pytest.raises(TrainingError, match=r"training failed at step 1: the gradient norm is inf"):
        train(Steep(), buildings, FAST)


def test_intermediate_evaluations_feed_the_callback_which_can_stop(buildings):
    calls = []

    def keep_going_until_three(step, metrics):
        calls.append((step, metrics.pixels))
        return step < 3

    config = dataclasses.replace(FAST, steps=9)
    result = train(_small_model(), buildings, config, evaluate_at=[1 / 9, 1 / 3, 2 / 3], callback=keep_going_until_three)
    assert calls == [(1, 2 * 128 * 128), (3, 2 * 128 * 128)]
    assert result.stopped_early and result.steps_done == 3 and len(result.losses) == 3
    assert [step for step, _ in result.history] == [1, 3] and result.metrics is result.history[-1][1]

    def stop(step, metrics):
        raise StopTraining

    stopped = train(_small_model(), buildings, config, evaluate_at=[2], callback=stop)
    assert stopped.stopped_early and stopped.steps_done == 2

    finished = train(_small_model(), buildings, config, evaluate_at=[1 / 3], callback=lambda step, metrics: None)
    assert not finished.stopped_early and [step for step, _ in finished.history] == [3, 9]


def test_evaluation_covers_every_validation_pixel(buildings):
    model = _small_model().train()
    metrics = evaluate(model, buildings, FAST)
    assert metrics.pixels == sum(scene.height * scene.width for scene in buildings.val)
    assert model.training  # training goes on after an intermediate evaluation


def test_a_share_of_the_windows_scores_only_the_pixels_those_windows_cover(buildings):
    """A rung's cheap evaluation: a fixed, evenly spread subset of each scene's windows, scored on
    what it covers, with the same predictions there as the whole evaluation's."""
    model = _small_model().eval()
    config = dataclasses.replace(FAST, eval_window=48, eval_overlap=16)
    scene = buildings.val[0]
    corners = window_corners(scene, 48, 16)
    half = window_corners(scene, 48, 16, share=0.5)
    assert len(corners) == 16 and len(half) == 8 and half[0] == corners[0] and half[-1] == corners[-1]
    assert set(half) < set(corners) and window_corners(scene, 48, 16, share=0.01) == [corners[0]]
    covered = np.zeros((scene.height, scene.width), bool)
    for top, left in half:
        covered[top:top + 48, left:left + 48] = True
    assert 0 < covered.sum() < covered.size
    expected = ConfusionMatrix(2)
    for each in buildings.val:  # every scene has the same size here: the same corners
        probabilities = _cover_only(model, each, buildings, half)
        expected.update(probabilities.argmax(axis=0)[covered], each.class_indices()[covered])
    sampled = evaluate(model, buildings, config, share=0.5)
    assert sampled.pixels == 2 * covered.sum()
    assert sampled.confusion == expected.compute(buildings.class_names).confusion
    whole = evaluate(model, buildings, config)
    assert whole.pixels == 2 * covered.size and whole == evaluate(model, buildings, config, share=1.0)


def test_a_scene_whose_share_of_windows_misses_a_class_is_read_whole(buildings):
    """A strip of 4 windows whose buildings lie in the middle two: half of its windows (the first
    and the last) would score no building at all, so the scene is read whole; with buildings in
    the first window too, or only unlabelled pixels in the middle, half is enough."""
    labels = np.zeros((64, 256), np.uint8)
    labels[:, 100:140] = 1
    image = np.random.default_rng(0).random((64, 256, 3)).astype(np.float32)
    strip = Scene("strip", image, labels)
    assert window_corners(strip, 64, 0, share=0.5) == [(0, 0), (0, 192)]
    assert scene_share(strip, labels, 64, 0, 0.5) == 1.0
    model = _small_model().eval()
    config = dataclasses.replace(FAST, eval_window=64, eval_overlap=0)
    data = dataclasses.replace(buildings, val=(strip,))
    assert evaluate(model, data, config, share=0.5) == evaluate(model, data, config)  # read whole
    both = labels.copy()
    both[:, 10:20] = 1
    assert scene_share(strip, both, 64, 0, 0.5) == 0.5
    unlabelled = labels.copy()
    unlabelled[:, 100:140] = 255
    assert scene_share(strip, unlabelled, 64, 0, 0.5) == 0.5 and scene_share(strip, both, 64, 0, 1.0) == 1.0
    halved = dataclasses.replace(buildings, val=(Scene("strip", image, both),))
    assert evaluate(model, halved, config, share=0.5).pixels == 2 * 64 * 64


def _cover_only(model, scene, data, corners, window=48):
    """Probabilities averaged over ``corners``' windows alone (what a share of them predicts)."""
    total = np.zeros((data.num_classes, scene.height, scene.width), np.float32)
    hits = np.zeros((scene.height, scene.width), np.float32)
    with torch.no_grad():
        for top, left in corners:
            window_image = data.normalization(scene.read(top, left, window, window)[0])
            total[:, top:top + window, left:left + window] += model(torch.from_numpy(window_image)[None]).softmax(1)[0].numpy()
            hits[top:top + window, left:left + window] += 1
    return total / np.maximum(hits, 1)


def test_the_evaluations_at_rungs_read_their_share_and_the_last_reads_everything(buildings):
    pixels = []
    config = dataclasses.replace(FAST, steps=9)
    result = train(_small_model(), buildings, config, evaluate_at=[1 / 9, 1 / 3],
                   callback=lambda step, metrics: pixels.append(metrics.pixels), evaluate_at_share=0.3)
    every = sum(scene.height * scene.width for scene in buildings.val)
    assert [step for step, _ in result.history] == [1, 3, 9]
    assert len(pixels) == 2 and all(0 < count < every for count in pixels)
    assert result.metrics.pixels == every  # the run's result is the whole validation set's
    auto = dataclasses.replace(FAST, steps="auto", schedule="plateau", eval_every=3, max_steps=9, patience=5)
    counted = train(_small_model(), buildings, auto, evaluate_at=[1, 3], evaluate_at_share=0.3)
    assert [(step, metrics.pixels == every) for step, metrics in counted.history] == [(1, False), (3, True), (6, True),
                                                                                       (9, True)]


def test_sliding_window_equals_one_pass_for_a_pixelwise_model(buildings):
    """With a 1x1 conv there is no context: any window layout must give the full-image answer."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, 2, 1).eval()
    scene = buildings.val[0]
    windowed = predict_scene(model, scene, buildings, window=48, overlap=20, batch_size=3)
    with torch.no_grad():
        whole = model(torch.from_numpy(buildings.normalization(scene.image))[None]).softmax(1)[0].numpy()
    np.testing.assert_allclose(windowed, whole, atol=1e-5)


class _Divisible(nn.Module):
    """Refuses inputs whose sides are not multiples of ``divisor``, as an smp FPN does with 32."""

    def __init__(self, inner: nn.Module, divisor: int) -> None:
        super().__init__()
        self.inner, self.divisor = inner, divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.divisor or x.shape[-2] % self.divisor:
            raise RuntimeError(f"Wrong input shape {tuple(x.shape[-2:])}\nsecond line")
        return self.inner(x)


def test_windows_of_a_narrow_scene_are_padded_for_a_model_that_refuses_their_size(buildings):
    """A 128-pixel scene under a 192-pixel window: the model wants multiples of 96, so the
    window is padded to 192 by reflection and the answer cropped back where it belongs."""
    torch.manual_seed(0)
    inner = nn.Conv2d(3, 2, 3, padding=1).eval()
    scene = buildings.val[0]
    windowed = predict_scene(_Divisible(inner, 96), scene, buildings, window=192, overlap=16)
    image = np.pad(buildings.normalization(scene.image), [(0, 0), (0, 64), (0, 64)], mode="symmetric")
    with torch.no_grad():
        whole = inner(torch.from_numpy(image)[None]).softmax(1)[0, :, :128, :128].numpy()
    np.testing.assert_allclose(windowed, whole, atol=1e-5)
    # a model that accepts the scene's size is run on it as it is (zero padding at the border)
    with torch.no_grad():
        plain = inner(torch.from_numpy(buildings.normalization(scene.image))[None]).softmax(1)[0].numpy()
    np.testing.assert_allclose(predict_scene(inner, scene, buildings, window=192), plain, atol=1e-5)


def test_windows_are_padded_for_a_captured_graph_that_refuses_their_size(buildings):
    """A network captured by a transform keeps its input rule as InputSizeError, not RuntimeError."""
    from compressor.errors import InputSizeError

    class Captured(_Divisible):
        def forward(self, x):
            if x.shape[-1] % self.divisor or x.shape[-2] % self.divisor:
                raise InputSizeError(f"input {x.shape[-2]}x{x.shape[-1]}: takes sides that {self.divisor} divides")
            return self.inner(x)

    inner = nn.Conv2d(3, 2, 1).eval()
    probabilities = predict_scene(Captured(inner, 96), buildings.val[0], buildings, window=192)
    assert probabilities.shape == (2, 128, 128)


def test_a_window_size_the_model_refuses_is_named(buildings):
    model = _Divisible(nn.Conv2d(3, 2, 1), 100)
    with pytest.raises(ConfigError, match=r"cannot run on evaluation windows of \(128, 128\) pixels \(Wrong input "
                                          r"shape \(128, 128\)\) nor padded to 192x192 \(Wrong input shape \(192, 192\)\); "
                                          r"set train.eval_window") as error:
        predict_scene(model, buildings.val[0], buildings, window=192)
    assert "second line" not in str(error.value)
    # a full-size window is not retried: the model's own error, as it is
    with pytest.raises(RuntimeError, match=r"Wrong input shape \(64, 64\)"):
        predict_scene(model, buildings.val[0], buildings, window=64)


def test_an_out_of_memory_error_on_the_first_window_is_not_taken_for_its_size(buildings):
    class OutOfMemory(nn.Module):
        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        predict_scene(OutOfMemory(), buildings.val[0], buildings, window=192)


def test_dice_loss_agrees_with_monai():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 9, 7, generator=generator)
    target = torch.randint(0, 4, (3, 9, 7), generator=generator)
    reference = DiceLoss(softmax=True, to_onehot_y=True, batch=True, smooth_nr=1.0, smooth_dr=1.0)
    assert float(dice_loss(logits, target)) == pytest.approx(float(reference(logits, target[:, None])), abs=1e-6)


def test_auto_class_weights_favour_rare_classes_and_average_one_over_pixels():
    frequencies = np.array([0.9, 0.08, 0.02, 0.0])
    weights = class_weights(frequencies, "auto").numpy()
    assert weights[0] < weights[1] < weights[2] == weights[3]
    assert float((weights * frequencies).sum()) == pytest.approx(1.0)
    assert weights[2] / weights[1] == pytest.approx(2.0)  # 1 / sqrt(frequency)
    assert class_weights(frequencies, "none") is None
    with pytest.raises(ConfigError, match="expected 'auto', 'none' or 4 numbers"):
        class_weights(frequencies, [1.0, 2.0])


def test_a_model_with_the_wrong_number_of_classes_is_named(buildings):
    with pytest.raises(ConfigError, match=r"maps input \(4, 3, 32, 32\) to \(4, 5, 32, 32\); training needs \(4, 2, 32, 32\)"):
        train(_small_model(num_classes=5), buildings, FAST)
    with pytest.raises(ConfigError, match=r"cannot run on a batch of shape \(4, 3, 32, 32\)"):
        train(_small_model(in_channels=1), buildings, FAST)


def test_checkpoint_round_trip(buildings, tmp_path):
    model = _small_model()
    result = train(model, buildings, FAST, checkpoint_path=tmp_path / "during.pt")
    assert load_checkpoint(tmp_path / "during.pt").step == FAST.steps
    path = save_checkpoint(tmp_path / "run" / "model.pt", model, step=6, metrics=result.metrics, extra={"model": "micronet"})
    assert sorted(item.name for item in path.parent.iterdir()) == ["model.pt"]  # no temporary file left
    fresh = _small_model(seed=99).eval()
    example = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(fresh(example), model(example))
    checkpoint = load_checkpoint(path, fresh)
    assert torch.equal(fresh(example), model(example))
    assert checkpoint.step == 6 and checkpoint.extra == {"model": "micronet"}
    assert checkpoint.metrics["score"] == result.metrics.to_dict()["score"]
    with pytest.raises(CheckpointError, match="weights do not fit the model"):
        load_checkpoint(path, micronet(base_width=4, norm="batch"))
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: not a checkpoint: a text file"):
        load_checkpoint(tmp_path / "garbage.pt")
    with pytest.raises(CheckpointError, match="missing.pt: no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_failed_save_leaves_the_previous_checkpoint_intact(buildings, tmp_path):
    model = _small_model()
    path = save_checkpoint(tmp_path / "model.pt", model, step=1)
    before = path.read_bytes()

    class Unsaveable(nn.Module):
        def state_dict(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, Unsaveable(), step=2)
    assert path.read_bytes() == before
    assert [item.name for item in tmp_path.iterdir()] == ["model.pt"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "train.steps must be >= 1"),
        ({"lr": -1.0}, "train.lr must be > 0"),
        ({"eval_overlap": 256}, r"train.eval_overlap must be in \[0, eval_window\)"),
        ({"device": "tpu"}, "train.device: unknown device 'tpu'"),
    ],
)
def test_bad_settings_are_named(buildings, changes, message):
    with pytest.raises(ConfigError, match=message):
        train(_small_model(), buildings, TrainConfig(progress=False, **changes))


def test_deterministic_kernels_are_asked_for_on_a_gpu_and_the_settings_restored(monkeypatch):
    """Only flags change (no GPU needed): on a CUDA device cuDNN and PyTorch use deterministic kernels."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = torch.backends.cudnn
    before = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    with deterministic_kernels(torch.device("cpu")):
        assert (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled()) == before
    with deterministic_kernels(torch.device("cuda")):
        assert cudnn.deterministic and not cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled()) == before
