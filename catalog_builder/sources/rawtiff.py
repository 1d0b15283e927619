"""Raw BigEarthNet GeoTIFF bytes -> header + pixels, without GDAL for the files the archives hold.

Every raw band of v1 and v2 is a plain striped GeoTIFF (little-endian classic TIFF, one sample
per pixel, uncompressed; v2 reference maps DEFLATE with predictor 2), georeferenced by one tie
point, a pixel scale and an EPSG code in the GeoKey directory. Opening such a file with GDAL
from memory (``MemoryFile``) costs about ten times reading its pixels, and the build reads 14-15
of them per pair (issue 15), so :func:`decode_raster` parses the first IFD itself and takes the
strips straight out of the bytes. Anything it does not recognise in full (big-endian, BigTIFF,
tiles, several samples, another codec, a GeoKey it does not know, a model transformation, a
point-registered raster) goes to GDAL, which remains the reference: tests compare both paths
pixel for pixel and on the georeferencing, on the real v1 and v2 files and generated ones.

``decode_raster(data, check)`` calls ``check(header)`` before a single pixel is decoded on
either path, so a file of the wrong shape or type is refused before its pixels are allocated.
"""

from __future__ import annotations

import logging
import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["RasterHeader", "UnreadableRaster", "decode_raster", "decode_raster_fast", "decode_raster_gdal"]


class UnreadableRaster(ValueError):
    """Bytes that GDAL cannot read as a GeoTIFF either; the message is GDAL's."""


@dataclass(frozen=True)
class RasterHeader:
    """What a raw band file says about itself, before its pixels are decoded."""

    count: int
    """Bands in the file."""
    dtype: str
    """numpy dtype name of the first band (``uint16``, ``float32``)."""
    height: int
    width: int
    epsg: int | None
    """EPSG code of the CRS, or ``None`` when it has none (or GDAL finds none)."""
    crs: str
    """The CRS for messages (``EPSG:32633``, or GDAL's description)."""
    transform: tuple[float, float, float, float, float, float]
    """GDAL's affine order: (a, b, c, d, e, f) = (x size, row rotation, x origin, column
    rotation, y size (negative), y origin)."""


Check = Callable[[RasterHeader], None]

# TIFF tags the fast path reads; any other tag is ignored unless it changes how pixels or
# georeferencing are read (those send the file to GDAL, see _GDAL_ONLY_TAGS).
_WIDTH, _LENGTH, _BITS, _COMPRESSION = 256, 257, 258, 259
_STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_COUNTS = 273, 277, 278, 279
_PLANAR, _PREDICTOR, _SAMPLE_FORMAT = 284, 317, 339
_PIXEL_SCALE, _TIEPOINT, _GEOKEYS = 33550, 33922, 34735
_GDAL_ONLY_TAGS = {
    322, 323, 324, 325,  # tiles
    338,  # ExtraSamples
    34264,  # ModelTransformationTag: rotation or shear
    32997, 32998,  # ImageDepth, TileDepth
    330,  # SubIFDs
}
# Field types -> (struct code, size): BYTE, ASCII, SHORT, LONG, RATIONAL (skipped), DOUBLE.
_FIELD = {1: ("B", 1), 2: ("s", 1), 3: ("H", 2), 4: ("I", 4), 12: ("d", 8), 16: ("Q", 8)}
_DTYPES = {(1, 8): "uint8", (1, 16): "uint16", (1, 32): "uint32", (2, 8): "int8", (2, 16): "int16",
           (2, 32): "int32", (3, 32): "float32", (3, 64): "float64"}  # fmt: skip

# GeoKeys the fast path understands, with the values it accepts (None: any). A file with any
# other key, or another value, is read by GDAL (its CRS may then differ from the EPSG code).
_MODEL_TYPE, _RASTER_TYPE, _PROJECTED_CS = 1024, 1025, 3072
_KNOWN_GEOKEYS: dict[int, int | None] = {
    _MODEL_TYPE: 1,  # projected
    _RASTER_TYPE: 1,  # PixelIsArea (PixelIsPoint shifts GDAL's origin by half a pixel)
    1026: None,  # GTCitation (text)
    2049: None,  # GeogCitation (text)
    2054: 9102,  # GeogAngularUnits: degree
    3073: None,  # PCSCitation (text)
    _PROJECTED_CS: None,  # ProjectedCSType: the EPSG code, checked below
    3076: 9001,  # ProjLinearUnits: metre
}
_MAX_STRIPS = 4096


