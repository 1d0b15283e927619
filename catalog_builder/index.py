"""STAC Items -> a stac-geoparquet index per collection (the catalog's search engine).

Rows are sorted by location (tile, then a Hilbert curve over the footprint centre) and written
in row groups of about 16k rows with column statistics, so a region query reads few row groups
(DESIGN.md #4). The chunks of the columns searches filter on (:data:`INDEX_COLUMN_GROUPS`) are
then gathered at the start of the file for all row groups (:mod:`catalog_builder.parquet_layout`),
so a query over the whole archive fetches them from a remote store in a few contiguous requests.
The properties a search filters on have fixed Arrow types (:data:`PROPERTY_TYPES`) whatever the
items hold: a collection whose items all lack a split is still a ``string`` column, labels are
always ``list<string>``.
"""

from __future__ import annotations

import logging
import os
import posixpath
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely
import shapely.geometry
import stac_geoparquet.arrow as sga

from bigearth_stac.contract import (
    CLC_FRACTIONS,
    CLC_FRACTIONS_TYPE,
    INDEX_COLUMN_GROUPS,
    LABEL_MASK_COLUMNS,
    PROPERTY_TYPES,
    SEARCH_COLUMNS,
    index_href,
    index_path,
    item_dir,
    prop,
)
from bigearth_stac.vocab import CLASS_ORDERS
from catalog_builder.parquet_layout import LayoutError, gather_columns

log = logging.getLogger(__name__)

ROW_GROUP_SIZE = 16_384


def _hilbert(x: int, y: int, order: int = 16) -> int:
    """Distance along a Hilbert curve of side 2**order for integer cell (x, y)."""
    d = 0
    s = 1 << (order - 1)
    while s > 0:
        rx = 1 if x & s else 0
        ry = 1 if y & s else 0
        d += s * s * ((3 * rx) ^ ry)
        if ry == 0:
            if rx == 1:
                x = s - 1 - x
                y = s - 1 - y
            x, y = y, x
        s >>= 1
    return d


def _grid(lon: Any, lat: Any) -> tuple[Any, Any]:
    return (lon + 180.0) / 360.0 * 65535, (lat + 90.0) / 180.0 * 65535


def hilbert_many(x: np.ndarray, y: np.ndarray, order: int = 16) -> np.ndarray:
    """:func:`_hilbert` over arrays of integer cells (the same distances, vectorised)."""
    x = x.astype(np.int64).copy()
    y = y.astype(np.int64).copy()
    d = np.zeros(len(x), dtype=np.int64)
    s = 1 << (order - 1)
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx.astype(np.int64)) ^ ry.astype(np.int64))
        flip = ~ry & rx
        x = np.where(flip, s - 1 - x, x)
        y = np.where(flip, s - 1 - y, y)
        swap = ~ry
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        s >>= 1
    return d


def sort_by_location(table: pa.Table) -> pa.Table:
    """Rows of an index table in :func:`spatial_key` order (tile, Hilbert distance, id)."""
    bbox = table.column("bbox").combine_chunks()
    cx = (bbox.field("xmin").to_numpy() + bbox.field("xmax").to_numpy()) / 2
    cy = (bbox.field("ymin").to_numpy() + bbox.field("ymax").to_numpy()) / 2
    gx, gy = _grid(cx, cy)
    keys = pa.table({
        "tile": pc.fill_null(table.column(prop("tile")), ""),
        "h": hilbert_many(gx.astype(np.int64), gy.astype(np.int64)),
        "id": table.column("id"),
    })
    order = pc.sort_indices(keys, sort_keys=[("tile", "ascending"), ("h", "ascending"), ("id", "ascending")])
    return table.take(order)


def with_property_types(table: pa.Table) -> pa.Table:
    """``table`` with every column of :data:`PROPERTY_TYPES` present and of its declared type,
    :data:`~bigearth_stac.contract.CLC_FRACTIONS` of exactly ``CLC_FRACTIONS_TYPE``
    (:func:`clc_fractions_column`) and the label masks."""
    for name, typ in PROPERTY_TYPES.items():
        if name not in table.column_names:
            table = table.append_column(pa.field(name, typ), pa.nulls(len(table), typ))
            continue
        i = table.schema.get_field_index(name)
        if table.schema.field(i).type != typ:
            table = table.set_column(i, pa.field(name, typ), table.column(i).cast(typ))
    fractions = clc_fractions_column(table.column(CLC_FRACTIONS) if CLC_FRACTIONS in table.column_names else None,
                                     len(table))
    field = pa.field(CLC_FRACTIONS, CLC_FRACTIONS_TYPE)
    if CLC_FRACTIONS in table.column_names:
        table = table.set_column(table.schema.get_field_index(CLC_FRACTIONS), field, fractions)
    else:
        table = table.append_column(field, fractions)
    return with_label_masks(table)


