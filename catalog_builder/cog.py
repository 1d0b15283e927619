"""Pixels -> Cloud-Optimized GeoTIFF bytes, in memory, deterministic.

One tile per file (a 120 px patch fits a 128 px tile), no overviews (a patch is smaller than
one tile), DEFLATE with a predictor chosen per dtype: 2 (horizontal differencing) for the uint16
reflectances, 3 (floating point) for the float32 S1 backscatter, which barely compresses with 2.
The same pixels always give the same bytes, which is what makes reruns verifiable by checksum.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio._env import del_gdal_config, get_gdal_config, set_gdal_config
from rasterio.crs import CRS
from rasterio.env import hasenv
from rasterio.io import MemoryFile
from rasterio.shutil import copy
from rasterio.transform import Affine

from bigearth_stac.vocab import S1_BAND_NAMES

log = logging.getLogger(__name__)


class _SmallBlockFilter(logging.Filter):
    """GDAL's COG driver warns for tiles under 128 px but writes them: drop that one message.

    A 60 px band in a 64 px tile (a 20 px band in a 32 px tile) decodes less padding than in a
    128 px tile; cog_validate accepts both.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "unexpected value for BLOCKSIZE" not in record.getMessage()


logging.getLogger("rasterio._env").addFilter(_SmallBlockFilter())

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


@dataclass(frozen=True)
class CogOptions:
    """How COGs are encoded."""

    compress: str = "DEFLATE"
    """``DEFLATE`` (most compatible) or ``ZSTD``."""
    level: int = 6
    """Compression level (DEFLATE 1-9, ZSTD 1-22)."""


@dataclass(frozen=True)
class CogBytes:
    """An encoded COG and its checksum."""

    data: bytes
    sha256: str
    """Hex digest of ``data``."""

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def multihash(self) -> str:
        """``file:checksum`` value: a multihash of the sha2-256 digest, hex-encoded."""
        return sha256_multihash(self.sha256)


def sha256_multihash(hexdigest: str) -> str:
    """Multihash (code 0x12, 32 bytes) of a sha2-256 hex digest, as ``file:checksum`` wants it."""
    return "1220" + hexdigest


def band_unit(name: str) -> str | None:
    """Unit of a band's pixel values: ``dB`` for the Sentinel-1 backscatter, ``None`` otherwise
    (Sentinel-2 L2A reflectances are unitless digital numbers)."""
    return "dB" if name in S1_BAND_NAMES else None


