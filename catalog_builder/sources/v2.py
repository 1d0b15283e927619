"""BigEarthNet v2.0 (reBEN): nested product folders, ``metadata.parquet``, reference maps.

Layout (BIGEARTHNET.md)::

    BigEarthNet-S2/<S2 product>/<patch_id>/<patch_id>_B01.tif ... _B8A.tif
    BigEarthNet-S1/<S1 product>/<s1_name>/<s1_name>_VV.tif, _VH.tif
    Reference_Maps/<S2 product>/<patch_id>/<patch_id>_reference_map.tif
    metadata.parquet (+ metadata_for_patches_with_snow_cloud_or_shadow.parquet)

``patch_id`` is the S2 product plus the patch's grid position
(``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_75_43``), the S1 product is the S1 name without
its tile and position (``S1A_IW_GRDH_1SDV_20170613T165043``). There is no per-patch JSON: time
comes from the product names (well-formed in v2), georeferencing from the GeoTIFFs: the
reference map (or, without maps, band B02) fixes the patch's CRS and corner, and every S2 and
S1 band must agree with it.

The metadata tables are read once, columnar, and never become per-row Python objects in the
client: :meth:`V2Source.with_tables_for` cuts the rows of a batch with a vectorised filter, and
that small table is what travels to a Dask worker. Only ``patch_id``, ``s1_name``, ``split``
and ``labels`` are required; ``country``, ``s2v1_name``, ``contains_seasonal_snow`` and
``contains_cloud_or_shadow`` are used when present and are ``None`` (absent or null in the
catalog) when not, never invented.

Labels: the 19-class labels are the table's (official, never overwritten). The 43-class labels
are the CLC Level-3 classes present in the reference map, with their pixel fractions; where
their 19-class projection differs from the official labels the pair is built all the same and
the disagreement is reported (:attr:`~catalog_builder.records.PairRecord.label_disagreement`).
"""

from __future__ import annotations

import bisect
import logging
import os
import posixpath
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bigearth_stac.contract import REFERENCE_MAP_ASSET
from bigearth_stac.vocab import (
    CLC_CODES,
    CLC_NODATA,
    LABELS_19,
    RELEASE_V2,
    S1_BAND_NAMES,
    S2_BAND_NAMES,
    SPLITS,
    clc_codes_to_43,
    closest,
    to_19,
)
from catalog_builder.rawio import RawInputError, RawReader, open_reader
from catalog_builder.records import PairRecord, PatchRecord, SourceError, SourceProblem
from catalog_builder.sources.base import band_byte_limit, decode_band, raster_check
from catalog_builder.sources.rawtiff import UnreadableRaster, decode_raster
from catalog_builder.sources.v1 import S1_NAME, S2_NAME, read_capped, short

if TYPE_CHECKING:
    from bigearth_stac.settings import StorageSettings

log = logging.getLogger(__name__)

# Names become item ids and output folder names: fullmatch, ASCII only (see sources/v1.py).
S2_PRODUCT = re.compile(r"(S2[AB])_MSIL2A_(\d{8}T\d{6})_N\d{4}_R\d{3}_T(\d{2}[C-X][A-Z]{2})", re.ASCII)
PATCH_ID = re.compile(rf"({S2_PRODUCT.pattern})_(\d{{1,3}})_(\d{{1,3}})", re.ASCII)
S1_PRODUCT = re.compile(r"S1[AB]_IW_GRDH_1SDV_\d{8}T\d{6}", re.ASCII)
S1_TIME = re.compile(r"S1[AB]_IW_GRDH_1SDV_(\d{8}T\d{6})_", re.ASCII)

REQUIRED_COLUMNS: dict[str, pa.DataType] = {
    "patch_id": pa.string(),
    "s1_name": pa.string(),
    "split": pa.string(),
    "labels": pa.list_(pa.field("element", pa.string())),
}
"""Columns every metadata table must have (tables from other tools carry just these four)."""
OPTIONAL_COLUMNS: dict[str, pa.DataType] = {
    "country": pa.string(),
    "s2v1_name": pa.string(),
    "contains_seasonal_snow": pa.bool_(),
    "contains_cloud_or_shadow": pa.bool_(),
}
"""Columns used when a table has them; null (unknown) where it does not."""
SOURCE_COLUMN = "__source"
"""Index of the table a row came from (into :attr:`V2Metadata.locations`)."""