def clc_fractions_column(column: pa.ChunkedArray | pa.Array | None, length: int) -> pa.Array:
    """Pixel fractions as the index holds them: a struct of ``CLC_FRACTIONS_TYPE``.

    ``column`` is what stac-geoparquet made of the items' ``{"<code>": fraction}`` objects (a
    struct of the codes that occur, ``None`` when no item has fractions). A row with fractions
    gets one ``float32`` per code of the 43, 0 for classes absent from its map; a row without
    (v1, or v2 built without maps) is null.
    """
    if column is None:
        return pa.nulls(length, CLC_FRACTIONS_TYPE)
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.type == CLC_FRACTIONS_TYPE:
        return array
    if pa.types.is_null(array.type):
        return pa.nulls(length, CLC_FRACTIONS_TYPE)
    if not pa.types.is_struct(array.type):
        raise ValueError(f"{CLC_FRACTIONS} must be an object of fractions per CLC code, not {array.type}")
    codes = [f.name for f in CLC_FRACTIONS_TYPE]
    unknown = [f.name for f in array.type if f.name not in codes]
    if unknown:
        raise ValueError(f"{CLC_FRACTIONS} holds {unknown[0]!r}, not a CLC Level-3 code of the 43 classes")
    present = {f.name: i for i, f in enumerate(array.type)}
    zeros = pa.array(np.zeros(len(array), dtype=np.float32))
    children = [pc.fill_null(array.field(present[code]).cast(pa.float32()), 0.0) if code in present else zeros
                for code in codes]
    return pa.StructArray.from_arrays(children, fields=list(CLC_FRACTIONS_TYPE), mask=pc.is_null(array))


def with_label_masks(table: pa.Table) -> pa.Table:
    """``table`` with the label bit-mask columns (:data:`~bigearth_stac.contract.LABEL_MASK_COLUMNS`).

    Computed column-wise from the label arrays (a full-archive index has 590k rows).
    """
    for nomenclature, column in LABEL_MASK_COLUMNS.items():
        labels = table.column(prop(f"labels_{nomenclature}")).combine_chunks()
        flat = pc.list_flatten(labels)
        parents = pc.list_parent_indices(labels).to_numpy()
        index = pc.index_in(flat, value_set=pa.array(CLASS_ORDERS["original"][nomenclature]))
        if index.null_count:
            unknown = flat.filter(pc.is_null(index))[0].as_py()
            raise ValueError(f"label {unknown!r} is not a {nomenclature}-class name")
        mask = np.zeros(len(table), dtype=np.int64)
        np.bitwise_or.at(mask, parents, np.left_shift(np.int64(1), index.to_numpy().astype(np.int64)))
        field = pa.field(column, pa.int64())
        if column in table.column_names:
            table = table.set_column(table.schema.get_field_index(column), field, pa.array(mask))
        else:
            table = table.append_column(field, pa.array(mask))
    return table


def spatial_key(item: Mapping[str, Any]) -> tuple[str, int, str]:
    """Sort key: tile, then Hilbert distance of the bbox centre, then id (for determinism)."""
    b = item["bbox"]
    cx = (b[0] + b[2]) / 2
    cy = (b[1] + b[3]) / 2
    fx, fy = _grid(cx, cy)
    gx, gy = int(fx), int(fy)
    tile = item["properties"].get(prop("tile")) or ""
    return (tile, _hilbert(gx, gy), item["id"])


