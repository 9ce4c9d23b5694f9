"""Data from images and masks already in memory: a user's own tensors or arrays, for ``data=``.

:func:`from_arrays` cuts the training images into patches and keeps the validation (and test) images
whole, evaluated with the sliding window as every dataset is: the :class:`SegmentationData` that
:func:`compressor.compress`, :func:`compressor.train_model`-style training (``compressor.train.train``)
and :func:`compressor.evaluate` take, without a dataset registered or a file written.

Example:
    >>> import torch
    >>> from compressor.data.arrays import from_arrays
    >>> image, mask = torch.rand(3, 96, 96), (torch.rand(96, 96) > 0.5).long()
    >>> data = from_arrays([(image, mask)], [(image, mask)], class_names=("background", "building"), patch_size=32)
    >>> data.in_channels, len(data.train), data.train[0][0].shape
    (3, 9, torch.Size([3, 32, 32]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from compressor.data.base import (
    IGNORE_INDEX,
    DataError,
    Normalization,
    Scene,
    SegmentationData,
    class_index_decoder,
)
from compressor.data.tiling import PatchDataset

__all__ = ["from_arrays"]

Pair = tuple[Any, Any]


def from_arrays(
    train: Sequence[Pair],
    val: Sequence[Pair],
    *,
    class_names: Sequence[str],
    test: Sequence[Pair] = (),
    patch_size: int = 64,
    stride: int | None = None,
    name: str = "arrays",
) -> SegmentationData:
    """:class:`SegmentationData` of ``(image, mask)`` pairs held in memory.

    Args:
        train: the images training cuts into ``patch_size`` patches on a grid of ``stride``.
        val: the images early stopping and every choice are made on, each evaluated whole.
        class_names: one name per class index (at least 2); the second is the one ``score``
            reads for two classes (``background``, ``building``: building IoU).
        test: images kept for the numbers reported at the end only (``evaluate(..., split="test")``).
        patch_size: side of a training patch.
        stride: distance between training patches (default: ``patch_size``, no overlap).
        name: what the data is called in logs and reports.

    An image is a torch tensor ``(C, H, W)`` (PyTorch's layout) or a numpy array ``(H, W, C)``, or
    ``(H, W)`` for one band, of any numeric dtype; a mask ``(H, W)`` holds class indices
    ``0 .. len(class_names) - 1``, and ``IGNORE_INDEX`` (255) for unlabelled pixels, which the loss and
    the metrics leave out. Images are normalized per channel by statistics of the training images.

    Raises:
        DataError: an image and its mask of different sizes, a mask value that is no class index,
            images with different channel counts, a training image smaller than a patch, or no
            training or validation image (each naming the pair, as ``train[2]``).
    """
    classes = tuple(str(item) for item in class_names)
    if len(classes) < 2:
        raise DataError(f"class_names: need at least 2 classes, got {list(classes)}")
    if not train or not val:
        raise DataError(f"from_arrays needs at least one training and one validation image, got {len(train)} "
                        f"and {len(val)}")
    if patch_size < 1:
        raise DataError(f"patch_size must be >= 1, got {patch_size}")
    decode = class_index_decoder(len(classes), ignore=IGNORE_INDEX)
    splits = {split: [_scene(f"{split}[{index}]", pair, decode) for index, pair in enumerate(pairs)]
              for split, pairs in (("train", train), ("val", val), ("test", test))}
    channels = {scene.channels for scenes in splits.values() for scene in scenes}
    if len(channels) > 1:
        raise DataError(f"the images have different channel counts: {sorted(channels)}")
    for scene in splits["train"] + splits["val"] + splits["test"]:
        decode(np.asarray(scene.labels), scene.name)  # a mask value that is no class index, named now
    normalization = Normalization.fit([scene.image for scene in splits["train"]])
    patches = PatchDataset(splits["train"], patch_size=patch_size, stride=stride or patch_size,
                           normalization=normalization)
    return SegmentationData(
        name=name, class_names=classes, in_channels=channels.pop(), train=patches, val=tuple(splits["val"]),
        test=tuple(splits["test"]), normalization=normalization,
        description=(f"{name}: {len(splits['train'])} training images ({len(patches)} patches of {patch_size}), "
                     f"{len(splits['val'])} validation, {len(splits['test'])} test"),
    )


def _scene(where: str, pair: Pair, decode) -> Scene:
    try:
        image, mask = pair
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected an (image, mask) pair, got {type(pair).__name__}") from None
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = (image[None] if image.ndim == 2 else image).permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    mask = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    if mask.dtype == np.bool_:  # a binary mask: background 0, the class 1
        mask = mask.astype(np.uint8)
    if image.ndim != 3 or mask.ndim != 2:
        raise DataError(f"{where}: expected an image (C, H, W) as a tensor or (H, W, C) as an array and a mask "
                        f"(H, W), got shapes {tuple(image.shape)} and {tuple(mask.shape)}")
    if not np.issubdtype(mask.dtype, np.integer) or (mask.size and (mask.min() < 0 or mask.max() > 255)):
        raise DataError(f"{where}: a mask holds class indices 0..254 (255: unlabelled), got {mask.dtype} values")
    return Scene(where, image, mask.astype(np.uint8), decode)
