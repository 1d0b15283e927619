"""pgstac rows from index batches, column-wise: what pypgstac's loader makes of each item, for 10k rows at once.

pypgstac turns every item dict into a row (id, collection, datetime, end_datetime, EWKB
geometry, content dehydrated against the collection's base item) in Python: with the item
dicts built first, about 0.4 ms an item, 8 minutes for the 1.18 million items of a full
archive on 2 cores. BigEarthNet's items are regular: within a collection, every asset field the
collection's ``item_assets`` describes (type, title, roles, bands, ...) has one value in every row.
So the dehydration can be decided per column:

- a field the base item does not have is kept as it is (``href``, ``file:checksum``, ...);
- a field the base item has, with one value in every row of the batch, is dehydrated once with
  pypgstac's own :func:`pypgstac.hydration.dehydrate` and the result (usually: nothing) written
  for every row;
- a struct under a struct of the base item is decided field by field, and keys of the base item
  that the item lacks get pypgstac's do-not-merge marker, as pypgstac does;
- a field the base item has whose value differs between rows (v2's per-item class list of the
  reference map) is dehydrated row by row, that field alone, and written as a JSON column;
- what is not the same for every row of the batch (a field equal to the base item's in some rows
  only, a missing value) is not decided here: :func:`pgstac_rows` returns ``None`` and the caller
  hands that batch's item dicts to pypgstac.

DuckDB writes the JSON. ``tests/test_pgstac.py`` loads the same catalogs both ways and compares
the databases' rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from bigearth_stac._predicates import quote
from bigearth_stac.contract import item_path, prop
from bigearth_stac.item_json import replace_field

log = logging.getLogger(__name__)

#: Links the STAC API writes itself; the static catalog's are dropped on load.
API_RELS = frozenset({"self", "root", "parent", "collection", "child", "item", "items"})
VIA_TITLE = "This document in the published static catalog"
#: Fields of an item that pgstac keeps in its own columns, not in ``content``.
ROW_FIELDS = ("id", "collection", "geometry")
_SAFE_PATH = r"^/[A-Za-z0-9_.\-/]*$"


class RowWise(Exception):
    """A batch whose dehydration is not the same for every row (decided row by row instead)."""


def as_urls(values: pa.Array) -> pa.Array:
    """:func:`catalog_builder.pgstac_load.as_url` over a string array (local paths become ``file://`` URLs)."""
    if not len(values):
        return values
    local = pc.invert(pc.match_substring_regex(values, r"^[A-Za-z][A-Za-z0-9+.\-]*://"))
    if not pc.any(local).as_py():
        return values
    simple = pc.and_(local, pc.match_substring_regex(values, _SAFE_PATH))
    out = pc.if_else(simple, pc.binary_join_element_wise(pa.scalar("file://"), values, ""), values)
    odd = pc.and_(local, pc.invert(simple))
    if pc.any(odd).as_py():
        idx = pc.indices_nonzero(odd).to_numpy()
        fixed = [Path(values[int(i)].as_py()).as_uri() for i in idx]
        out = pc.replace_with_mask(out, odd, pa.array(fixed, pa.string()))
    return out


def _urls_of_assets(assets: pa.StructArray) -> pa.StructArray:
    for i in range(assets.type.num_fields):
        asset = assets.field(i)
        if asset.type.get_field_index("href") >= 0:
            assets = replace_field(assets, assets.type.field(i).name, replace_field(asset, "href", as_urls(asset.field("href"))))
    return assets


def _links_json_sql(link_type: pa.StructType) -> str:
    """SQL writing one link struct ``l`` as a JSON object without its null fields (as the old path did)."""
    parts = []
    for i in range(link_type.num_fields):
        name = link_type.field(i).name
        key = orjson.dumps(name).decode().replace("'", "''")
        parts.append(f"CASE WHEN l.{quote(name)} IS NOT NULL THEN '{key}:' || to_json(l.{quote(name)}) END")
    return "'{' || concat_ws(',', " + ", ".join(parts) + ") || '}'"


class _Planner:
    """Builds the SQL of a dehydrated ``content`` struct, deciding each field for the whole batch."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
        self.con = con
        self.table = table
        self.params: list[str] = []
        #: Columns of per-row JSON the content refers to (added to the relation before the query).
        self.extra: dict[str, pa.Array] = {}

    def _literal(self, value: Any) -> str:
        self.params.append(orjson.dumps(value).decode())
        return f"json(${len(self.params)})"

    def _value(self, path: list[str]) -> tuple[bool, Any]:
        """Whether the column at ``path`` has one value in every row, and that value."""
        expr = _path_sql(path)
        distinct, nonnull, total = self.con.execute(
            f"SELECT count(DISTINCT {expr}), count({expr}), count(*) FROM _rows").fetchall()[0]
        if not (distinct == 1 and nonnull == total) and nonnull != 0:
            return False, None
        col = self._column(path)
        return True, col[0].as_py()

    def struct(self, base: dict[str, Any], path: list[str], typ: pa.StructType,
               drop: tuple[str, ...] = ()) -> str:
        from pypgstac.hydration import DO_NOT_MERGE_MARKER, dehydrate

        members = []
        names = [typ.field(i).name for i in range(typ.num_fields)]
        for i, name in enumerate(names):
            if name in drop:
                continue
            sub = [*path, name]
            expr = _path_sql(sub)
            if name not in base:
                members.append(f"{quote(name)} := {expr}")
                continue
            constant, value = self._value(sub)
            if constant:
                stripped = dehydrate({name: base[name]}, {name: value})
                if name in stripped:
                    members.append(f"{quote(name)} := {self._literal(stripped[name])}")
                continue
            child = typ.field(i).type
            if isinstance(base[name], dict) and pa.types.is_struct(child) and not self._has_nulls(sub):
                members.append(f"{quote(name)} := {self.struct(base[name], sub, child)}")
                continue
            members.extend(self._per_row(base[name], sub))
        for key in base:
            if key not in names and key not in drop:
                members.append(f"{quote(key)} := {self._literal(DO_NOT_MERGE_MARKER)}")
        return "struct_pack(" + ", ".join(members) + ")" if members else "struct_pack()"

    def _column(self, path: list[str]) -> Any:
        """The values at ``path`` (a column, then struct fields) as an Arrow array."""
        col: Any = self.table.column(path[0])
        for p in path[1:]:
            col = pc.struct_field(col, p)
        return col

    def _per_row(self, base_value: Any, path: list[str]) -> list[str]:
        """A field whose value differs between rows, dehydrated row by row (one field, not the item).

        Written as a JSON column when every row keeps something, left out when no row does;
        a mix (some rows equal to the base item) cannot be one column: :class:`RowWise`.
        """
        from pypgstac.hydration import dehydrate

        name = path[-1]
        col = self._column(path)
        kept = [dehydrate({name: base_value}, {name: v}) for v in col.to_pylist()]
        present = sum(name in k for k in kept)
        if present == 0:
            return []
        if present < len(kept):
            raise RowWise(f"{'.'.join(path)} equals the base item's in some rows only")
        column = f"_field{len(self.extra)}"
        self.extra[column] = pa.array([orjson.dumps(k[name]).decode() for k in kept], pa.string())
        return [f"{quote(name)} := json({quote(column)})"]

    def _has_nulls(self, path: list[str]) -> bool:
        expr = _path_sql(path)
        return bool(self.con.execute(f"SELECT count(*) - count({expr}) FROM _rows").fetchall()[0][0])


def _path_sql(path: list[str]) -> str:
    """SQL of the value at ``path``: a column, then struct fields."""
    return quote(path[0]) + "".join(f"[{_quote_str(p)}]" for p in path[1:])


def _quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def pgstac_rows(shaped: pa.RecordBatch, wkb: pa.Array, root: str, base_item: dict[str, Any],
                base_item_id: int | None, partition: Callable[[str], str],
                con: duckdb.DuckDBPyConnection | None = None) -> list[dict[str, Any]] | None:
    """pypgstac rows of an item-layout batch (:func:`bigearth_stac.item_json.item_batch`, hrefs absolute).

    ``wkb`` is the batch's geometry as WKB, ``root`` the catalog root (the items' ``via`` links
    point at ``<root>/<item path>``), ``base_item`` / ``base_item_id`` the collection's from
    pgstac, ``partition(datetime)`` the partition a row goes to. Returns ``None`` for a batch
    that must be dehydrated row by row.
    """
    con = con or duckdb.connect()
    names = shaped.schema.names
    if "assets" in names:
        shaped = shaped.set_column(names.index("assets"), "assets", _urls_of_assets(shaped.column("assets")))
    props = shaped.column("properties")
    if props.null_count or shaped.column("id").null_count or shaped.column("collection").null_count:
        return None
    tiles = pc.struct_field(props, prop("tile")).to_pylist() if props.type.get_field_index(prop("tile")) >= 0 \
        else None
    if tiles is None or None in tiles:
        return None
    ids = shaped.column("id").to_pylist()
    collections = shaped.column("collection").to_pylist()
    base = root.rstrip("/") + "/"
    via = as_urls(pa.array([base + item_path(c, t, i) for c, t, i in zip(collections, tiles, ids, strict=True)], pa.string()))
    table = pa.Table.from_batches([shaped]).drop_columns(["geometry"]).append_column("_via", via)
    if "links" in names:
        links = table.column("links").combine_chunks()
        flat = links.values
        flat = replace_field(flat, "href", as_urls(flat.field("href")))
        table = table.set_column(table.schema.get_field_index("links"), "links",
                                 pa.ListArray.from_arrays(links.offsets, flat))
    con.register("_rows", table)
    try:
        planner = _Planner(con, table)
        try:
            content_type = pa.struct([table.schema.field(n) for n in table.schema.names if n not in ("_via",)])
            content = planner.struct(base_item, [], content_type, drop=(*ROW_FIELDS, "links"))
        except RowWise as why:
            log.debug("row-wise dehydration: %s", why)
            return None
        if planner.extra:
            con.unregister("_rows")
            for column, values in planner.extra.items():
                table = table.append_column(column, values)
            con.register("_rows", table)
        api_rels = ", ".join(_quote_str(r) for r in sorted(API_RELS | {"via"}))
        via_link = orjson.dumps({"rel": "via", "type": "application/json", "title": VIA_TITLE}).decode()[:-1]
        link_json = _links_json_sql(table.schema.field("links").type.value_type) if "links" in names else None
        links_sql = (
            "json('[' || concat_ws(',', "
            + (f"nullif(array_to_string(list_transform(list_filter(links, lambda l: l.rel IS NULL OR l.rel NOT IN ({api_rels})), "
               f"lambda l: {link_json}), ','), ''), " if link_json else "")
            + f"'{via_link.replace(chr(39), chr(39) * 2)},\"href\":' || to_json(_via) || '}}') || ']')"
        )
        body = content[len("struct_pack("):-1]
        content_sql = f"struct_pack({body}{', ' if body else ''}links := {links_sql}"
        if base_item_id is not None:
            content_sql += f", \"pgstac:base_item\" := {base_item_id}"
        content_sql += ")"
        dt = _datetime_sql(props.type)
        if dt is None:
            return None
        start, end = dt
        out = con.sql(f"SELECT id, collection, {start} AS dt, {end} AS edt, to_json({content_sql}) FROM _rows",
                      params=planner.params).to_arrow_table()
    finally:
        con.unregister("_rows")
    starts = out.column("dt")
    if starts.null_count or out.column("edt").null_count:
        return None
    geoms = shapely.from_wkb(wkb.to_numpy(zero_copy_only=False))
    geoms = shapely.set_srid(geoms, 4326)
    ewkb = shapely.to_wkb(geoms, hex=True, include_srid=True)
    rows = []
    for rid, coll, start_s, end_s, body_s, g in zip(ids, collections, starts.to_pylist(), out.column("edt").to_pylist(),
                                                     out.column(4).to_pylist(), ewkb, strict=True):
        rows.append({"id": rid, "collection": coll, "datetime": start_s, "end_datetime": end_s, "geometry": g,
                     "content": body_s, "private": None, "partition": partition(start_s)})
    return rows


def _datetime_sql(props: pa.StructType) -> tuple[str, str] | None:
    """SQL of pypgstac's (datetime, end_datetime) of a row: the range when both ends are set, else ``datetime``."""
    have = {props.field(i).name for i in range(props.num_fields)}
    if "datetime" not in have and not {"start_datetime", "end_datetime"} <= have:
        return None
    dt = 'properties."datetime"' if "datetime" in have else "NULL"
    if {"start_datetime", "end_datetime"} <= have:
        both = 'properties."start_datetime" IS NOT NULL AND properties."end_datetime" IS NOT NULL'
        return (f'CASE WHEN {both} THEN properties."start_datetime" ELSE {dt} END',
                f'CASE WHEN {both} THEN properties."end_datetime" ELSE {dt} END')
    return dt, dt


def partition_namer(key: int, trunc: str | None) -> Callable[[str], str]:
    """pypgstac's partition name of an item of the collection with ``key`` and ``partition_trunc``."""
    if trunc == "year":
        return lambda dt: f"_items_{key}_{dt.replace('-', '')[:4]}"
    if trunc == "month":
        return lambda dt: f"_items_{key}_{dt.replace('-', '')[:6]}"
    name = f"_items_{key}"
    return lambda dt: name


__all__ = ["API_RELS", "ROW_FIELDS", "RowWise", "VIA_TITLE", "as_urls", "partition_namer", "pgstac_rows"]