def _blocksize(size: int) -> int:
    return max(16, -(-size // 16) * 16)


_CANVASES_PER_THREAD = 32
"""In-memory source datasets each thread keeps (one per shape, dtype, CRS and nodata in use:
a v1 build meets 4 shapes in a few dozen UTM zones)."""
_local = threading.local()
# GDAL options of the encoding's CreateCopy; none of them changes a byte of the output.
# Creation option: there is never an old output to delete (a fresh /vsimem/ file), so
# CreateCopy need not try to open one first. Config options, set for the copy only: the
# creation options are this module's (GDAL still warns about a value it ignores, such as a
# level out of range, without parsing its XML list of options on every copy), and the GeoTIFF
# the copy has just written is reread for its CRS only to be compared with the source's:
# building that from its GeoKeys skips PROJ's identification against the EPSG database.
_COPY_OPTIONS = {"@QUIET_DELETE_ON_CREATE_COPY": "NO"}
_COPY_CONFIG = {"GDAL_VALIDATE_CREATION_OPTIONS": "NO", "GTIFF_SRS_SOURCE": "GEOKEYS"}
_copy = getattr(copy, "__wrapped__", copy)


class _Canvas:
    """A GDAL in-memory dataset that COGs of one shape, dtype, CRS and nodata are copied from.

    Creating the source dataset and setting its CRS cost more than compressing a patch, so each
    thread keeps a few and rewrites their pixels, geotransform, band names and units per COG.
    """

    def __init__(self, count: int, height: int, width: int, dtype: str, epsg: int, nodata: float | None) -> None:
        self.dataset = rasterio.open(f"/vsimem/bigearth-cog-canvas-{uuid.uuid4().hex}", "w", driver="MEM",
                                     width=width, height=height, count=count, dtype=dtype, crs=CRS.from_epsg(epsg),
                                     transform=Affine(10.0, 0.0, 0.0, 0.0, -10.0, 0.0), nodata=nodata)
        self.names: tuple[str, ...] = ()
        self.units: tuple[str, ...] = ()

    def close(self) -> None:
        self.dataset.close()


def _canvas(count: int, height: int, width: int, dtype: str, epsg: int, nodata: float | None) -> _Canvas:
    cache: OrderedDict[tuple, _Canvas] | None = getattr(_local, "canvases", None)
    if cache is None:
        cache = _local.canvases = OrderedDict()
    key = (count, height, width, dtype, epsg, nodata)
    canvas = cache.get(key)
    if canvas is None:
        canvas = cache[key] = _Canvas(count, height, width, dtype, epsg, nodata)
        while len(cache) > _CANVASES_PER_THREAD:
            cache.popitem(last=False)[1].close()
    else:
        cache.move_to_end(key)
    return canvas


def encode_cog(
    arrays: Sequence[np.ndarray],
    epsg: int,
    origin: tuple[float, float],
    resolution: float,
    band_names: Sequence[str],
    options: CogOptions = CogOptions(),
    nodata: float | None = None,
) -> CogBytes:
    """Encode same-shape, same-dtype 2-D bands as one COG.

    ``origin`` is the upper-left corner in the CRS, ``resolution`` the pixel size in metres.
    Each band's GDAL description is its name (``B02``, ``VV``) and its GDAL unit
    :func:`band_unit` (``dB`` for Sentinel-1), as the STAC metadata says. ``nodata``: the GDAL
    nodata value, if the bands have one (v2 reference maps: 0).

    GDAL's COG driver writes the file (``CreateCopy`` from an in-memory dataset, as
    ``MemoryFile().open(driver="COG")`` does), with the source dataset reused per thread; the
    bytes are those of a fresh ``MemoryFile`` write. Run inside a ``rasterio.Env``
    (:func:`catalog_builder.pair.build_batch` opens one per task): without one, rasterio makes
    an environment per dataset.
    """
    if not arrays:
        raise ValueError("no bands to encode")
    stack = np.stack(arrays)
    if stack.ndim != 3:
        raise ValueError(f"bands must be 2-D, got shape {arrays[0].shape}")
    if len(band_names) != stack.shape[0]:
        raise ValueError(f"{stack.shape[0]} bands but {len(band_names)} names")
    count, height, width = stack.shape
    predictor = 3 if np.issubdtype(stack.dtype, np.floating) else 2
    canvas = _canvas(count, height, width, stack.dtype.name, epsg, nodata)
    dst = canvas.dataset
    dst.transform = Affine(resolution, 0.0, origin[0], 0.0, -resolution, origin[1])
    dst.write(stack)
    names = tuple(band_names)
    if names != canvas.names:
        dst.descriptions = names
        canvas.names = names
    units = tuple(band_unit(name) or "" for name in names)
    if units != canvas.units:
        dst.units = units
        canvas.units = units
    creation = {
        "compress": options.compress,
        "predictor": predictor,
        "level": options.level,
        "blocksize": _blocksize(max(width, height)),
        "overviews": "NONE",
        **_COPY_OPTIONS,
    }
    # rasterio's copy() enters a new Env on every call (about 0.4 ms, a tenth of the encode);
    # inside the caller's Env, the function it wraps is called directly.
    copy_in_env = _copy if hasenv() else copy
    with MemoryFile() as mem, _config(_COPY_CONFIG):
        copy_in_env(dst, mem.name, driver="COG", **creation)
        data = mem.read()
    return CogBytes(data, hashlib.sha256(data).hexdigest())


@contextmanager
def _config(options: dict[str, str]) -> Iterator[None]:
    """GDAL config options for the block only, restoring what was set before (thread-local
    outside the main thread, as in ``rasterio.Env``)."""
    saved = {key: get_gdal_config(key, normalize=False) for key in options}
    for key, value in options.items():
        set_gdal_config(key, value, normalize=False)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                del_gdal_config(key)
            else:
                set_gdal_config(key, value, normalize=False)
