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
"""

from __future__ import annotations

import posixpath
from typing import Any, Literal

import pyarrow as pa

from bigearth_stac.vocab import Layout, band_groups

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


def join_href(base_url: str, href: str) -> str:
    """Resolve an href relative to the document at ``base_url`` (a path or URL)."""
    if "://" in href or href.startswith("/"):
        return href
    scheme, sep, rest = base_url.partition("://")
    if not sep:
        scheme, rest = "", base_url
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rest), href))
    return f"{scheme}://{joined}" if scheme else joined


def _asset_urls(index: pa.Table, index_url: str, modality: str, layout: Layout) -> list[list[str]]:
    keys = list(band_groups(modality, layout))  # type: ignore[arg-type]
    assets = index.column("assets").combine_chunks()
    per_key = [assets.field(k).field("href").to_pylist() for k in keys]
    return [[join_href(index_url, h[i]) for h in per_key] for i in range(len(index))]


def sample_table(
    index: pa.Table,
    index_url: str,
    modality: Literal["s2", "s1", "pair"],
    partner_index: pa.Table | None = None,
    partner_index_url: str | None = None,
) -> pa.Table:
    """Sample table from rows of an index (and, for pairs, the partner collection's index).

    ``index`` holds S2 rows for ``s2`` and ``pair``, S1 rows for ``s1``; for ``pair`` the S1 rows
    are looked up in ``partner_index`` by ``bigearthnet:s1_id``.
    """
    n = len(index)
    layout: Layout = index.column("bigearthnet:layout")[0].as_py() if n else "stacked"
    empty: list[list[str]] = [[] for _ in range(n)]
    own = _asset_urls(index, index_url, "s1" if modality == "s1" else "s2", layout) if n else []
    s2_assets, s1_assets = (empty, own) if modality == "s1" else (own, empty)
    if modality == "pair" and n:
        if partner_index is None or partner_index_url is None:
            raise ValueError("pairs need the S1 index (partner_index and partner_index_url)")
        pos = {sid: i for i, sid in enumerate(partner_index.column("id").to_pylist())}
        wanted = index.column("bigearthnet:s1_id").to_pylist()
        missing = [w for w in wanted if w not in pos]
        if missing:
            raise KeyError(f"S1 partners missing from the S1 index: {missing[:5]}")
        rows = partner_index.take(pa.array([pos[w] for w in wanted]))
        s1_layout: Layout = rows.column("bigearthnet:layout")[0].as_py()
        s1_assets = _asset_urls(rows, partner_index_url, "s1", s1_layout)
    return pa.table(
        {
            "id": index.column("id"),
            "s2_assets": pa.array(s2_assets, pa.list_(pa.string())),
            "s1_assets": pa.array(s1_assets, pa.list_(pa.string())),
            "layout": pa.array([layout] * n, pa.string()),
            "labels_19": index.column("bigearthnet:labels_19"),
            "labels_43": index.column("bigearthnet:labels_43"),
            "split": index.column("bigearthnet:split"),
        },
        schema=SAMPLE_SCHEMA,
    )


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
    return table if keep_extra else table.select(SAMPLE_SCHEMA.names).combine_chunks()
