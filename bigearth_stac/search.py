"""Search a catalog's index: parameters -> one SQL predicate -> a lazy, columnar result.

A search is answered with DuckDB core SQL over a ``pyarrow.dataset`` of the index (DESIGN.md #4):
the parameters become one :class:`~bigearth_stac._predicates.Predicate` whose prefilter prunes
row groups in the scan, DuckDB evaluates the exact SQL (labels with ``list_has_any`` /
``list_has_all``, CQL2 through :mod:`bigearth_stac.cql2sql`), and footprints are tested exactly
with shapely on the rows whose bbox survives.

:class:`SearchResult` runs nothing until asked, and every method streams Arrow record batches
with only the columns it needs, so a result of 500k rows costs the memory of one batch unless
you ask for the whole table (``to_arrow()``) or for Python objects (``ids()``, iteration,
``to_item_collection()``).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from bigearth_stac import cql2sql
from bigearth_stac._predicates import (
    INTERSECTS_UDF,
    TRUE,
    Columns,
    Predicate,
    QueryError,
    and_,
    bbox_predicate,
    intersects,
    intersects_udf,
    parse_bbox,
    parse_geometry,
    parse_interval,
    quote,
    time_predicate,
)
from bigearth_stac.samples import join_href, sample_table
from bigearth_stac.vocab import COUNTRIES, PREFIX, SEASONS, SPLITS, check_label

if TYPE_CHECKING:
    import geopandas
    import pystac

    from bigearth_stac.catalog import Catalog, CollectionIndex

log = logging.getLogger(__name__)

Match = Literal["any", "all"]
SearchModality = Literal["s2", "s1", "pair"]
MODALITIES = ("s2", "s1", "pair")
DEFAULT_BATCH = 65_536


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


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _choice(values: str | Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    lowered = {a.lower(): a for a in allowed}
    out = []
    for v in _as_list(values):
        if not isinstance(v, str) or v.lower() not in lowered:
            raise QueryError(f"unknown {what} {v!r}; allowed: {', '.join(allowed)}")
        out.append(lowered[v.lower()])
    return out


def _isin(column: str, values: list[str]) -> Predicate:
    return Predicate(f"({quote(column)} IN ({', '.join('?' * len(values))}))", tuple(values),
                     pc.field(column).isin(values))


def _nomenclature(value: Any) -> Literal["19", "43"]:
    text = str(value)
    if text not in ("19", "43"):
        raise QueryError(f"unknown nomenclature {value!r}; allowed: '19', '43'")
    return text  # type: ignore[return-value]


@dataclass(frozen=True)
class Query:
    """A validated search: which index, the predicate over it, how many rows at most."""

    modality: SearchModality
    predicate: Predicate
    limit: int | None = None
    nomenclature: Literal["19", "43"] = "19"
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def index_modality(self) -> str:
        return "s1" if self.modality == "s1" else "s2"


def build_query(
    columns: Columns,
    *,
    labels: str | Sequence[str] | None = None,
    match: Match = "any",
    nomenclature: Literal["19", "43"] | int = "19",
    bbox: Sequence[float] | str | None = None,
    intersects: Mapping[str, Any] | Any | None = None,
    datetime: Any = None,
    split: str | Sequence[str] | None = None,
    countries: str | Sequence[str] | None = None,
    seasons: str | Sequence[str] | None = None,
    exclude_snow: bool = False,
    exclude_clouds: bool = False,
    modality: SearchModality = "s2",
    limit: int | None = None,
    filter: str | Mapping[str, Any] | None = None,
) -> Query:
    """Validate search parameters and combine them (AND) into one :class:`Query`."""
    if modality not in MODALITIES:
        raise QueryError(f"unknown modality {modality!r}; allowed: {', '.join(MODALITIES)}")
    if match not in ("any", "all"):
        raise QueryError(f"unknown match {match!r}; allowed: 'any' (a patch has at least one label) "
                         "or 'all' (it has every label)")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise QueryError(f"limit must be a non-negative integer or None, got {limit!r}")
    nomen = _nomenclature(nomenclature)
    parts: list[Predicate] = []
    if labels is not None:
        names = [check_label(n, nomen) for n in _as_list(labels)]
        if names:
            fn = "list_has_any" if match == "any" else "list_has_all"
            parts.append(Predicate(f"{fn}({quote(P('labels_' + nomen))}, ?)", (names,)))
    if bbox is not None:
        parts.append(bbox_predicate(parse_bbox(bbox)))
    if intersects is not None:
        parts.append(_intersects(intersects))
    if datetime is not None:
        parts.append(time_predicate(parse_interval(datetime)))
    if split is not None:
        parts.append(_isin(P("split"), _choice(split, SPLITS, "split")))
    if countries is not None:
        parts.append(_isin(P("country"), _choice(countries, COUNTRIES, "country")))
    if seasons is not None:
        parts.append(_isin(P("season"), _choice(seasons, SEASONS, "season")))
    for flag, on in ((P("seasonal_snow"), exclude_snow), (P("cloud_or_shadow"), exclude_clouds)):
        if on:
            parts.append(Predicate(f"({quote(flag)} = false)", (), pc.field(flag) == False))  # noqa: E712
    if filter is not None:
        parts.append(cql2sql.translate(filter, columns))
    return Query(modality, and_(parts) if parts else TRUE, limit, nomen)


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


class _View:
    """The index of one search registered on its own cursor, prefilter applied."""

    def __init__(self, index: CollectionIndex, prefilter: pc.Expression | None) -> None:
        self.index = index
        self.name = "items_" + uuid.uuid4().hex[:12]
        self.con = _cursor()
        self.con.register(self.name, pruned(index.dataset, prefilter))
        weakref.finalize(self, self.con.close)


def pruned(dataset: ds.FileSystemDataset, prefilter: pc.Expression | None) -> ds.Dataset:
    """``dataset`` without the row groups whose statistics rule out ``prefilter``, filtered by it.

    The statistics come from the cached footer, so pruning costs no I/O; doing it here rather
    than leaving it to the scan saves opening every row group's fragment (about 1 ms each
    locally, a HEAD request each on S3).
    """
    if prefilter is None:
        return dataset
    keep = []
    for fragment in dataset.get_fragments():  # one fragment per row group (CollectionIndex.dataset)
        # subset() only tells whether the row group survives; the fragment it returns reads the
        # whole file when scanned (pyarrow 26), so keep the original one.
        sub = fragment.subset(prefilter)
        if sub is not None and sub.num_row_groups:
            keep.append(fragment)
    return ds.FileSystemDataset(keep, dataset.schema, dataset.format, dataset.filesystem).filter(prefilter)


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
        self.index = catalog.index(query.index_modality)
        self._view: _View | None = None
        self._len: int | None = None

    def __repr__(self) -> str:
        n = "?" if self._len is None else self._len
        return f"<SearchResult {self.query.modality} {n} rows of {self.index.url}>"

    def __getstate__(self) -> dict[str, Any]:
        return {"catalog": self.catalog, "query": self.query, "index": self.index, "_view": None, "_len": self._len}

    # -- SQL ---------------------------------------------------------------------------------------
    @property
    def view(self) -> _View:
        if self._view is None:
            self._view = _View(self.index, self.query.predicate.prefilter)
        return self._view

    def sql(self, select: str = "*") -> tuple[str, tuple[Any, ...]]:
        """The SQL (with ``?`` parameters) that yields the result's rows, projected to ``select``."""
        pred = self.query.predicate
        text = f"SELECT {select} FROM {self.view.name} WHERE {pred.sql}"
        if self.query.limit is not None:
            text += f" LIMIT {int(self.query.limit)}"
        return text, pred.params

    def _relation(self, select: str = "*", offset: int | None = None, size: int | None = None) -> duckdb.DuckDBPyRelation:
        text, params = self.sql(select)
        if size is not None:
            text = f"SELECT * FROM ({text}) LIMIT {int(size)} OFFSET {int(offset or 0)}"
        return self.view.con.sql(text, params=list(params))

    def _columns(self, columns: Sequence[str] | None) -> str:
        if columns is None:
            return "*"
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
            row = self.view.con.sql(f"SELECT count(*) FROM ({text})", params=list(params)).fetchall()
            self._len = int(row[0][0])
        return self._len

    def count(self) -> int:
        """Same as ``len(result)``."""
        return len(self)

    # -- Arrow -------------------------------------------------------------------------------------
    def batches(self, columns: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH) -> Iterator[pa.RecordBatch]:
        """Stream the result as record batches (bounded memory), index column names and types."""
        reader = self._relation(self._columns(columns)).to_arrow_reader(batch_size)
        for batch in reader:
            yield from self._conform(pa.Table.from_batches([batch])).to_batches()

    def to_arrow(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole result as one Arrow table (all index columns unless ``columns`` names some)."""
        return self._conform(self._relation(self._columns(columns)).to_arrow_table())

    def ids(self) -> list[str]:
        """Ids of the matching items."""
        return self._relation("id").to_arrow_table().column("id").to_pylist()

    def pages(self, size: int = 1000, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """Tables of ``size`` rows (the last may be shorter), streamed."""
        if size <= 0:
            raise QueryError(f"page size must be positive, got {size}")
        pending: list[pa.RecordBatch] = []
        held = 0
        for batch in self.batches(columns, batch_size=max(size, 1024)):
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
        if number < 0 or size <= 0:
            raise QueryError(f"page number must be >= 0 and size > 0, got {number}, {size}")
        return self._conform(self._relation(self._columns(columns), number * size, size).to_arrow_table())

    # -- Python rows -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        asset_keys = self._asset_keys()
        select = ", ".join(f"{quote(c)} AS {quote(k)}" for k, c in ROW_COLUMNS.items())
        select += "".join(f", assets.{quote(k)}.href AS {quote('asset:' + k)}" for k in asset_keys)
        for batch in self._relation(select).to_arrow_reader(4096):
            for row in batch.to_pylist():
                b = row["bbox"]
                row["bbox"] = [b["xmin"], b["ymin"], b["xmax"], b["ymax"]]
                row["assets"] = {k: join_href(self.index.url, row.pop("asset:" + k)) for k in asset_keys}
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

    def to_item_collection(self) -> pystac.ItemCollection:
        """pystac Items of the result (built now; hrefs made absolute). For small results."""
        import pystac
        import stac_geoparquet.arrow as sga

        items = []
        for batch in self.batches(batch_size=4096):
            for d in sga.stac_table_to_items(pa.Table.from_batches([batch])):
                for asset in d.get("assets", {}).values():
                    asset["href"] = join_href(self.index.url, asset["href"])
                for link in d.get("links", []):
                    link["href"] = join_href(self.index.url, link["href"])
                items.append(pystac.Item.from_dict(d, preserve_dict=False))
        return pystac.ItemCollection(items)

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
        ])
        rows = self._relation(select).to_arrow_table()
        if self.query.modality != "pair":
            return sample_table(rows, self.index.url, self.query.modality)
        partner = self.catalog.index("s1")
        tiles = pc.unique(rows.column(P("tile"))).to_pylist()
        con = _cursor()
        try:
            con.register("s1", pruned(partner.dataset, pc.field(P("tile")).isin(tiles) if tiles else None))
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
        return sample_table(rows, self.index.url, "pair", s1_rows, partner.url)

    def to_torch(self, **kwargs: Any) -> Any:
        """A streaming PyTorch dataset over the result (``BigEarthNetStream(self, **kwargs)``)."""
        from bigearth_stac.torch_dataset import BigEarthNetStream

        return BigEarthNetStream(self, **kwargs)

    def to_xarray(self, **kwargs: Any) -> Any:
        """A lazy ``xarray.Dataset`` of the result (``bigearth_stac.xarray_view.to_xarray``)."""
        from bigearth_stac.xarray_view import to_xarray

        return to_xarray(self, **kwargs)


def search(catalog: Catalog, **kwargs: Any) -> SearchResult:
    """Search ``catalog``; every given parameter must hold (AND).

    Parameters (all optional):

    - ``labels``: a class name or names; ``match="any"`` (default) or ``"all"``;
      ``nomenclature="19"`` (default) or ``"43"``. Unknown names raise with suggestions.
    - ``bbox``: ``(west, south, east, north)`` or ``"W,S,E,N"`` in degrees; ``intersects``: a
      GeoJSON geometry (dict) or shapely geometry. Footprints are tested exactly; touching counts.
    - ``datetime``: an RFC 3339 timestamp, a date (the whole day), an interval ``"start/end"``
      (``..`` for an open end), a ``datetime``/``date``, or a ``(start, end)`` pair.
    - ``split``, ``countries``, ``seasons``: a value or values (official names; case-insensitive).
    - ``exclude_snow``, ``exclude_clouds``: drop patches on the official snow / cloud lists.
    - ``modality``: ``"s2"`` (default) rows are S2 items, ``"s1"`` S1 items, ``"pair"`` S2 items
      whose ``sample_table()`` carries the S1 partner's assets too.
    - ``limit``: at most this many rows. ``filter``: CQL2 text or JSON (:mod:`bigearth_stac.cql2sql`).
    """
    modality = kwargs.get("modality", "s2")
    index = catalog.index("s1" if modality == "s1" else "s2")
    query = build_query(Columns(index.schema), **kwargs)
    return SearchResult(catalog, query)


__all__ = ["ROW_COLUMNS", "Query", "SearchResult", "build_query", "connect", "search"]
