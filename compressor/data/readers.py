"""Reading images and masks from files (PNG, JPEG through Pillow; TIFF through tifffile).

Uncompressed TIFFs (Inria's 5000x5000 tiles are) are memory-mapped, so a folder of large
tiles costs little memory until patches are read.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from compressor.data.base import DataError, MaskDecoder
from compressor.units import format_count

__all__ = ["IMAGE_SUFFIXES", "image_size", "read_array", "palette_decoder", "value_decoder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_TIFF = (".tif", ".tiff")


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image, read from its header only.

    Raises:
        DataError: naming the file if it is not a readable image.
    """
    try:
        if path.suffix.lower() in _TIFF:
            with tifffile.TiffFile(path) as tiff:
                shape = tiff.series[0].shape
                return _height_width(shape, tiff.series[0].axes)
        with _open_image(path) as image:
            return image.height, image.width
    except (OSError, ValueError, UnidentifiedImageError, tifffile.TiffFileError) as error:
        raise DataError(f"{path}: cannot read image: {error}") from None


def _open_image(path: Path) -> Image.Image:
    """``Image.open``; an image over Pillow's pixel limit (its guard against decompression bombs) is
    refused in one line naming the file and its size; one between the warning and the limit is read
    quietly (a dataset's own large tile).

    Raises:
        DataError: the image has more pixels than Pillow decodes.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)  # Pillow warns above its limit and refuses above twice that
        width, height = _header_size(path)
        raise DataError(
            f"{path}: an image of {width}x{height} pixels ({format_count(width * height)}), more than the "
            f"{format_count(limit)} pixels Pillow decodes (its guard against decompression bombs); cut it into "
            "tiles, or save it as a TIFF (read without that limit)"
        ) from None


def _header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image's header, with Pillow's pixel limit lifted: nothing is decoded."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as image:
            return image.width, image.height
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _height_width(shape: Sequence[int], axes: str) -> tuple[int, int]:
    if "Y" in axes and "X" in axes:
        return int(shape[axes.index("Y")]), int(shape[axes.index("X")])
    return int(shape[0]), int(shape[1])


def read_array(path: Path) -> np.ndarray:
    """The pixels of an image file: ``(H, W)`` or ``(H, W, C)``, native dtype.

    Uncompressed TIFFs come back memory-mapped (read-only); palette PNGs come back as
    their palette indices (the usual way to store class-index masks).

    Raises:
        DataError: naming the file if it cannot be read.
    """
    try:
        if path.suffix.lower() in _TIFF:
            try:
                array = tifffile.memmap(path, mode="r")
            except ValueError:  # compressed or tiled: decode into memory
                array = tifffile.imread(path)
            if array.ndim == 3 and array.shape[0] < min(array.shape[1:]) and array.shape[0] <= 4:
                array = np.moveaxis(array, 0, -1)  # planar (C, H, W) TIFFs
            return array
        with _open_image(path) as image:
            return np.asarray(image)
    except (OSError, ValueError, UnidentifiedImageError, tifffile.TiffFileError) as error:
        raise DataError(f"{path}: cannot read image: {error}") from None


def palette_decoder(colours: Sequence[Sequence[int]]) -> MaskDecoder:
    """A decoder for RGB masks: the pixel colour ``colours[i]`` means class ``i``.

    Example:
        >>> decode = palette_decoder([(255, 255, 255), (0, 0, 255)])
        >>> decode(np.array([[[0, 0, 255], [255, 255, 255]]], dtype=np.uint8), "m.png").tolist()
        [[1, 0]]
    """
    codes = np.array([_rgb_code(colour) for colour in colours], dtype=np.int64)
    order = np.argsort(codes)
    sorted_codes = codes[order]

    def decode(raw: np.ndarray, where: str) -> np.ndarray:
        if raw.ndim != 3 or raw.shape[2] < 3:
            raise DataError(f"{where}: expected an RGB mask for the palette, got shape {raw.shape}")
        pixel_codes = (raw[..., 0].astype(np.int64) << 16) | (raw[..., 1].astype(np.int64) << 8) | raw[..., 2]
        position = np.clip(np.searchsorted(sorted_codes, pixel_codes), 0, len(sorted_codes) - 1)
        known = sorted_codes[position] == pixel_codes
        if not known.all():
            unknown, counts = np.unique(pixel_codes[~known], return_counts=True)
            listed = ", ".join(f"{_rgb_tuple(code)} x{count}" for code, count in zip(unknown[:3], counts[:3]))
            raise DataError(f"{where}: mask colours not in the palette: {listed}")
        return order[position].astype(np.uint8)

    return decode


def value_decoder(values: Sequence[int]) -> MaskDecoder:
    """A decoder for single-channel masks: the pixel value ``values[i]`` means class ``i``.

    Example:
        >>> value_decoder([0, 255])(np.array([[0, 255]], dtype=np.uint8), "gt.tif").tolist()
        [[0, 1]]
    """
    lookup = {int(value): index for index, value in enumerate(values)}

    def decode(raw: np.ndarray, where: str) -> np.ndarray:
        if raw.ndim == 3 and raw.shape[2] in (3, 4) and (raw[..., :3] == raw[..., :1]).all():
            raw = raw[..., 0]  # a grey mask saved as RGB
        if raw.ndim != 2:
            raise DataError(f"{where}: expected a single-channel mask, got shape {raw.shape}")
        present = np.unique(raw)
        unknown = [int(value) for value in present if int(value) not in lookup]
        if unknown:
            raise DataError(f"{where}: mask values {unknown[:5]} are not among mask_values {list(lookup)}")
        table = np.zeros(int(present.max()) + 1, dtype=np.uint8)
        for value in present:
            table[int(value)] = lookup[int(value)]
        return table[raw]

    return decode


def _rgb_code(colour: Sequence[int]) -> int:
    if len(colour) != 3 or any(not 0 <= int(channel) <= 255 for channel in colour):
        raise DataError(f"palette colour {list(colour)} must be three values 0..255")
    red, green, blue = (int(channel) for channel in colour)
    return (red << 16) | (green << 8) | blue


def _rgb_tuple(code: int) -> tuple[int, int, int]:
    return (int(code) >> 16 & 255, int(code) >> 8 & 255, int(code) & 255)
