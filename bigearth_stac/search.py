"""Search a catalog's index: parameters -> one SQL predicate -> a lazy, columnar result.

A search is answered with DuckDB core SQL over the index (DESIGN.md #4): the parameters become
one :class:`~bigearth_stac._predicates.Predicate` whose prefilter prunes row groups by their
statistics, DuckDB evaluates the exact SQL (labels as bit tests on the label masks, CQL2 through
:mod:`bigearth_stac.cql2sql`), and footprints are tested exactly with shapely on the rows whose
bbox survives.

Where the rows come from is decided per query (see "where a query runs" below): the index's
``pyarrow.dataset`` pruned to the surviving row groups (remote: their column chunks fetched
concurrently into the local cache first), decoded row groups kept in memory for narrow queries,
or whole columns kept in an in-memory DuckDB table for broad ones. All three give the same rows
in index order; repeated searches of a session cost milliseconds at 590k rows.

:class:`SearchResult` runs nothing until asked, and every method streams Arrow record batches
with only the columns it needs, so a result of 500k rows costs the memory of one batch unless
you ask for the whole table (``to_arrow()``) or for Python objects (``ids()``, iteration,
``to_item_collection()``). Results leave DuckDB as Arrow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from bigearth_stac import cql2sql
from bigearth_stac._predicates import (
    INT64_MAX,
    INTERSECTS_UDF,
    TRUE,
    Columns,
    LabelQueryError,
    Predicate,
    QueryError,
    and_,
    as_int,
    bbox_predicate,
    excerpt,
    intersects,
    intersects_udf,
    label_array_predicate,
    min_fractions_predicate,
    or_,
    parse_bbox,
    parse_geometry,
    parse_interval,
    quote,
    time_predicate,
)
from bigearth_stac.contract import CLC_FRACTIONS
from bigearth_stac.samples import sample_table
from bigearth_stac.vocab import (
    COUNTRIES,
    PREFIX,
    SEASONS,
    SPLITS,
    UnknownLabelError,
    closest,
    resolve_label,
)

if TYPE_CHECKING:
    import geopandas
    import pystac

    from bigearth_stac.catalog import Catalog, CollectionIndex

log = logging.getLogger(__name__)

Match = Literal["any", "all"]
SearchModality = Literal["s2", "s1", "pair"]
MODALITIES = ("s2", "s1", "pair")
DEFAULT_BATCH = 65_536
MAX_BATCH = 1 << 24
"""Largest ``batch_size`` (16.8 million rows; BigEarthNet v1 has 590,326 S2 patches)."""


def P(name: str) -> str:
    return f"{PREFIX}:{name}"


#: Columns of the light rows that iteration yields (besides ``assets``: key -> absolute href).
ROW_COLUMNS: dict[str, str] = {
    "id": "id",
    "collection": "collection",
    "datetime": "datetime",
    "bbox": "bbox",
    "labels_19": P("labels_19"),
    "labels_43": P("labels_43"),
    "split": P("split"),
    "country": P("country"),
    "season": P("season"),
    "seasonal_snow": P("seasonal_snow"),
    "cloud_or_shadow": P("cloud_or_shadow"),
    "tile": P("tile"),
    "s2_id": P("s2_id"),
    "s1_id": P("s1_id"),
}


# -----------------------------------------------------------------------------------------------
# Parameters -> predicate
# -----------------------------------------------------------------------------------------------


def _as_list(value: Any, what: str) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (Mapping, bytes)) or not isinstance(value, Iterable):
        raise QueryError(f"{what} must be a string or a list of strings, got {excerpt(value)}")
    return list(value)


def _choice(values: str | Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    lowered = {a.lower(): a for a in allowed}
    out = []
    for v in _as_list(values, what):
        if not isinstance(v, str) or v.lower() not in lowered:
            raise QueryError(f"unknown {what} {excerpt(v)}; allowed: {', '.join(allowed)}")
        out.append(lowered[v.lower()])
    return out


def _isin(column: str, values: list[str]) -> Predicate:
    return Predicate(f"({quote(column)} IN ({', '.join('?' * len(values))}))", tuple(values),
                     pc.field(column).isin(values))


def _nomenclature(value: Any) -> Literal["19", "43"]:
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text not in ("19", "43"):
        raise QueryError(f"unknown nomenclature {excerpt(value)}; allowed: '19', '43'")
    return text  # type: ignore[return-value]


@dataclass(frozen=True)
class SearchQuery:
    """What to search for: every criterion given must hold (AND). Every field is optional.

    :func:`search` and :meth:`Catalog.search <bigearth_stac.catalog.Catalog.search>` build one
    from their keyword arguments; build one yourself to keep, compare or vary a search
    (``dataclasses.replace(q, split="test")``). Values are checked when the search is built
    (:func:`build_query`): a bad one raises :class:`QueryError` naming it and what is allowed.
    """

    labels: str | Sequence[str] | None = None
    """Class name or names of either nomenclature, exactly as spelt in ``vocab.LABELS_19`` /
    ``LABELS_43``. A name of one nomenclature is searched in it (``"Olive groves"``: 43 classes,
    ``"Permanent crops"``: 19); a name both have (``vocab.SHARED_LABELS``) means the same patches
    in both. An unknown name raises with the closest names of both."""
    match: Match = "any"
    """``"any"``: a patch has at least one of ``labels``; ``"all"``: it has every one (with names
    of both nomenclatures: all the 19-class ones and all the 43-class ones)."""
    nomenclature: Literal["19", "43"] | int = "19"
    """The result's nomenclature (``"19"`` or ``"43"``): where a name of both is searched, and
    the classes of the loader's multi-hot targets."""
    bbox: Sequence[float] | str | None = None
    """``(west, south, east, north)`` or ``"W,S,E,N"`` in degrees (WGS84); west > east crosses
    the antimeridian. Footprints are tested exactly; one that touches the box counts."""
    intersects: Mapping[str, Any] | Any | None = None
    """A GeoJSON geometry (dict), an object with ``__geo_interface__``, or a shapely geometry, in
    WGS84 with finite coordinates. Footprints are tested exactly; touching counts."""
    datetime: Any = None
    """An RFC 3339 timestamp, a date (the whole day), an interval ``"start/end"`` (``..`` for an
    open end), a ``datetime`` / ``date``, or a ``(start, end)`` pair. Times without a zone are UTC."""
    split: str | Sequence[str] | None = None
    """``"train"``, ``"validation"``, ``"test"`` or several (case-insensitive)."""
    countries: str | Sequence[str] | None = None
    """Country name(s) as in ``vocab.COUNTRIES`` (case-insensitive)."""
    seasons: str | Sequence[str] | None = None
    """``"Spring"``, ``"Summer"``, ``"Fall"``, ``"Winter"`` or several (case-insensitive)."""
    exclude_snow: bool = False
    """Drop the patches on the official list of seasonal snow."""
    exclude_clouds: bool = False
    """Drop the patches on the official list of clouds and shadow."""
    modality: SearchModality = "s2"
    """``"s2"``: rows are S2 items; ``"s1"``: S1 items; ``"pair"``: S2 items whose
    ``sample_table()`` carries the S1 partner's assets too."""
    limit: int | None = None
    """At most this many rows (0 to 2**63 - 1); ``None``: all."""
    filter: str | Mapping[str, Any] | bool | None = None
    """A CQL2 filter as text, JSON (a dict or its text) or a boolean (:mod:`bigearth_stac.cql2sql`,
    which lists the operators and the limits on size and nesting)."""
    min_fractions: Mapping[str | int, float] | None = None
    """BigEarthNet v2.0: ``{class: fraction}``, each class covering at least that share of the
    patch's reference map (``{"Coniferous forest": 0.3}``: at least 30 % coniferous forest; all
    must hold). Classes are 43-class names or CLC Level-3 codes (``312``), fractions from 0 to 1.
    Patches without a map never match; a v1.0 index has none and is a :class:`QueryError`."""
    release: str | None = None
    """Which BigEarthNet release to search in a catalog holding several: ``"v1.0"`` or ``"v2.0"``
    (``"v1"``, ``"v2"``); ``None``: the catalog's :attr:`~bigearth_stac.catalog.Catalog.release`."""

    def describe(self) -> str:
        """The fields that differ from their defaults, ``name=value`` (for messages and logs)."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is f.default or (isinstance(value, str) and value == f.default):
                continue
            parts.append(f"{f.name}={excerpt(value)}")
        return ", ".join(parts) or "(no criteria)"


SEARCH_PARAMETERS: tuple[str, ...] = tuple(f.name for f in fields(SearchQuery))
"""The keyword arguments :func:`search` takes: the fields of :class:`SearchQuery`."""


@dataclass(frozen=True)
class Query:
    """A validated search: which index, the predicate over it, how many rows at most."""

    modality: SearchModality
    predicate: Predicate
    limit: int | None = None
    nomenclature: Literal["19", "43"] = "19"
    options: SearchQuery = field(default_factory=SearchQuery)
    """The parameters it was built from (named in error messages)."""
    release: str | None = None
    """The release whose indexes it reads (``None``: the catalog's default)."""

    @property
    def index_modality(self) -> str:
        return "s1" if self.modality == "s1" else "s2"


def _labels(labels: Any, match: str, prefer: Literal["19", "43"], columns: Columns) -> Predicate:
    """Names of either nomenclature -> a predicate on the 19- and / or 43-class label columns.

    ``any``: the patch has one of the 19-class names OR one of the 43-class names; ``all``: it
    has all the 19-class names AND all the 43-class names.
    """
    by_column: dict[str, list[str]] = {}
    for label in _as_list(labels, "labels"):
        try:
            nomenclature, name = resolve_label(label, prefer)
        except UnknownLabelError as exc:
            raise LabelQueryError(str(exc)) from None
        names = by_column.setdefault(nomenclature, [])
        if name not in names:
            names.append(name)
    op = "a_overlaps" if match == "any" else "a_contains"
    parts = [label_array_predicate(op, n, names, columns) for n, names in sorted(by_column.items())]
    if not parts:
        return TRUE
    return or_(parts) if match == "any" else and_(parts)


def build_query(columns: Columns, options: SearchQuery) -> Query:
    """Validate a :class:`SearchQuery` and combine its criteria (AND) into one :class:`Query`."""
    if not isinstance(options, SearchQuery):
        raise QueryError(f"expected a SearchQuery, got {excerpt(options)}")
    o = options
    if not isinstance(o.modality, str) or o.modality not in MODALITIES:
        raise QueryError(f"unknown modality {excerpt(o.modality)}; allowed: {', '.join(MODALITIES)}")
    if not isinstance(o.match, str) or o.match not in ("any", "all"):
        raise QueryError(f"unknown match {excerpt(o.match)}; allowed: 'any' (a patch has at least one label) "
                         "or 'all' (it has every label)")
    limit = None if o.limit is None else as_int(o.limit, "limit")
    nomen = _nomenclature(o.nomenclature)
    for name in ("exclude_snow", "exclude_clouds"):
        if not isinstance(getattr(o, name), bool):
            raise QueryError(f"{name} must be True or False, got {excerpt(getattr(o, name))}")
    if o.release is not None:
        from bigearth_stac.catalog import normalize_release

        try:
            normalize_release(o.release)
        except ValueError as exc:
            raise QueryError(str(exc)) from None
    parts: list[Predicate] = []
    if o.labels is not None:
        parts.append(_labels(o.labels, o.match, nomen, columns))
    if o.bbox is not None:
        parts.append(bbox_predicate(parse_bbox(o.bbox)))
    if o.intersects is not None:
        parts.append(_intersects(o.intersects))
    if o.datetime is not None:
        parts.append(time_predicate(parse_interval(o.datetime)))
    if o.split is not None:
        parts.append(_isin(P("split"), _choice(o.split, SPLITS, "split")))
    if o.countries is not None:
        parts.append(_isin(P("country"), _choice(o.countries, COUNTRIES, "country")))
    if o.seasons is not None:
        parts.append(_isin(P("season"), _choice(o.seasons, SEASONS, "season")))
    for flag, on in ((P("seasonal_snow"), o.exclude_snow), (P("cloud_or_shadow"), o.exclude_clouds)):
        if on:
            parts.append(Predicate(f"({quote(flag)} = false)", (), pc.field(flag) == False))  # noqa: E712
    if o.min_fractions is not None:
        parts.append(min_fractions_predicate(o.min_fractions, columns))
    if o.filter is not None:
        parts.append(cql2sql.translate(o.filter, columns))
    return Query(o.modality, and_(parts), limit, nomen, o)


def _intersects(value: Any) -> Predicate:
    return intersects(parse_geometry(value))


# -----------------------------------------------------------------------------------------------
# Execution
# -----------------------------------------------------------------------------------------------


def connect() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for searches: UTC, and the exact-intersection function registered."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.create_function(INTERSECTS_UDF, intersects_udf, ["BLOB", "BLOB"], "BOOLEAN", type="arrow",  # type: ignore[call-overload]
                        side_effects=False)
    return con


