"""Image/mask pairs from two folders, with presets for Inria Aerial and ISPRS Vaihingen/Potsdam.

Files pair up by name: an image ``images/austin1.tif`` goes with ``gt/austin1.tif``
(after stripping ``image_suffix`` and ``mask_suffix`` from the stems, for datasets such as
Potsdam whose names differ: ``top_potsdam_2_10_RGB`` / ``top_potsdam_2_10_label``).
Masks hold class indices, or values listed in ``mask_values`` (Inria: 0 and 255), or the
RGB colours of ``palette`` (ISPRS). Whole files go to either training or validation;
training files are cut into patches on a grid with ``stride``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compressor.data.base import (
    DataConfig,
    DataError,
    MaskDecoder,
    Normalization,
    Scene,
    SegmentationData,
    class_index_decoder,
    register_dataset,
)
from compressor.data.readers import IMAGE_SUFFIXES, image_size, palette_decoder, read_array, value_decoder
from compressor.data.tiling import PatchDataset

__all__ = ["FolderConfig", "PRESETS", "ISPRS_CLASSES", "ISPRS_PALETTE"]

ISPRS_CLASSES = ["impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter"]
ISPRS_PALETTE = [[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0]]

#: Defaults each preset gives to the fields left unset; the folder names are those of the
#: official archives.
PRESETS: dict[str, dict[str, Any]] = {
    "inria": {
        "images": "images", "masks": "gt", "classes": ["background", "building"], "mask_values": [0, 255],
        # The usual validation split: the first five tiles of every city (austin1..austin5, ...).
        "val_names": ["*[!0-9][1-5]"],
    },
    "isprs_vaihingen": {
        "images": "top", "masks": "gts_for_participants", "classes": ISPRS_CLASSES, "palette": ISPRS_PALETTE,
    },
    "isprs_potsdam": {
        "images": "2_Ortho_RGB", "masks": "5_Labels_all", "image_suffix": "_RGB", "mask_suffix": "_label",
        "classes": ISPRS_CLASSES, "palette": ISPRS_PALETTE,
    },
}
_GENERIC = {"images": "images", "masks": "masks", "image_suffix": "", "mask_suffix": ""}
_LISTED = 5  # offenders named in an error


@register_dataset
@dataclass(frozen=True, kw_only=True)
class FolderConfig(DataConfig):
    """Image/mask pairs in ``root/<images>`` and ``root/<masks>``.

    Attributes:
        root: the dataset folder.
        preset: ``inria``, ``isprs_vaihingen`` or ``isprs_potsdam``: defaults for the
            fields below left unset.
        images: image sub-folder (default ``images``).
        masks: mask sub-folder (default ``masks``).
        image_suffix: stripped from image stems before pairing.
        mask_suffix: stripped from mask stems before pairing.
        classes: class names (default: two classes, background and foreground).
        palette: RGB colour of each class, for colour-coded masks.
        mask_values: pixel value of each class, for single-channel masks not holding
            class indices (Inria: ``[0, 255]``).
        stride: distance between training patches (default: ``patch_size``).
        val_fraction: share of the files kept for validation, evenly spread over the
            sorted names, when ``val_names`` is not set.
        val_names: shell patterns (``fnmatch``) of paired stems that go to validation.
        max_images: use only the first ``max_images`` pairs (sorted by name).
    """

    kind = "folder"
    root: str = ""
    preset: Literal["inria", "isprs_vaihingen", "isprs_potsdam"] | None = None
    images: str | None = None
    masks: str | None = None
    image_suffix: str | None = None
    mask_suffix: str | None = None
    classes: list[str] | None = None
    palette: list[list[int]] | None = None
    mask_values: list[int] | None = None
    stride: int | None = None
    val_fraction: float = 0.2
    val_names: list[str] | None = None
    max_images: int | None = None

    def resolved(self) -> FolderConfig:
        """This configuration with the preset's (then the generic) defaults filled in.

        Example:
            >>> FolderConfig(root="inria", preset="inria").resolved().masks
            'gt'
        """
        defaults = {**_GENERIC, **PRESETS.get(self.preset or "", {})}
        filled = {
            key: value for key, value in defaults.items() if getattr(self, key) is None
        }
        config = dataclasses.replace(self, **filled)
        if config.classes is None:
            config = dataclasses.replace(config, classes=["background", "foreground"])
        return config

    def decoder(self) -> MaskDecoder:
        """How masks turn into class indices.

        Raises:
            DataError: ``palette`` or ``mask_values`` does not have one entry per class.
        """
        classes = self.classes or []
        if self.palette is not None and self.mask_values is not None:
            raise DataError("data: set either palette or mask_values, not both")
        for key in ("palette", "mask_values"):
            given = getattr(self, key)
            if given is not None and len(given) != len(classes):
                raise DataError(f"data.{key}: {len(given)} entries for {len(classes)} classes")
        if self.palette is not None:
            return palette_decoder(self.palette)
        if self.mask_values is not None:
            if any(value < 0 for value in self.mask_values):
                raise DataError(f"data.mask_values must be >= 0, got {self.mask_values}")
            return value_decoder(self.mask_values)
        return class_index_decoder(len(classes))

    def build(self, *, cache_dir: str | Path | None = None) -> SegmentationData:
        """Pairs, checks, splits and cuts the files.

        Raises:
            DataError: a missing folder; unpaired names or mismatched sizes (listing the
                first offenders); unreadable files; images with different channel
                counts; an empty split; an image smaller than a patch.
        """
        config = self.resolved()
        if not config.root:
            raise DataError("data.root: the dataset folder is required for data.name 'folder'")
        if len(config.classes or []) < 2:
            raise DataError(f"data.classes: need at least 2 classes, got {config.classes}")
        decode = config.decoder()
        pairs = config.pairs()
        _check_sizes(pairs)
        train_keys, val_keys = config.split(sorted(pairs))
        scenes = {key: _scene(key, *pairs[key], decode) for key in sorted(pairs)}
        _check_channels(scenes)
        train = [scenes[key] for key in train_keys]
        val = tuple(scenes[key] for key in val_keys)
        normalization = Normalization.fit([scene.image for scene in train[:: max(1, len(train) // 16)]])
        patches = PatchDataset(
            train, patch_size=config.patch_size, stride=config.stride or config.patch_size,
            normalization=normalization,
        )
        return SegmentationData(
            name=self.kind,
            class_names=tuple(config.classes or ()),
            in_channels=train[0].channels,
            train=patches,
            val=val,
            normalization=normalization,
            description=(
                f"folder {config.root} ({config.preset or 'no preset'}): {len(train)} training files "
                f"({len(patches)} patches of {config.patch_size}), {len(val)} validation files"
            ),
        )

    def pairs(self) -> dict[str, tuple[Path, Path]]:
        """Matched ``stem -> (image, mask)`` paths, sorted by stem, cut to ``max_images``.

        Raises:
            DataError: a missing or empty folder, or names without a partner.
        """
        root = Path(self.root).expanduser()
        images = _listing(root / (self.images or ""), self.image_suffix or "")
        masks = _listing(root / (self.masks or ""), self.mask_suffix or "")
        lonely_images = sorted(set(images) - set(masks))
        lonely_masks = sorted(set(masks) - set(images))
        if lonely_images or lonely_masks:
            parts = []
            if lonely_images:
                parts.append(f"{len(lonely_images)} images without a mask: {_first(lonely_images)}")
            if lonely_masks:
                parts.append(f"{len(lonely_masks)} masks without an image: {_first(lonely_masks)}")
            raise DataError(f"{root}: names do not pair up ({'; '.join(parts)})")
        keys = sorted(images)[: self.max_images] if self.max_images else sorted(images)
        return {key: (images[key], masks[key]) for key in keys}

    def split(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """``(train, val)`` stems: by ``val_names`` patterns, else every k-th name."""
        if self.val_names:
            val = [key for key in keys if any(fnmatch.fnmatchcase(key, pattern) for pattern in self.val_names)]
            rule = f"val_names {self.val_names}"
        else:
            if not 0 < self.val_fraction < 1:
                raise DataError(f"data.val_fraction must be between 0 and 1, got {self.val_fraction}")
            count = max(1, round(len(keys) * self.val_fraction))
            picks = {int(index) for index in np.linspace(len(keys) - 1, 0, num=count).round()}
            val = [key for index, key in enumerate(keys) if index in picks]
            rule = f"val_fraction {self.val_fraction}"
        train = [key for key in keys if key not in set(val)]
        if not train or not val:
            empty = "training" if not train else "validation"
            raise DataError(f"{self.root}: {rule} leaves no {empty} file among {len(keys)} pairs")
        return train, val


def _listing(folder: Path, suffix: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        key = path.stem[: -len(suffix)] if suffix and path.stem.endswith(suffix) else path.stem
        if key in found:
            raise DataError(f"{folder}: {found[key].name} and {path.name} both pair as {key!r}")
        found[key] = path
    if not found:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return found


def _check_sizes(pairs: dict[str, tuple[Path, Path]]) -> None:
    offenders = []
    for key, (image_path, mask_path) in pairs.items():
        image, mask = image_size(image_path), image_size(mask_path)
        if image != mask:
            offenders.append(f"{key} (image {image[1]}x{image[0]}, mask {mask[1]}x{mask[0]})")
    if offenders:
        raise DataError(f"{len(offenders)} image/mask pairs differ in size: {_first(offenders)}")


def _check_channels(scenes: dict[str, Scene]) -> None:
    by_channels: dict[int, list[str]] = {}
    for key, scene in scenes.items():
        by_channels.setdefault(scene.channels, []).append(key)
    if len(by_channels) > 1:
        counts = "; ".join(f"{channels} channels: {_first(keys)}" for channels, keys in sorted(by_channels.items()))
        raise DataError(f"images differ in channel count ({counts})")


def _scene(key: str, image_path: Path, mask_path: Path, decode: MaskDecoder) -> Scene:
    image = read_array(image_path)
    if image.ndim == 2:
        image = image[..., None]
    return Scene(str(mask_path), image, read_array(mask_path), decode)


def _first(names: list[str]) -> str:
    more = f", ... ({len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more
