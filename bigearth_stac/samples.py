"""The loader's input: a compact Arrow table of samples, built from index rows.

A *sample table* has one row per training sample and the columns::

    id          string           S2 patch id (pairs, s2) or S1 patch id (s1)
    s2_assets   list<string>     absolute URLs / paths of the S2 COGs, in band_groups("s2", layout) order
    s1_assets   list<string>     absolute URLs / paths of the S1 COGs, in band_groups("s1", layout) order
    layout      string           "stacked" or "per-band"
    labels_19   list<string>
    labels_43   list<string>
    split       string

``s2_assets`` / ``s1_assets`` are empty lists when that modality is not part of the sample. The
hot path reads only this table (DESIGN.md #5): no pystac, no item JSON.

Tables built from a v2.0 catalog also carry the optional columns (:data:`OPTIONAL_COLUMNS`; a
table without them is a v1.0 table without reference maps)::

    release        string        "v1.0" or "v2.0": which normalisation statistics the loader uses
    reference_map  string        absolute URL of the S2 item's reference-map COG (v2.0; null where
                                 an item has none; absent when the index has no such asset)

Every asset URL of a table built from a catalog has been resolved and confined to that catalog
(:func:`bigearth_stac.hrefs.resolve_many`), and the table carries the catalog's
:class:`~bigearth_stac.hrefs.Scope` in its schema metadata (:func:`scope_of`), so the readers that
take it (loader, xarray view) refuse any href a later edit may have put outside it.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from bigearth_stac.contract import REFERENCE_MAP_ASSET, prop
from bigearth_stac.hrefs import Location, Scope, parse, resolve_many
from bigearth_stac.vocab import RELEASE_V1, Layout, band_groups

#: Schema metadata key holding the roots of the catalog a sample table was built from.
SCOPE_KEY = b"bigearth_stac:scope"

SAMPLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("s2_assets", pa.list_(pa.string())),
        ("s1_assets", pa.list_(pa.string())),
        ("layout", pa.string()),
        ("labels_19", pa.list_(pa.string())),
        ("labels_43", pa.list_(pa.string())),
        ("split", pa.string()),
    ]
)

OPTIONAL_COLUMNS = pa.schema([("release", pa.string()), (REFERENCE_MAP_ASSET, pa.string())])
"""Columns a sample table may have besides :data:`SAMPLE_SCHEMA` (kept by :func:`as_sample_table`):
the items' release and the URL of each S2 item's reference map (null where it has none)."""


def _asset_urls(index: pa.Table, index_url: str, modality: str, layout: Layout, scope: Scope) -> list[pa.Array]:
    """Per asset key of the band groups, the absolute URLs of that asset, confined to ``scope``."""
    assets = index.column("assets").combine_chunks()
    return [resolve_many(scope, index_url, assets.field(k).field("href"))
            for k in band_groups(modality, layout)]  # type: ignore[arg-type]


def _has_asset(index: pa.Table, key: str) -> bool:
    """Whether the rows' ``assets`` struct has a field ``key``."""
    t = index.schema.field("assets").type
    return pa.types.is_struct(t) and t.get_field_index(key) >= 0


def _reference_maps(index: pa.Table, index_url: str, scope: Scope) -> pa.Array:
    """Per row, the absolute URL of the reference-map asset (null where the row has none)."""
    n = len(index)
    if not n or not _has_asset(index, REFERENCE_MAP_ASSET):
        return pa.nulls(n, pa.string())
    assets = index.column("assets").combine_chunks()
    maps = assets.field(REFERENCE_MAP_ASSET)
    hrefs = maps.field("href")
    if maps.null_count:  # a null struct hides whatever its child holds
        hrefs = pc.if_else(maps.is_valid(), hrefs, pa.scalar(None, pa.string()))
    present = hrefs.is_valid()
    if not pc.any(present).as_py():
        return pa.nulls(n, pa.string())
    urls = resolve_many(scope, index_url, hrefs.filter(present))
    return pc.replace_with_mask(pa.nulls(n, pa.string()), present, urls)


def _as_lists(columns: list[pa.Array], n: int) -> pa.Array:
    """Per-key URL columns -> one ``list<string>`` column (row i: the URLs of row i, key order)."""
    if not columns:
        return pa.array([[] for _ in range(n)], pa.list_(pa.string()))
    k = len(columns)
    import numpy as np

    order = np.arange(n * k).reshape(k, n).T.ravel()  # interleave: row-major over (row, key)
    flat = pc.take(pa.concat_arrays(columns), pa.array(order))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), flat)


def _index_scope(index_url: str) -> Scope:
    """The scope of an index at ``<root>/index/<collection>.parquet``: its catalog root."""
    loc = parse(index_url)
    return Scope([Location(loc.scheme, loc.authority, posixpath.dirname(posixpath.dirname(loc.path)) + "/").url])