#: DuckDB errors that say the query cannot be answered as asked (binding, types, conversions),
#: as opposed to I/O, memory or interruption, which pass through unchanged.
_QUERY_ERRORS = (duckdb.ProgrammingError, duckdb.DataError, duckdb.NotSupportedError)


@contextlib.contextmanager
def _answering(query: Query) -> Iterator[None]:
    """Turn a DuckDB error about the query into a :class:`QueryError` naming its parameters.

    The translator checks every operand against the column kinds first; this is the last line
    of defence, so that no search input reaches the user as a raw DuckDB exception.
    """
    try:
        yield
    except _QUERY_ERRORS as exc:
        raise QueryError(f"the search {query.options.describe()} cannot be answered: {exc}") from exc


_BASE: dict[int, duckdb.DuckDBPyConnection] = {}
_BASE_LOCK = threading.Lock()


def _cursor() -> duckdb.DuckDBPyConnection:
    """A cheap cursor on this process's search database (opening a database costs tens of ms).

    Cursors share the registered function but each has its own registered views, and each is
    used by one search only, so searches in several threads do not share a connection.
    """
    with _BASE_LOCK:
        base = _BASE.get(os.getpid())
        if base is None:
            base = _BASE[os.getpid()] = connect()
    cur = base.cursor()
    cur.execute("SET TimeZone = 'UTC'")
    return cur


