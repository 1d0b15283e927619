"""Load a published catalog into pgstac, from its stac-geoparquet index (not by crawling items).

:func:`load_pgstac` opens the catalog with :meth:`bigearth_stac.Catalog.open` (local, http(s) or
s3), reads the collections' documents (every release it holds) and streams every item of each index as a plain STAC
item dict (:meth:`~bigearth_stac.search.SearchResult.item_dicts`: hrefs resolved and confined
to the catalog), then hands them to pypgstac in chunks with ``upsert``:

- **Idempotent and resumable.** Each chunk is committed on its own; an upsert leaves an
  unchanged row alone. A rerun after an interruption (or after nothing) ends in the same
  database as one uninterrupted load.
- **Hrefs valid for clients.** Asset hrefs are absolute to the published location; item and
  collection links that the API makes itself (self, root, parent, collection, child, item) are
  dropped, the ``related`` S1/S2 partner links stay (absolute), and each document gets a
  ``via`` link to its published JSON, so an API client knows where the static catalog lives
  (:class:`bigearth_stac.api.ApiCatalog` confines asset hrefs to it). A local catalog's hrefs
  become ``file://`` URLs (a bare ``/path`` would read as a path on the API's host).
- **Queryables** for every property of the index, typed as the index types them: both label
  sets (``bigearthnet:labels_19`` / ``labels_43``, arrays of class names with a GIN index, so
  CQL2 ``a_overlaps`` / ``a_contains`` use it), split, country, season (B-tree), the snow and
  cloud flags, and the rest (so the API accepts the filters the embedded search accepts).

A database without pgstac gets it installed (``pypgstac migrate``, which needs the PostGIS
extension to be creatable); a pgstac of another version is refused with both versions named.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from bigearth_stac.catalog import Catalog, CatalogError
from bigearth_stac.contract import CATALOG_FILE, LABEL_MASK_COLUMNS, item_path, prop
from bigearth_stac.hrefs import HrefError, Scope, join, parse, scheme_of
from bigearth_stac.io import open_url
from bigearth_stac.item_json import item_batch, iter_item_dicts, resolve_batch
from bigearth_stac.serve import (
    PgstacConnectionError,
    PgstacError,
    PgstacVersionError,
    check_pgstac,
    connect,
    expected_pgstac_version,
    pgstac_version,
    redact_dsn,
)
from bigearth_stac.settings import StorageSettings
from bigearth_stac.vocab import COUNTRIES, LABELS_19, LABELS_43, SEASONS, SPLITS
from catalog_builder.pgstac_rows import API_RELS, VIA_TITLE, partition_namer, pgstac_rows

log = logging.getLogger(__name__)

LABEL_PROPERTIES = (prop("labels_19"), prop("labels_43"))

#: Index method per indexed queryable (``None``: queryable, not indexed).
INDEXED: dict[str, str] = {prop("labels_19"): "GIN", prop("labels_43"): "GIN", prop("split"): "BTREE",
                           prop("country"): "BTREE", prop("season"): "BTREE"}

DEFAULT_CHUNK = 10_000


class NotACatalogError(PgstacError):
    """The catalog URL does not lead to a BigEarthNet catalog with its indexes."""


#: Index columns that are not item properties (or are pgstac columns already).
NOT_PROPERTIES = frozenset({"id", "collection", "geometry", "bbox", "datetime", "type", "stac_version",
                            "stac_extensions", "links", "assets", *LABEL_MASK_COLUMNS.values()})


def json_type(t: pa.DataType) -> dict[str, Any] | None:
    """The JSON Schema of values of Arrow type ``t`` (``None`` for structures, which are not queryable)."""
    if pa.types.is_boolean(t):
        return {"type": "boolean"}
    if pa.types.is_integer(t):
        return {"type": "integer"}
    if pa.types.is_floating(t):
        return {"type": "number"}
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return {"type": "string"}
    if pa.types.is_timestamp(t):
        return {"type": "string", "format": "date-time"}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        items = json_type(t.value_type)
        return {"type": "array", "items": items} if items is not None and items["type"] != "array" else None
    return None


def definition(name: str, t: pa.DataType) -> dict[str, Any] | None:
    """A queryable's JSON Schema from its index column (and the vocabulary for labels and choices)."""
    out = json_type(t)
    if out is None:
        return None
    enums: dict[str, Sequence[str]] = {prop("split"): SPLITS, prop("country"): COUNTRIES, prop("season"): SEASONS,
                                       prop("labels_19"): LABELS_19, prop("labels_43"): LABELS_43}
    if name in enums:
        if out["type"] == "array":
            out["items"] = {**out["items"], "enum": list(enums[name])}
        else:
            out["enum"] = list(enums[name])
    return {"title": name, **out}


