"""The catalog contract: what a published BigEarthNet catalog looks like, in one place.

Both packages import this module (the builder writes what it says, the client reads it) and it
imports neither's stages: only the vocabulary (:mod:`bigearth_stac.vocab`, bands, classes, the
43->19 map and class orders, which is the other half of the contract). DESIGN.md #14.

- **Key layout**: where each object of a catalog lives, relative to the catalog root.
- **File and asset names** of the COGs of each layout.
- **Index schema**: the stac-geoparquet columns a search reads, with their Arrow types.
- **Media types** and **publish stages** (the order objects are made visible in).
- **The extension schema** (the ``bigearthnet:`` JSON Schema shipped in the package).
"""

from __future__ import annotations

import json
import posixpath
from functools import cache
from importlib.resources import files
from typing import Any

import pyarrow as pa

from bigearth_stac.vocab import (
    CLASS_ORDERS,
    CLC_CODES,
    PREFIX,
    RELEASE_V1,
    RELEASE_V2,
    S1_COLLECTION,
    S2_COLLECTION,
    SCHEMA_URI,
    SCHEMA_VERSION,
)

__all__ = [
    "CATALOG_FILE",
    "CLC_FRACTIONS",
    "CLC_FRACTIONS_TYPE",
    "COLLECTION_IDS",
    "PREDECESSOR_REL",
    "REFERENCE_MAP_ASSET",
    "REFERENCE_MAP_BAND",
    "RELEASES",
    "S1_V2_COLLECTION",
    "S2_V2_COLLECTION",
    "collection_id",
    "release_and_modality",
    "COG_MEDIA_TYPE",
    "COLLECTIONS",
    "COLLECTION_FILE",
    "GEOJSON_MEDIA_TYPE",
    "INDEX_ASSET",
    "INDEX_DIR",
    "INDEX_MEDIA_TYPE",
    "LABEL_MASK_COLUMNS",
    "JSON_MEDIA_TYPE",
    "MANIFEST",
    "PREFIX",
    "PROPERTY_TYPES",
    "S1_COLLECTION",
    "S2_COLLECTION",
    "SCHEMA_MEDIA_TYPE",
    "SCHEMA_PATH",
    "SCHEMA_URI",
    "SCHEMA_VERSION",
    "SEARCH_COLUMNS",
    "INDEX_COLUMN_GROUPS",
    "INDEX_LAYOUT_VERSION",
    "STAGE_COG",
    "STAGE_ITEM",
    "STAGE_META",
    "STAGE_NAMES",
    "STAGE_ROOT",
    "tile_catalog_path",
    "asset_filename",
    "asset_path",
    "collection_path",
    "extension_schema",
    "index_href",
    "index_path",
    "item_dir",
    "item_path",
    "label_bits",
    "prop",
]

# -- key layout ---------------------------------------------------------------------------------
CATALOG_FILE = "catalog.json"
"""The root catalog, at the catalog root (written last)."""
COLLECTION_FILE = "collection.json"
"""Each collection's document, in the collection's folder."""
INDEX_DIR = "index"
"""Folder of the stac-geoparquet indexes, one per collection."""
INDEX_ASSET = "geoparquet-items"
"""The collection asset that points at the collection's index."""
MANIFEST = "manifest.parquet"
"""Every object of the catalog: path, size, sha256, media type, publish stage."""
SCHEMA_PATH = f"schema/{SCHEMA_VERSION}/schema.json"
"""Where the extension's JSON Schema is published, relative to the catalog root."""
S2_V2_COLLECTION = "bigearthnet-v2-s2"
S1_V2_COLLECTION = "bigearthnet-v2-s1"
RELEASES = (RELEASE_V1, RELEASE_V2)
#: (release, modality) -> collection id. v1 and v2 collections can share one root catalog.
COLLECTION_IDS: dict[tuple[str, str], str] = {
    (RELEASE_V1, "s2"): S2_COLLECTION, (RELEASE_V1, "s1"): S1_COLLECTION,
    (RELEASE_V2, "s2"): S2_V2_COLLECTION, (RELEASE_V2, "s1"): S1_V2_COLLECTION,
}
COLLECTIONS = tuple(COLLECTION_IDS.values())


