"""What every release reader provides, and the pixel checks they share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from bigearth_stac.vocab import BANDS
from catalog_builder.records import PairRecord, SourceError
from catalog_builder.sources.rawtiff import Check, RasterHeader, UnreadableRaster, decode_raster

if TYPE_CHECKING:
    from bigearth_stac.settings import StorageSettings


class ReleaseSource(Protocol):
    """A BigEarthNet release as units of work, records and pixels."""

    release: str

    def units(self) -> list[str]:
        """Cheap names of the pairs to build (no file is parsed); sorted, stable across runs."""
        ...

    def read_pair(self, unit: str) -> PairRecord:
        """Parse the metadata of one pair; raises :class:`SourceError` naming the file at fault
        (and, in ``SourceError.partner``, the pair's S2 name whenever it was known)."""
        ...

    def read_pixels(self, pair: PairRecord) -> dict[str, np.ndarray]:
        """All bands of the pair (S2 and S1) by band name, checked for shape and dtype."""
        ...

    def unpaired(self, partners: set[str]) -> list[tuple[str, str]]:
        """(location, problem) for patches no unit named as a partner (``partners``: the names
        the built units reported), which therefore build nothing."""
        ...


BAND_PIXEL_FACTOR = 4
"""A band file may hold up to this many times its pixel bytes (tile padding: a 120 px patch in
a 256 px tile is 4.6x; an uncompressed raw v1 band is 1x plus a header of a few hundred bytes)."""
BAND_HEADER_ALLOWANCE = 256 * 2**10
"""Bytes a band file may hold on top of its pixels: TIFF header, tags and GDAL metadata, and
the padding of a small patch (20 px) in a 256 px tile."""


Where = str | Callable[[], str]
"""Where a file is, for messages: the text, or a function giving it (``reader.describe`` of the
name), called only when there is something to report: a build reads 15 files per pair and
reports on almost none of them."""


def where_text(where: Where) -> str:
    """The text of a :data:`Where`."""
    return where if isinstance(where, str) else where()


def band_byte_limit(band: str) -> int:
    """The most bytes a raw file of ``band`` can legitimately be (from its size and dtype).

    About 370 KB for a 10 m uint16 band, 490 KB for an S1 float32 band: a file larger than this
    is refused before it is read, so a huge (or sparse) file cannot exhaust a worker's memory.
    """
    spec = BANDS[band]
    pixel_bytes = spec.size * spec.size * np.dtype(spec.dtype).itemsize
    return BAND_PIXEL_FACTOR * pixel_bytes + BAND_HEADER_ALLOWANCE


def decode_band(data: bytes, band: str, pair: str, where: Where, epsg: int, origin: tuple[float, float],
                reference: str = "the metadata") -> np.ndarray:
    """Decode one raw single-band GeoTIFF and check it against what the band must be.

    Checks, on the header before any pixel is decoded: one band, the band's dtype and size, the
    patch CRS and the upper-left corner given by ``reference`` (v1: the metadata JSON; v2: the
    patch's reference map or its first band), and the band's pixel size. The plain GeoTIFFs of
    the archives are decoded without GDAL (:mod:`~catalog_builder.sources.rawtiff`), anything
    else with it.
    """
    spec = BANDS[band]
    check_raster = raster_check(spec.dtype, spec.size, spec.resolution, pair, where, epsg, origin, reference,
                                what=f"band {band} at {spec.resolution} m")
    try:
        return decode_raster(data, check_raster)[1]
    except UnreadableRaster as exc:
        raise SourceError(pair, where_text(where), f"not a readable GeoTIFF ({exc})") from None


def raster_check(dtype: str, size: int, resolution: int, pair: str, where: Where, epsg: int | None,
                 origin: tuple[float, float] | None, reference: str, what: str) -> Check:
    """A header check for :func:`~catalog_builder.sources.rawtiff.decode_raster`: one band of
    ``dtype``, ``size`` x ``size`` pixels of ``resolution`` m, and (unless ``None``) the CRS and
    upper-left corner of ``reference``; raises :class:`SourceError` naming ``where``."""

    def check(h: RasterHeader) -> None:
        if h.count != 1:
            raise SourceError(pair, where_text(where), f"expected 1 band, found {h.count}")
        if h.dtype != dtype:
            raise SourceError(pair, where_text(where), f"expected dtype {dtype}, found {h.dtype}")
        if (h.height, h.width) != (size, size):
            raise SourceError(pair, where_text(where), f"wrong shape {h.height}x{h.width}; {what} must be {size}x{size}")
        if epsg is not None and h.epsg != epsg:
            raise SourceError(pair, where_text(where), f"CRS {h.crs} does not match EPSG:{epsg} of {reference}")
        a, _, c, _, e, f = h.transform
        if origin is not None and (abs(c - origin[0]) > 1e-6 or abs(f - origin[1]) > 1e-6):
            raise SourceError(pair, where_text(where), f"origin ({c}, {f}) does not match {reference} ({origin[0]}, {origin[1]})")
        if abs(a - resolution) > 1e-6 or abs(e + resolution) > 1e-6:
            raise SourceError(pair, where_text(where), f"pixel size ({a}, {e}) is not {resolution} m")

    return check


METADATA_TABLES = ("metadata.parquet", "metadata_for_patches_with_snow_cloud_or_shadow.parquet")
"""The official v2 metadata tables, looked for beside the S2 root when none is named."""


def open_source(
    s2: str,
    s1: str,
    release: str = "auto",
    tables: str | None = None,
    settings: StorageSettings | None = None,
    metadata: Sequence[str] = (),
    reference_maps: str | None = None,
) -> ReleaseSource:
    """The reader for a release over two raw roots (local paths or s3:// URLs).

    ``release``: ``v1``, ``v2`` or ``auto``: v2 when ``metadata`` is given, when an official v2
    metadata table lies beside the S2 root, or when the S2 root holds v2 product folders; else v1. v1 reads the official tables from ``tables`` (default:
    ``bigearthnet-common``); v2 reads the ``metadata`` tables (default: the official ones found
    beside the S2 root) and the reference maps (default: ``Reference_Maps`` beside the S2 root
    when present; ``""``: none).
    """
    from catalog_builder.rawio import open_reader
    from catalog_builder.sources.v1 import V1Source
    from catalog_builder.sources.v2 import beside, looks_like_v2, open_v2

    if release == "auto":
        beside_s2 = [loc for loc in (beside(s2, name) for name in METADATA_TABLES) if _exists(loc, settings)]
        release = "v2" if metadata or beside_s2 or looks_like_v2(s2, settings) else "v1"
    if release in ("v1", "v1.0"):
        if metadata or reference_maps:
            raise ValueError("metadata tables and reference maps are v2 inputs; this is a v1 layout")
        return V1Source(open_reader(s2, settings), open_reader(s1, settings), tables_dir=tables)
    if release in ("v2", "v2.0"):
        if not metadata:
            metadata = [loc for loc in (beside(s2, name) for name in METADATA_TABLES) if _exists(loc, settings)]
            if not metadata:
                raise ValueError(f"v2 needs its metadata table: pass it (--metadata metadata.parquet); none of "
                                 f"{', '.join(METADATA_TABLES)} is beside {s2}")
        return open_v2(s2, s1, list(metadata), reference_maps, settings)
    raise ValueError(f"unknown release {release!r}; this version reads 'v1' and 'v2'")


def _exists(location: str, settings: StorageSettings | None) -> bool:
    """Whether a file exists (local path or s3:// URL), without reading it."""
    from catalog_builder.rawio import open_reader
    from catalog_builder.sources.v2 import split_location

    folder, name = split_location(location)
    try:
        return name in open_reader(folder, settings).listdir("")
    except (FileNotFoundError, NotADirectoryError):
        return False


__all__ = ["METADATA_TABLES", "PairRecord", "ReleaseSource", "Where", "band_byte_limit", "decode_band", "open_source",
           "raster_check", "where_text"]
