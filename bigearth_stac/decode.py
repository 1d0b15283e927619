"""COG bytes -> pixels, from memory.

The project's own COGs are one tile per file (DEFLATE or ZSTD, predictor 2 for integers and 3
for floats, pixel interleave, the tile a multiple of 16 px at least as large as the image; see
``catalog_builder/cog.py``). For those, :func:`decode` parses the header with tifffile, inflates
the single tile with imagecodecs, undoes the predictor and crops the tile padding: no GDAL open,
which is what dominates the cost of a ~100 KB object (DESIGN.md #3). Any other file (striped,
several tiles, band-interleaved, big-endian, another codec, not a TIFF at all) goes through
rasterio's ``MemoryFile`` with the GTiff driver only, the reference the fast path is tested
against bit for bit.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import imagecodecs
import numpy as np
import tifffile

log = logging.getLogger(__name__)

__all__ = ["DecodeError", "decode", "decode_fast", "decode_gdal"]

# TIFF compression tag value -> imagecodecs decoder taking (data, out=size).
_DECOMPRESS: dict[int, Any] = {
    8: imagecodecs.deflate_decode,  # Adobe DEFLATE (zlib stream)
    32946: imagecodecs.deflate_decode,  # old-style DEFLATE
    50000: imagecodecs.zstd_decode,
}
_DTYPES = {(1, 8): "u1", (1, 16): "u2", (1, 32): "u4", (2, 8): "i1", (2, 16): "i2", (2, 32): "i4",
           (3, 32): "f4", (3, 64): "f8"}  # fmt: skip


class DecodeError(ValueError):
    """Bytes that neither the fast path nor GDAL could decode."""


def _fast_plan(page: tifffile.TiffPage) -> tuple[np.dtype, int, int, int, int, int] | None:
    """(dtype, height, width, samples, tile length, tile width) if the page is one of ours, else None."""
    if page.parent.byteorder != "<" or not page.is_tiled or page.planarconfig != 1:
        return None
    if len(page.dataoffsets) != 1 or page.imagedepth != 1 or page.tiledepth != 1:
        return None
    if int(page.compression) not in (1, *_DECOMPRESS) or int(page.predictor) not in (1, 2, 3):
        return None
    bits = page.bitspersample
    fmt = int(page.sampleformat)
    code = _DTYPES.get((fmt, bits))
    if code is None or (int(page.predictor) == 3) != (fmt == 3):
        return None
    return np.dtype("<" + code), page.imagelength, page.imagewidth, page.samplesperpixel, page.tilelength, page.tilewidth


def decode_fast(data: bytes) -> np.ndarray | None:
    """Decode one of our COGs to a (bands, height, width) array; ``None`` if the file is not ours."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            plan = _fast_plan(page)
            if plan is None:
                return None
            offset, count = page.dataoffsets[0], page.databytecounts[0]
            compression, predictor = int(page.compression), int(page.predictor)
    except (tifffile.TiffFileError, ValueError, IndexError):
        return None
    dtype, height, width, samples, tl, tw = plan
    tile = np.empty((1, tl, tw, samples), dtype)
    flat = tile.reshape(-1).view(np.uint8)
    raw = memoryview(data)[offset : offset + count]
    if compression == 1:
        if count != flat.size:
            raise DecodeError(f"tile holds {count} bytes, expected {flat.size}")
        flat[:] = np.frombuffer(raw, np.uint8)
    else:
        try:
            got = _DECOMPRESS[compression](raw, out=flat)
        except Exception as exc:  # imagecodecs raises its own per-codec error types
            raise DecodeError(f"corrupt tile: {exc}") from exc
        if len(got) != flat.size:
            raise DecodeError(f"tile inflates to {len(got)} bytes, expected {flat.size}")
    if predictor == 2:
        tile = imagecodecs.delta_decode(tile, axis=-2, out=tile)
    elif predictor == 3:
        # floatpred_decode cannot work in place (it un-shuffles bytes): use what it returns.
        tile = imagecodecs.floatpred_decode(tile, axis=-2)
    # Crop the tile padding, pixel interleave -> band-first, native byte order.
    return np.ascontiguousarray(tile[0, :height, :width, :].transpose(2, 0, 1))


def decode_gdal(data: bytes) -> np.ndarray:
    """Decode any GeoTIFF GDAL reads to a (bands, height, width) array (rasterio, GTiff driver)."""
    from rasterio.errors import RasterioIOError
    from rasterio.io import MemoryFile

    try:
        with MemoryFile(data) as mem, mem.open(driver="GTiff") as src:
            return src.read()
    except RasterioIOError as exc:
        raise DecodeError(f"not a GeoTIFF GDAL can read: {exc}") from exc


def decode(data: bytes) -> np.ndarray:
    """Pixels of a GeoTIFF as (bands, height, width): the fast path for our COGs, else GDAL."""
    out = decode_fast(data)
    if out is None:
        log.debug("not one of our COGs (%d bytes): decoding with GDAL", len(data))
        out = decode_gdal(data)
    return out