def collection_id(release: str, modality: str) -> str:
    """The collection of a release's S2 or S1 items."""
    try:
        return COLLECTION_IDS[(release, modality)]
    except KeyError:
        raise ValueError(f"no collection for release {release!r} and modality {modality!r}; "
                         f"releases: {list(RELEASES)}, modalities: s2, s1") from None


def release_and_modality(collection: str) -> tuple[str, str] | None:
    """``("v2.0", "s2")`` for ``bigearthnet-v2-s2``; ``None`` for a collection not of ours."""
    for key, cid in COLLECTION_IDS.items():
        if cid == collection:
            return key
    return None


REFERENCE_MAP_ASSET = "reference_map"
"""v2 S2 items: the pixel-level reference map, a COG of CLC Level-3 codes (uint16, 120 x 120)."""
REFERENCE_MAP_BAND = "clc_code"
"""The one band of a reference-map asset: CLC Level-3 codes on the grid of the 10 m bands, nodata
:data:`~bigearth_stac.vocab.CLC_NODATA` (0); its classes in ``classification:classes``."""
PREDECESSOR_REL = "predecessor-version"
"""Link rel from a v2 item to the same patch's v1 item (S2: ``bigearthnet:s2v1_name``; S1: the
same S1 name), present when the catalog held that item when the v2 item was built."""


def collection_path(collection: str) -> str:
    """``bigearthnet-s2/collection.json``."""
    return f"{collection}/{COLLECTION_FILE}"


def tile_catalog_path(collection: str, tile: str) -> str:
    """``<collection>/<tile>/catalog.json``: the catalog linking one tile's items (crawlable)."""
    return f"{collection}/{tile}/{CATALOG_FILE}"


def item_dir(collection: str, tile: str, item_id: str) -> str:
    """Folder of an item and its COGs: keys partitioned by tile (DESIGN.md #12)."""
    return f"{collection}/{tile}/{item_id}"


def item_path(collection: str, tile: str, item_id: str) -> str:
    """``<collection>/<tile>/<id>/<id>.json``."""
    return f"{item_dir(collection, tile, item_id)}/{item_id}.json"


def asset_filename(item_id: str, key: str) -> str:
    """File name of an item's asset ``key`` (``s2_10m``, ``B02``, ``s1``, ...): ``<id>_<key>.tif``."""
    return f"{item_id}_{key}.tif"


def asset_path(collection: str, tile: str, item_id: str, key: str) -> str:
    """``<collection>/<tile>/<id>/<id>_<key>.tif``."""
    return f"{item_dir(collection, tile, item_id)}/{asset_filename(item_id, key)}"


def index_path(collection: str) -> str:
    """``index/<collection>.parquet``."""
    return f"{INDEX_DIR}/{collection}.parquet"


def index_href(collection: str, path: str) -> str:
    """An href in a collection's index file for the object at ``path`` (relative to the root).

    Index hrefs are relative to the index file, so resolving them against the index URL gives
    the object's URL wherever the catalog is published.
    """
    return posixpath.relpath(path, posixpath.dirname(index_path(collection)))


# -- media types ------------------------------------------------------------------------------
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
INDEX_MEDIA_TYPE = "application/vnd.apache.parquet"
JSON_MEDIA_TYPE = "application/json"
GEOJSON_MEDIA_TYPE = "application/geo+json"
SCHEMA_MEDIA_TYPE = "application/schema+json"

# -- publish stages: objects of stage n are all visible before any of stage n+1 ------------------
STAGE_COG, STAGE_ITEM, STAGE_META, STAGE_ROOT = 0, 1, 2, 3
STAGE_NAMES = {STAGE_COG: "COGs", STAGE_ITEM: "items",
               STAGE_META: "index, tile catalogs, collections, schema and manifest", STAGE_ROOT: "root catalog"}


# -- index schema ---------------------------------------------------------------------------------
def prop(name: str) -> str:
    """The column / property name of one of the extension's fields: ``bigearthnet:<name>``."""
    return f"{PREFIX}:{name}"


_STR = pa.string()
_LIST_STR = pa.list_(pa.field("element", pa.string()))

