"""COG bytes -> pixels, from memory.

The project's own COGs are one tile per file (DEFLATE or ZSTD, predictor 2 for integers and 3
for floats, pixel interleave, the tile a multiple of 16 px at least as large as the image; see
``catalog_builder/cog.py``). For those, :func:`decode` parses the header with tifffile, inflates
the single tile with imagecodecs, undoes the predictor and crops the tile padding: no GDAL open,
which is what dominates the cost of a ~100 KB object (DESIGN.md #3). Any other file (striped,
several tiles, band-interleaved, big-endian, another codec, not a TIFF at all) goes through
rasterio's ``MemoryFile`` with the GTiff driver only, the reference the fast path is tested
against bit for bit.

Given an :class:`Expected` (what the band plan says the asset holds), both paths compare the
header's band count, size and dtype with it before decoding a single pixel: a valid GeoTIFF of
the wrong shape is a :class:`ShapeMismatchError`, never an array the loader would index or
resample.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass, field
from typing import Any

import imagecodecs
import numpy as np
import tifffile

log = logging.getLogger(__name__)

__all__ = ["DecodeError", "Expected", "ShapeMismatchError", "decode", "decode_fast", "decode_gdal", "decode_pixels"]

# TIFF compression tag value -> imagecodecs decoder taking (data, out=size).
_DECOMPRESS: dict[int, Any] = {
    8: imagecodecs.deflate_decode,  # Adobe DEFLATE (zlib stream)
    32946: imagecodecs.deflate_decode,  # old-style DEFLATE
    50000: imagecodecs.zstd_decode,
}
_DTYPES = {(1, 8): "u1", (1, 16): "u2", (1, 32): "u4", (2, 8): "i1", (2, 16): "i2", (2, 32): "i4",
           (3, 32): "f4", (3, 64): "f8"}  # fmt: skip


class DecodeError(ValueError):
    """Bytes that neither the fast path nor GDAL could decode (or not to the expected pixels)."""


class ShapeMismatchError(DecodeError):
    """A readable GeoTIFF whose bands, size or dtype are not what the asset must hold."""


@dataclass(frozen=True)
class Expected:
    """What one asset must decode to: ``(bands, height, width)`` of ``dtype``."""

    bands: int
    """Number of bands."""
    height: int
    """Rows in pixels."""
    width: int
    """Columns in pixels."""
    dtype: np.dtype
    """Pixel type (a name such as ``"uint16"`` is converted); byte order is not compared."""
    what: str = ""
    """Names the asset in errors (``"s2_10m"``)."""
    shape: tuple[int, int, int] = field(init=False, repr=False, compare=False)
    """``(bands, height, width)``, derived."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", (self.bands, self.height, self.width))

    def check(self, bands: int, height: int, width: int, dtype: np.dtype) -> None:
        """Raise :class:`ShapeMismatchError` unless a header (or an array) agrees; byte order aside."""
        want = self.dtype
        if (bands, height, width) != self.shape or (
            dtype != want and (dtype.kind != want.kind or dtype.itemsize != want.itemsize)
        ):
            where = f"{self.what}: " if self.what else ""
            raise ShapeMismatchError(
                f"{where}expected {_describe(*self.shape, want)}, found {_describe(bands, height, width, dtype)}"
            )

    def decode(self, data: bytes) -> np.ndarray:
        """:func:`decode` ``data``, checked against this expectation."""
        return decode(data, self)


def _describe(bands: int, height: int, width: int, dtype: np.dtype) -> str:
    return f"{bands} band{'s' if bands != 1 else ''} of {height} x {width} {np.dtype(dtype).name}"


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


#: Tiles up to this many pixels are always decoded on the fast path (GDAL's default block is
#: 512 x 512); larger ones only when at most 4x the image, so a hostile header cannot make the
#: fast path allocate a huge tile for a small image.
_MAX_TILE_PX = 512 * 512

# TIFF field types -> (struct code, size) for the types our headers use.
_FIELD = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}
_TAGS = {256: "width", 257: "length", 258: "bits", 259: "compression", 277: "samples", 284: "planar",
         317: "predictor", 322: "tile_width", 323: "tile_length", 324: "offsets", 325: "counts", 339: "format"}  # fmt: skip


def _read_ifd(data: bytes) -> dict[str, tuple[int, ...]] | None:
    """The tags of the first IFD of a classic little-endian TIFF, or ``None`` for anything else.

    Parsing the header ourselves costs a few microseconds; tifffile's general parser is about
    half of the decode time of a 100 KB COG. Anything unusual falls back to tifffile.
    """
    if len(data) < 8 or data[:4] != b"II*\x00":
        return None
    (ifd,) = struct.unpack_from("<I", data, 4)
    if ifd + 2 > len(data):
        return None
    (entries,) = struct.unpack_from("<H", data, ifd)
    tags: dict[str, tuple[int, ...]] = {}
    for i in range(entries):
        pos = ifd + 2 + 12 * i
        if pos + 12 > len(data):
            return None
        tag, ftype, count = struct.unpack_from("<HHI", data, pos)
        name = _TAGS.get(tag)
        if name is None:
            continue
        if ftype not in _FIELD:
            return None
        code, size = _FIELD[ftype]
        where = pos + 8 if count * size <= 4 else struct.unpack_from("<I", data, pos + 8)[0]
        if where + count * size > len(data):
            return None
        tags[name] = struct.unpack_from(f"<{count}{code}", data, where)
    return tags


