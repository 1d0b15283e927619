"""BigEarthNet v1.0 (BigEarthNet-MM): a folder per patch, a ``*_labels_metadata.json`` each.

Real quirks handled here: the S1 JSON calls the lower-right y ``lly``; names do not always hold
a well-formed time (``S2B_MSIL2A_20170924T93020_69_24``), so time comes from the JSON; S1 and S2
of a pair are acquired on different days.

Raw folders are untrusted input: names must match the patch-name patterns in full (ASCII, no
trailing newline) before they become ids and output folder names; every file is read with a
size cap (metadata: :data:`MAX_METADATA_BYTES`, bands: :func:`band_byte_limit`), JSON with a
cap on nesting, and any of these failures is a :class:`SourceError` naming the file.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from functools import lru_cache, partial
from typing import Any

import numpy as np
import pyarrow.compute as pc
from rasterio.crs import CRS

from bigearth_stac.vocab import LABELS_43, RELEASE_V1, S1_BAND_NAMES, S2_BAND_NAMES, to_19
from catalog_builder.rawio import RawInputError, RawReader, loads_bounded
from catalog_builder.records import PairRecord, PatchRecord, SourceError
from catalog_builder.sources.base import band_byte_limit, decode_band
from catalog_builder.tables import OfficialTables, load_tables

log = logging.getLogger(__name__)

# Patch names become item ids and output folder names: always matched with ``fullmatch``
# (``$`` would accept a trailing newline) and ASCII-only (``\d`` would accept any Unicode digit).
S2_NAME = re.compile(r"S2[AB]_MSIL2A_\d{8}T\d{4,6}_\d+_\d+", re.ASCII)
S1_NAME = re.compile(r"S1[AB]_IW_GRDH_1SDV_\d{8}T\d{6}_(\d{2}[C-X][A-Z]{2})_\d+_\d+", re.ASCII)
TILE_IN_PRODUCT = re.compile(r"_T(\d{2}[C-X][A-Z]{2})_", re.ASCII)
MAX_METADATA_BYTES = 2**20
"""A ``*_labels_metadata.json`` is about 1 KB; a larger one than 1 MiB is refused unread."""
MAX_METADATA_DEPTH = 16
"""Nesting a metadata JSON may have (the real ones have 2)."""
MAX_WKT_CHARS = 8192
"""Longest ``projection`` WKT parsed (the real ones are about 600 characters); also bounds the
memory of :func:`epsg_of`'s cache."""
MAX_UNKNOWN_LABELS_NAMED = 5
"""Unknown labels a problem names, each with its closest valid names (the rest are counted)."""
_LABEL_ORDER = {name: i for i, name in enumerate(LABELS_43)}


@lru_cache(maxsize=256)
def epsg_of(wkt: str) -> int | None:
    """EPSG code of a WKT projection (cached: a release has a handful of distinct ones)."""
    try:
        return CRS.from_wkt(wkt).to_epsg()
    except Exception:  # noqa: BLE001 - any parse failure is reported by the caller
        return None


