"""What every release reader provides, and the pixel checks they share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
from rasterio.errors import CRSError, RasterioError
from rasterio.io import MemoryFile

from bigearth_stac.vocab import BANDS
from catalog_builder.records import PairRecord, SourceError

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


def band_byte_limit(band: str) -> int:
    """The most bytes a raw file of ``band`` can legitimately be (from its size and dtype).

    About 370 KB for a 10 m uint16 band, 490 KB for an S1 float32 band: a file larger than this
    is refused before it is read, so a huge (or sparse) file cannot exhaust a worker's memory.
    """
    spec = BANDS[band]
    pixel_bytes = spec.size * spec.size * np.dtype(spec.dtype).itemsize
    return BAND_PIXEL_FACTOR * pixel_bytes + BAND_HEADER_ALLOWANCE


def decode_band(data: bytes, band: str, pair: str, where: str, epsg: int, origin: tuple[float, float]) -> np.ndarray:
    """Decode one raw single-band GeoTIFF and check it against what the band must be.

    Checks: a readable GeoTIFF with one band, the band's dtype and size, the patch CRS, and the
    upper-left corner given by the metadata JSON.
    """
    spec = BANDS[band]
    try:
        with MemoryFile(data) as mem, mem.open(driver="GTiff") as src:
            if src.count != 1:
                raise SourceError(pair, where, f"expected 1 band, found {src.count}")
            if src.dtypes[0] != spec.dtype:
                raise SourceError(pair, where, f"expected dtype {spec.dtype}, found {src.dtypes[0]}")
            if (src.height, src.width) != (spec.size, spec.size):
                raise SourceError(
                    pair, where,
                    f"wrong shape {src.height}x{src.width}; band {band} at {spec.resolution} m "
                    f"must be {spec.size}x{spec.size}",
                )
            if src.crs is None or src.crs.to_epsg() != epsg:
                raise SourceError(pair, where, f"CRS {src.crs} does not match EPSG:{epsg} of the metadata")
            t = src.transform
            if abs(t.c - origin[0]) > 1e-6 or abs(t.f - origin[1]) > 1e-6:
                raise SourceError(
                    pair, where, f"origin ({t.c}, {t.f}) does not match the metadata ({origin[0]}, {origin[1]})"
                )
            if abs(t.a - spec.resolution) > 1e-6 or abs(t.e + spec.resolution) > 1e-6:
                raise SourceError(pair, where, f"pixel size ({t.a}, {t.e}) is not {spec.resolution} m")
            return src.read(1)
    except (RasterioError, CRSError) as exc:  # unreadable file, or a CRS that PROJ cannot read
        raise SourceError(pair, where, f"not a readable GeoTIFF ({exc})") from None


def open_source(
    s2: str,
    s1: str,
    release: str = "v1",
    tables: str | None = None,
    settings: StorageSettings | None = None,
) -> ReleaseSource:
    """The reader for a release over two raw roots (local paths or s3:// URLs)."""
    from catalog_builder.rawio import open_reader
    from catalog_builder.sources.v1 import V1Source

    if release in ("v1", "v1.0"):
        return V1Source(open_reader(s2, settings), open_reader(s1, settings), tables_dir=tables)
    raise ValueError(f"unknown release {release!r}; this version reads 'v1'")


__all__ = ["PairRecord", "ReleaseSource", "band_byte_limit", "decode_band", "open_source"]