MAX_METADATA_TABLE_BYTES = 2**30
"""A metadata table larger than 1 GiB is refused unread (the official one is a few tens of MB)."""
MAP_SIZE = 120
"""Reference maps are 120 x 120 CLC codes on the 10 m grid of the patch."""
MAP_DTYPE = "uint16"
MAP_RESOLUTION = 10
MAP_BYTE_LIMIT = 4 * MAP_SIZE * MAP_SIZE * 2 + 256 * 2**10
"""The most bytes a reference map can legitimately be (see :func:`band_byte_limit`)."""
FRACTION_DIGITS = 4
"""Decimals of the pixel fractions (1 pixel of 14,400 is 0.0001)."""
REFERENCE_MAPS_FOLDER = "Reference_Maps"
"""Name of the reference-map root in the official archives, beside ``BigEarthNet-S2``."""
_LABEL_ORDER_19 = {name: i for i, name in enumerate(LABELS_19)}


def product_time(stamp: str) -> datetime:
    """``20170613T101031`` -> 2017-06-13 10:10:31 UTC (v2 product names hold well-formed times)."""
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)


def split_location(location: str) -> tuple[str, str]:
    """(folder, file name) of a local path or an ``s3://`` URL."""
    clean = location.rstrip("/")
    folder, name = posixpath.split(clean) if "://" in clean else os.path.split(clean)
    if not name:
        raise ValueError(f"not a file location: {location!r}")
    return folder or ".", name


def beside(root: str, name: str) -> str:
    """The location ``name`` beside the folder ``root`` (local path or ``s3://`` URL)."""
    folder, _ = split_location(root)
    return f"{folder}/{name}" if "://" in root else os.path.join(folder, name)


class V2Metadata:
    """The v2 metadata tables, as one Arrow table sorted by ``patch_id``.

    Columns: :data:`REQUIRED_COLUMNS`, :data:`OPTIONAL_COLUMNS` (null where a table lacks one)
    and :data:`SOURCE_COLUMN`. Pickles as its table (a batch's rows on a worker).
    """

    def __init__(self, table: pa.Table, locations: Sequence[str], shared_s1: frozenset[str] | None = None) -> None:
        self.table = table
        self.locations = tuple(locations)
        self.shared_s1 = shared_s1 if shared_s1 is not None else _repeated(table.column("s1_name"))
        """``s1_name`` values that several rows give (of the whole tables, also in a subset):
        one S1 patch cannot be the partner of two S2 patches."""
        self._ids: pa.StringArray | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    def __getstate__(self) -> dict[str, Any]:
        return {"table": self.table, "locations": self.locations, "shared_s1": self.shared_s1}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["table"], state["locations"], state["shared_s1"])  # type: ignore[misc]

    @classmethod
    def read(cls, locations: Sequence[str], settings: StorageSettings | None = None) -> V2Metadata:
        """Read and join metadata tables (local paths or ``s3://`` URLs).

        Raises ``ValueError`` naming the table for one that cannot be used at all (not Parquet,
        a required column missing or of the wrong type): nothing of the build is right without it.
        """
        if not locations:
            raise ValueError("v2 needs at least one metadata table (metadata.parquet)")
        parts = []
        for i, location in enumerate(locations):
            folder, name = split_location(location)
            try:
                data = open_reader(folder, settings).read(name, MAX_METADATA_TABLE_BYTES)
            except (FileNotFoundError, RawInputError) as exc:
                raise ValueError(f"metadata table {location}: {exc}") from None
            parts.append(_normalise(data, location, i))
        table = pa.concat_tables(parts)
        order = pc.sort_indices(table, sort_keys=[("patch_id", "ascending"), (SOURCE_COLUMN, "ascending")])  # nulls last
        metadata = cls(table.take(order), locations)
        log.info("v2 metadata: %d rows from %d table(s)", len(metadata), len(locations))
        return metadata

    @property
    def ids(self) -> pa.StringArray:
        """The ``patch_id`` column as one array (sorted; nulls last)."""
        if self._ids is None:
            self._ids = self.table.column("patch_id").combine_chunks()
        return self._ids

    def patch_ids(self) -> list[str]:
        """Distinct non-null ``patch_id`` values, sorted."""
        return pc.unique(self.ids.drop_null()).to_pylist()

    def rows_of(self, patch_id: str) -> tuple[int, int]:
        """``[start, stop)`` of the rows of ``patch_id`` (a binary search: rows are sorted)."""
        ids = self.ids
        n = len(ids) - ids.null_count
        start = bisect.bisect_left(range(n), patch_id, key=lambda i: ids[i].as_py())
        stop = bisect.bisect_right(range(start, n), patch_id, key=lambda i: ids[i].as_py()) + start
        return start, stop

    def row(self, patch_id: str) -> dict[str, Any] | None:
        """The one row of ``patch_id`` as a dict; ``None`` if absent. Raises ``LookupError`` with
        the tables listing it when it has several rows."""
        start, stop = self.rows_of(patch_id)
        if stop == start:
            return None
        rows = self.table.slice(start, stop - start).to_pylist()
        if len(rows) > 1:
            where = ", ".join(self.locations[r[SOURCE_COLUMN]] for r in rows)
            raise LookupError(f"patch_id listed {len(rows)} times in the metadata tables ({where})")
        return rows[0]

    def subset(self, patch_ids: Sequence[str]) -> V2Metadata:
        """The rows of these patches (vectorised; order kept)."""
        mask = pc.is_in(self.table.column("patch_id"), value_set=pa.array(list(patch_ids), pa.string()))
        return V2Metadata(self.table.filter(mask), self.locations, self.shared_s1)

    def location_of(self, row: dict[str, Any]) -> str:
        return self.locations[row[SOURCE_COLUMN]]


