"""Pixels -> Cloud-Optimized GeoTIFF bytes, in memory, deterministic.

One tile per file (a 120 px patch fits a 128 px tile), no overviews (a patch is smaller than
one tile), DEFLATE with a predictor chosen per dtype: 2 (horizontal differencing) for the uint16
reflectances, 3 (floating point) for the float32 S1 backscatter, which barely compresses with 2.
The same pixels always give the same bytes, which is what makes reruns verifiable by checksum.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.io import MemoryFile
from rasterio.transform import from_origin

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
    """
    if not arrays:
        raise ValueError("no bands to encode")
    stack = np.stack(arrays)
    if stack.ndim != 3:
        raise ValueError(f"bands must be 2-D, got shape {arrays[0].shape}")
    count, height, width = stack.shape
    predictor = 3 if np.issubdtype(stack.dtype, np.floating) else 2
    profile = {
        "driver": "COG",
        "width": width,
        "height": height,
        "count": count,
        "dtype": stack.dtype.name,
        "crs": f"EPSG:{epsg}",
        "transform": from_origin(origin[0], origin[1], resolution, resolution),
        "compress": options.compress,
        "predictor": predictor,
        "level": options.level,
        "blocksize": _blocksize(max(width, height)),
        "overviews": "NONE",
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(stack)
            dst.descriptions = tuple(band_names)
            units = [band_unit(name) or "" for name in band_names]
            if any(units):
                dst.units = tuple(units)
        data = mem.read()
    return CogBytes(data, hashlib.sha256(data).hexdigest())