# -- where a query runs ----------------------------------------------------------------------------
#
# Three sources answer the same SQL with the same rows in the same order; each query takes the
# first that applies:
#
# - the *hot table*, an in-memory DuckDB table of whole columns of the index, loaded once per
#   index and process: a label over the whole archive then costs a few milliseconds instead of
#   decoding 590k rows again. Used when it holds every column the query names; columns are
#   loaded when a query would read at least :data:`HOT_MIN_SHARE` of the row groups anyway and
#   their bytes are local (a local index, or every chunk already in the cache);
# - *warm row groups*, decoded row groups kept in memory (Arrow) for the narrower queries (a
#   region, a country): each row group's columns are decoded once, then registered as they are;
# - a *scan* of the index's ``pyarrow.dataset`` pruned to the row groups whose statistics admit
#   the prefilter: ``SELECT *``, wide columns, ``LIMIT`` and pages.
#
# Remote indexes: before the warm or scan read, the column chunks of the surviving row groups are
# fetched into the cache concurrently (``CollectionIndex.prefetch``), so the scan reads local bytes.

HOT_MIN_SHARE = 0.25
"""Share of row groups a query must read before its columns are loaded into the hot table."""
HOT_MAX_BYTES = 768 * 2**20
"""Largest hot table per index (uncompressed size of its columns in the Parquet footer)."""
HOT_SKIP = frozenset({"assets", "links", "stac_extensions", CLC_FRACTIONS})
"""Columns never loaded into the hot table (wide structs that searches do not filter on)."""
WARM_MAX_BYTES = 256 * 2**20
"""Memory for decoded row groups per index; least recently used row groups are dropped first.
A query whose row groups (its columns, decoded) take at most half of it reads them from memory,
decoding once what is not there: a region query then costs no Parquet decoding when repeated."""
_GLOB = frozenset("*?[{")

