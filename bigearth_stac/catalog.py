"""Open a published catalog by its root URL and reach its search indexes, without crawling items.

``Catalog.open(url)`` reads the root ``catalog.json``, follows its ``child`` links to the two
collections and finds each one's ``geoparquet-items`` asset (the stac-geoparquet index). Nothing
else is read until a search runs; item JSONs are never read. Local paths, ``http(s)://`` and
``s3://`` work alike (see :mod:`bigearth_stac.io`): remote indexes are read by range requests,
and each index's Parquet footer is read once and cached for the catalog's lifetime.

A catalog is untrusted input (DESIGN.md #13): every link and asset href is resolved through the
catalog's :class:`~bigearth_stac.hrefs.Scope` and refused, naming the href, if it leaves the
catalog's root (or the extra roots the caller allows). The scope travels with search results
into sample tables, the loader and the xarray view.
"""

from __future__ import annotations

import json
import logging
import posixpath
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from bigearth_stac.contract import CATALOG_FILE, INDEX_ASSET, prop
from bigearth_stac.hrefs import Scope, catalog_root, parse
from bigearth_stac.io import filesystem_for, open_url, path_in_filesystem
from bigearth_stac.settings import StorageSettings
from bigearth_stac.vocab import S1_COLLECTION, S2_COLLECTION

if TYPE_CHECKING:
    from bigearth_stac.search import SearchResult

log = logging.getLogger(__name__)

MODALITY_OF = {S2_COLLECTION: "s2", S1_COLLECTION: "s1"}

#: How the index is scanned: coalesce the column chunks of a row group into few large range
#: requests (remote stores answer the first byte in tens of ms, so request count dominates).
SCAN_OPTIONS = ds.ParquetFragmentScanOptions(
    pre_buffer=True,
    cache_options=pa.CacheOptions(hole_size_limit=64 * 1024, range_size_limit=32 * 1024 * 1024, lazy=True),
)


class CatalogError(ValueError):
    """A catalog that cannot be opened or does not have what a search needs."""


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

    def __post_init__(self) -> None:
        self._dataset: ds.Dataset | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_dataset", None)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    @property
    def dataset(self) -> ds.Dataset:
        """The index as a ``pyarrow.dataset``, one fragment per row group, footer read once."""
        with self._lock:
            if self._dataset is None:
                fmt = ds.ParquetFileFormat(default_fragment_scan_options=SCAN_OPTIONS)
                try:
                    # Knowing the size spares a HEAD request each time a row group is opened on S3.
                    size = self.filesystem.get_file_info(self.path).size
                    whole = fmt.make_fragment(self.path, filesystem=self.filesystem, file_size=size)
                    whole.ensure_complete_metadata()  # reads the footer (one range request remote)
                except (FileNotFoundError, OSError) as exc:
                    raise CatalogError(f"cannot read the index of {self.collection_id} at {self.url}: {exc}") from exc
                # Row-group fragments carry their statistics: the scan prunes them without I/O.
                fragments = whole.split_by_row_group()
                self._dataset = ds.FileSystemDataset(fragments, whole.physical_schema, fmt, self.filesystem)
                log.debug("opened index %s: %d row groups", self.url, len(fragments))
            return self._dataset

    @property
    def schema(self) -> pa.Schema:
        return self.dataset.schema

    @property
    def num_rows(self) -> int:
        return sum(f.row_groups[0].num_rows for f in self.dataset.get_fragments())

    @property
    def nbytes(self) -> int:
        """Size in bytes of the index file."""
        return int(self.filesystem.get_file_info(self.path).size)


class Catalog:
    """A published BigEarthNet catalog: its collections and their search indexes."""

    def __init__(self, url: str, indexes: dict[str, CollectionIndex], settings: StorageSettings | None = None,
                 scope: Scope | None = None) -> None:
        self.url = url
        self.indexes = indexes
        """Modality (``s2``, ``s1``) -> :class:`CollectionIndex`."""
        self.settings = settings
        self.scope = scope or Scope.of_catalog(url)
        """The roots readers of this catalog may touch (its folder, plus what the caller allowed)."""

    def __repr__(self) -> str:
        return f"Catalog({self.url!r}, collections={[i.collection_id for i in self.indexes.values()]})"

    @classmethod
    def open(cls, url: str, settings: StorageSettings | None = None,
             filesystem: pafs.FileSystem | None = None, allow: Sequence[str] = ()) -> Catalog:
        """Open the root catalog at ``url`` (its ``catalog.json`` or the folder holding it).

        ``settings`` configure ``s3://`` access; ``filesystem`` replaces the one chosen from the
        index URL's scheme for index reads (paths as :func:`bigearth_stac.io.path_in_filesystem`
        gives them). ``allow``: other roots (``s3://mirror/bigearthnet/``) whose objects this
        catalog may reference; by default every href must stay under the catalog's own folder,
        else :class:`~bigearth_stac.hrefs.HrefError` names it.
        """
        url = _root_document(str(url))
        scope = Scope.of_catalog(url, allow)
        root = _read_json(url, settings, scope)
        indexes: dict[str, CollectionIndex] = {}
        for link in _links(root, url):
            if link.get("rel") != "child":
                continue
            coll_url = scope.resolve(url, link.get("href"))  # type: ignore[arg-type]
            coll = _read_json(coll_url, settings, scope)
            modality = MODALITY_OF.get(coll.get("id", "")) if isinstance(coll.get("id"), str) else None
            assets = coll.get("assets")
            asset = assets.get(INDEX_ASSET) if isinstance(assets, dict) else None
            if modality is None or not isinstance(asset, dict):
                log.debug("skipping child %s: not a BigEarthNet collection with an index", coll_url)
                continue
            index_url = scope.resolve(coll_url, asset.get("href"))  # type: ignore[arg-type]
            fs, path = ((filesystem, path_in_filesystem(index_url)) if filesystem is not None
                        else filesystem_for(index_url, settings))
            layout = coll.get(prop("layout"))
            indexes[modality] = CollectionIndex(coll["id"], modality, index_url,
                                                layout if isinstance(layout, str) else None, path, fs)
        if "s2" not in indexes and "s1" not in indexes:
            raise CatalogError(f"{url} links no collection with a {INDEX_ASSET!r} asset "
                               f"(expected {S2_COLLECTION} and {S1_COLLECTION})")
        return cls(url, indexes, settings, scope)

    def index(self, modality: str) -> CollectionIndex:
        """The index of ``s2`` or ``s1``."""
        if modality not in self.indexes:
            raise CatalogError(f"this catalog has no {modality!r} index; it has {sorted(self.indexes)}")
        return self.indexes[modality]

    def search(self, **kwargs: Any) -> SearchResult:
        """Search the index; see :func:`bigearth_stac.search.search` for the parameters."""
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
