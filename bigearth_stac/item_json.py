"""STAC items from index rows, a batch at a time: hrefs resolved column-wise, JSON written by DuckDB.

stac-geoparquet turns an index batch into items with ``as_py()`` per row (about 0.3-0.6 ms an
item here); a full archive has 1.18 million. This module keeps the rows in Arrow until the last
step:

1. :func:`resolve_batch` resolves and confines every asset and link href of the batch with
   :func:`bigearth_stac.hrefs.resolve_many` (the same rules as :meth:`Scope.resolve`, one
   column at a time);
2. :func:`item_batch` reshapes it into the item layout with stac-geoparquet's own Arrow
   conversion (properties nested, ``bbox`` a list, timestamps as RFC 3339 text) and the
   geometry as GeoJSON text (shapely, vectorised);
3. :func:`item_json` writes one JSON document per row with DuckDB's ``to_json``.

The documents equal stac-geoparquet's item dicts (``tests/test_item_json.py`` compares them on
built v1 and v2 catalogs). A batch with a missing (null) asset, which stac-geoparquet drops
row by row, is not expressible column-wise: :func:`item_json` returns ``None`` for it and the
caller takes stac-geoparquet's row-wise path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from bigearth_stac._predicates import quote
from bigearth_stac.contract import LABEL_MASK_COLUMNS
from bigearth_stac.hrefs import INFORMATIONAL_RELS, Scope, resolve_many

log = logging.getLogger(__name__)

#: Index columns that are not item fields.
INDEX_ONLY_COLUMNS = tuple(LABEL_MASK_COLUMNS.values())


def replace_field(struct: pa.StructArray, name: str, values: pa.Array) -> pa.StructArray:
    """``struct`` with its child ``name`` replaced by ``values`` (nulls of the struct kept)."""
    fields = [struct.type.field(i) for i in range(struct.type.num_fields)]
    children = [values if f.name == name else struct.field(i) for i, f in enumerate(fields)]
    return pa.StructArray.from_arrays(children, fields=[f.with_type(c.type) for f, c in zip(fields, children, strict=True)],
                                      mask=struct.is_null() if struct.null_count else None)


def _resolve_links(links: pa.Array, base: str, scope: Scope) -> pa.Array:
    """A ``list<struct<rel, href, ...>>`` column with every href resolved and confined."""
    if isinstance(links, pa.ChunkedArray):
        links = links.combine_chunks()
    flat = links.values  # offsets index into the whole child array (also for a sliced array)
    if not len(flat):
        return links
    hrefs = flat.field("href")
    rels = flat.field("rel")
    # Informational web links (licence, DOI) stay as written, as in Scope.resolve_link.
    web = pc.and_kleene(pc.is_in(rels, pa.array(sorted(INFORMATIONAL_RELS))),
                        pc.match_substring_regex(hrefs, r"^[hH][tT][tT][pP][sS]?://"))
    web = pc.fill_null(web, False)
    if pc.any(web).as_py():
        rows = [{"rel": r, "href": h} for r, h in zip(rels.to_pylist(), hrefs.to_pylist(), strict=True)]
        resolved = pa.array([scope.resolve_link(base, row) for row in rows], pa.string())
    else:
        resolved = resolve_many(scope, base, hrefs)
    new_flat = replace_field(flat, "href", resolved)
    return pa.ListArray.from_arrays(links.offsets, new_flat, mask=links.is_null() if links.null_count else None)


def resolve_batch(batch: pa.RecordBatch, base: str, scope: Scope) -> pa.RecordBatch:
    """``batch`` of an index at ``base`` with every asset and link href absolute and confined.

    Raises :class:`~bigearth_stac.hrefs.HrefError` naming the first href that leaves ``scope``.
    """
    names = batch.schema.names
    if "assets" in names:
        assets = batch.column("assets")
        if isinstance(assets, pa.ChunkedArray):
            assets = assets.combine_chunks()
        for i in range(assets.type.num_fields):
            asset = assets.field(i)
            if "href" not in [asset.type.field(j).name for j in range(asset.type.num_fields)]:
                continue
            hrefs = asset.field("href")
            valid = pc.invert(asset.is_null()) if asset.null_count else None
            if valid is not None:  # a missing asset has no href to resolve
                present = hrefs.filter(valid)
                resolved = pc.replace_with_mask(hrefs, valid, resolve_many(scope, base, present)) if len(present) \
                    else hrefs
            else:
                resolved = resolve_many(scope, base, hrefs)
            assets = replace_field(assets, assets.type.field(i).name, replace_field(asset, "href", resolved))
        batch = batch.set_column(names.index("assets"), "assets", assets)
    if "links" in names:
        batch = batch.set_column(names.index("links"), "links", _resolve_links(batch.column("links"), base, scope))
    return batch


def item_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """An index batch in the item layout (stac-geoparquet), geometry as GeoJSON text.

    Index-only columns (label masks) are dropped first.
    """
    from stac_geoparquet.arrow._batch import StacArrowBatch

    keep = [n for n in batch.schema.names if n not in INDEX_ONLY_COLUMNS]
    batch = batch.select(keep)
    shaped = StacArrowBatch(batch).to_json_batch().inner
    i = shaped.schema.get_field_index("geometry")
    if i >= 0:
        geojson = shapely.to_geojson(shapely.from_wkb(shaped.column("geometry").to_numpy(zero_copy_only=False)))
        shaped = shaped.set_column(i, pa.field("geometry", pa.string()), pa.array(geojson, pa.string()))
    return shaped


def columns_sql(schema: pa.Schema) -> str:
    """The SELECT list that writes ``schema``'s columns as item fields (``geometry`` embedded as JSON)."""
    return ", ".join('json("geometry") AS geometry' if n == "geometry" else quote(n) for n in schema.names)


