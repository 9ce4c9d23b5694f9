"""``compressor.data.from_arrays``: a user's images and masks held in memory as the data of compress and training."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import compressor
from compressor.data import IGNORE_INDEX, DataError, from_arrays
from compressor.train import TrainConfig

CLASSES = ("background", "building")


def pairs(count: int, size: int = 64, channels: int = 3, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    images = [torch.rand(channels, size, size, generator=generator) * 1000 for _ in range(count)]
    return [(image, (image[0] > 500).long()) for image in images]


def test_tensors_and_arrays_in_either_layout_give_the_same_patches():
    train, val = pairs(2), pairs(1, seed=1)
    as_tensors = from_arrays(train, val, class_names=CLASSES, patch_size=32)
    as_arrays = from_arrays([(image.permute(1, 2, 0).numpy(), mask.numpy()) for image, mask in train],
                            [(image.permute(1, 2, 0).numpy(), mask.numpy().astype(bool)) for image, mask in val],
                            class_names=CLASSES, patch_size=32)
    assert len(as_tensors.train) == len(as_arrays.train) == 2 * 4  # a 64-pixel image, patches of 32 without overlap
    for index in range(len(as_tensors.train)):
        (image_a, mask_a), (image_b, mask_b) = as_tensors.train[index], as_arrays.train[index]
        assert torch.equal(image_a, image_b) and torch.equal(mask_a, mask_b)
    assert as_tensors.in_channels == 3 and as_tensors.class_names == CLASSES
    assert np.array_equal(as_tensors.val[0].class_indices(), as_arrays.val[0].class_indices())
    # normalized by the training images' statistics: about zero mean
    assert abs(float(torch.stack([as_tensors.train[i][0] for i in range(8)]).mean())) < 0.2
    one_band = from_arrays([(image[0].numpy(), mask) for image, mask in train], val=[(val[0][0][0], val[0][1])],
                           class_names=CLASSES, patch_size=32)
    assert one_band.in_channels == 1 and one_band.train[0][0].shape == (1, 32, 32)


def test_unlabelled_pixels_are_counted_nowhere():
    train, val = pairs(2), pairs(1, seed=1)
    image, mask = val[0]
    half = mask.clone()
    half[:, 32:] = IGNORE_INDEX
    network = compressor.unet(base_width=4).eval()
    config = TrainConfig(eval_window=64, eval_overlap=0, threads=1)
    whole = compressor.evaluate(network, from_arrays(train, [(image, mask)], class_names=CLASSES), config)
    labelled = compressor.evaluate(network, from_arrays(train, [(image, half)], class_names=CLASSES), config)
    assert np.sum(whole.confusion) == 64 * 64 and np.sum(labelled.confusion) == 64 * 32


def image_with(value: float) -> torch.Tensor:
    image = torch.rand(3, 64, 64)
    image[0, 5, 5] = value
    return image


MASK = torch.zeros(64, 64, dtype=torch.long)


@pytest.mark.parametrize(("train", "val", "settings", "message"), [
    ([(torch.rand(3, 64, 64), torch.zeros(64, 32, dtype=torch.long))], pairs(1), {}, "train[0]: image is 64x64 but its mask is 32x64$"),
    ([(torch.rand(3, 64, 64).numpy(), MASK)], pairs(1), {}, "train[0]: image is 64x3 but its mask is 64x64, an array is (H, W, C): this one looks like (C, H, W)"),
    (pairs(1), [(torch.rand(3, 64, 64), torch.full((64, 64), 5))], {}, "val[0]: mask values [5] are not class indices below 2$"),
    (pairs(1), [(torch.rand(3, 64, 64), torch.full((64, 64), -1))], {}, "val[0]: a mask holds class indices (and 255: unlabelled), got values from -1 to -1$"),
    (pairs(1), [(torch.rand(3, 64, 64), torch.full((64, 64), 256))], {}, "val[0]: a mask holds class indices (and 255: unlabelled), got values from 256 to 256$"),
    (pairs(1), [(torch.rand(3, 64, 64), torch.rand(64, 64))], {}, "val[0]: a mask holds class indices (and 255: unlabelled), got a float32 mask$"),
    (pairs(1), [(torch.rand(3, 64, 64), torch.full((64, 64), IGNORE_INDEX))], {}, "val[0]: no labelled pixel"),
    (pairs(1) + pairs(1, channels=4), pairs(1), {}, "the images have different channel counts: 3 (train[0] first), 4 (train[1] first)$"),
    (pairs(1), [], {}, "from_arrays needs at least one training and one validation image, got 1 and 0$"),
    (pairs(1), iter([]), {}, "from_arrays needs at least one training and one validation image, got 1 and 0$"),
    (pairs(1, size=16), pairs(1), {}, "train[0]: 16x16 is smaller than patch_size 64$"),
    ([torch.rand(3, 64, 64)], pairs(1), {}, "train[0]: expected an (image, mask) pair, got Tensor$"),
    ([(torch.rand(1, 3, 64, 64), MASK)], pairs(1), {}, "train[0]: expected an image tensor (C, H, W) or (H, W), got shape (1, 3, 64, 64)$"),
    ([(torch.rand(3, 0, 0), torch.zeros(0, 0, dtype=torch.long))], pairs(1), {}, "train[0]: an empty image (0x0)$"),
    ([(image_with(float("nan")), MASK)], pairs(1), {}, "train[0]: the image holds NaN or infinite values (no-data?)"),
    ([(torch.rand(3, 64, 64) + 0j, MASK)], pairs(1), {}, "train[0]: an image of real numbers is needed, got complex64$"),
    (pairs(1), pairs(1), {"class_names": "building"}, "class_names: a sequence of names, one per class index, got 'building'$"),
    (pairs(1), pairs(1), {"class_names": [str(i) for i in range(300)]}, "class_names: need 2 to 255 classes"),
    (pairs(1), pairs(1), {"stride": 0}, "stride must be a whole number >= 1, got 0$"),
    (pairs(1), pairs(1), {"patch_size": 32.0}, "patch_size must be a whole number >= 1, got 32.0$"),
], ids=["sizes", "layout", "mask-values", "negative", "above-255", "float-mask", "unlabelled-val", "channels", "no-val",
        "empty-generator", "small", "no-pair", "4d", "empty-image", "nan", "complex", "one-string", "too-many-classes",
        "stride", "float-patch"])
def test_what_is_no_data_is_refused_by_the_pair_at_fault(train, val, settings, message):
    with pytest.raises(DataError) as refused:
        from_arrays(train, val, **{"class_names": CLASSES, "patch_size": 64, **settings})
    assert re.match(re.escape(message).replace(r"\$", "$"), str(refused.value)), str(refused.value)


def test_generators_half_precision_and_the_callers_later_changes():
    image, mask = pairs(1)[0]
    data = from_arrays((pair for pair in [(image.bfloat16(), mask)]), iter([(image.half(), mask)]),
                       class_names=CLASSES, patch_size=32)
    assert data.train[0][0].dtype == torch.float32 and len(data.train) == 4
    before = data.train[0][0].clone()
    image.mul_(0)  # the caller reuses its tensor: the data kept its own copy
    with torch.no_grad():
        assert torch.equal(from_arrays([(image.bfloat16(), mask)], [(image, mask)], class_names=CLASSES,
                                       patch_size=32).train[0][1], data.train[0][1])
    assert torch.equal(data.train[0][0], before)


def test_the_normalization_is_the_training_images_own():
    train = [(torch.rand(1, 64, 64), MASK)]
    val = [(torch.rand(1, 64, 64) * 100 + 100, MASK)]
    data = from_arrays(train, val, class_names=CLASSES, patch_size=32)
    assert 0.4 < data.normalization.mean[0] < 0.6 and data.normalization.high[0] <= 1.0


def test_compress_takes_data_held_in_memory_without_a_dataset_in_the_experiment():
    data = from_arrays(pairs(2), pairs(1, seed=1), class_names=CLASSES, patch_size=32)
    experiment = compressor.Experiment.from_dict({"train": {"steps": 2, "batch_size": 4, "progress": False,
                                                            "threads": 1, "eval_window": 64, "eval_overlap": 0},
                                                  "finetune": {"reconstruct": "none", "bn_reestimate": 0}})
    result = compressor.compress(compressor.unet(base_width=4), "fire", experiment, data=data)
    assert result.example_shape == (1, 3, 32, 32)  # the recipe applied at the data's own patches
    assert result.student_cost.params < result.teacher_cost.params
    assert result.result.steps_done == 2