PROPERTY_TYPES: dict[str, pa.DataType] = {
    "datetime": pa.timestamp("us", tz="UTC"),
    "proj:epsg": pa.int64(),
    prop("labels_43"): _LIST_STR,
    prop("label_codes_43"): pa.list_(pa.field("element", pa.int64())),
    prop("labels_19"): _LIST_STR,
    prop("split"): _STR,
    prop("country"): _STR,
    prop("season"): _STR,
    prop("seasonal_snow"): pa.bool_(),
    prop("cloud_or_shadow"): pa.bool_(),
    prop("tile"): _STR,
    prop("s2_id"): _STR,
    prop("s1_id"): _STR,
    prop("release"): _STR,
    prop("source_product"): _STR,
    prop("layout"): _STR,
    prop("s2v1_name"): _STR,
}
"""Index columns a search reads, with the Arrow type each always has (whatever the items hold)."""

CLC_FRACTIONS = prop("clc_fractions")
"""v2 items: share of the reference map's pixels per CLC Level-3 class. In item JSON an object
``{"<code>": fraction}`` of the classes present (fractions in [0, 1], 4 decimals); in the index a
struct with one ``float32`` field per code of :data:`~bigearth_stac.vocab.CLC_CODES` (``"111"`` ...),
0 for absent classes and null for v1 rows (no map)."""
CLC_FRACTIONS_TYPE = pa.struct([pa.field(str(code), pa.float32()) for code in CLC_CODES])

LABEL_MASK_COLUMNS: dict[str, str] = {"19": prop("label_mask_19"), "43": prop("label_mask_43")}
"""Index-only ``int64`` columns (not item properties): bit ``i`` is set when class ``i`` of
``CLASS_ORDERS["original"][nomenclature]`` is one of the patch's labels. A label query is a bit
test (DESIGN.md #15): ``(mask & bits) <> 0`` for any, ``= bits`` for all."""

INDEX_COLUMN_GROUPS: tuple[tuple[str, ...], ...] = (
    (LABEL_MASK_COLUMNS["19"], prop("split"), prop("seasonal_snow"), prop("cloud_or_shadow"), prop("country"),
     prop("season"), "datetime", prop("tile"), "proj:epsg", prop("release"), prop("layout"), "collection", "id"),
    (LABEL_MASK_COLUMNS["43"],),
    ("bbox", "geometry"),
)
"""Groups of index columns whose chunks the index file stores together, for *all* row groups, at
its start (group by group; row group by row group within a group, in schema order within a row
group; the other columns follow, row group by row group). A query reading some columns of every row group (a label over the whole
archive) then needs one or a few contiguous runs, not a range request per row group; a region
query reads its few row groups of the first group and of the footprints in two runs. The first
group holds what searches filter on and return (the 19-class mask, split, flags, country,
season, datetime, tile, ... and the id: about 4 compressed bytes a row, 2.3 MB for the whole v1
archive); the 43-class mask and the footprints (bbox, WKB geometry) follow, each their own run
so that a query reads only the runs it names.
Parquet locates chunks by the offsets in its footer, so every reader reads the same table
(:mod:`catalog_builder.parquet_layout`)."""

SEARCH_COLUMNS: tuple[str, ...] = ("id", "bbox", "datetime", *PROPERTY_TYPES, *LABEL_MASK_COLUMNS.values(),
                                   CLC_FRACTIONS, "collection", "geometry")
"""Schema order of the index: these columns first, the other stac-geoparquet columns (assets,
links, ...) after. It is also the order of an item's properties read back from the index, so it
does not change with the file layout (where the chunks lie is :data:`INDEX_COLUMN_GROUPS`)."""

INDEX_LAYOUT_VERSION = 2
"""Version of the index file's layout (where the column chunks lie, which columns are dictionary
encoded): 1, row group after row group, search columns first in each; 2, the
:data:`INDEX_COLUMN_GROUPS` gathered at the start of the file, unique strings stored plain. Caches of
generated indexes (benchmarks) key on it; readers need not know it."""


def label_bits(names: Any, nomenclature: str) -> int:
    """The mask of a set of class names of one nomenclature (see :data:`LABEL_MASK_COLUMNS`)."""
    order = CLASS_ORDERS["original"][nomenclature]
    bits = 0
    for name in names:
        bits |= 1 << order.index(name)
    return bits


# -- the extension schema -------------------------------------------------------------------------
@cache
def _schema_text() -> str:
    return files("bigearth_stac").joinpath("schema/schema.json").read_text()


def extension_schema() -> dict[str, Any]:
    """The ``bigearthnet:`` extension's JSON Schema (a fresh copy)."""
    return json.loads(_schema_text())