def queryables(schemas: dict[str, pa.Schema], label_index: bool = True
               ) -> dict[str, tuple[dict[str, Any], str | None, list[str]]]:
    """Name -> (JSON Schema, index method or ``None``, collection ids) from the collections' index schemas.

    Every property column of an index is queryable in its collection, typed as in the index
    (so pgstac compares numbers as numbers); the label arrays get a GIN index (unless not
    ``label_index``), split, country and season a B-tree.
    """
    out: dict[str, tuple[dict[str, Any], str | None, list[str]]] = {}
    for collection, schema in sorted(schemas.items()):
        for f in schema:
            if f.name in NOT_PROPERTIES:
                continue
            d = definition(f.name, f.type)
            if d is None:
                continue
            index = None if (f.name in LABEL_PROPERTIES and not label_index) else INDEXED.get(f.name)
            if f.name in out and out[f.name][0] != d:
                raise PgstacError(f"the indexes disagree on the type of {f.name!r} ({out[f.name][0]} and {d}); "
                                  f"pgstac reads a property one way in every collection")
            previous = out.get(f.name, (d, index, []))[2]
            out[f.name] = (d, index, [*previous, collection])
    return out


@dataclass
class LoadReport:
    """What a load did."""

    catalog_url: str
    dsn: str
    """Redacted (no password)."""
    pgstac_version: str
    installed: bool = False
    """Whether this load installed pgstac into the database."""
    items: dict[str, int] = field(default_factory=dict)
    """Collection id -> items loaded (inserted, updated or unchanged)."""
    in_database: dict[str, int] = field(default_factory=dict)
    """Collection id -> items in the database after the load."""
    row_wise: int = 0
    """Items whose batch was dehydrated row by row (pypgstac) rather than column-wise."""
    queryables_changed: int = 0
    """Queryables registered or updated (0 on a rerun: no index is rebuilt)."""
    seconds: float = 0.0

    def describe(self) -> str:
        counts = ", ".join(f"{c}: {n:,} items" for c, n in self.items.items())
        return (f"loaded {self.catalog_url} into pgstac {self.pgstac_version} at {self.dsn} in {self.seconds:.1f} s "
                f"({counts})" + ("; pgstac installed" if self.installed else ""))


def open_catalog(catalog_url: str, settings: StorageSettings | None = None,
                 allow: Sequence[str] = ()) -> tuple[Catalog, list[tuple[str, dict[str, Any]]]]:
    """The catalog and its collections' documents ``(url, dict)``; :class:`NotACatalogError` else."""
    try:
        catalog = Catalog.open(catalog_url, settings=settings, allow=allow)
        root = json.loads(open_url(catalog.url, settings, scope=catalog.scope))
        wanted = {i.collection_id for i in catalog.all_indexes.values()}
        collections = []
        for link in root.get("links", []):
            if not isinstance(link, dict) or link.get("rel") != "child":
                continue
            url = catalog.scope.resolve(catalog.url, link.get("href"))  # type: ignore[arg-type]
            doc = json.loads(open_url(url, settings, scope=catalog.scope))
            if isinstance(doc, dict) and doc.get("id") in wanted:
                collections.append((url, doc))
    except (CatalogError, HrefError, OSError, ValueError) as exc:
        raise NotACatalogError(f"{catalog_url} is not a BigEarthNet catalog that can be loaded: {exc}") from None
    missing = wanted - {d["id"] for _, d in collections}
    if missing:
        raise NotACatalogError(f"{catalog_url}: the root catalog links no collection document for {sorted(missing)}")
    return catalog, collections