def _plan_from_ifd(tags: dict[str, tuple[int, ...]]) -> tuple[np.dtype, int, int, int, int, int, int, int, int, int] | None:
    """(dtype, height, width, samples, tile length, tile width, offset, count, compression,
    predictor) when the IFD describes one of our COGs, else ``None``."""
    need = ("width", "length", "bits", "tile_width", "tile_length", "offsets", "counts")
    if any(n not in tags for n in need) or len(tags["offsets"]) != 1 or len(tags["counts"]) != 1:
        return None
    samples = tags.get("samples", (1,))[0]
    bits = set(tags["bits"])
    fmt = set(tags.get("format", (1,)))
    compression = tags.get("compression", (1,))[0]
    predictor = tags.get("predictor", (1,))[0]
    if len(bits) != 1 or len(fmt) != 1 or tags.get("planar", (1,))[0] != 1:
        return None
    code = _DTYPES.get((fmt.pop(), bits.pop()))
    if code is None or compression not in (1, *_DECOMPRESS) or predictor not in (1, 2, 3):
        return None
    if (predictor == 3) != (code[0] == "f") and predictor != 1:
        return None
    return (np.dtype("<" + code), tags["length"][0], tags["width"][0], samples, tags["tile_length"][0],
            tags["tile_width"][0], tags["offsets"][0], tags["counts"][0], compression, predictor)


def _plan_with_tifffile(data: bytes) -> tuple[np.dtype, int, int, int, int, int, int, int, int, int] | None:
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            plan = _fast_plan(page)
            if plan is None:
                return None
            return (*plan, page.dataoffsets[0], page.databytecounts[0], int(page.compression), int(page.predictor))
    except (tifffile.TiffFileError, ValueError, IndexError):
        return None


def _fast_pixels(data: bytes, expect: Expected | None = None) -> np.ndarray | None:
    """The pixels of one of our COGs as a (bands, height, width) *view* of the decoded tile (not
    contiguous: the tile is pixel-interleaved and padded); ``None`` if the file is not ours."""
    tags = _read_ifd(data)
    plan = _plan_from_ifd(tags) if tags is not None else None
    if plan is None:
        plan = _plan_with_tifffile(data)
    if plan is None:
        return None
    dtype, height, width, samples, tl, tw, offset, count, compression, predictor = plan
    if expect is not None:
        expect.check(samples, height, width, dtype)
    if tl < height or tw < width or tl * tw > max(4 * height * width, _MAX_TILE_PX):
        return None  # a tile that does not hold the image, or one far larger than it: GDAL's case
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
    # Crop the tile padding; pixel interleave -> band-first, as a view.
    return tile[0, :height, :width, :].transpose(2, 0, 1)


def decode_fast(data: bytes, expect: Expected | None = None) -> np.ndarray | None:
    """Decode one of our COGs to a (bands, height, width) array; ``None`` if the file is not ours.

    With ``expect``, a header that disagrees raises :class:`ShapeMismatchError` before the tile
    is allocated or inflated.
    """
    pixels = _fast_pixels(data, expect)
    # Native byte order, band-first and contiguous.
    return None if pixels is None else np.ascontiguousarray(pixels)


def decode_gdal(data: bytes, expect: Expected | None = None) -> np.ndarray:
    """Decode any GeoTIFF GDAL reads to a (bands, height, width) array (rasterio, GTiff driver).

    With ``expect``, the header is checked before any pixel is read.
    """
    import rasterio
    from rasterio.errors import RasterioIOError
    from rasterio.io import MemoryFile
    from rasterio.session import DummySession

    try:
        # Bytes in memory need no credentials; without an explicit session rasterio would build
        # a boto3 session from the environment on every open (~30 ms when AWS variables are set).
        with rasterio.Env(session=DummySession()), MemoryFile(data) as mem, mem.open(driver="GTiff") as src:
            if expect is not None:
                dtypes = set(src.dtypes)  # one dtype per band in GDAL; mixed ones match nothing
                found = np.dtype(dtypes.pop()) if len(dtypes) == 1 else np.dtype("V")
                expect.check(src.count, src.height, src.width, found)
            return src.read()
    except RasterioIOError as exc:
        raise DecodeError(f"not a GeoTIFF GDAL can read: {exc}") from exc


def decode_pixels(data: bytes, expect: Expected | None = None) -> np.ndarray:
    """Like :func:`decode`, but the result may be a strided view of the decoded tile.

    For consumers that copy the pixels anyway (the loader converts and normalises them straight
    into its output tensors): saves the band-first copy :func:`decode` makes.
    """
    out = _fast_pixels(data, expect)
    if out is None:
        log.debug("not one of our COGs (%d bytes): decoding with GDAL", len(data))
        out = decode_gdal(data, expect)
    return out


def decode(data: bytes, expect: Expected | None = None) -> np.ndarray:
    """Pixels of a GeoTIFF as (bands, height, width): the fast path for our COGs, else GDAL.

    With ``expect``, a file whose bands, size or dtype differ raises :class:`ShapeMismatchError`
    (checked on the header, before decoding).
    """
    out = decode_fast(data, expect)
    if out is None:
        log.debug("not one of our COGs (%d bytes): decoding with GDAL", len(data))
        out = decode_gdal(data, expect)
    return out