_IDENT = re.compile(r'"((?:[^"]|"")*)"|([A-Za-z_][A-Za-z0-9_]*)')


def referenced_columns(sql: str, names: Iterable[str]) -> set[str]:
    """The columns of ``names`` that ``sql`` may read: every quoted or bare identifier that is one.

    Over-approximates (a function or alias spelt like a column counts), never misses a column
    that the SQL names; ``SELECT *`` is the caller's to handle.
    """
    wanted = set(names)
    found = set()
    for quoted, bare in _IDENT.findall(sql):
        name = quoted.replace('""', '"') if quoted else bare
        if name in wanted:
            found.add(name)
    return found


def _drop_table(pid: int, name: str) -> None:
    if os.getpid() != pid:
        return
    with _BASE_LOCK:
        base = _BASE.get(pid)
    if base is not None:
        with contextlib.suppress(Exception):
            base.cursor().execute(f"DROP TABLE IF EXISTS {name}")


class _WarmGroups:
    """Decoded row groups of one index (Arrow, by column), least recently used dropped first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.groups: OrderedDict[int, dict[str, pa.ChunkedArray]] = OrderedDict()
        self.nbytes = 0

    def table(self, index: CollectionIndex, row_groups: Sequence[int], columns: Sequence[str]) -> pa.Table:
        """The rows of ``row_groups`` (in order), ``columns`` only, decoding what is not in memory."""
        schema = pa.schema([index.schema.field(c) for c in columns])
        if not row_groups:
            return schema.empty_table()
        # Decode what is missing first: row groups missing the same columns in one threaded scan
        # (a cold label query over the archive decodes all 37 at once), then assemble in order.
        needed: dict[tuple[str, ...], list[int]] = {}
        with self.lock:
            for rg in row_groups:
                have = self.groups.get(rg, {})
                missing = tuple(c for c in columns if c not in have)
                if missing:
                    needed.setdefault(missing, []).append(rg)
        if needed:
            fragments = {f.row_groups[0].id: f for f in index.dataset.get_fragments()}
            for missing, rgs in needed.items():
                rgs = sorted(set(rgs))
                scan = fragments[rgs[0]].subset(row_group_ids=rgs) if len(rgs) > 1 else fragments[rgs[0]]
                decoded = scan.to_table(columns=list(missing), schema=index.schema, use_threads=len(rgs) > 1)
                start = 0
                for rg in rgs:
                    n = fragments[rg].row_groups[0].num_rows
                    self._keep(rg, {c: decoded.column(c).slice(start, n) for c in missing})
                    start += n
        parts = []
        for rg in row_groups:
            with self.lock:
                have = self.groups.get(rg, {})
                if all(c in have for c in columns):
                    self.groups.move_to_end(rg)
                    part = [have[c] for c in columns]
                else:  # dropped meanwhile (memory bound): decode again, alone
                    part = None
            if part is None:
                decoded = {f.row_groups[0].id: f for f in index.dataset.get_fragments()}[rg].to_table(
                    columns=list(columns), schema=index.schema, use_threads=False)
                part = [decoded.column(c) for c in columns]
            parts.append(pa.Table.from_arrays(part, schema=schema))
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def _keep(self, rg: int, decoded: dict[str, pa.ChunkedArray]) -> None:
        """Keep a row group's decoded columns (least recently used row groups dropped past the bound)."""
        with self.lock:
            have = self.groups.setdefault(rg, {})
            for c, values in decoded.items():
                if c not in have:
                    # A slice of a larger decoded table keeps it alive: copy to own the memory.
                    values = pa.chunked_array([pa.concat_arrays(values.chunks)]) if values.num_chunks else values
                    have[c] = values
                    self.nbytes += values.nbytes
            self.groups.move_to_end(rg)
            while self.nbytes > WARM_MAX_BYTES and len(self.groups) > 1:
                _, dropped = self.groups.popitem(last=False)
                self.nbytes -= sum(a.nbytes for a in dropped.values())