def as_url(location: str) -> str:
    """An absolute location as a URL: a local path becomes a ``file://`` URL, others stay.

    In a document served over HTTP a bare ``/abs/path`` would read as a path on the API's own
    host; ``file:///abs/path`` says what it is (and :mod:`bigearth_stac.hrefs` reads it back
    as the local path).
    """
    if scheme_of(location) != "file":
        return location
    return Path(parse(location).path).as_uri()


def _links(doc: dict[str, Any], base: str, scope: Scope, via: str) -> list[dict[str, Any]]:
    """Links for the API: its own rels dropped, the rest absolute and confined, plus ``via``."""
    out = []
    for link in doc.get("links", []):
        if not isinstance(link, dict) or link.get("rel") in API_RELS or link.get("rel") == "via":
            continue
        link = dict(link)
        link["href"] = as_url(scope.resolve_link(base, link))
        out.append({k: v for k, v in link.items() if v is not None})
    out.append({"rel": "via", "href": as_url(via), "type": "application/json",
                "title": VIA_TITLE})
    return out


def collection_for_pgstac(url: str, doc: dict[str, Any], scope: Scope) -> dict[str, Any]:
    """A collection document as pgstac should hold it: hrefs absolute, API links dropped, ``via``."""
    out = dict(doc)
    out["links"] = _links(doc, url, scope, url)
    assets = {}
    for key, asset in (doc.get("assets") or {}).items():
        asset = dict(asset)
        asset["href"] = as_url(scope.resolve(url, asset["href"]))
        assets[key] = asset
    if assets:
        out["assets"] = assets
    return out


def item_for_pgstac(item: dict[str, Any], root: str, scope: Scope) -> dict[str, Any]:
    """An item dict of :meth:`item_dicts` as pgstac should hold it (its hrefs are absolute already)."""
    props = item.get("properties", {})
    url = join(root, item_path(item["collection"], props.get(prop("tile"), ""), item["id"]))
    item["links"] = _links(item, url, scope, url)
    for asset in (item.get("assets") or {}).values():
        asset["href"] = as_url(asset["href"])
    return item