def _repeated(column: pa.ChunkedArray) -> frozenset[str]:
    """Values that occur more than once in a column (vectorised; nulls ignored)."""
    counts = pc.value_counts(column.drop_null())
    repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    return frozenset(repeated.to_pylist())


def _normalise(data: bytes, location: str, index: int) -> pa.Table:
    """One metadata table with exactly the known columns, cast to their types."""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"metadata table {location} is not a readable Parquet file ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise ValueError(f"metadata table {location} lacks the required column(s) {', '.join(missing)} "
                         f"(it has {', '.join(schema.names)}); v2 needs {', '.join(REQUIRED_COLUMNS)}")
    wanted = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
    present = [c for c in wanted if c in schema.names]
    try:
        table = parquet.read(columns=present)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"metadata table {location} cannot be read ({exc})") from None
    columns = {}
    for name, typ in wanted.items():
        if name not in present:
            columns[name] = pa.nulls(table.num_rows, typ)
            continue
        try:
            columns[name] = table.column(name).cast(typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"metadata table {location}: column {name!r} of type {table.schema.field(name).type} "
                             f"is not {typ} ({exc})") from None
    columns[SOURCE_COLUMN] = pa.array(np.full(table.num_rows, index, dtype=np.int16))
    absent = [c for c in OPTIONAL_COLUMNS if c not in present]
    if absent:
        log.info("metadata table %s has no %s: those properties stay unknown", location, ", ".join(absent))
    return pa.table(columns)