class _HotTable:
    """Whole columns of one index in an in-memory DuckDB table of this process's search database
    (and, for narrow queries, decoded row groups: :attr:`warm`)."""

    def __init__(self, index: CollectionIndex) -> None:
        self.pid = os.getpid()
        self.name = "hot_" + uuid.uuid4().hex[:12]
        self.columns: frozenset[str] = frozenset()
        self.nbytes = 0
        self.failed = False
        self.lock = threading.Lock()
        self.warm = _WarmGroups()
        self.sizes: dict[str, int] | None = None
        weakref.finalize(index, _drop_table, self.pid, self.name)

    @classmethod
    def of(cls, index: CollectionIndex) -> _HotTable:
        hot = index.hot
        if not isinstance(hot, _HotTable) or hot.pid != os.getpid():
            with _BASE_LOCK:
                hot = index.hot
                if not isinstance(hot, _HotTable) or hot.pid != os.getpid():
                    hot = index.hot = cls(index)
        return hot

    def covers(self, columns: set[str]) -> bool:
        return bool(self.columns) and columns <= self.columns

    def load(self, index: CollectionIndex, columns: set[str]) -> bool:
        """Add ``columns`` (all row groups) to the table; ``False`` if they may not or cannot be."""
        with self.lock:
            new = sorted(columns - self.columns)
            if not new:
                return bool(self.columns)  # an empty set of columns is answered by any existing table
            if self.failed or not columns.isdisjoint(HOT_SKIP):
                return False
            size = _uncompressed(index, new)
            if self.nbytes + size > HOT_MAX_BYTES or not index.available(new):  # local, or all cached
                return False
            select = ", ".join(quote(c) for c in new)
            path = index.local_file()
            con = _cursor()
            try:
                if path is not None and _GLOB.isdisjoint(path):
                    escaped = path.replace("'", "''")
                    source = f"(SELECT {select} FROM read_parquet('{escaped}'))"
                else:
                    con.register("hot_source", index.dataset.to_table(columns=new))
                    source = "hot_source"
                if self.columns:
                    text = f"CREATE OR REPLACE TABLE {self.name} AS SELECT * FROM {self.name} POSITIONAL JOIN {source}"
                else:
                    text = f"CREATE OR REPLACE TABLE {self.name} AS SELECT * FROM {source}"
                con.execute(text)
                rows = con.execute(f"SELECT count(*) FROM {self.name}").fetchall()[0][0]
                if rows != index.num_rows:
                    raise duckdb.Error(f"{rows} rows loaded, the index has {index.num_rows}")
            except (duckdb.Error, OSError, pa.ArrowException) as exc:
                # Never a wrong answer: the scan stays the way to answer.
                log.warning("searches of %s keep scanning the index: loading %s failed: %s", index.url, new, exc)
                self.failed = True
                with contextlib.suppress(duckdb.Error):
                    con.execute(f"DROP TABLE IF EXISTS {self.name}")
                self.columns = frozenset()
                return False
            finally:
                con.close()
            self.columns = self.columns | set(new)
            self.nbytes += size
            log.debug("hot table of %s: + %s (%d MB)", index.url, new, size >> 20)
            return True


def _uncompressed(index: CollectionIndex, columns: Sequence[str]) -> int:
    """Decoded size of ``columns`` (all row groups), from the footer."""
    hot = _HotTable.of(index)
    sizes = hot.sizes
    if sizes is None:
        meta = index.dataset and index._metadata  # the footer, read once
        sizes = {}
        for i in range(meta.num_columns):
            top = meta.schema.column(i).path.split(".", 1)[0]
            sizes[top] = sizes.get(top, 0) + sum(meta.row_group(r).column(i).total_uncompressed_size
                                                 for r in range(meta.num_row_groups))
        hot.sizes = sizes
    return sum(sizes.get(c, 0) for c in columns)


class _Scan:
    """The index of one search registered on its cursor as a pruned ``pyarrow.dataset``."""

    def __init__(self, index: CollectionIndex, prefilter: pc.Expression | None) -> None:
        self.name = "items_" + uuid.uuid4().hex[:12]
        self.dataset, self.row_groups = _pruned(index.dataset, prefilter, index.whole)
        self.share = len(self.row_groups) / max(1, index.num_row_groups)
        self.registered = False

    def register(self, con: duckdb.DuckDBPyConnection) -> str:
        if not self.registered:
            con.register(self.name, self.dataset)
            self.registered = True
        return self.name


def _pruned(dataset: ds.FileSystemDataset, prefilter: pc.Expression | None,
            whole: ds.ParquetFileFragment | None = None) -> tuple[ds.Dataset, list[int]]:
    """``dataset`` (one fragment per row group) without the row groups whose statistics rule out
    ``prefilter``, and the ids of those kept. With ``whole`` (the file as one fragment) the
    statistics of all row groups are tested in one call (a call per row group cost ~55 us each)."""
    fragments = list(dataset.get_fragments())
    if prefilter is None:
        return dataset, [f.row_groups[0].id for f in fragments]
    if whole is not None:
        sub = whole.subset(prefilter)
        admitted = {rg.id for rg in sub.row_groups} if sub is not None else set()
        keep = [f for f in fragments if f.row_groups[0].id in admitted]
    else:
        # subset() only tells whether the row group survives; the fragment it returns reads the
        # whole file when scanned (pyarrow 26), so keep the original one.
        keep = [f for f in fragments if (sub := f.subset(prefilter)) is not None and sub.num_row_groups]
    kept = ds.FileSystemDataset(keep, dataset.schema, dataset.format, dataset.filesystem).filter(prefilter)
    return kept, [f.row_groups[0].id for f in keep]


def pruned(dataset: ds.FileSystemDataset, prefilter: pc.Expression | None) -> ds.Dataset:
    """``dataset`` without the row groups whose statistics rule out ``prefilter``, filtered by it.

    The statistics come from the cached footer, so pruning costs no I/O; doing it here rather
    than leaving it to the scan saves opening every row group's fragment (about 1 ms each
    locally, a HEAD request each on S3).
    """
    return _pruned(dataset, prefilter)[0]