def has_null_assets(shaped: pa.RecordBatch) -> bool:
    """Whether some row lacks an asset (stac-geoparquet drops it from that row's item)."""
    if "assets" not in shaped.schema.names:
        return False
    assets = shaped.column("assets")
    return any(assets.field(i).null_count for i in range(assets.type.num_fields))


def item_json(shaped: pa.RecordBatch, con: duckdb.DuckDBPyConnection | None = None) -> list[str] | None:
    """One JSON document per row of an :func:`item_batch`; ``None`` where the batch needs row-wise handling."""
    if has_null_assets(shaped):
        return None
    con = con or duckdb.connect()
    con.register("_items", shaped)
    try:
        return con.sql(f"SELECT to_json(t) FROM (SELECT {columns_sql(shaped.schema)} FROM _items) t"
                       ).to_arrow_table().column(0).to_pylist()
    finally:
        con.unregister("_items")


def iter_item_dicts(batches: Iterator[pa.RecordBatch], base: str, scope: Scope) -> Iterator[dict[str, Any]]:
    """STAC item dicts of index ``batches`` (at ``base``), hrefs absolute and confined."""
    import orjson
    from stac_geoparquet.arrow._batch import StacJsonBatch

    con = duckdb.connect()
    for batch in batches:
        shaped = item_batch(resolve_batch(batch, base, scope))
        docs = item_json(shaped, con)
        if docs is None:
            geometry = shaped.column("geometry")
            wkb = pa.array(shapely.to_wkb(shapely.from_geojson(geometry.to_numpy(zero_copy_only=False))),
                           pa.binary())
            rows = shaped.set_column(shaped.schema.get_field_index("geometry"), "geometry", wkb)
            yield from StacJsonBatch(rows).iter_dicts()
            continue
        for doc in docs:
            yield orjson.loads(doc)


__all__ = ["INDEX_ONLY_COLUMNS", "columns_sql", "has_null_assets", "item_batch", "item_json", "iter_item_dicts",
           "replace_field", "resolve_batch"]