class V2Source:
    """Reader of the v2 layout: S2, S1 and reference-map roots, and the metadata tables.

    The unit of work is a ``patch_id`` of the tables. Folders that no row names are reported
    by :meth:`unpaired`.
    """

    release = RELEASE_V2

    def __init__(self, s2: RawReader, s1: RawReader, metadata: V2Metadata, maps: RawReader | None = None) -> None:
        self.s2 = s2
        self.s1 = s1
        self.maps = maps
        self.metadata = metadata
        self._held: dict[str, Any] = {}
        """Raw bytes and decoded arrays :meth:`read_pair` read for the pair it returned, which
        :meth:`read_pixels` of that pair takes instead of reading them again."""

    def __getstate__(self) -> dict[str, Any]:
        return {"s2": self.s2, "s1": self.s1, "maps": self.maps, "metadata": self.metadata}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["s2"], state["s1"], state["metadata"], state["maps"])  # type: ignore[misc]

    def with_tables_for(self, units: Sequence[str]) -> V2Source:
        """A copy carrying only the metadata rows these units need (cheap to ship to workers)."""
        return V2Source(self.s2, self.s1, self.metadata.subset(units), self.maps)

    # -- discovery ------------------------------------------------------------------------

    def units(self) -> list[str]:
        return self.metadata.patch_ids()

    def _patch_folders(self, reader: RawReader, product: re.Pattern[str], problems: list[tuple[str, str]]) -> list[str]:
        """``product/patch`` of every patch folder under a root (two listings deep)."""
        found: list[str] = []
        for name in reader.listdir(""):
            if name.startswith("."):
                continue
            if not product.fullmatch(name):
                problems.append((reader.describe(name), "not a v2 product folder (ignored)"))
                continue
            try:
                found.extend(f"{name}/{p}" for p in reader.listdir(name) if not p.startswith("."))
            except (FileNotFoundError, NotADirectoryError, RawInputError, PermissionError) as exc:
                problems.append((reader.describe(name), f"cannot be listed ({exc})"))
        return found

    def unpaired(self, partners: set[str]) -> list[tuple[str, str]]:
        """S2 and S1 patch folders that no metadata row names, and rows without a ``patch_id``.

        The comparison is vectorised (folder names against the table's columns), so the
        table's rows never become Python objects.
        """
        problems: list[tuple[str, str]] = []
        table = self.metadata.table
        nameless = table.column("patch_id").null_count
        if nameless:
            problems.append((", ".join(self.metadata.locations), f"{nameless} row(s) have no patch_id (not built)"))
        for reader, product, column, what in ((self.s2, S2_PRODUCT, "patch_id", "patch_id"),
                                              (self.s1, S1_PRODUCT, "s1_name", "s1_name")):
            folders = self._patch_folders(reader, product, problems)
            if not folders:
                continue
            names = pa.array([f.rsplit("/", 1)[1] for f in folders], pa.string())
            known = pc.is_in(names, value_set=table.column(column).combine_chunks().drop_null())
            for k in np.flatnonzero(~known.to_numpy(zero_copy_only=False)):
                folder = folders[k]
                if what == "patch_id" and folder.rsplit("/", 1)[1] in partners:
                    continue
                problems.append((reader.describe(folder), f"no row of the metadata table(s) has this {what} (not built)"))
        return problems

    # -- metadata -------------------------------------------------------------------------

    def _labels_19(self, labels: Any, pair: str, where: str) -> tuple[str, ...]:
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise SourceError(pair, where, f"'labels' must be a list of 19-class names, got {short(labels)}")
        unknown = list(dict.fromkeys(x for x in labels if x not in _LABEL_ORDER_19))
        if unknown:
            named = unknown[:5]
            detail = "; ".join(f"{short(u)} (closest: {', '.join(closest(u, LABELS_19)) or 'none'})" for u in named)
            if len(unknown) > len(named):
                detail += f"; and {len(unknown) - len(named)} more"
            raise SourceError(pair, where, f"unknown 19-class label(s): {detail}")
        return tuple(sorted(set(labels), key=_LABEL_ORDER_19.__getitem__))

    def _row(self, patch_id: str) -> tuple[dict[str, Any], str]:
        try:
            row = self.metadata.row(patch_id)
        except LookupError as exc:
            raise SourceError(patch_id, ", ".join(self.metadata.locations), str(exc)) from None
        if row is None:
            raise SourceError(patch_id, ", ".join(self.metadata.locations), "no row of the metadata table(s) has this patch_id")
        return row, self.metadata.location_of(row)

    def _s2_band_bytes(self, folder: str, patch_id: str, band: str) -> bytes:
        """A band of the S2 patch; a missing band of a missing folder says the folder is missing."""
        name = f"{folder}/{patch_id}_{band}.tif"
        try:
            return read_capped(self.s2, name, patch_id, f"band {band}", band_byte_limit(band))
        except SourceError:
            self._folder_exists(self.s2, folder, patch_id, f"no S2 patch folder for this patch_id (expected {self.s2.describe(folder)})")
            raise

    @staticmethod
    def _folder_exists(reader: RawReader, folder: str, pair: str, problem: str) -> None:
        try:
            reader.listdir(folder)
        except FileNotFoundError:
            raise SourceError(pair, reader.describe(folder), problem) from None
        except (NotADirectoryError, RawInputError, PermissionError) as exc:
            raise SourceError(pair, reader.describe(folder), f"cannot be listed ({exc})") from None

    def _grid(self, patch_id: str, folder: str) -> tuple[int, tuple[float, float], str, np.ndarray | None]:
        """(EPSG, upper-left corner, what gave them, reference map or ``None``) of an S2 patch.

        Holds what it read for :meth:`read_pixels`: the B02 bytes, and the decoded map.
        """
        b02 = self._s2_band_bytes(folder, patch_id, "B02")
        self._held[f"{folder}/{patch_id}_B02.tif"] = b02
        if self.maps is None:
            where = self.s2.describe(f"{folder}/{patch_id}_B02.tif")
            check = raster_check("uint16", 120, 10, patch_id, where, None, None, "", "band B02 at 10 m")
            try:
                header, _ = decode_raster(b02, check)
            except UnreadableRaster as exc:
                raise SourceError(patch_id, where, f"not a readable GeoTIFF ({exc})") from None
            if header.epsg is None:
                raise SourceError(patch_id, where, f"CRS {header.crs} has no EPSG code")
            return header.epsg, (header.transform[2], header.transform[5]), "its band B02", None
        name = self.map_name(folder, patch_id)
        where = self.maps.describe(name)
        data = read_capped(self.maps, name, patch_id, "reference map", MAP_BYTE_LIMIT)
        check = raster_check(MAP_DTYPE, MAP_SIZE, MAP_RESOLUTION, patch_id, where, None, None, "", "a reference map")
        try:
            header, pixels = decode_raster(data, check)
        except UnreadableRaster as exc:
            raise SourceError(patch_id, where, f"not a readable GeoTIFF ({exc})") from None
        if header.epsg is None:
            raise SourceError(patch_id, where, f"CRS {header.crs} has no EPSG code")
        self._held[name] = pixels
        return header.epsg, (header.transform[2], header.transform[5]), "its reference map", pixels

    @staticmethod
    def map_name(folder: str, patch_id: str) -> str:
        """Name of a patch's reference map under the reference-map root."""
        return f"{folder}/{patch_id}_reference_map.tif"

    @staticmethod
    def _classes(pixels: np.ndarray, patch_id: str, where: str) -> tuple[tuple[str, ...], dict[int, float]]:
        """43-class names present in a map and each code's pixel fraction (of all pixels)."""
        codes, counts = np.unique(pixels, return_counts=True)
        unknown = [int(c) for c in codes if int(c) != CLC_NODATA and int(c) not in CLC_CODES]
        if unknown:
            shown = ", ".join(str(c) for c in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise SourceError(patch_id, where, f"holds value(s) {shown} that are not CLC Level-3 codes of "
                                               f"BigEarthNet's 43 classes (nor {CLC_NODATA}, no data)")
        total = pixels.size
        fractions = {int(c): round(int(n) / total, FRACTION_DIGITS) for c, n in zip(codes, counts, strict=True)
                     if int(c) != CLC_NODATA}
        if not fractions:
            raise SourceError(patch_id, where, f"holds no CLC class, only no-data pixels ({CLC_NODATA})")
        return tuple(clc_codes_to_43(fractions)), fractions

    def read_pair(self, unit: str) -> PairRecord:
        """The pair of the metadata row ``unit`` (a ``patch_id``)."""
        self._held = {}
        patch_id = unit
        m = PATCH_ID.fullmatch(patch_id)
        if not m:
            raise SourceError(patch_id, ", ".join(self.metadata.locations), f"patch_id {short(patch_id)} is not a v2 S2 patch name")
        row, table = self._row(patch_id)
        product, stamp, tile = m.group(1), m.group(3), m.group(4)
        s1_name = row["s1_name"]
        s1m = S1_NAME.fullmatch(s1_name) if isinstance(s1_name, str) else None
        if s1m is None:
            raise SourceError(patch_id, table, f"s1_name {short(s1_name)} is not an S1 patch name")
        if s1_name in self.metadata.shared_s1:
            raise SourceError(patch_id, table, f"s1_name {s1_name} is the partner of several patch_ids in the metadata")
        if s1m.group(1) != tile:
            raise SourceError(patch_id, table, f"s1_name {s1_name} is in tile {s1m.group(1)}, the patch in {tile}")
        labels_19 = self._labels_19(row["labels"], patch_id, table)
        split = row["split"]
        if split is not None and split not in SPLITS:
            raise SourceError(patch_id, table, f"split {short(split)} is not one of {', '.join(SPLITS)}")
        s2v1_name = row["s2v1_name"]
        if s2v1_name is not None and not S2_NAME.fullmatch(s2v1_name):
            raise SourceError(patch_id, table, f"s2v1_name {short(s2v1_name)} is not a v1 S2 patch name")
        try:
            s2_time = product_time(stamp)
            s1_time = product_time(S1_TIME.match(s1_name).group(1))  # type: ignore[union-attr]
        except ValueError as exc:
            raise SourceError(patch_id, table, f"no valid time in the product names ({exc})") from None

        folder = f"{product}/{patch_id}"
        epsg, origin, grid_from, ref_map = self._grid(patch_id, folder)
        bounds = (origin[0], origin[1], origin[0] + 1200.0, origin[1] - 1200.0)
        labels_43: tuple[str, ...] | None = None
        fractions: dict[int, float] | None = None
        disagreement = None
        map_file = None
        if ref_map is not None:
            map_file = self.map_name(folder, patch_id)
            labels_43, fractions = self._classes(ref_map, patch_id, self.maps.describe(map_file))  # type: ignore[union-attr]
            from_map = to_19(labels_43)
            if set(from_map) != set(labels_19):
                only_map = [n for n in from_map if n not in labels_19]
                only_table = [n for n in labels_19 if n not in from_map]
                disagreement = SourceProblem(
                    patch_id, self.maps.describe(map_file),  # type: ignore[union-attr]
                    "the reference map's classes give other 19-class labels than the official ones "
                    f"(only from the map: {', '.join(only_map) or 'none'}; only in the labels: "
                    f"{', '.join(only_table) or 'none'}); built with the official labels")
        s1_product = s1_name.rsplit("_", 3)[0]
        s2 = PatchRecord(
            id=patch_id, modality="s2", datetime=s2_time, epsg=epsg, bounds=bounds,
            band_files={b: f"{folder}/{patch_id}_{b}.tif" for b in S2_BAND_NAMES},
            source_product=product, labels_43=labels_43 or (), metadata_file=table,
        )
        s1 = PatchRecord(
            id=s1_name, modality="s1", datetime=s1_time, epsg=epsg, bounds=bounds,
            band_files={b: f"{s1_product}/{s1_name}/{s1_name}_{b}.tif" for b in S1_BAND_NAMES},
            source_product=s1_product, labels_43=labels_43 or (), metadata_file=table,
        )
        self._held["grid_from"] = grid_from
        return PairRecord(
            s2=s2, s1=s1, tile=tile, labels_43=labels_43, labels_19=labels_19, split=split,
            country=row["country"], season=None,
            seasonal_snow=row["contains_seasonal_snow"], cloud_or_shadow=row["contains_cloud_or_shadow"],
            release=self.release, reference_map=map_file, clc_fractions=fractions, s2v1_name=s2v1_name,
            label_disagreement=disagreement,
        )

    # -- pixels ---------------------------------------------------------------------------

    def read_pixels(self, pair: PairRecord) -> dict[str, np.ndarray]:
        """All 14 bands, checked against the patch's grid, and the reference map (if any) under
        :data:`~bigearth_stac.contract.REFERENCE_MAP_ASSET`."""
        held, self._held = self._held, {}
        reference = f"the S2 patch's grid ({held.get('grid_from', 'its reference map')})"
        origin = (pair.s2.bounds[0], pair.s2.bounds[1])
        out: dict[str, np.ndarray] = {}
        for band, name in pair.s2.band_files.items():
            data = held.get(name)
            if data is None:
                data = read_capped(self.s2, name, pair.s2.id, f"band {band}", band_byte_limit(band))
            out[band] = decode_band(data, band, pair.s2.id, partial(self.s2.describe, name), pair.s2.epsg, origin, reference)
        s1_folder = pair.s1.band_files[S1_BAND_NAMES[0]].rsplit("/", 1)[0]
        for band, name in pair.s1.band_files.items():
            try:
                data = read_capped(self.s1, name, pair.s2.id, f"S1 band {band}", band_byte_limit(band))
            except SourceError:
                self._folder_exists(self.s1, s1_folder, pair.s2.id, f"its S1 partner {pair.s1.id} is missing from the S1 root")
                raise
            out[band] = decode_band(data, band, pair.s2.id, partial(self.s1.describe, name), pair.s2.epsg, origin, reference)
        if pair.reference_map is not None:
            ref_map = held.get(pair.reference_map)
            if ref_map is None:
                if self.maps is None:
                    raise ValueError("a pair with a reference map read by a source without maps")
                out[REFERENCE_MAP_ASSET] = self._read_map(pair, origin)
            else:
                out[REFERENCE_MAP_ASSET] = ref_map
        return out

    def _read_map(self, pair: PairRecord, origin: tuple[float, float]) -> np.ndarray:
        assert self.maps is not None and pair.reference_map is not None
        where = self.maps.describe(pair.reference_map)
        data = read_capped(self.maps, pair.reference_map, pair.s2.id, "reference map", MAP_BYTE_LIMIT)
        check = raster_check(MAP_DTYPE, MAP_SIZE, MAP_RESOLUTION, pair.s2.id, where, pair.s2.epsg, origin,
                             "the S2 patch's grid", "a reference map")
        try:
            return decode_raster(data, check)[1]
        except UnreadableRaster as exc:
            raise SourceError(pair.s2.id, where, f"not a readable GeoTIFF ({exc})") from None


def open_v2(s2: str, s1: str, metadata: Sequence[str], reference_maps: str | None = None,
            settings: StorageSettings | None = None) -> V2Source:
    """A :class:`V2Source` over local folders or ``s3://`` URLs.

    ``reference_maps`` defaults to the :data:`REFERENCE_MAPS_FOLDER` beside the S2 root when
    there is one; ``""`` builds without maps (no 43-class labels, fractions or map assets).
    """
    maps: RawReader | None = None
    if reference_maps is None:
        candidate = beside(s2, REFERENCE_MAPS_FOLDER)
        try:
            maps = open_reader(candidate, settings)
            maps.listdir("")
            log.info("reference maps: %s", candidate)
        except (FileNotFoundError, NotADirectoryError):
            maps = None
            log.warning("no reference maps beside %s (%s): building without 43-class labels and maps", s2, candidate)
    elif reference_maps:
        maps = open_reader(reference_maps, settings)
    return V2Source(open_reader(s2, settings), open_reader(s1, settings), V2Metadata.read(metadata, settings), maps)


def looks_like_v2(s2: str, settings: StorageSettings | None = None) -> bool:
    """Whether the S2 root holds v2 product folders (its first entry is one)."""
    reader = open_reader(s2, settings)
    names = [n for n in reader.listdir("") if not n.startswith(".")]
    return bool(names) and S2_PRODUCT.fullmatch(names[0]) is not None


__all__ = [
    "MAP_BYTE_LIMIT",
    "OPTIONAL_COLUMNS",
    "PATCH_ID",
    "REFERENCE_MAPS_FOLDER",
    "REQUIRED_COLUMNS",
    "S1_PRODUCT",
    "S2_PRODUCT",
    "V2Metadata",
    "V2Source",
    "looks_like_v2",
    "open_v2",
    "product_time",
]
