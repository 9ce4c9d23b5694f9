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
    if isinstance(class_names, str) or not all(isinstance(item, str) for item in class_names):
        raise DataError(f"class_names: a sequence of names, one per class index, got {class_names!r}")
    classes = tuple(class_names)
    if not 2 <= len(classes) <= IGNORE_INDEX:
        raise DataError(f"class_names: need 2 to {IGNORE_INDEX} classes (masks hold them as bytes, {IGNORE_INDEX}: "
                        f"unlabelled), got {len(classes)}")
    for what, value in (("patch_size", patch_size), ("stride", patch_size if stride is None else stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{what} must be a whole number >= 1, got {value!r}")
    decode = class_index_decoder(len(classes), ignore=IGNORE_INDEX)
    splits = {split: [_scene(f"{split}[{index}]", pair, decode) for index, pair in enumerate(list(pairs))]
              for split, pairs in (("train", train), ("val", val), ("test", test))}
    if not splits["train"] or not splits["val"]:
        raise DataError(f"from_arrays needs at least one training and one validation image, got "
                        f"{len(splits['train'])} and {len(splits['val'])}")
    scenes = splits["train"] + splits["val"] + splits["test"]
    first: dict[int, str] = {}  # each channel count, and the pair that has it first
    for scene in scenes:
        first.setdefault(scene.channels, scene.name)
    if len(first) > 1:
        raise DataError("the images have different channel counts: " + ", ".join(
            f"{count} ({where} first)" for count, where in sorted(first.items())))
    for scene in splits["val"] + splits["test"]:  # a score needs labelled pixels
        if not (np.asarray(scene.labels) != IGNORE_INDEX).any():
            raise DataError(f"{scene.name}: no labelled pixel (every mask value is {IGNORE_INDEX}): it would score nothing")
    normalization = Normalization.fit([scene.image for scene in splits["train"]])  # the training images' statistics only
    patches = PatchDataset(splits["train"], patch_size=patch_size, stride=stride or patch_size,
                           normalization=normalization)
    return SegmentationData(
        name=name, class_names=classes, in_channels=scenes[0].channels, train=patches, val=tuple(splits["val"]),
        test=tuple(splits["test"]), normalization=normalization,
        description=(f"{name}: {len(splits['train'])} training images ({len(patches)} patches of {patch_size}), "
                     f"{len(splits['val'])} validation, {len(splits['test'])} test"),
    )


def _scene(where: str, pair: Pair, decode) -> Scene:
    """One pair as a scene: its own copy of the image ``(H, W, C)`` and of the mask (uint8), checked."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise DataError(f"{where}: expected an (image, mask) pair, got {type(pair).__name__}")
    image, mask = pair
    if isinstance(image, torch.Tensor):
        if image.ndim not in (2, 3):
            raise DataError(f"{where}: expected an image tensor (C, H, W) or (H, W), got shape {tuple(image.shape)}")
        image = image.detach().cpu()
        image = image.float() if image.dtype in (torch.bfloat16, torch.float16) else image  # numpy has no bfloat16
        image = (image[None] if image.ndim == 2 else image).permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
    image = np.array(image)  # a copy: changing the caller's tensor later changes nothing here
    if image.ndim == 2:
        image = image[:, :, None]
    mask = np.array(mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask)
    if mask.dtype == np.bool_:  # a binary mask: background 0, the class 1
        mask = mask.astype(np.uint8)
    if image.ndim != 3 or mask.ndim != 2:
        raise DataError(f"{where}: expected an image (C, H, W) as a tensor or (H, W, C) as an array and a mask "
                        f"(H, W), got shapes {tuple(image.shape)} and {tuple(mask.shape)}")
    if image.shape[:2] != mask.shape:
        layout = (", an array is (H, W, C): this one looks like (C, H, W); transpose it or pass a tensor"
                  if image.shape[1:] == mask.shape else "")
        raise DataError(f"{where}: image is {image.shape[1]}x{image.shape[0]} but its mask is "
                        f"{mask.shape[1]}x{mask.shape[0]}{layout}")
    if not image.size:
        raise DataError(f"{where}: an empty image ({image.shape[1]}x{image.shape[0]})")
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise DataError(f"{where}: an image of real numbers is needed, got {image.dtype}")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise DataError(f"{where}: the image holds NaN or infinite values (no-data?): fill them, and mark their "
                        f"pixels unlabelled ({IGNORE_INDEX}) in the mask")
    if not np.issubdtype(mask.dtype, np.integer):
        raise DataError(f"{where}: a mask holds class indices (and {IGNORE_INDEX}: unlabelled), got a {mask.dtype} mask")
    if mask.size and (mask.min() < 0 or mask.max() > IGNORE_INDEX):
        raise DataError(f"{where}: a mask holds class indices (and {IGNORE_INDEX}: unlabelled), got values from "
                        f"{mask.min()} to {mask.max()}")
    mask = mask.astype(np.uint8)
    decode(mask, where)  # a value that is no class index, named now
    return Scene(where, image, mask, decode)