class SearchResult:
    """The patches a search matched: lazy, columnar, Arrow underneath.

    Nothing is read until a method asks. Rows come in index order (by tile, then location).

    - ``len(result)``: the number of matches (one ``count(*)``, cached).
    - iteration: light rows, plain ``dict``s (not pystac; DESIGN.md #5) with the keys of
      :data:`ROW_COLUMNS` (``bbox`` as ``[w, s, e, n]``) and ``assets``: asset key -> absolute href.
    - ``ids()``, ``to_arrow()``, ``batches()``, ``pages()`` / ``page()``, ``to_geodataframe()``,
      ``to_item_collection()`` (pystac, on request), ``sample_table()`` (the loader's input),
      ``to_torch()``, ``to_xarray()``.
    """

    def __init__(self, catalog: Catalog, query: Query) -> None:
        self.catalog = catalog
        self.query = query
        self.index = catalog.index(query.index_modality, query.release)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._scan: _Scan | None = None
        self._len: int | None = None

    def __repr__(self) -> str:
        n = "?" if self._len is None else self._len
        return f"<SearchResult {self.query.modality} {n} rows of {self.index.url}>"

    def __getstate__(self) -> dict[str, Any]:
        return {"catalog": self.catalog, "query": self.query, "index": self.index, "_con": None, "_scan": None,
                "_len": self._len}

    # -- SQL ---------------------------------------------------------------------------------------
    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """This result's cursor on the process's search database."""
        if self._con is None:
            self._con = _cursor()
            weakref.finalize(self, self._con.close)
        return self._con

    def _source(self, select: str, sized: bool = False) -> str:
        """The table a query projecting ``select`` reads: the hot table if it holds the query's
        columns (loading them if worth it), else this result's scan, its chunks fetched first."""
        pred = self.query.predicate
        names = self.index.schema.names
        columns = None if select.strip() == "*" else referenced_columns(f"{select} {pred.sql}", names)
        hot = _HotTable.of(self.index)
        if columns is not None and hot.covers(columns):
            return hot.name
        if self._scan is None:
            self._scan = _Scan(self.index, pred.prefilter)
        scan = self._scan
        if columns is not None and scan.share >= HOT_MIN_SHARE and hot.load(self.index, columns):
            return hot.name
        if (columns and self.query.limit is None and not sized
                and _uncompressed(self.index, list(columns)) * scan.share <= WARM_MAX_BYTES / 2):
            ordered = [c for c in names if c in columns]
            self.index.prefetch(ordered, scan.row_groups)
            name = "warm_" + uuid.uuid4().hex[:12]
            self.con.register(name, hot.warm.table(self.index, scan.row_groups, ordered))
            return name
        if self.query.limit is None and not sized:
            # Everything the scan will read, in few concurrent requests (a LIMIT may stop early:
            # its reads stay on demand).
            self.index.prefetch(columns, scan.row_groups)
        return scan.register(self.con)

    def sql(self, select: str = "*") -> tuple[str, tuple[Any, ...]]:
        """The SQL (with ``?`` parameters) that yields the result's rows, projected to ``select``."""
        return self._sql(select, self._source(select))

    def _sql(self, select: str, source: str) -> tuple[str, tuple[Any, ...]]:
        pred = self.query.predicate
        text = f"SELECT {select} FROM {source} WHERE {pred.sql}"
        if self.query.limit is not None:
            text += f" LIMIT {int(self.query.limit)}"
        return text, pred.params

    def _relation(self, select: str = "*", offset: int | None = None, size: int | None = None) -> duckdb.DuckDBPyRelation:
        text, params = self._sql(select, self._source(select, sized=size is not None))
        if size is not None:
            text = f"SELECT * FROM ({text}) LIMIT {int(size)} OFFSET {int(offset or 0)}"
        with _answering(self.query):
            return self.con.sql(text, params=list(params))

    def _table(self, select: str = "*", offset: int | None = None, size: int | None = None) -> pa.Table:
        """The rows projected to ``select`` as one Arrow table (what leaves DuckDB)."""
        try:
            relation = self._relation(select, offset, size)
            with _answering(self.query):
                return relation.to_arrow_table()
        finally:
            self.index.release()

    def _stream(self, select: str, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Record batches of the result projected to ``select``, as DuckDB produces them."""
        try:
            with _answering(self.query):
                yield from self._relation(select).to_arrow_reader(batch_size)
        finally:
            self.index.release()

    def _columns(self, columns: Sequence[str] | None) -> str:
        if columns is None:
            return "*"
        if isinstance(columns, str):
            columns = [columns]
        cols = Columns(self.index.schema)
        out = []
        for c in columns:
            name = c if c in self.index.schema.names else cols.get(c).name
            out.append(quote(name))
        return ", ".join(out)

    def _conform(self, table: pa.Table) -> pa.Table:
        """DuckDB's Arrow output cast back to the index's own field types and names."""
        schema = self.index.schema
        fields = [schema.field(n) if n in schema.names else table.schema.field(n) for n in table.column_names]
        return table.cast(pa.schema(fields, metadata=schema.metadata if len(fields) == len(schema) else None))

    # -- sizes -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        if self._len is None:
            text, params = self.sql("1")
            try:
                with _answering(self.query):
                    row = self.con.sql(f"SELECT count(*) FROM ({text})", params=list(params)).fetchall()
            finally:
                self.index.release()
            self._len = int(row[0][0])
        return self._len

    def count(self) -> int:
        """Same as ``len(result)``."""
        return len(self)

    # -- Arrow -------------------------------------------------------------------------------------
    def batches(self, columns: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH) -> Iterator[pa.RecordBatch]:
        """Stream the result as record batches (bounded memory), index column names and types.

        ``batch_size`` (1 to :data:`MAX_BATCH` rows) is approximate: DuckDB may cut batches smaller.
        """
        size = as_int(batch_size, "batch_size", 1, MAX_BATCH)
        select = self._columns(columns)
        for batch in self._stream(select, size):
            yield from self._conform(pa.Table.from_batches([batch])).to_batches()

    def to_arrow(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole result as one Arrow table (all index columns unless ``columns`` names some)."""
        return self._conform(self._table(self._columns(columns)))

    def ids(self) -> list[str]:
        """Ids of the matching items."""
        ids = self._table("id").column("id")
        return ids.to_numpy(zero_copy_only=False).tolist() if len(ids) else []

    def pages(self, size: int = 1000, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """Tables of ``size`` rows (the last may be shorter), streamed."""
        size = as_int(size, "page size", 1)
        pending: list[pa.RecordBatch] = []
        held = 0
        for batch in self.batches(columns, batch_size=min(max(size, 1024), MAX_BATCH)):
            pending.append(batch)
            held += batch.num_rows
            while held >= size:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, size)
                rest = table.slice(size)
                pending, held = rest.to_batches(), rest.num_rows
        if held:
            yield pa.Table.from_batches(pending)

    def page(self, number: int, size: int = 1000, columns: Sequence[str] | None = None) -> pa.Table:
        """Page ``number`` (from 0) of ``size`` rows."""
        number = as_int(number, "page number", 0)
        size = as_int(size, "page size", 1)
        if number * size > INT64_MAX:
            raise QueryError(f"page {number:,} of {size:,} rows starts beyond the largest offset ({INT64_MAX:,})")
        return self._conform(self._table(self._columns(columns), number * size, size))

    # -- Python rows -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        asset_keys = self._asset_keys()
        select = ", ".join(f"{quote(c)} AS {quote(k)}" for k, c in ROW_COLUMNS.items())
        select += "".join(f", assets.{quote(k)}.href AS {quote('asset:' + k)}" for k in asset_keys)
        for batch in self._stream(select, 4096):
            for row in batch.to_pylist():
                b = row["bbox"]
                row["bbox"] = [b["xmin"], b["ymin"], b["xmax"], b["ymax"]]
                row["assets"] = {k: self.catalog.scope.resolve(self.index.url, row.pop("asset:" + k))
                                 for k in asset_keys}
                yield row

    def _asset_keys(self) -> list[str]:
        t = self.index.schema.field("assets").type
        return [t.field(i).name for i in range(t.num_fields)]

    # -- conversions -------------------------------------------------------------------------------
    def to_geodataframe(self, columns: Sequence[str] | None = None) -> geopandas.GeoDataFrame:
        """A GeoDataFrame (EPSG:4326) of the result; ``geometry`` is always included."""
        import geopandas
        import shapely

        if columns is not None and "geometry" not in columns:
            columns = [*columns, "geometry"]
        table = self.to_arrow(columns)
        geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
        df = table.drop_columns(["geometry"]).to_pandas()
        return geopandas.GeoDataFrame(df, geometry=geoms, crs="EPSG:4326")

    def item_dicts(self) -> Iterator[dict[str, Any]]:
        """STAC items of the result as plain dicts (stac-geoparquet), hrefs absolute and confined.

        The index stores hrefs relative to the index file; here they are resolved against it, so
        the items work wherever the catalog lives. Items keep ``proj:epsg`` (stackstac reads it).
        """
        from bigearth_stac.item_json import iter_item_dicts

        return iter_item_dicts(self.batches(batch_size=4096), self.index.url, self.catalog.scope)

    def to_item_collection(self) -> pystac.ItemCollection:
        """pystac Items of the result (built now; hrefs absolute). For small results.

        pystac migrates projection v1.2 to v2.0 and drops ``proj:epsg``; it is restored from
        ``proj:code`` so stackstac can read the items.
        """
        import pystac

        from bigearth_stac.stac_items import restore_epsg

        return pystac.ItemCollection([restore_epsg(pystac.Item.from_dict(d, preserve_dict=False))
                                      for d in self.item_dicts()])

    def sample_table(self) -> pa.Table:
        """The loader's input (:mod:`bigearth_stac.samples`): ids, absolute asset URLs, labels, split.

        For ``modality="pair"`` the S1 partners are looked up in the S1 index by
        ``bigearthnet:s1_id``, reading only the row groups of the tiles the result covers.
        """
        asset_struct = "struct_pack(" + ", ".join(
            f"{quote(k)} := struct_pack(href := assets.{quote(k)}.href)" for k in self._asset_keys()) + ")"
        select = ", ".join([
            "id", f"{asset_struct} AS assets", quote(P("layout")), quote(P("labels_19")), quote(P("labels_43")),
            quote(P("split")), quote(P("s1_id")), quote(P("tile")),
            *([quote(P("release"))] if P("release") in self.index.schema.names else []),
        ])
        rows = self._table(select)
        if self.query.modality != "pair":
            return sample_table(rows, self.index.url, self.query.modality, scope=self.catalog.scope,
                                release=self.index.data_release)
        partner = self.catalog.index("s1", self.index.data_release)
        tiles = pc.unique(rows.column(P("tile"))).to_pylist()
        con = _cursor()
        try:
            s1, groups = _pruned(partner.dataset, pc.field(P("tile")).isin(tiles) if tiles else None, partner.whole)
            partner.prefetch(["id", "assets", P("layout"), P("tile")], groups)
            con.register("s1", s1)
            con.register("wanted", rows.select([P("s1_id")]))
            keys = [partner.schema.field("assets").type.field(i).name
                    for i in range(partner.schema.field("assets").type.num_fields)]
            s1_struct = "struct_pack(" + ", ".join(
                f"{quote(k)} := struct_pack(href := assets.{quote(k)}.href)" for k in keys) + ")"
            s1_rows = con.sql(
                f"SELECT id, {s1_struct} AS assets, {quote(P('layout'))} FROM s1 "
                f"WHERE id IN (SELECT {quote(P('s1_id'))} FROM wanted)").to_arrow_table()
        finally:
            con.close()
            partner.release()
        return sample_table(rows, self.index.url, "pair", s1_rows, partner.url, scope=self.catalog.scope,
                            release=self.index.data_release)

    def to_torch(self, options: Any = None, **kwargs: Any) -> Any:
        """A streaming PyTorch dataset over the result: ``BigEarthNetStream(self, options, **kwargs)``.

        ``options`` is a :class:`~bigearth_stac.torch_dataset.StreamOptions` (or ``None``); keyword
        arguments are its fields and override it. By default the stream yields what the result
        holds: S2 for an S2 search, S1 for ``modality="s1"``, both for ``modality="pair"``.
        """
        from bigearth_stac.torch_dataset import BigEarthNetStream

        return BigEarthNetStream(self, options, **kwargs)

    def to_xarray(self, **kwargs: Any) -> Any:
        """A lazy ``xarray.Dataset`` of the result (``bigearth_stac.xarray_view.to_xarray``)."""
        from bigearth_stac.xarray_view import to_xarray

        return to_xarray(self, **kwargs)


def search_options(options: SearchQuery | None, kwargs: Mapping[str, Any]) -> SearchQuery:
    """The :class:`SearchQuery` of ``search(options, **kwargs)``: keywords override ``options``.

    Unknown keywords, a non-``SearchQuery`` ``options`` and an unknown modality are
    :class:`QueryError`; the rest is validated by :func:`build_query`. Every search backend
    (embedded, STAC API) starts here.
    """
    unknown = sorted(set(kwargs) - set(SEARCH_PARAMETERS))
    if unknown:
        hint = closest(unknown[0], SEARCH_PARAMETERS)
        did = f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
        raise QueryError(f"unknown search parameter {unknown[0]!r}.{did} Parameters: {', '.join(SEARCH_PARAMETERS)}")
    if options is None:
        options = SearchQuery(**kwargs)
    elif isinstance(options, SearchQuery):
        options = replace(options, **kwargs)
    else:
        raise QueryError(f"search options must be a SearchQuery, got {excerpt(options)}")
    if not isinstance(options.modality, str) or options.modality not in MODALITIES:
        raise QueryError(f"unknown modality {excerpt(options.modality)}; allowed: {', '.join(MODALITIES)}")
    return options


def search(catalog: Catalog, options: SearchQuery | None = None, /, **kwargs: Any) -> SearchResult:
    """Search ``catalog``; every given parameter must hold (AND).

    The parameters are the fields of :class:`SearchQuery` (documented there), given as keyword
    arguments, as a ``SearchQuery``, or both (keywords override its fields):

    - ``labels`` (class names of either nomenclature), ``match`` (``"any"`` / ``"all"``),
      ``nomenclature`` (``"19"`` / ``"43"``: the result's classes);
    - ``bbox``, ``intersects`` (GeoJSON or shapely), ``datetime``;
    - ``split``, ``countries``, ``seasons``, ``exclude_snow``, ``exclude_clouds``;
    - ``modality`` (``"s2"``, ``"s1"``, ``"pair"``), ``limit``, ``filter`` (CQL2 text or JSON);
    - ``min_fractions`` (BigEarthNet v2.0: ``{class: fraction}`` of the reference map),
      ``release`` (``"v1.0"`` / ``"v2.0"`` in a catalog holding both; default: the catalog's).

    A bad value raises :class:`QueryError` (an unknown class name :class:`LabelQueryError`, which
    is also a :class:`~bigearth_stac.vocab.UnknownLabelError`) naming it and what is allowed.
    """
    from bigearth_stac.catalog import CatalogError

    options = search_options(options, kwargs)
    try:
        release = catalog.resolve_release(options.release)
    except CatalogError as exc:
        raise QueryError(f"release: {exc}") from None
    index = catalog.index("s1" if options.modality == "s1" else "s2", release)
    query = build_query(Columns(index.schema, index.data_release), options)
    return SearchResult(catalog, replace(query, release=release))


__all__ = ["MAX_BATCH", "ROW_COLUMNS", "SEARCH_PARAMETERS", "LabelQueryError", "Query", "QueryError", "SearchQuery",
           "SearchResult", "build_query", "connect", "search", "search_options"]

