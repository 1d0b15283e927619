"""A STAC API (pgstac behind stac-fastapi-pgstac, or any STAC API with CQL2) as a search backend.

:class:`ApiCatalog` answers the same ``search(...)`` keywords as the embedded
:meth:`Catalog.search <bigearth_stac.catalog.Catalog.search>` (:class:`~bigearth_stac.search.SearchQuery`),
translated into one CQL2-JSON ``POST /search`` through pystac-client, and returns an
:class:`ApiSearchResult` with ``ids()``, ``len()``, iteration, ``item_dicts()``,
``to_item_collection()`` and ``sample_table()``, so ``to_torch()`` / ``to_xarray()`` work alike.

- **Same answers.** Parameters are validated exactly as the embedded search validates them
  (same :class:`~bigearth_stac._predicates.QueryError` messages), then translated:
  ``labels`` to ``a_overlaps`` / ``a_contains`` on ``bigearthnet:labels_19`` / ``_43``,
  ``bbox`` and ``intersects`` to ``s_intersects`` (a bbox crossing the antimeridian becomes two
  boxes), ``datetime`` to an inclusive range, ``split`` / ``countries`` / ``seasons`` to ``in``,
  the flags to ``= false``; a ``filter`` (CQL2 text or JSON) is validated against the index's
  properties and rewritten where pgstac differs (``a_containedBy``, set-equality
  ``a_equals``, ``t_intersects`` with dates, BBOX literals). Results come in the API's order
  (pgstac: newest first), not the index's, so ``limit`` picks at most that many of the same
  matches, not necessarily the same ones.
- **Hrefs stay inside the published catalog** (DESIGN.md #13). Items loaded by
  ``catalog-builder load-pgstac`` hold absolute asset hrefs and their collections a ``via``
  link to the published static catalog; the result's :class:`~bigearth_stac.hrefs.Scope` is
  that catalog's root plus ``allow``, and every asset href is checked against it. A ``file:``
  root is trusted from an API on a loopback address only (it is this machine's disk).

pystac-client is imported when a catalog is opened: install ``bigearth-stac[server]`` (or just
``pystac-client``). Nothing here imports the server stack.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa

from bigearth_stac import cql2sql
from bigearth_stac._predicates import (
    Columns,
    QueryError,
    parse_bbox,
    parse_geometry,
    parse_instant,
    parse_interval,
)
from bigearth_stac.catalog import DEFAULT_RELEASE, CatalogError, normalize_release, pick_release
from bigearth_stac.contract import (
    COLLECTION_IDS,
    PROPERTY_TYPES,
    REFERENCE_MAP_ASSET,
    RELEASE_V1,
    RELEASES,
    collection_id,
    collection_path,
    prop,
)
from bigearth_stac.hrefs import HrefError, Scope, catalog_root, parse, scheme_of
from bigearth_stac.samples import OPTIONAL_COLUMNS, SAMPLE_SCHEMA, with_scope
from bigearth_stac.search import SearchQuery, build_query, search_options
from bigearth_stac.settings import StorageSettings
from bigearth_stac.vocab import (
    COUNTRIES,
    S1_COLLECTION,
    S2_COLLECTION,
    SEASONS,
    SPLITS,
    band_groups,
    resolve_label,
)

if TYPE_CHECKING:
    import pystac

log = logging.getLogger(__name__)

COLLECTION_OF = {"s2": S2_COLLECTION, "s1": S1_COLLECTION}
"""v1.0 modality -> collection id (every release's: :data:`bigearth_stac.contract.COLLECTION_IDS`)."""
DEFAULT_PAGE_SIZE = 1000
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
#: What the sample table needs of an item (the fields extension trims the rest).
SAMPLE_FIELDS = ["id", "collection", "bbox", "assets", *(f"properties.{prop(n)}" for n in (
    "layout", "labels_19", "labels_43", "split", "s1_id", "tile"))]

_BBOX_TYPE = pa.struct([("xmin", pa.float64()), ("ymin", pa.float64()), ("xmax", pa.float64()),
                        ("ymax", pa.float64())])
_BASE_FIELDS = (("id", pa.string()), ("collection", pa.string()), ("datetime", pa.timestamp("us", tz="UTC")),
                ("geometry", pa.binary()))


@cache
def index_columns() -> Columns:
    """The properties every catalog index has (:data:`bigearth_stac.contract.PROPERTY_TYPES`)."""
    return Columns(pa.schema([*_BASE_FIELDS, *((n, t) for n, t in PROPERTY_TYPES.items() if n != "datetime")]))


def _arrow_type(schema: Any) -> pa.DataType | None:
    """The Arrow type of values a queryable's JSON Schema describes (``None``: not searchable here)."""
    if not isinstance(schema, Mapping):
        return None
    kinds = schema.get("type")
    kind = next((k for k in ([kinds] if isinstance(kinds, str) else kinds or []) if k != "null"), None)
    if kind == "array":
        element = _arrow_type(schema.get("items"))
        return pa.list_(element) if element is not None and not pa.types.is_list(element) else None
    if kind == "string":
        return pa.timestamp("us", tz="UTC") if schema.get("format") in ("date-time", "date") else pa.string()
    return {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}.get(kind)  # type: ignore[arg-type]


def columns_from_queryables(doc: Mapping[str, Any], release: str | None = None) -> Columns:
    """The properties a search may name, from a STAC API ``/queryables`` document (of ``release``)."""
    fields = dict(_BASE_FIELDS)
    for name, schema in (doc.get("properties") or {}).items():
        t = _arrow_type(schema)
        if isinstance(name, str) and t is not None and name not in fields:
            fields[name] = t
    return Columns(pa.schema(list(fields.items())), release)


def is_stac_api(url: str, settings: StorageSettings | None = None) -> bool:
    """Whether ``url`` is the landing page of a STAC API with item search (one GET, http(s) only).

    A local path, an ``s3://`` URL or a ``.json`` document (a static catalog) is not, without
    any request; a page that cannot be read or is not JSON is not either.
    """
    url = str(url)
    if scheme_of(url) not in ("http", "https") or urlsplit(url).path.endswith(".json"):
        return False
    from bigearth_stac.io import open_url

    try:
        doc = json.loads(open_url(url, settings, max_bytes=4 << 20))
    except (OSError, ValueError) as exc:
        log.debug("%s is not a STAC API: %s", url, exc)
        return False
    if not isinstance(doc, dict):
        return False
    conforms = doc.get("conformsTo")
    if isinstance(conforms, list) and any(isinstance(c, str) and c.startswith("https://api.stacspec.org/")
                                          and c.rstrip("/").endswith("/item-search") for c in conforms):
        return True
    links = doc.get("links")
    return isinstance(links, list) and isinstance(conforms, list) and any(
        isinstance(link, dict) and link.get("rel") == "search" for link in links)


# -----------------------------------------------------------------------------------------------
# Search parameters -> CQL2 JSON (pgstac's dialect)
# -----------------------------------------------------------------------------------------------

def _and(parts: list[Any]) -> Any:
    parts = [p for p in parts if p is not True]
    if any(p is False for p in parts):
        return False
    if not parts:
        return True
    return parts[0] if len(parts) == 1 else {"op": "and", "args": parts}


def _or(parts: list[Any]) -> Any:
    parts = [p for p in parts if p is not False]
    if any(p is True for p in parts):
        return True
    if not parts:
        return False
    return parts[0] if len(parts) == 1 else {"op": "or", "args": parts}


def _not(part: Any) -> Any:
    return (not part) if isinstance(part, bool) else {"op": "not", "args": [part]}


def _timestamp(dt: datetime) -> dict[str, str]:
    return {"timestamp": dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


def _time_range(interval: tuple[datetime | None, datetime | None], name: str = "datetime") -> Any:
    start, stop = interval
    parts: list[Any] = []
    if start is not None:
        parts.append({"op": ">=", "args": [{"property": name}, _timestamp(start)]})
    if stop is not None:
        parts.append({"op": "<=", "args": [{"property": name}, _timestamp(stop)]})
    return _and(parts)


def _box(w: float, s: float, e: float, n: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def _bbox_geometry(w: float, s: float, e: float, n: float) -> dict[str, Any]:
    """The bbox as GeoJSON; crossing the antimeridian (west > east): two boxes."""
    if w > e:
        return {"type": "MultiPolygon", "coordinates": [_box(w, s, 180.0, n)["coordinates"],
                                                        _box(-180.0, s, e, n)["coordinates"]]}
    return _box(w, s, e, n)


def _intersects(geometry: Mapping[str, Any]) -> dict[str, Any]:
    return {"op": "s_intersects", "args": [{"property": "geometry"}, dict(geometry)]}


def _canonical(values: Any, allowed: Sequence[str]) -> list[str]:
    """Values already validated by :func:`build_query`, spelt as the index spells them."""
    lowered = {a.lower(): a for a in allowed}
    return [lowered[v.lower()] for v in ([values] if isinstance(values, str) else values)]


def _in(name: str, values: list[str]) -> dict[str, Any]:
    return {"op": "in", "args": [{"property": name}, values]}


def _labels(labels: Any, match: str, prefer: Any) -> Any:
    by_nomenclature: dict[str, list[str]] = {}
    for label in [labels] if isinstance(labels, str) else list(labels):
        nomenclature, name = resolve_label(label, prefer)
        names = by_nomenclature.setdefault(nomenclature, [])
        if name not in names:
            names.append(name)
    op = "a_overlaps" if match == "any" else "a_contains"
    parts = [{"op": op, "args": [{"property": prop(f"labels_{n}")}, names]}
             for n, names in sorted(by_nomenclature.items())]
    return _or(parts) if match == "any" else _and(parts)


def _literal_time(value: Any) -> Any:
    if isinstance(value, Mapping) and ("timestamp" in value or "date" in value):
        return _timestamp(parse_instant(value.get("timestamp", value.get("date"))))
    return value


def _is_prop(arg: Any) -> bool:
    return isinstance(arg, Mapping) and "property" in arg


def pgstac_filter(node: Any, columns: Columns) -> Any:
    """A validated CQL2-JSON filter (:func:`cql2sql.parse`) in the dialect pgstac answers alike.

    Property aliases become index names (``labels_19`` -> ``bigearthnet:labels_19``); time
    literals become UTC timestamps as the embedded search reads them (a date compared with a
    time is its first microsecond; ``t_intersects`` with a date or interval is an inclusive
    range); ``a_containedBy`` is spelt ``a_contained_by``; ``a_equals`` is set equality (both
    containments); a BBOX literal is a polygon. Booleans are returned as ``True`` / ``False``.
    """
    cols = columns
    if isinstance(node, bool):
        return node
    op = node["op"]
    args = list(node.get("args", []))

    def name(arg: Any) -> dict[str, str]:
        return {"property": cols.get(arg["property"]).name}

    def operand(arg: Any) -> Any:
        return name(arg) if _is_prop(arg) else _literal_time(arg)

    if op in ("and", "or"):
        parts = [pgstac_filter(a, cols) for a in args]
        return _and(parts) if op == "and" else _or(parts)
    if op == "not":
        return _not(pgstac_filter(args[0], cols))
    if op == "in":
        values = [_literal_time(v) for v in args[1]]
        return {"op": "in", "args": [name(args[0]), values]} if values else False
    if op in cql2sql.ARRAY_OPS:
        left, right = args
        if not _is_prop(left):
            left, right = right, left
            op = {"a_contains": "a_containedBy", "a_containedBy": "a_contains"}.get(op, op)
        prop_, values = name(left), list(right)
        if op == "a_equals":
            return _and([{"op": "a_contains", "args": [prop_, values]},
                         {"op": "a_contained_by", "args": [prop_, values]}])
        return {"op": "a_contained_by" if op == "a_containedBy" else op, "args": [prop_, values]}
    if op == "s_intersects":
        left, right = args
        if not _is_prop(left):
            left, right = right, left
        if isinstance(right, Mapping) and "bbox" in right:
            b = right["bbox"]
            return _intersects(_bbox_geometry(*parse_bbox(b if len(b) == 4 else [b[0], b[1], b[3], b[4]])))
        import shapely.geometry

        return _intersects(shapely.geometry.mapping(parse_geometry(right)))
    if op == "t_intersects":
        left, right = args
        if not _is_prop(left):
            left, right = right, left
        column = name(left)["property"]
        if "interval" in right:
            lo, hi = (e.get("timestamp", e.get("date")) if isinstance(e, Mapping) else e for e in right["interval"])
            return _time_range(parse_interval((lo, hi)), column)
        return _time_range(parse_interval(right.get("timestamp", right.get("date"))), column)
    # comparisons, like, between, isNull: properties renamed, time literals normalised
    return {"op": op, "args": [operand(a) for a in args]}


def search_body(options: SearchQuery, columns: Columns) -> tuple[list[str], Any]:
    """``(collections, filter)`` of the CQL2-JSON search equivalent to ``options`` (validated).

    The collection is ``options.release``'s (``None``: v1.0) of its modality.

    ``filter`` is a CQL2-JSON dict, ``True`` (no filter) or ``False`` (nothing matches).
    """
    o = options
    parts: list[Any] = []
    if o.labels is not None:
        parts.append(_labels(o.labels, o.match, str(o.nomenclature)))
    if o.bbox is not None:
        parts.append(_intersects(_bbox_geometry(*parse_bbox(o.bbox))))
    if o.intersects is not None:
        import shapely.geometry

        parts.append(_intersects(shapely.geometry.mapping(parse_geometry(o.intersects))))
    if o.datetime is not None:
        parts.append(_time_range(parse_interval(o.datetime)))
    if o.split is not None:
        parts.append(_in(prop("split"), _canonical(o.split, SPLITS)))
    if o.countries is not None:
        parts.append(_in(prop("country"), _canonical(o.countries, COUNTRIES)))
    if o.seasons is not None:
        parts.append(_in(prop("season"), _canonical(o.seasons, SEASONS)))
    for flag, on in ((prop("seasonal_snow"), o.exclude_snow), (prop("cloud_or_shadow"), o.exclude_clouds)):
        if on:
            parts.append({"op": "=", "args": [{"property": flag}, False]})
    if o.filter is not None:
        parts.append(pgstac_filter(cql2sql.parse(o.filter), columns))
    release = o.release if o.release is not None else RELEASE_V1
    return [collection_id(normalize_release(release), "s1" if o.modality == "s1" else "s2")], _and(parts)


def as_search_query(options: SearchQuery | None, kwargs: dict[str, Any],
                    columns: Mapping[str, Columns] | None = None) -> SearchQuery:
    """The :class:`SearchQuery` of ``search(options, **kwargs)``, validated as the embedded search does.

    ``columns``: the queryable properties per modality (``s2``, ``s1``); default: those every
    catalog index has.
    """
    options = search_options(options, kwargs)
    cols = (columns or {}).get("s1" if options.modality == "s1" else "s2") or index_columns()
    build_query(cols, options)  # raises QueryError / LabelQueryError exactly as embedded
    return options


# -----------------------------------------------------------------------------------------------
# The catalog
# -----------------------------------------------------------------------------------------------


class ApiCatalog:
    """A BigEarthNet catalog served by a STAC API; ``search()`` as :class:`~bigearth_stac.catalog.Catalog`'s.

    Open it with :meth:`open`. Attributes: ``url`` (the API's landing page), ``scope`` (where
    asset hrefs may point: the published catalog's root and ``allow``), ``all_collections``
    (``(release, modality)`` -> collection id, every BigEarthNet collection the API serves),
    ``releases`` (the releases it serves, oldest first), ``release`` (the one searches use
    unless ``search(release=...)`` says: v2.0 where served, as :class:`~bigearth_stac.catalog.Catalog`),
    ``collections`` (modality -> collection id of ``release``), ``page_size`` (items per
    request), ``client`` (the ``pystac_client.Client``, for anything else).
    """

    def __init__(self, url: str, client: Any, scope: Scope, collections: dict[Any, str],
                 settings: StorageSettings | None = None, page_size: int = DEFAULT_PAGE_SIZE,
                 columns: dict[Any, Columns] | None = None, release: str | None = None) -> None:
        self.url = url
        self.client = client
        self.scope = scope
        self.all_collections: dict[tuple[str, str], str] = {
            (k if isinstance(k, tuple) else (RELEASE_V1, k)): v for k, v in collections.items()}
        self.all_columns: dict[tuple[str, str], Columns] = {
            (k if isinstance(k, tuple) else (RELEASE_V1, k)): v for k, v in (columns or {}).items()}
        """``(release, modality)`` -> the properties a search may name (the collection's queryables)."""
        self.releases: tuple[str, ...] = tuple(r for r in RELEASES if any(k[0] == r for k in self.all_collections))
        self.settings = settings
        self.page_size = page_size
        default = DEFAULT_RELEASE if DEFAULT_RELEASE in self.releases else (self.releases[-1] if self.releases else RELEASE_V1)
        self.release: str = pick_release(release, default, self.releases, f"the STAC API at {url} serves", "it serves")

    @property
    def collections(self) -> dict[str, str]:
        """Modality -> collection id of :attr:`release`."""
        return {m: c for (r, m), c in self.all_collections.items() if r == self.release}

    @property
    def columns(self) -> dict[str, Columns]:
        """Modality -> the queryable properties of :attr:`release`'s collections."""
        return self.columns_of(self.release)

    def columns_of(self, release: str) -> dict[str, Columns]:
        """Modality -> the queryable properties of ``release``'s collections."""
        return {m: c for (r, m), c in self.all_columns.items() if r == release}

    def resolve_release(self, release: str | None) -> str:
        """The release a search asking for ``release`` reads; one the API does not serve is a
        :class:`CatalogError` naming those it serves."""
        return pick_release(release, self.release, self.releases, f"the STAC API at {self.url} serves", "it serves")

    def __repr__(self) -> str:
        return (f"ApiCatalog({self.url!r}, collections={sorted(self.all_collections.values())}, "
                f"release={self.release!r}, scope={self.scope!r})")

    @classmethod
    def open(cls, url: str, settings: StorageSettings | None = None, allow: Sequence[str] = (),
             page_size: int = DEFAULT_PAGE_SIZE, headers: dict[str, str] | None = None,
             timeout: float = 60.0, release: str | None = None) -> ApiCatalog:
        """Open the STAC API whose landing page is ``url``.

        The API must conform to item search with CQL2-JSON filters and serve the S2 collection
        of at least one release (``bigearthnet-s2``, ``bigearthnet-v2-s2``; the S1 one too for
        S1 and pair searches). ``release``: the release searches use by default (v2.0 where
        served).
        ``allow``: further roots asset hrefs may lie under (besides the published catalog the
        collections' ``via`` links name); ``page_size``: items per request (the API may cap it);
        ``headers``: sent with every request (e.g. an ``Authorization``). Errors name the URL.
        """
        if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 1:
            raise ValueError(f"page_size must be a positive integer, got {page_size!r}")
        try:
            import pystac
            import pystac_client
            from pystac_client.exceptions import APIError
        except ImportError as exc:
            raise ImportError(f"searching a STAC API needs pystac-client: pip install 'bigearth-stac[server]' "
                              f"({exc})") from None
        import requests

        try:
            client = pystac_client.Client.open(url, headers=headers, timeout=timeout)
        except Exception as exc:  # requests, pystac and pystac-client each raise their own types
            raise CatalogError(f"{url} is not a STAC API that can be opened: {type(exc).__name__}: "
                               f"{str(exc).strip()[:300]}") from None
        from pystac_client.conformance import ConformanceClasses

        missing = [what for what, cls_ in (("item search", ConformanceClasses.ITEM_SEARCH),
                                          ("CQL2 filters", ConformanceClasses.FILTER))
                   if not client.conforms_to(cls_)]
        if missing:
            raise CatalogError(f"{url} is not a STAC API this client can search: it does not conform to "
                               f"{' and '.join(missing)}")
        collections: dict[tuple[str, str], str] = {}
        columns: dict[tuple[str, str], Columns] = {}
        roots: list[str] = []
        for key, cid in COLLECTION_IDS.items():
            try:
                coll = client.get_collection(cid)
            except (APIError, requests.RequestException, pystac.STACError, ValueError, KeyError):
                coll = None
            if coll is None:
                continue
            collections[key] = cid
            roots += _via_roots(coll.to_dict(transform_hrefs=False), cid, url)
            try:
                columns[key] = columns_from_queryables(coll.get_queryables(), key[0])  # type: ignore[attr-defined]
            except Exception as exc:  # no queryables endpoint: the properties every index has
                log.debug("no queryables for %s at %s (%s): using the catalog contract's", cid, url, exc)
        if not any(m == "s2" for _, m in collections):
            raise CatalogError(f"the STAC API at {url} has no BigEarthNet S2 collection "
                               f"({', '.join(c for (_, m), c in COLLECTION_IDS.items() if m == 's2')}; load a catalog "
                               f"with `catalog-builder load-pgstac`)")
        roots = list(dict.fromkeys(roots))
        if not roots and not allow:
            raise CatalogError(f"the STAC API at {url} does not say where its assets are published (no 'via' link "
                               f"on its collections); pass allow=[<catalog root>] to trust a root")
        scope = Scope([*roots, *[str(a) for a in allow]])
        log.debug("opened STAC API %s: %s, scope %s", url, collections, scope)
        return cls(url, client, scope, collections, settings, page_size, columns, release)

    def search(self, options: SearchQuery | None = None, /, **kwargs: Any) -> ApiSearchResult:
        """Search the API; the parameters of :func:`bigearth_stac.search.search` (every one must hold)."""
        parsed = search_options(options, kwargs)
        release = self.resolve_release(parsed.release)
        if parsed.min_fractions and not any(c.fractions for c in self.columns_of(release).values()):
            raise QueryError(f"min_fractions: the STAC API at {self.url} has no queryable pixel fractions "
                             f"(bigearthnet:clc_fractions); search them in the static catalog with "
                             f"Catalog.open(<catalog root>) (the embedded index)")
        query = replace(as_search_query(parsed, {}, self.columns_of(release)), release=release)
        needed = ["s2", "s1"] if query.modality == "pair" else ["s1" if query.modality == "s1" else "s2"]
        for modality in needed:
            if (release, modality) not in self.all_collections:
                raise CatalogError(f"the STAC API at {self.url} has no {collection_id(release, modality)!r} collection")
        return ApiSearchResult(self, query)


def _via_roots(collection: dict[str, Any], collection_id: str, api_url: str) -> list[str]:
    """Catalog roots named by a collection's ``via`` links (a ``file:`` root only from a loopback API).

    ``catalog-builder load-pgstac`` links each collection to its published document,
    ``<root>/<collection>/collection.json``; other ``via`` links are not catalog roots.
    """
    api_host = (urlsplit(api_url).hostname or "").lower()
    tail = "/" + collection_path(collection_id)
    out = []
    for link in collection.get("links", []):
        if not isinstance(link, dict) or link.get("rel") != "via" or not isinstance(link.get("href"), str):
            continue
        href = link["href"]
        try:
            loc = parse(href)
        except (HrefError, ValueError):
            continue
        if not loc.path.endswith(tail):
            continue
        if loc.scheme == "file" and api_host not in LOOPBACK_HOSTS:
            log.warning("ignoring the local catalog root %s announced by the remote API %s (pass allow= to "
                        "trust it)", href, api_url)
            continue
        out.append(catalog_root(loc.url[: -len(tail)] + "/catalog.json"))
    return out


# -----------------------------------------------------------------------------------------------
# The result
# -----------------------------------------------------------------------------------------------


def _bbox_of(item: Mapping[str, Any]) -> list[float]:
    b = item.get("bbox")
    if isinstance(b, list) and len(b) >= 4:
        return [float(b[0]), float(b[1]), float(b[-3] if len(b) == 6 else b[2]), float(b[-2] if len(b) == 6 else b[3])]
    raise CatalogError(f"item {item.get('id')!r} from the API has no bbox")


def _utc(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


class ApiSearchResult:
    """The matches of one search of an :class:`ApiCatalog`, fetched page by page when asked.

    - ``len(result)`` / ``count()``: the number of matches (the ids are fetched once and kept).
    - ``ids()``; iteration: light rows as the embedded result yields them (``id``, ``datetime``,
      ``bbox``, both label lists, ``split``, ... and ``assets``: key -> absolute href).
    - ``item_dicts()``, ``to_item_collection()`` (pystac, for small results), ``sample_table()``
      (the loader's input), ``to_torch()``, ``to_xarray()``.

    Rows come in the API's order (pgstac: newest first, then by id).
    """

    def __init__(self, catalog: ApiCatalog, query: SearchQuery) -> None:
        self.catalog = catalog
        self.query = query
        self.release = query.release if query.release is not None else catalog.release
        columns = catalog.columns_of(self.release).get("s1" if query.modality == "s1" else "s2") or index_columns()
        self.collections, self.filter = search_body(query, columns)
        self._ids: list[str] | None = None

    def __repr__(self) -> str:
        n = "?" if self._ids is None else len(self._ids)
        return f"<ApiSearchResult {self.query.modality} {n} rows of {self.catalog.url}>"

    @property
    def nomenclature(self) -> str:
        return str(self.query.nomenclature)

    def search_parameters(self) -> dict[str, Any]:
        """The keyword arguments of ``pystac_client.Client.search`` this result runs."""
        params: dict[str, Any] = {"collections": list(self.collections), "limit": self.catalog.page_size,
                                  "max_items": self.query.limit}
        if isinstance(self.filter, dict):
            params.update(filter=self.filter, filter_lang="cql2-json")
        return params

    def _items(self, fields: list[str] | None = None, collections: list[str] | None = None,
               ids: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Item dicts from the API, paged (a filter that cannot match asks nothing)."""
        if self.filter is False or self.query.limit == 0:
            return
        params = self.search_parameters()
        if collections is not None:
            params["collections"] = collections
        if ids is not None:
            params.update(ids=ids, max_items=None)
            params.pop("filter", None)
            params.pop("filter_lang", None)
        if fields is not None:
            params["fields"] = {"include": fields, "exclude": []}
        from pystac_client.exceptions import APIError

        try:
            yield from self.catalog.client.search(method="POST", **params).items_as_dicts()
        except APIError as exc:
            raise CatalogError(f"the STAC API at {self.catalog.url} refused the search "
                               f"{self.query.describe()}: {str(exc).strip()[:500]}") from None

    # -- sizes and ids -------------------------------------------------------------------------
    def ids(self) -> list[str]:
        """Ids of the matching items."""
        if self._ids is None:
            self._ids = [d["id"] for d in self._items(fields=["id"])]
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids if self._ids is not None else self.ids())

    def count(self) -> int:
        """Same as ``len(result)``."""
        return len(self)

    # -- items -----------------------------------------------------------------------------------
    def _confined(self, item: dict[str, Any]) -> dict[str, Any]:
        for asset in (item.get("assets") or {}).values():
            href = asset.get("href")
            if not isinstance(href, str):
                raise HrefError(href, "an asset without an href", self.catalog.url)
            asset["href"] = self.catalog.scope.check(href)
        for link in item.get("links") or []:
            if isinstance(link, dict) and link.get("rel") == "related" and isinstance(link.get("href"), str):
                link["href"] = self.catalog.scope.check(link["href"])
        return item

    def item_dicts(self) -> Iterator[dict[str, Any]]:
        """STAC items of the result as plain dicts, asset hrefs checked against the catalog's scope.

        The links are the API's (self, parent, collection, root) plus the ``related`` partner
        and ``via`` links of the published catalog.
        """
        for item in self._items():
            yield self._confined(item)

    def to_item_collection(self) -> pystac.ItemCollection:
        """pystac Items of the result (built now). For small results; ``proj:epsg`` kept."""
        import pystac

        from bigearth_stac.stac_items import restore_epsg

        return pystac.ItemCollection([restore_epsg(pystac.Item.from_dict(d, preserve_dict=False))
                                      for d in self.item_dicts()])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Light rows (plain dicts) with the keys of :data:`bigearth_stac.search.ROW_COLUMNS` and ``assets``."""
        from bigearth_stac.search import ROW_COLUMNS

        for item in self.item_dicts():
            props = item.get("properties", {})
            row: dict[str, Any] = {}
            for key, column in ROW_COLUMNS.items():
                if key in ("id", "collection"):
                    row[key] = item.get(key)
                elif key == "datetime":
                    row[key] = _utc(props.get("datetime"))
                elif key == "bbox":
                    row[key] = _bbox_of(item)
                else:
                    row[key] = props.get(column)
            row["assets"] = {k: a["href"] for k, a in (item.get("assets") or {}).items()}
            yield row

    # -- the loader's input ------------------------------------------------------------------------
    def _asset_urls(self, item: Mapping[str, Any], modality: str) -> tuple[list[str], str]:
        layout = item.get("properties", {}).get(prop("layout")) or "stacked"
        assets = item.get("assets") or {}
        urls = []
        for key in band_groups(modality, layout):  # type: ignore[arg-type]
            asset = assets.get(key)
            if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
                raise CatalogError(f"item {item.get('id')!r} from {self.catalog.url} has no {key!r} asset "
                                   f"(layout {layout!r})")
            urls.append(self.catalog.scope.check(asset["href"]))
        return urls, layout

    def sample_table(self) -> pa.Table:
        """The loader's input (:data:`bigearth_stac.samples.SAMPLE_SCHEMA`) plus a ``bbox`` column.

        Asset URLs are checked against the catalog's scope, which the table carries. For
        ``modality="pair"`` the S1 partners are fetched by id from ``bigearthnet-s1``.
        """
        modality = self.query.modality
        own = "s1" if modality == "s1" else "s2"
        items = list(self._items(fields=SAMPLE_FIELDS))
        columns: dict[str, list[Any]] = {n: [] for n in (*SAMPLE_SCHEMA.names, "bbox")}
        partners: dict[str, tuple[list[str], str]] = {}
        if modality == "pair":
            partners = self._partners([it.get("properties", {}).get(prop("s1_id")) for it in items])
        for item in items:
            props = item.get("properties", {})
            urls, layout = self._asset_urls(item, own)
            s1_urls: list[str] = []
            if modality == "pair":
                s1_urls = partners[props.get(prop("s1_id"))][0]
            b = _bbox_of(item)
            columns["id"].append(item["id"])
            columns["s2_assets"].append([] if own == "s1" else urls)
            columns["s1_assets"].append(urls if own == "s1" else s1_urls)
            columns["layout"].append(layout)
            columns["labels_19"].append(props.get(prop("labels_19")) or [])
            columns["labels_43"].append(props.get(prop("labels_43")) or [])
            columns["split"].append(props.get(prop("split")))
            columns["bbox"].append({"xmin": b[0], "ymin": b[1], "xmax": b[2], "ymax": b[3]})
        schema = SAMPLE_SCHEMA
        if self.release != RELEASE_V1:  # which normalisation statistics the loader uses
            columns["release"] = [self.release] * len(items)
            schema = schema.append(OPTIONAL_COLUMNS.field("release"))
        if own == "s2" and any(REFERENCE_MAP_ASSET in (it.get("assets") or {}) for it in items):
            columns[REFERENCE_MAP_ASSET] = [self._reference_map(it) for it in items]
            schema = schema.append(OPTIONAL_COLUMNS.field(REFERENCE_MAP_ASSET))
        schema = schema.append(pa.field("bbox", _BBOX_TYPE))
        table = pa.table({n: pa.array(columns[n], schema.field(n).type) for n in schema.names}, schema=schema)
        return with_scope(table, self.catalog.scope)

    def _reference_map(self, item: Mapping[str, Any]) -> str | None:
        """The URL of an S2 item's reference map (checked against the scope); ``None`` where it has none."""
        asset = (item.get("assets") or {}).get(REFERENCE_MAP_ASSET)
        if not isinstance(asset, dict):
            return None
        if not isinstance(asset.get("href"), str):
            raise CatalogError(f"item {item.get('id')!r} from {self.catalog.url} has a {REFERENCE_MAP_ASSET!r} asset "
                               f"without an href")
        return self.catalog.scope.check(asset["href"])

    def _partners(self, s1_ids: list[Any]) -> dict[str, tuple[list[str], str]]:
        """S1 id -> (asset URLs, layout), fetched by id in pages."""
        wanted = [i for i in dict.fromkeys(s1_ids) if isinstance(i, str)]
        found: dict[str, tuple[list[str], str]] = {}
        partner = collection_id(self.release, "s1")
        size = self.catalog.page_size
        for start in range(0, len(wanted), size):
            chunk = wanted[start:start + size]
            for item in self._items(fields=SAMPLE_FIELDS, collections=[partner], ids=chunk):
                found[item["id"]] = self._asset_urls(item, "s1")
        missing = [i for i in s1_ids if i not in found]
        if missing:
            raise KeyError(f"S1 partners missing from {partner} at {self.catalog.url}: {missing[:5]}")
        return found

    def to_torch(self, options: Any = None, **kwargs: Any) -> Any:
        """A streaming PyTorch dataset over the result: ``BigEarthNetStream(self, options, **kwargs)``."""
        from bigearth_stac.torch_dataset import BigEarthNetStream

        return BigEarthNetStream(self, options, **kwargs)

    def to_xarray(self, **kwargs: Any) -> Any:
        """A lazy ``xarray.Dataset`` of the result (``bigearth_stac.xarray_view.to_xarray``)."""
        from bigearth_stac.xarray_view import to_xarray

        return to_xarray(self, **kwargs)


__all__ = ["ApiCatalog", "ApiSearchResult", "as_search_query", "columns_from_queryables", "index_columns",
           "is_stac_api", "pgstac_filter", "search_body"]