def short(value: Any, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters: hostile input must not make a huge report."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def read_capped(reader: RawReader, name: str, pair: str, what: str, max_bytes: int) -> bytes:
    """``reader.read(name, max_bytes)``; a missing, oversized or refused file is a :class:`SourceError`.

    Errors of the store itself (a network failure after retries) are not the pair's fault and
    pass through unchanged.
    """
    try:
        return reader.read(name, max_bytes)
    except FileNotFoundError:
        raise SourceError(pair, reader.describe(name), f"{what} is missing") from None
    except RawInputError as exc:
        raise SourceError(pair, reader.describe(name), f"{what} {exc}") from None
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        raise SourceError(pair, reader.describe(name), f"{what} cannot be read ({exc.strerror})") from None


def parse_time(value: Any) -> datetime:
    """``2017-06-17 11:33:21`` (S2) or ``2017-06-13T16:50:43`` (S1), UTC."""
    if not isinstance(value, str):
        raise ValueError(f"not a string: {short(value)}")
    return datetime.fromisoformat(value.strip().replace(" ", "T")).replace(tzinfo=timezone.utc)


class V1Source:
    """Reader of the v1 layout: an S2 root and an S1 root, a folder per patch.

    The unit of work is an S1 folder: its JSON names the S2 partner. S2 folders that no S1
    folder names are reported by :meth:`unpaired`.
    """

    release = RELEASE_V1

    def __init__(self, s2: RawReader, s1: RawReader, tables_dir: str | None = None,
                 tables: OfficialTables | None = None) -> None:
        self.s2 = s2
        self.s1 = s1
        self.tables_dir = tables_dir
        self._tables = tables

    @property
    def tables(self) -> OfficialTables:
        if self._tables is None:
            self._tables = load_tables(self.tables_dir)
        return self._tables

    def with_tables_for(self, units: list[str]) -> V1Source:
        """A copy carrying only the table rows these units need (cheap to ship to workers)."""
        return V1Source(self.s2, self.s1, self.tables_dir, self.tables.subset_for_s1(units))

    # -- discovery ------------------------------------------------------------------------

    def units(self) -> list[str]:
        return [n for n in self.s1.listdir("") if not n.startswith(".")]

    def unpaired(self, partners: set[str]) -> list[tuple[str, str]]:
        """S2 folders that no S1 folder named as its partner (``partners``: the S2 names seen)."""
        problems = []
        alone = [s2 for s2 in self.s2.listdir("") if not s2.startswith(".") and s2 not in partners]
        tables = self.tables.subset_for_s2(alone) if alone else self.tables
        for s2 in alone:
            expected = tables.facts(s2).s1_name
            why = f"its S1 partner {expected} is missing from the S1 root" if expected else "no S1 patch names it as its partner"
            problems.append((self.s2.describe(s2), why))
        return problems

    # -- metadata -------------------------------------------------------------------------

    def _json(self, reader: RawReader, folder: str, pair: str) -> tuple[dict[str, Any], str]:
        name = f"{folder}/{folder}_labels_metadata.json"
        raw = read_capped(reader, name, pair, "metadata JSON", MAX_METADATA_BYTES)
        try:
            doc = loads_bounded(raw, MAX_METADATA_DEPTH)
        except ValueError as exc:
            raise SourceError(pair, reader.describe(name), str(exc)) from None
        if not isinstance(doc, dict):
            raise SourceError(pair, reader.describe(name), "metadata JSON is not an object")
        return doc, name

    def _labels(self, doc: dict[str, Any], pair: str, where: str) -> tuple[str, ...]:
        labels = doc.get("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise SourceError(pair, where, f"'labels' must be a non-empty list of names, got {short(labels)}")
        unknown = list(dict.fromkeys(x for x in labels if x not in _LABEL_ORDER))
        if unknown:
            from bigearth_stac.vocab import closest

            named = unknown[:MAX_UNKNOWN_LABELS_NAMED]
            detail = "; ".join(f"{short(u)} (closest: {', '.join(closest(u, LABELS_43)) or 'none'})" for u in named)
            if len(unknown) > len(named):
                detail += f"; and {len(unknown) - len(named)} more"
            raise SourceError(pair, where, f"unknown CLC Level-3 label(s): {detail}")
        return tuple(sorted(set(labels), key=_LABEL_ORDER.__getitem__))

    def _patch(self, reader: RawReader, folder: str, modality: str, pair: str,
               parsed: tuple[dict[str, Any], str] | None = None) -> PatchRecord:
        doc, name = parsed if parsed is not None else self._json(reader, folder, pair)
        where = reader.describe(name)
        coords = doc.get("coordinates")
        lr_y_key = "lly" if modality == "s1" else "lry"
        if not isinstance(coords, dict):
            raise SourceError(pair, where, "'coordinates' is missing")
        # v1's S1 JSON names the lower-right y 'lly'; accept either spelling on both sides.
        lry = coords.get(lr_y_key, coords.get("lry" if lr_y_key == "lly" else "lly"))
        try:
            bounds = (float(coords["ulx"]), float(coords["uly"]), float(coords["lrx"]), float(lry))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError, OverflowError):
            raise SourceError(pair, where, f"'coordinates' needs ulx, uly, lrx, {lr_y_key}: got {short(coords)}") from None
        if not (bounds[2] - bounds[0] == 1200 and bounds[1] - bounds[3] == 1200):
            raise SourceError(pair, where, f"coordinates {bounds} do not span 1200 m x 1200 m")
        time_key = "acquisition_time" if modality == "s1" else "acquisition_date"
        try:
            when = parse_time(doc.get(time_key))
        except ValueError as exc:
            raise SourceError(pair, where, f"bad '{time_key}': {exc}") from None
        wkt = doc.get("projection")
        epsg = epsg_of(wkt) if isinstance(wkt, str) and len(wkt) <= MAX_WKT_CHARS else None
        if epsg is None:
            raise SourceError(pair, where, "'projection' is not a WKT with an EPSG code")
        bands = S1_BAND_NAMES if modality == "s1" else S2_BAND_NAMES
        source_key = "scene_source" if modality == "s1" else "tile_source"
        return PatchRecord(
            id=folder,
            modality=modality,
            datetime=when,
            epsg=epsg,
            bounds=bounds,
            band_files={b: f"{folder}/{folder}_{b}.tif" for b in bands},
            source_product=str(doc.get(source_key, "")),
            labels_43=self._labels(doc, pair, where),
            metadata_file=name,
        )

    def _tables_partner(self, s1_name: str) -> str | None:
        """The S2 partner the official tables give ``s1_name``, if they list it."""
        table = self.tables.table
        hits = table.filter(pc.equal(table.column("s1_name"), s1_name)).column("s2_name")
        return str(hits[0]) if len(hits) else None

    def read_pair(self, unit: str) -> PairRecord:
        """The pair of the S1 folder ``unit``.

        A :class:`SourceError` carries the S2 partner's name whenever it is known (from the S1
        JSON, else from the official tables), so the build does not report that S2 patch a
        second time as one without a partner.
        """
        s1_name = unit
        m = S1_NAME.fullmatch(s1_name)
        if not m:
            raise SourceError(s1_name, self.s1.describe(s1_name), f"folder name {short(s1_name)} is not a v1 S1 patch name")
        s2_name: str | None = None
        try:
            doc, name = self._json(self.s1, s1_name, s1_name)
            named = doc.get("corresponding_s2_patch")
            if not isinstance(named, str) or not S2_NAME.fullmatch(named):
                raise SourceError(s1_name, self.s1.describe(name),
                                  f"'corresponding_s2_patch' is not an S2 patch name: {short(named)}")
            s2_name = named
            return self._pair(s1_name, s2_name, m.group(1), (doc, name))
        except SourceError as exc:
            if exc.partner is None:
                exc.partner = s2_name if s2_name is not None else self._tables_partner(s1_name)
            raise

    def _pair(self, s1_name: str, s2_name: str, s1_tile: str, s1_doc: tuple[dict[str, Any], str]) -> PairRecord:
        s1 = self._patch(self.s1, s1_name, "s1", s1_name, s1_doc)
        name = s1_doc[1]
        try:
            self.s2.listdir(s2_name)
        except FileNotFoundError:
            raise SourceError(s2_name, self.s2.describe(s2_name), f"S2 partner of {s1_name} is missing") from None
        except (RawInputError, NotADirectoryError, PermissionError) as exc:
            raise SourceError(s2_name, self.s2.describe(s2_name), f"S2 partner folder cannot be listed ({exc})") from None
        s2 = self._patch(self.s2, s2_name, "s2", s2_name)
        if s1.epsg != s2.epsg or s1.bounds != s2.bounds:
            raise SourceError(
                s2_name, self.s1.describe(s1.metadata_file),
                f"S1 grid (EPSG:{s1.epsg}, {s1.bounds}) differs from its S2 partner (EPSG:{s2.epsg}, {s2.bounds})",
            )
        facts = self.tables.facts(s2_name)
        if facts.s1_name is not None and facts.s1_name != s1_name:
            raise SourceError(s2_name, self.s1.describe(name), f"official tables pair {s2_name} with {facts.s1_name}, not {s1_name}")
        tm = TILE_IN_PRODUCT.search(s2.source_product)
        tile = tm.group(1) if tm else s1_tile
        labels = s2.labels_43
        return PairRecord(
            s2=s2,
            s1=s1,
            tile=tile,
            labels_43=labels,
            labels_19=tuple(to_19(labels)),
            split=facts.split,
            country=facts.country,
            season=facts.season,
            seasonal_snow=facts.seasonal_snow,
            cloud_or_shadow=facts.cloud_or_shadow,
            release=self.release,
        )

    # -- pixels ---------------------------------------------------------------------------

    def read_pixels(self, pair: PairRecord) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for patch, reader in ((pair.s2, self.s2), (pair.s1, self.s1)):
            origin = (patch.bounds[0], patch.bounds[1])
            for band, name in patch.band_files.items():
                data = read_capped(reader, name, patch.id, f"band {band}", band_byte_limit(band))
                out[band] = decode_band(data, band, patch.id, partial(reader.describe, name), patch.epsg, origin)
        return out