def _ifd(data: bytes) -> dict[int, tuple[int, int, int]] | None:
    """Tag -> (field type, count, value offset) of the first IFD of a little-endian classic TIFF."""
    if len(data) < 8 or data[:4] != b"II*\x00":
        return None
    (ifd,) = struct.unpack_from("<I", data, 4)
    if ifd < 8 or ifd + 2 > len(data):
        return None
    (entries,) = struct.unpack_from("<H", data, ifd)
    if ifd + 2 + 12 * entries + 4 > len(data):
        return None
    tags: dict[int, tuple[int, int, int]] = {}
    for i in range(entries):
        pos = ifd + 2 + 12 * i
        tag, ftype, count = struct.unpack_from("<HHI", data, pos)
        size = _FIELD.get(ftype, ("", 8))[1]
        where = pos + 8 if count * size <= 4 else struct.unpack_from("<I", data, pos + 8)[0]
        tags[tag] = (ftype, count, where)
    (next_ifd,) = struct.unpack_from("<I", data, ifd + 2 + 12 * entries)
    if next_ifd:  # overviews or masks: GDAL decides what the first band is
        return None
    return tags


def _values(data: bytes, entry: tuple[int, int, int]) -> tuple[int | float, ...] | None:
    ftype, count, where = entry
    if ftype not in _FIELD or ftype == 2:
        return None
    code, size = _FIELD[ftype]
    if count == 0 or where + count * size > len(data):
        return None
    return struct.unpack_from(f"<{count}{code}", data, where)


@dataclass(frozen=True)
class _Plan:
    header: RasterHeader
    offsets: tuple[int, ...]
    counts: tuple[int, ...]
    rows_per_strip: int
    compression: int
    predictor: int