def sample_table(
    index: pa.Table,
    index_url: str,
    modality: Literal["s2", "s1", "pair"],
    partner_index: pa.Table | None = None,
    partner_index_url: str | None = None,
    scope: Scope | None = None,
    release: str | None = None,
) -> pa.Table:
    """Sample table from rows of an index (and, for pairs, the partner collection's index).

    ``index`` holds S2 rows for ``s2`` and ``pair``, S1 rows for ``s1``; for ``pair`` the S1 rows
    are looked up in ``partner_index`` by ``bigearthnet:s1_id``. Every href is resolved against
    its index and must stay inside ``scope`` (default: the catalog the index belongs to), else
    :class:`~bigearth_stac.hrefs.HrefError` names it. ``release``: the release of the rows
    (default: their ``bigearthnet:release`` column, else v1.0); S2 rows' reference maps go to
    the ``reference_map`` column.
    """
    n = len(index)
    scope = scope or _index_scope(index_url)
    layout: Layout = index.column(prop("layout"))[0].as_py() if n else "stacked"
    own = _as_lists(_asset_urls(index, index_url, "s1" if modality == "s1" else "s2", layout, scope) if n else [], n)
    empty = _as_lists([], n)
    s2_assets, s1_assets = (empty, own) if modality == "s1" else (own, empty)
    if modality == "pair" and n:
        if partner_index is None or partner_index_url is None:
            raise ValueError("pairs need the S1 index (partner_index and partner_index_url)")
        pos = {sid: i for i, sid in enumerate(partner_index.column("id").to_pylist())}
        wanted = index.column(prop("s1_id")).to_pylist()
        missing = [w for w in wanted if w not in pos]
        if missing:
            raise KeyError(f"S1 partners missing from the S1 index: {missing[:5]}")
        rows = partner_index.take(pa.array([pos[w] for w in wanted]))
        s1_layout: Layout = rows.column(prop("layout"))[0].as_py()
        s1_assets = _as_lists(_asset_urls(rows, partner_index_url, "s1", s1_layout, scope), n)
    if release is None:
        release = RELEASE_V1
        if prop("release") in index.column_names and n:
            found = pc.unique(index.column(prop("release")).fill_null(RELEASE_V1)).to_pylist()
            release = found[0] if len(found) == 1 else None
    columns = {
        "id": index.column("id"),
        "s2_assets": s2_assets,
        "s1_assets": s1_assets,
        "layout": pa.array([layout] * n, pa.string()),
        "labels_19": index.column(prop("labels_19")),
        "labels_43": index.column(prop("labels_43")),
        "split": index.column(prop("split")),
    }
    # The optional columns only where they say something: a v1.0 table is exactly SAMPLE_SCHEMA.
    if release != RELEASE_V1:
        columns["release"] = (pa.array([release] * n, pa.string()) if release is not None
                              else index.column(prop("release")).combine_chunks().fill_null(RELEASE_V1))
    if modality != "s1" and _has_asset(index, REFERENCE_MAP_ASSET):
        columns[REFERENCE_MAP_ASSET] = _reference_maps(index, index_url, scope)
    schema = pa.schema([*SAMPLE_SCHEMA, *(f for f in OPTIONAL_COLUMNS if f.name in columns)])
    table = pa.table(columns, schema=schema)
    return with_scope(table, scope)


def with_scope(table: pa.Table, scope: Scope) -> pa.Table:
    """``table`` with ``scope``'s roots in its schema metadata."""
    meta = dict(table.schema.metadata or {})
    meta[SCOPE_KEY] = json.dumps(list(scope.roots)).encode()
    return table.replace_schema_metadata(meta)


def scope_of(table: pa.Table) -> Scope | None:
    """The scope recorded in a sample table's metadata (``None`` for a table made by hand)."""
    raw = (table.schema.metadata or {}).get(SCOPE_KEY)
    if raw is None:
        return None
    try:
        roots = json.loads(raw)
    except ValueError:
        raise ValueError(f"sample table metadata {SCOPE_KEY.decode()} is not JSON: {raw[:80]!r}") from None
    if not isinstance(roots, list) or not roots or not all(isinstance(r, str) for r in roots):
        raise ValueError(f"sample table metadata {SCOPE_KEY.decode()} is not a list of roots: {raw[:80]!r}")
    return Scope(roots)


def as_sample_table(source: Any, keep_extra: bool = False) -> pa.Table:
    """The sample table of a search result (anything with ``.sample_table()``) or of a table.

    ``keep_extra`` keeps columns beyond :data:`SAMPLE_SCHEMA` (e.g. ``bbox`` for footprint centres).
    """
    table = source.sample_table() if hasattr(source, "sample_table") else source
    if not isinstance(table, pa.Table):
        raise TypeError(f"expected a search result or a pyarrow sample table, got {type(source).__name__}")
    missing = [n for n in SAMPLE_SCHEMA.names if n not in table.column_names]
    if missing:
        raise ValueError(f"not a sample table (see bigearth_stac.samples): missing columns {missing}")
    for f in OPTIONAL_COLUMNS:
        if f.name in table.column_names and not table.schema.field(f.name).type.equals(f.type):
            raise ValueError(f"sample table column {f.name!r} is {table.schema.field(f.name).type}, not {f.type}")
    scope = scope_of(table)
    if scope is not None:
        _check_confined(table, scope)
    keep = [*SAMPLE_SCHEMA.names, *(n for n in OPTIONAL_COLUMNS.names if n in table.column_names)]
    out = table if keep_extra else table.select(keep).combine_chunks()
    return out if scope is None else with_scope(out, scope)


def _check_confined(table: pa.Table, scope: Scope) -> None:
    """Every asset URL of ``table`` lies under one of ``scope``'s roots (column-wise check)."""
    for name in ("s2_assets", "s1_assets", REFERENCE_MAP_ASSET):
        if name not in table.column_names:
            continue
        column = table.column(name)
        urls = pc.list_flatten(column) if pa.types.is_list(column.type) else column.drop_null()
        if not len(urls):
            continue
        inside = pc.is_in(urls, pa.array([], pa.string()))  # all False
        for root in scope.roots:
            prefix = root if root.endswith("/") else root + "/"
            inside = pc.or_(inside, pc.starts_with(urls, prefix))
        climbs = pc.match_substring_regex(urls, r"(^|/)\.\.?(/|$)|%|\\")
        bad = pc.or_(pc.invert(inside), climbs)
        if pc.any(bad).as_py():
            first = urls.filter(bad)[0].as_py()
            scope.check(first)  # raises HrefError naming it (or passes for an odd but legal URL)
            for url in urls.filter(bad).to_pylist():
                scope.check(url)
