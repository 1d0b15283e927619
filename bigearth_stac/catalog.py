"""Open a published catalog by its root URL and reach its search indexes, without crawling items.

``Catalog.open(url)`` reads the root ``catalog.json``, follows its ``child`` links to the
collections and finds each one's ``geoparquet-items`` asset (the stac-geoparquet index). A root
may hold the collections of one release or of both (BigEarthNet v1.0: ``bigearthnet-s2`` /
``-s1``; v2.0 (reBEN): ``bigearthnet-v2-s2`` / ``-s1``); they are told apart by their ids
(:func:`bigearth_stac.contract.release_and_modality`) and their indexes kept by
``(release, modality)``. Nothing else is read until a search runs; item JSONs are never read.
Local paths, ``http(s)://`` and ``s3://`` work alike (see :mod:`bigearth_stac.io`): remote
indexes are read by range requests, and each index's Parquet footer is read once and cached for
the catalog's lifetime.

Remote indexes are read through a local read-through cache (:mod:`bigearth_stac._indexcache`):
a query fetches the column chunks it needs concurrently and keeps them on disk, keyed by the
object's identity (URL, size, ETag or modification time, ``file:checksum``), so a repeated query,
in this process or the next, reads nothing remote beyond the identity check made at open.

A catalog is untrusted input (DESIGN.md #13): every link and asset href is resolved through the
catalog's :class:`~bigearth_stac.hrefs.Scope` and refused, naming the href, if it leaves the
catalog's root (or the extra roots the caller allows). The scope travels with search results
into sample tables, the loader and the xarray view.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import threading
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from bigearth_stac._indexcache import (
    CACHE_ENV,
    CacheEntry,
    IndexCache,
    RemoteObject,
    cached_filesystem,
)
from bigearth_stac._indexfs import remote_object
from bigearth_stac.contract import (
    CATALOG_FILE,
    COLLECTION_IDS,
    INDEX_ASSET,
    RELEASES,
    prop,
    release_and_modality,
)
from bigearth_stac.hrefs import Scope, catalog_root, parse, scheme_of
from bigearth_stac.io import filesystem_for, open_url, path_in_filesystem
from bigearth_stac.settings import StorageSettings
from bigearth_stac.vocab import RELEASE_V1, RELEASE_V2, S1_COLLECTION, S2_COLLECTION

if TYPE_CHECKING:
    from bigearth_stac.search import SearchResult

log = logging.getLogger(__name__)

MODALITY_OF = {S2_COLLECTION: "s2", S1_COLLECTION: "s1"}
"""v1 collection id -> modality (kept for callers of old; :func:`~bigearth_stac.contract.release_and_modality`
knows every release)."""

DEFAULT_RELEASE = RELEASE_V2
"""The release a catalog holding several opens with (the current one), unless ``release=`` says."""

_RELEASE_ALIASES = {alias: release for release in RELEASES
                    for alias in (release, release.lstrip("v"), release.split(".")[0], release.split(".")[0].lstrip("v"))}


def pick_release(release: str | None, default: str, available: tuple[str, ...], subject: str, again: str) -> str:
    """The release a search asking for ``release`` reads (``None``: ``default``); one not
    ``available`` is a :class:`CatalogError` ("<subject> no BigEarthNet v2.0 collections;
    <again> v1.0")."""
    if release is None:
        return default
    try:
        wanted = normalize_release(release)
    except ValueError as exc:
        raise CatalogError(str(exc)) from None
    if wanted not in available:
        raise CatalogError(f"{subject} no BigEarthNet {wanted} collections; {again} {', '.join(available) or 'none'}")
    return wanted


def normalize_release(value: object) -> str:
    """``"v2.0"`` for ``"v2.0"``, ``"v2"``, ``"2.0"``, ``"2"`` or ``2`` (likewise v1); else :class:`ValueError`
    naming the value and the releases."""
    key = str(value).strip().lower() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    release = _RELEASE_ALIASES.get(key) if key is not None else None
    if release is None:
        raise ValueError(f"unknown release {value!r}; releases: {', '.join(RELEASES)} "
                         "(also written v1 / v2)")
    return release

#: How the index is scanned: coalesce the column chunks of a row group into few large range
#: requests (remote stores answer the first byte in tens of ms, so request count dominates).
SCAN_OPTIONS = ds.ParquetFragmentScanOptions(
    pre_buffer=True,
    cache_options=pa.CacheOptions(hole_size_limit=64 * 1024, range_size_limit=32 * 1024 * 1024, lazy=True),
)


CacheOption = Union[IndexCache, str, "os.PathLike[str]", bool, None]
"""How :meth:`Catalog.open` caches remote indexes: ``None`` or ``True`` the default cache
(:func:`~bigearth_stac._indexcache.default_cache_dir`, 2 GiB), a folder, an :class:`IndexCache`,
or ``False`` for none (every query reads its ranges remotely)."""

REMOTE_SCHEMES = ("http", "https", "s3")


class CatalogError(ValueError):
    """A catalog that cannot be opened or does not have what a search needs."""


def _index_cache(option: CacheOption) -> IndexCache | None:
    """The cache :meth:`Catalog.open` was asked for; a default cache that cannot be made is skipped."""
    if option is False:
        return None
    if isinstance(option, IndexCache):
        return option
    if option is None or option is True:
        if os.environ.get(CACHE_ENV, "").lower() == "off":
            return None
        try:
            return IndexCache()
        except OSError as exc:
            log.warning("no index cache (%s); remote queries read their ranges every time", exc)
            return None
    if isinstance(option, (str, os.PathLike)):
        return IndexCache(Path(option))
    raise TypeError(f"cache must be an IndexCache, a folder, True, False or None, not {option!r}")


@dataclass
class CollectionIndex:
    """One collection's index: where it is, and (once opened) its dataset with a cached footer."""

    collection_id: str
    modality: str
    """``s2`` or ``s1``."""
    url: str
    """Absolute URL (or path) of the index file; its hrefs are relative to it."""
    layout: str | None
    path: str
    filesystem: pafs.FileSystem
    checksum: str | None = None
    """The ``file:checksum`` of the collection's index asset, if it has one (part of the cache key)."""
    cache: IndexCache | None = None
    """Where remote reads are kept (``None``: not cached). Local indexes are never cached."""
    data_release: str = RELEASE_V1
    """The BigEarthNet release of the collection (``"v1.0"``, ``"v2.0"``), from its id (not
    :meth:`release`, which frees what a query fetched)."""

    def __post_init__(self) -> None:
        self._dataset: ds.Dataset | None = None
        self._entry: CacheEntry | None = None
        self._chunks: dict[str, list[list[tuple[int, int]]]] | None = None
        self._metadata: Any = None
        self._whole: ds.ParquetFileFragment | None = None
        self._lock = threading.Lock()
        self.hot: Any = None
        """In-memory columns of this index for repeated searches (managed by :mod:`bigearth_stac.search`)."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("_dataset", "_entry", "_chunks", "_metadata", "_whole", "_lock", "hot"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    @property
    def remote(self) -> bool:
        return scheme_of(self.url) in REMOTE_SCHEMES

    @property
    def dataset(self) -> ds.Dataset:
        """The index as a ``pyarrow.dataset``, one fragment per row group, footer read once.

        A remote index with a cache reads through it: the identity check (one HEAD) picks the
        cache entry, the footer comes from it (or from one request for the object's tail).
        """
        with self._lock:
            if self._dataset is None:
                fmt = ds.ParquetFileFormat(default_fragment_scan_options=SCAN_OPTIONS)
                fs = self.filesystem
                try:
                    if self.cache is not None and self.remote:
                        size, version, read = remote_object(self.filesystem, self.path)  # one HEAD
                        fs = self._open_cached(RemoteObject(self.url, size, version, self.checksum, read))
                    else:
                        # Knowing the size spares a HEAD request each time a row group is opened on S3.
                        size = self.filesystem.get_file_info(self.path).size
                    whole = fmt.make_fragment(self.path, filesystem=fs, file_size=size)
                    whole.ensure_complete_metadata()  # reads the footer (one range request remote)
                except (FileNotFoundError, OSError) as exc:
                    raise CatalogError(f"cannot read the index of {self.collection_id} at {self.url}: {exc}") from exc
                # Row-group fragments carry their statistics: the scan prunes them without I/O.
                fragments = whole.split_by_row_group()
                self._metadata = whole.metadata
                self._whole = whole
                self._dataset = ds.FileSystemDataset(fragments, whole.physical_schema, fmt, fs)
                log.debug("opened index %s: %d row groups", self.url, len(fragments))
            return self._dataset

    @property
    def whole(self) -> ds.ParquetFileFragment:
        """The index file as one fragment (all row groups, footer read): one call of its
        ``subset`` tests every row group's statistics against a filter."""
        _ = self.dataset
        assert self._whole is not None
        return self._whole

    def _open_cached(self, obj: RemoteObject) -> pafs.FileSystem:
        assert self.cache is not None
        try:
            entry = self.cache.open(obj)
        except OSError as exc:  # an unwritable or full disk must not stop a search
            log.warning("index cache %s unusable (%s): reading %s uncached", self.cache.directory, exc, self.url)
            return self.filesystem
        entry.prime_footer()
        self._entry = entry
        return cached_filesystem(self.path, entry)

    # -- what a query reads ------------------------------------------------------------------------
    @property
    def num_row_groups(self) -> int:
        _ = self.dataset
        return int(self._metadata.num_row_groups)

    def chunk_ranges(self, columns: Collection[str] | None, row_groups: Iterable[int] | None = None) -> list[tuple[int, int]]:
        """Byte ranges of the column chunks of ``columns`` (top-level names; ``None``: all) in
        ``row_groups`` (``None``: all), from the footer."""
        _ = self.dataset
        with self._lock:
            if self._chunks is None:
                meta = self._metadata
                chunks: dict[str, list[list[tuple[int, int]]]] = {}
                tops = [meta.schema.column(i).path.split(".", 1)[0] for i in range(meta.num_columns)]
                for top in tops:
                    chunks.setdefault(top, [[] for _ in range(meta.num_row_groups)])
                for r in range(meta.num_row_groups):
                    rg = meta.row_group(r)
                    for i, top in enumerate(tops):
                        col = rg.column(i)
                        start = col.data_page_offset
                        dictionary = col.dictionary_page_offset
                        if col.has_dictionary_page and dictionary and 0 < dictionary < start:
                            start = dictionary
                        chunks[top][r].append((start, start + col.total_compressed_size))
                self._chunks = chunks
        names = list(self._chunks) if columns is None else [c for c in columns if c in self._chunks]
        groups = range(self._metadata.num_row_groups) if row_groups is None else row_groups
        return [rng for g in groups for n in names for rng in self._chunks[n][g]]

    def prefetch(self, columns: Collection[str] | None, row_groups: Iterable[int] | None = None) -> int:
        """Fetch the chunks of ``columns`` in ``row_groups`` into the cache, concurrently, before a
        scan asks for them one by one. Returns the bytes fetched (0 when local or cached)."""
        if self._entry is None:
            return 0
        return self._entry.ensure(self.chunk_ranges(columns, row_groups))

    def release(self) -> None:
        """Drop what a query fetched but the (full) cache could not keep."""
        if self._entry is not None:
            self._entry.release()

    def available(self, columns: Collection[str] | None) -> bool:
        """Whether every row group of ``columns`` can be read without a remote request."""
        if not self.remote:
            return True
        if self._entry is None:
            return False
        return self._entry.complete(self.chunk_ranges(columns))

    def local_file(self) -> str | None:
        """A plain local file holding the index bytes at their offsets (for DuckDB's own reader):
        the index itself when local, else the cache entry's data file; ``None`` otherwise."""
        _ = self.dataset
        if self._entry is not None:
            return str(self._entry.data_path)
        if not self.remote and type(self.filesystem) is pafs.LocalFileSystem:
            return self.path
        return None

    @property
    def schema(self) -> pa.Schema:
        return self.dataset.schema

    @property
    def num_rows(self) -> int:
        _ = self.dataset
        return int(self._metadata.num_rows)

    @property
    def nbytes(self) -> int:
        """Size in bytes of the index file."""
        if self._entry is not None:
            return self._entry.size  # known since the identity check: no request
        return int(self.filesystem.get_file_info(self.path).size)


class Catalog:
    """A published BigEarthNet catalog: its collections and their search indexes.

    Attributes: ``url`` (the root document), ``releases`` (the releases whose collections it
    holds, oldest first), ``release`` (the one searches use unless they say otherwise),
    ``all_indexes`` (``(release, modality)`` -> :class:`CollectionIndex`, every collection),
    ``indexes`` (modality -> :class:`CollectionIndex` of ``release``), ``settings``, ``scope``.
    """

    def __init__(self, url: str, indexes: dict[Any, CollectionIndex], settings: StorageSettings | None = None,
                 scope: Scope | None = None, release: str | None = None) -> None:
        self.url = url
        self.all_indexes: dict[tuple[str, str], CollectionIndex] = {}
        """``(release, modality)`` -> :class:`CollectionIndex` of every collection of the catalog."""
        for key, index in indexes.items():  # keys: (release, modality), or a modality (one release)
            self.all_indexes[key if isinstance(key, tuple) else (index.data_release, key)] = index
        self.releases: tuple[str, ...] = tuple(r for r in RELEASES if any(k[0] == r for k in self.all_indexes))
        """The releases this catalog holds collections of, oldest first."""
        self.release: str = self._default_release(release)
        """The release searches use unless ``search(release=...)`` names another (see :meth:`open`)."""
        self.settings = settings
        self.scope = scope or Scope.of_catalog(url)
        """The roots readers of this catalog may touch (its folder, plus what the caller allowed)."""

    @property
    def indexes(self) -> dict[str, CollectionIndex]:
        """Modality (``s2``, ``s1``) -> :class:`CollectionIndex` of :attr:`release`."""
        return {m: i for (r, m), i in self.all_indexes.items() if r == self.release}

    def _default_release(self, release: str | None) -> str:
        default = RELEASE_V1 if not self.releases else (
            DEFAULT_RELEASE if DEFAULT_RELEASE in self.releases else self.releases[-1])
        return pick_release(release, default, self.releases, f"{self.url} holds", "it holds")

    def resolve_release(self, release: str | None) -> str:
        """The release a search asking for ``release`` reads (``None``: :attr:`release`); a release
        the catalog does not hold is a :class:`CatalogError` naming those it holds."""
        return pick_release(release, self.release, self.releases, f"{self.url} holds", "it holds")

    def __repr__(self) -> str:
        return (f"Catalog({self.url!r}, releases={list(self.releases)}, release={self.release!r}, "
                f"collections={[i.collection_id for i in self.all_indexes.values()]})")

    @classmethod
    def open(cls, url: str, settings: StorageSettings | None = None,
             filesystem: pafs.FileSystem | None = None, allow: Sequence[str] = (),
             cache: CacheOption = None, release: str | None = None) -> Catalog:
        """Open the root catalog at ``url`` (its ``catalog.json`` or the folder holding it), or a STAC API.

        A ``http(s)`` URL that answers as a STAC API (a landing page with ``conformsTo``) opens
        an :class:`~bigearth_stac.api.ApiCatalog` with the same ``search(...)`` (pgstac behind
        stac-fastapi, see ``bigearth-stac serve``).

        ``release``: which BigEarthNet release searches read, ``"v1.0"`` or ``"v2.0"`` (``"v1"``,
        ``"v2"`` too). ``None`` (the default): the only release the catalog holds, or **v2.0 when
        it holds both** (v1 and v2 collections side by side in one root); :attr:`releases` lists
        them and ``search(release=...)`` reads the other one for one search. A release the
        catalog does not hold is a :class:`CatalogError` naming those it does.

        ``settings`` configure ``s3://`` access; ``filesystem`` replaces the one chosen from the
        index URL's scheme for index reads (paths as :func:`bigearth_stac.io.path_in_filesystem`
        gives them). ``allow``: other roots (``s3://mirror/bigearthnet/``) whose objects this
        catalog may reference; by default every href must stay under the catalog's own folder,
        else :class:`~bigearth_stac.hrefs.HrefError` names it. ``cache``: where remote index
        bytes are kept between queries and processes (:data:`CacheOption`; default: the user's
        cache folder, or ``$BIGEARTH_STAC_CACHE_DIR``; ``False``: none).
        """
        from bigearth_stac.api import ApiCatalog, is_stac_api  # here: api imports this module

        if release is not None:
            try:
                release = normalize_release(release)
            except ValueError as exc:
                raise CatalogError(str(exc)) from None
        if filesystem is None and is_stac_api(str(url), settings):
            if release not in (None, RELEASE_V1):
                raise CatalogError(f"{url} is a STAC API; its client searches the {RELEASE_V1} collections only "
                                   f"(not {release}): open the static catalog to search {release}")
            return ApiCatalog.open(str(url), settings=settings, allow=allow)  # type: ignore[return-value]
        url = _root_document(str(url))
        scope = Scope.of_catalog(url, allow)
        index_cache: list[IndexCache | None] = []  # made when the first remote index is found
        root = _read_json(url, settings, scope)
        indexes: dict[tuple[str, str], CollectionIndex] = {}
        children = [scope.resolve(url, link.get("href"))  # type: ignore[arg-type]
                    for link in _links(root, url) if link.get("rel") == "child"]
        # The collections are read concurrently: one round trip for all, not one each.
        with ThreadPoolExecutor(max(1, min(8, len(children))), thread_name_prefix="catalog-open") as pool:
            documents = list(pool.map(lambda u: _read_json(u, settings, scope), children))
        for coll_url, coll in zip(children, documents, strict=True):
            key = release_and_modality(coll["id"]) if isinstance(coll.get("id"), str) else None
            assets = coll.get("assets")
            asset = assets.get(INDEX_ASSET) if isinstance(assets, dict) else None
            if key is None or not isinstance(asset, dict):
                log.debug("skipping child %s: not a BigEarthNet collection with an index", coll_url)
                continue
            if key in indexes:
                raise CatalogError(f"{url} links two collections {coll['id']!r} ({indexes[key].url} and {coll_url})")
            coll_release, modality = key
            index_url = scope.resolve(coll_url, asset.get("href"))  # type: ignore[arg-type]
            fs, path = ((filesystem, path_in_filesystem(index_url)) if filesystem is not None
                        else filesystem_for(index_url, settings))
            layout = coll.get(prop("layout"))
            checksum = asset.get("file:checksum")
            if scheme_of(index_url) in REMOTE_SCHEMES and not index_cache:
                index_cache.append(_index_cache(cache))
            indexes[key] = CollectionIndex(coll["id"], modality, index_url,
                                           layout if isinstance(layout, str) else None, path, fs,
                                           checksum if isinstance(checksum, str) else None,
                                           index_cache[0] if index_cache else None, coll_release)
        if not indexes:
            expected = ", ".join(COLLECTION_IDS.values())
            raise CatalogError(f"{url} links no collection with a {INDEX_ASSET!r} asset (expected some of {expected})")
        return cls(url, indexes, settings, scope, release)

    def index(self, modality: str, release: str | None = None) -> CollectionIndex:
        """The index of ``s2`` or ``s1`` items of ``release`` (default: :attr:`release`)."""
        wanted = self.resolve_release(release)
        index = self.all_indexes.get((wanted, modality))
        if index is None:
            have = sorted(m for r, m in self.all_indexes if r == wanted)
            raise CatalogError(f"this catalog has no {modality!r} index of BigEarthNet {wanted}; it has {have}")
        return index

    def search(self, **kwargs: Any) -> SearchResult:
        """Search the index; see :func:`bigearth_stac.search.search` for the parameters
        (``release=`` reads another release of a catalog that holds several)."""
        from bigearth_stac.search import search

        return search(self, **kwargs)


def _root_document(url: str) -> str:
    """The URL of the root document: ``catalog.json`` in a folder; local symlinks resolved."""
    loc = parse(url)
    name = posixpath.basename(loc.path) if loc.path.endswith(".json") else CATALOG_FILE
    root = catalog_root(loc.url)
    return f"{root.rstrip('/')}/{name}"


def _links(doc: dict[str, Any], url: str) -> list[dict[str, Any]]:
    links = doc.get("links", [])
    if not isinstance(links, list) or not all(isinstance(link, dict) for link in links):
        raise CatalogError(f"{url}: 'links' is not a list of link objects")
    return links


def _read_json(url: str, settings: StorageSettings | None, scope: Scope) -> dict[str, Any]:
    """A catalog or collection document, size-capped, depth-safe, and a JSON object."""
    try:
        doc = json.loads(open_url(url, settings, scope=scope))
    except FileNotFoundError:
        raise CatalogError(f"not found: {url}") from None
    except RecursionError:
        raise CatalogError(f"{url} is not usable JSON: nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{url} is not JSON: {exc}") from None
    except OSError as exc:
        raise CatalogError(f"cannot read {url}: {exc}") from None
    if not isinstance(doc, dict):
        raise CatalogError(f"{url} is not a STAC catalog or collection (a JSON {type(doc).__name__}, not an object)")
    return doc