def _plan(data: bytes) -> _Plan | None:
    """How to read ``data`` without GDAL, or ``None`` when GDAL must read it."""
    tags = _ifd(data)
    if tags is None or _GDAL_ONLY_TAGS & tags.keys():
        return None

    def one(tag: int, default: int | None = None) -> int | None:
        if tag not in tags:
            return default
        vals = _values(data, tags[tag])
        if vals is None or len(set(vals)) != 1:
            return None
        return int(vals[0])

    width, height = one(_WIDTH), one(_LENGTH)
    samples, planar = one(_SAMPLES, 1), one(_PLANAR, 1)
    bits, fmt = one(_BITS), one(_SAMPLE_FORMAT, 1)
    compression, predictor = one(_COMPRESSION, 1), one(_PREDICTOR, 1)
    rows = one(_ROWS_PER_STRIP, 2**32 - 1)
    if None in (width, height, samples, planar, bits, fmt, compression, predictor, rows):
        return None
    assert width is not None and height is not None and bits is not None and fmt is not None  # for mypy
    assert compression is not None and predictor is not None and rows is not None
    if samples != 1 or not (0 < width <= 65535 and 0 < height <= 65535) or rows <= 0:
        return None
    dtype = _DTYPES.get((fmt, bits))
    if dtype is None or compression not in (1, 8, 32946):
        return None
    if predictor not in (1, 2) or (predictor == 2 and (compression == 1 or dtype.startswith("float"))):
        return None
    if _STRIP_OFFSETS not in tags or _STRIP_COUNTS not in tags:
        return None
    offsets, counts = _values(data, tags[_STRIP_OFFSETS]), _values(data, tags[_STRIP_COUNTS])
    rows = min(rows, height)
    strips = -(-height // rows)
    if offsets is None or counts is None or len(offsets) != strips or len(counts) != strips or strips > _MAX_STRIPS:
        return None
    georef = _georeference(data, tags)
    if georef is None:
        return None
    epsg, transform = georef
    header = RasterHeader(1, dtype, height, width, epsg, f"EPSG:{epsg}", transform)
    return _Plan(header, tuple(int(o) for o in offsets), tuple(int(c) for c in counts), rows, compression, predictor)


Transform = tuple[float, float, float, float, float, float]


def _georeference(data: bytes, tags: dict[int, tuple[int, int, int]]) -> tuple[int, Transform] | None:
    """(EPSG, transform) from a tie point, a pixel scale and an EPSG-coded projected CRS."""
    if _PIXEL_SCALE not in tags or _TIEPOINT not in tags or _GEOKEYS not in tags:
        return None
    scale, tie, keys = (_values(data, tags[t]) for t in (_PIXEL_SCALE, _TIEPOINT, _GEOKEYS))
    if scale is None or tie is None or keys is None or len(scale) != 3 or len(tie) != 6 or len(keys) < 4:
        return None
    if tags[_PIXEL_SCALE][0] != 12 or tags[_TIEPOINT][0] != 12:
        return None
    if tags[_GEOKEYS][0] != 3:
        return None
    version, n = keys[0], int(keys[3])
    if version != 1 or len(keys) != 4 + 4 * n:
        return None
    geokeys: dict[int, int | None] = {}
    for k in range(4, 4 + 4 * n, 4):
        key, location, value = int(keys[k]), keys[k + 1], int(keys[k + 3])
        if key not in _KNOWN_GEOKEYS:
            return None
        geokeys[key] = value if location == 0 else None  # text keys live in GeoAsciiParams
        wanted = _KNOWN_GEOKEYS[key]
        if wanted is not None and (location != 0 or value != wanted):
            return None
    epsg = geokeys.get(_PROJECTED_CS)
    # WGS 84 / UTM (326xx north, 327xx south): the only CRSs of BigEarthNet; GDAL reads anything else.
    if geokeys.get(_MODEL_TYPE) != 1 or epsg is None or not (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        return None
    sx, sy = float(scale[0]), float(scale[1])
    i, j, x, y = float(tie[0]), float(tie[1]), float(tie[3]), float(tie[4])
    if not (sx > 0 and sy > 0) or not all(math.isfinite(v) for v in (sx, sy, i, j, x, y)):
        return None
    return epsg, (sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy)


def _pixels(data: bytes, plan: _Plan) -> np.ndarray | None:
    """The first band as a (height, width) array, or ``None`` for strips GDAL should judge."""
    h = plan.header
    dtype = np.dtype(h.dtype).newbyteorder("<")
    row_bytes = h.width * dtype.itemsize
    out = np.empty((h.height, h.width), dtype=dtype)
    for k, (offset, count) in enumerate(zip(plan.offsets, plan.counts, strict=True)):
        first = k * plan.rows_per_strip
        nrows = min(plan.rows_per_strip, h.height - first)
        need = nrows * row_bytes
        if offset + count > len(data):
            return None
        if plan.compression == 1:
            if count < need:
                return None
            raw = data[offset:offset + need]
        else:
            try:
                raw = zlib.decompressobj().decompress(data[offset:offset + count], need)
            except zlib.error:
                return None
            if len(raw) != need:
                return None
        strip = np.frombuffer(raw, dtype=dtype).reshape(nrows, h.width)
        if plan.predictor == 2:
            strip = np.cumsum(strip, axis=1, dtype=dtype)
        out[first:first + nrows] = strip
    return out.astype(np.dtype(h.dtype), copy=False)


def decode_raster_fast(data: bytes, check: Check | None = None) -> tuple[RasterHeader, np.ndarray] | None:
    """:func:`decode_raster` without GDAL; ``None`` when the file needs GDAL."""
    plan = _plan(data)
    if plan is None:
        return None
    if check is not None:
        check(plan.header)
    pixels = _pixels(data, plan)
    if pixels is None:
        return None
    return plan.header, pixels


def decode_raster_gdal(data: bytes, check: Check | None = None) -> tuple[RasterHeader, np.ndarray]:
    """:func:`decode_raster` through GDAL (rasterio's ``MemoryFile``, the GTiff driver only)."""
    from rasterio.errors import CRSError, RasterioError
    from rasterio.io import MemoryFile

    try:
        with MemoryFile(data) as mem, mem.open(driver="GTiff") as src:
            epsg = src.crs.to_epsg() if src.crs is not None else None
            t = src.transform
            header = RasterHeader(src.count, src.dtypes[0], src.height, src.width, epsg, str(src.crs),
                                  (t.a, t.b, t.c, t.d, t.e, t.f))
            if check is not None:
                check(header)
            return header, src.read(1)
    except (RasterioError, CRSError) as exc:  # unreadable file, or a CRS that PROJ cannot read
        raise UnreadableRaster(str(exc)) from None


def decode_raster(data: bytes, check: Check | None = None) -> tuple[RasterHeader, np.ndarray]:
    """The header and first band of a GeoTIFF; ``check(header)`` runs before pixels are decoded.

    The fast path for the plain GeoTIFFs of the archives, GDAL for everything else. Raises
    :class:`UnreadableRaster` for bytes GDAL cannot read, and whatever ``check`` raises.
    """
    fast = decode_raster_fast(data, check)
    if fast is not None:
        return fast
    return decode_raster_gdal(data, check)