def _relative_to_index(item: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an item whose asset and link hrefs are relative to the index file.

    Item hrefs are relative to the item JSON (``./<id>_s2_10m.tif``); in the index, which lives
    at ``index/<collection>.parquet``, the same object is ``../<collection>/<tile>/<id>/...``.
    Resolving an index href against the index URL gives the object's URL, wherever the catalog
    is published.
    """
    collection = item["collection"]
    folder = item_dir(collection, item["properties"][prop("tile")], item["id"])

    def rel(href: str) -> str:
        if "://" in href:
            return href  # an absolute URL (a licence page): not an object of the catalog
        return index_href(collection, posixpath.normpath(posixpath.join(folder, href)))

    out = dict(item)
    out["assets"] = {k: {**a, "href": rel(a["href"])} for k, a in item["assets"].items()}
    out["links"] = [{**link, "href": rel(link["href"])} for link in item["links"]]
    return out


def items_to_table(items: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Arrow table of items in stac-geoparquet's schema, sorted by :func:`spatial_key`.

    Asset and link hrefs are rewritten relative to the index file (see :func:`_relative_to_index`);
    the search columns have the types of :data:`PROPERTY_TYPES`.
    """
    ordered = [_relative_to_index(i) for i in items]
    if not ordered:
        raise ValueError("cannot index an empty collection")
    return sort_by_location(with_property_types(pa.Table.from_batches([_items_to_batch(ordered)])))


def _items_to_batch(items: list[dict[str, Any]]) -> pa.RecordBatch:
    """What ``stac_geoparquet.arrow.parse_stac_items_to_arrow`` makes of ``items``, without its
    deep copy of every item and its memory logging (which reads ``/proc/self/smaps`` twice per
    call): the items here are fresh copies already, and only their geometries (GeoJSON -> ISO
    WKB, as stac-geoparquet writes them) are replaced, in the copies' own top level."""
    from stac_geoparquet.arrow._batch import StacJsonBatch  # the classes behind the public function

    def wkb(geojson: Mapping[str, Any]) -> bytes:
        return shapely.to_wkb(shapely.geometry.shape(geojson), flavor="iso")

    geometries = shapely.to_wkb(np.array([shapely.geometry.shape(i["geometry"]) for i in items], dtype=object), flavor="iso")
    rows = []
    for item, geometry in zip(items, geometries, strict=True):
        row = {**item, "geometry": geometry}
        props = item.get("properties") or {}
        if "proj:geometry" in props:
            row["properties"] = {**props, "proj:geometry": wkb(props["proj:geometry"])}
        if any("proj:geometry" in a for a in item.get("assets", {}).values()):
            row["assets"] = {k: ({**a, "proj:geometry": wkb(a["proj:geometry"])} if "proj:geometry" in a else a)
                             for k, a in item["assets"].items()}
        rows.append(row)
    raw = StacJsonBatch(pa.RecordBatch.from_struct_array(pa.array(rows)))
    return raw.to_arrow_batch(drop_invalid_properties=True).inner




def search_columns_first(table: pa.Table) -> pa.Table:
    """``table`` with :data:`SEARCH_COLUMNS` first (in that order), the other columns after."""
    first = [c for c in dict.fromkeys(SEARCH_COLUMNS) if c in table.column_names]
    return table.select(first + [c for c in table.column_names if c not in first])


def _leaves(path: str, array: pa.Array) -> Iterable[tuple[str, pa.Array]]:
    """``(Parquet column path, values)`` of every leaf of ``array`` (structs and lists walked)."""
    typ = array.type
    if pa.types.is_struct(typ):
        for i in range(typ.num_fields):
            yield from _leaves(f"{path}.{typ.field(i).name}", array.field(i))
    elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
        yield from _leaves(f"{path}.list.element", array.flatten())
    elif pa.types.is_map(typ) or pa.types.is_fixed_size_list(typ):  # not in an index; the writer's default
        return
    else:
        yield path, array


def dictionary_columns(table: pa.Table, sample_rows: int = ROW_GROUP_SIZE) -> list[str]:
    """Leaf columns worth dictionary encoding: at most one distinct value in two, judged on the
    first ``sample_rows`` rows (a row group). Ids, hrefs, checksums and the like are stored
    plain: a dictionary of unique strings plus an index per row is twice their compressed size
    and slower to decode (the id column of the archive: 2.1 MB -> 1.1 MB)."""
    sample = table.slice(0, sample_rows).combine_chunks()
    out = []
    for name in sample.column_names:
        for path, values in _leaves(name, sample.column(name).combine_chunks()):
            present = len(values) - values.null_count
            if present == 0 or pc.count_distinct(values).as_py() * 2 <= present:
                out.append(path)
    return out


def table_to_parquet_bytes(table: pa.Table, collection: Mapping[str, Any] | None = None,
                           row_group_size: int = ROW_GROUP_SIZE) -> bytes:
    """Parquet bytes of an index table, one row group per :data:`ROW_GROUP_SIZE` rows, the
    chunks of :data:`INDEX_COLUMN_GROUPS` gathered at the start of the file.

    ``table`` must already be in location order (:func:`items_to_table`, :func:`sort_by_location`).
    """
    table = search_columns_first(table)
    batches = table.combine_chunks().to_batches(max_chunksize=row_group_size)
    reader = pa.RecordBatchReader.from_batches(table.schema, batches)
    collections = {collection["id"]: dict(collection)} if collection else None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "index.parquet")
        # stac-geoparquet writes each batch as its own row group(s): 16k-row batches -> 16k-row groups.
        sga.to_parquet(reader, path, collections=collections, compression="zstd", write_statistics=True,
                       use_dictionary=dictionary_columns(table, row_group_size))
        with open(path, "rb") as fh:
            data = fh.read()
    try:
        return gather_columns(data, INDEX_COLUMN_GROUPS)
    except LayoutError as exc:  # a slower remote layout, the same table
        log.warning("index written with pyarrow's own chunk order: %s", exc)
        return data


def index_bytes(items: Iterable[Mapping[str, Any]], collection: Mapping[str, Any] | None = None) -> bytes:
    """Items -> sorted stac-geoparquet bytes."""
    return table_to_parquet_bytes(items_to_table(items), collection)


def row_count(data: bytes) -> int:
    """Rows in the Parquet bytes of an index."""
    return pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows


__all__ = [
    "PROPERTY_TYPES",
    "ROW_GROUP_SIZE",
    "clc_fractions_column",
    "dictionary_columns",
    "index_bytes",
    "index_path",
    "items_to_table",
    "row_count",
    "search_columns_first",
    "sort_by_location",
    "spatial_key",
    "table_to_parquet_bytes",
    "with_label_masks",
    "with_property_types",
]