def install_pgstac(dsn: str) -> str:
    """Install pgstac into a database that has none (``pypgstac migrate``); the version installed."""
    from pypgstac.db import PgstacDB
    from pypgstac.migrate import Migrate

    db = PgstacDB(dsn=dsn)
    try:
        version = str(Migrate(db).run_migration())
    except Exception as exc:  # pypgstac raises psycopg errors and plain Exceptions
        raise PgstacError(f"cannot install pgstac {expected_pgstac_version()} into {redact_dsn(dsn)} "
                          f"(it needs a user that may create schemas, roles and the postgis extension): "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    finally:
        db.close()
    log.info("installed pgstac %s into %s", version, redact_dsn(dsn))
    return version


def register_queryables(dsn: str, wanted: dict[str, tuple[dict[str, Any], str | None, list[str]]]) -> int:
    """Register (or update) queryables (:func:`queryables`); how many rows changed.

    pgstac builds the partition indexes to match (a GIN index per label array). Rows that
    already say the same are left alone, so a rerun rebuilds no index.
    """
    from psycopg.types.json import Jsonb

    changed = 0
    with connect(dsn) as con:
        existing = {row[0]: (row[1], row[2], sorted(row[3] or [])) for row in con.execute(
            "SELECT name, definition, property_index_type, collection_ids FROM pgstac.queryables "
            "WHERE name = ANY(%s)", (list(wanted),)).fetchall()}
        for name, (schema, index, collections) in wanted.items():
            if existing.get(name) == (schema, index, sorted(collections)):
                continue
            con.execute("SELECT pgstac.upsert_queryable(%s, %s, NULL, %s, %s)",
                        (name, Jsonb(schema), index, sorted(collections)))
            changed += 1
            log.debug("queryable %s (index %s) for %s", name, index, collections)
    return changed


def set_label_index(dsn: str, enabled: bool) -> None:
    """Build (``True``) or drop (``False``) the GIN indexes of the two label arrays (benchmarks)."""
    with connect(dsn) as con:
        con.execute("SET search_path TO pgstac, public")  # pgstac's triggers name its tables unqualified
        con.execute("UPDATE pgstac.queryables SET property_index_type = %s WHERE name = ANY(%s) "
                    "AND property_index_type IS DISTINCT FROM %s",
                    ("GIN" if enabled else None, list(LABEL_PROPERTIES), "GIN" if enabled else None))
        # The update builds missing indexes; dropping the ones no queryable asks for any more
        # takes dropindexes.
        con.execute("SELECT pgstac.maintain_partitions('items', %s)", (not enabled,))


def create_reader_role(dsn: str, role: str, password: str) -> str:
    """Create (or update) a login ``role`` that may only read pgstac; the DSN to serve with.

    The role is a member of ``pgstac_read`` only: it can search, not change items, collections
    or queryables. Run as a user that may create roles.
    """
    from psycopg import sql

    with connect(dsn) as con:
        exists = con.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        con.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
        con.execute(sql.SQL("GRANT pgstac_read TO {}").format(sql.Identifier(role)))
        con.execute(sql.SQL("ALTER ROLE {} SET search_path TO pgstac, public").format(sql.Identifier(role)))
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(dsn)
    parts.update(user=role, password=password)
    return make_conninfo(**{k: v for k, v in parts.items() if v is not None})  # type: ignore[arg-type]


def _counted(items: Iterable[dict[str, Any]], collection: str,
             progress: Callable[[str, int], None] | None, counts: dict[str, int]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        counts[collection] = counts.get(collection, 0) + 1
        if progress is not None:
            progress(collection, counts[collection])


class PreparedRow(dict):
    """A row :func:`catalog_builder.pgstac_rows.pgstac_rows` made: pypgstac loads it as it is."""


def _row_loader_class() -> type:
    from pypgstac.load import Loader

    class RowLoader(Loader):
        """pypgstac's loader (partitions, chunks, upsert), taking prepared rows beside item dicts."""

        def format_item(self, item: Any) -> dict[str, Any]:
            if isinstance(item, PreparedRow):
                return item
            return super().format_item(item)

    return RowLoader


def _row_loader(db: Any) -> Any:
    return _row_loader_class()(db)


def _load_rows(catalog: Catalog, release: str, modality: str, loader: Any, chunk_size: int, report: LoadReport,
               columnwise: bool) -> Iterator[dict[str, Any]]:
    """The rows (prepared) or item dicts (for pypgstac) of one collection, a batch at a time."""
    import duckdb

    result = catalog.search(modality=modality, release=release)
    scope = catalog.scope
    root = scope.root.rstrip("/") + "/" + CATALOG_FILE
    if not columnwise:
        for d in result.item_dicts():
            yield item_for_pgstac(d, root, scope)
        return
    base_item, key, trunc, base_item_id = loader.collection_json(result.index.collection_id)
    namer = partition_namer(key, trunc)
    con = duckdb.connect()
    for batch in result.batches(batch_size=chunk_size):
        resolved = resolve_batch(batch, result.index.url, scope)
        rows = pgstac_rows(item_batch(resolved), resolved.column("geometry"), scope.root, base_item,
                           base_item_id, namer, con)
        if rows is None:
            report.row_wise += batch.num_rows
            for d in iter_item_dicts(iter([batch]), result.index.url, scope):
                yield item_for_pgstac(d, root, scope)
        else:
            yield from (PreparedRow(r) for r in rows)


def load_pgstac(catalog_url: str, dsn: str, settings: StorageSettings | None = None, *,
                chunk_size: int = DEFAULT_CHUNK, label_index: bool = True, install: bool = True,
                allow: Sequence[str] = (), progress: Callable[[str, int], None] | None = None,
                columnwise: bool = True) -> LoadReport:
    """Load the catalog at ``catalog_url`` (local, http(s) or s3) into the pgstac at ``dsn``.

    Collections, then items (from the stac-geoparquet index, ``chunk_size`` per committed
    transaction, upserted), then queryables and their indexes. ``install``: install pgstac into
    a database that has none. ``allow``: other roots the catalog's hrefs may point into (see
    :meth:`Catalog.open`). ``progress(collection_id, items_so_far)`` is called per item.
    ``columnwise``: build pgstac's rows a batch at a time (:mod:`catalog_builder.pgstac_rows`)
    where the batch allows it; ``False`` hands every item dict to pypgstac (the reference the
    tests compare with).

    Errors name what is wrong: :class:`NotACatalogError` (the URL), :class:`PgstacConnectionError`
    (the DSN, without its password), :class:`PgstacVersionError` (both versions). A load that
    fails halfway leaves whole chunks behind; rerunning it completes the load.
    """
    import psycopg
    from pypgstac.db import PgstacDB
    from pypgstac.load import Methods

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    started = time.perf_counter()
    catalog, collections = open_catalog(catalog_url, settings, allow)
    try:  # checked before anything is written
        wanted = queryables({index.collection_id: index.schema for index in catalog.all_indexes.values()}, label_index)
    except CatalogError as exc:
        raise NotACatalogError(f"{catalog_url}: {exc}") from None
    with connect(dsn) as con:
        found = pgstac_version(con)
    installed = False
    if found is None:
        if not install:
            raise PgstacVersionError(f"the database at {redact_dsn(dsn)} has no pgstac schema (install=False)")
        install_pgstac(dsn)
        installed = True
    with connect(dsn) as con:
        version = check_pgstac(con, dsn)
    report = LoadReport(catalog.url, redact_dsn(dsn), version, installed)

    db = PgstacDB(dsn=dsn)
    try:
        loader = _row_loader(db)
        loader.load_collections(iter([collection_for_pgstac(u, d, catalog.scope) for u, d in collections]),
                                Methods.upsert)
        log.info("loaded collections %s", [d["id"] for _, d in collections])
        for (release, modality), index in sorted(catalog.all_indexes.items(), key=lambda kv: (kv[0][0], kv[0][1] != "s2")):
            cid = index.collection_id
            report.items[cid] = 0
            items = _load_rows(catalog, release, modality, loader, chunk_size, report, columnwise)
            # A collection with no items yet is copied straight into its partition; any other
            # (a rerun, a resumed load) is upserted, which leaves unchanged rows alone.
            with connect(dsn) as con:
                empty = con.execute("SELECT NOT EXISTS (SELECT 1 FROM pgstac.items WHERE collection = %s)",
                                    (cid,)).fetchone()[0]  # type: ignore[index]
            method = Methods.insert if empty else Methods.upsert
            loader.load_items(_counted(items, cid, progress, report.items), method, chunksize=chunk_size)
            log.info("loaded %d items of %s", report.items[cid], cid)
    except (PgstacError, CatalogError, HrefError):
        raise
    except psycopg.OperationalError as exc:
        raise PgstacConnectionError(f"lost the connection to {redact_dsn(dsn)} while loading "
                                    f"(rerun to resume): {exc}") from exc
    finally:
        db.close()
    report.queryables_changed = register_queryables(dsn, wanted)
    if not label_index:
        set_label_index(dsn, False)  # drops label indexes an earlier load built
    with connect(dsn) as con:
        con.execute("ANALYZE pgstac.items")
        for cid in report.items:
            row = con.execute("SELECT count(*) FROM pgstac.items WHERE collection = %s", (cid,)).fetchone()
            report.in_database[cid] = int(row[0]) if row else 0
    report.seconds = time.perf_counter() - started
    log.info("%s", report.describe())
    return report


__all__ = ["DEFAULT_CHUNK", "INDEXED", "LoadReport", "NotACatalogError", "PgstacConnectionError", "PgstacError",
           "PgstacVersionError", "collection_for_pgstac", "create_reader_role", "install_pgstac", "item_for_pgstac",
           "load_pgstac", "open_catalog", "queryables", "register_queryables", "set_label_index"]
