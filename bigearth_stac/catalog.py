"""Open a published catalog by its root URL and reach its search indexes, without crawling items.

``Catalog.open(url)`` reads the root ``catalog.json``, follows its ``child`` links to the two
collections and finds each one's ``geoparquet-items`` asset (the stac-geoparquet index). Nothing
else is read until a search runs; item JSONs are never read. Local paths, ``http(s)://`` and
``s3://`` work alike (see :mod:`bigearth_stac._indexfs`): remote indexes are read by range
requests, and each index's Parquet footer is read once and cached for the catalog's lifetime.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from bigearth_stac._indexfs import filesystem_for, read_bytes, split_url
from bigearth_stac.samples import join_href
from bigearth_stac.settings import StorageSettings
from bigearth_stac.vocab import S1_COLLECTION, S2_COLLECTION

if TYPE_CHECKING:
    from bigearth_stac.search import SearchResult

log = logging.getLogger(__name__)

INDEX_ASSET = "geoparquet-items"
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

    def __init__(self, url: str, indexes: dict[str, CollectionIndex], settings: StorageSettings | None = None) -> None:
        self.url = url
        self.indexes = indexes
        """Modality (``s2``, ``s1``) -> :class:`CollectionIndex`."""
        self.settings = settings

    def __repr__(self) -> str:
        return f"Catalog({self.url!r}, collections={[i.collection_id for i in self.indexes.values()]})"

    @classmethod
    def open(cls, url: str, settings: StorageSettings | None = None,
             filesystem: pafs.FileSystem | None = None) -> Catalog:
        """Open the root catalog at ``url`` (its ``catalog.json`` or the folder holding it).

        ``settings`` configure ``s3://`` access; ``filesystem`` replaces the one chosen from the
        URL's scheme (paths inside it as :func:`bigearth_stac._indexfs.filesystem_for` gives them).
        """
        url = str(url)
        if not url.endswith(".json"):
            url = url.rstrip("/") + "/catalog.json"
        fs, root_path = filesystem_for(url, settings)
        fs = filesystem or fs
        root = _read_json(fs, root_path, url)
        indexes: dict[str, CollectionIndex] = {}
        for link in root.get("links", []):
            if link.get("rel") != "child":
                continue
            coll_url = join_href(url, link["href"])
            coll = _read_json(fs, _path_in(coll_url, root_path, url), coll_url)
            modality = MODALITY_OF.get(coll.get("id", ""))
            asset = coll.get("assets", {}).get(INDEX_ASSET)
            if modality is None or asset is None:
                log.debug("skipping child %s: not a BigEarthNet collection with an index", coll_url)
                continue
            index_url = join_href(coll_url, asset["href"])
            indexes[modality] = CollectionIndex(coll["id"], modality, index_url, coll.get("bigearthnet:layout"),
                                                _path_in(index_url, root_path, url), fs)
        if "s2" not in indexes and "s1" not in indexes:
            raise CatalogError(f"{url} links no collection with a {INDEX_ASSET!r} asset "
                               f"(expected {S2_COLLECTION} and {S1_COLLECTION})")
        return cls(url, indexes, settings)

    def index(self, modality: str) -> CollectionIndex:
        """The index of ``s2`` or ``s1``."""
        if modality not in self.indexes:
            raise CatalogError(f"this catalog has no {modality!r} index; it has {sorted(self.indexes)}")
        return self.indexes[modality]

    def search(self, **kwargs: Any) -> SearchResult:
        """Search the index; see :func:`bigearth_stac.search.search` for the parameters."""
        from bigearth_stac.search import search

        return search(self, **kwargs)


def _path_in(url: str, root_path: str, root_url: str) -> str:
    """Path of ``url`` inside the filesystem that holds ``root_url`` (at ``root_path``)."""
    scheme, rest = split_url(url)
    if scheme == "s3" or scheme == "file":
        return filesystem_for(url)[1] if scheme == "file" else rest
    root_scheme, root_rest = split_url(root_url)
    if rest.partition("/")[0] != root_rest.partition("/")[0]:
        raise CatalogError(f"{url} is on another host than the catalog {root_url}; links must stay on one origin")
    return "/" + rest.partition("/")[2]


def _read_json(fs: pafs.FileSystem, path: str, url: str) -> dict[str, Any]:
    try:
        return json.loads(read_bytes(fs, path))
    except FileNotFoundError:
        raise CatalogError(f"not found: {url}") from None
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{url} is not JSON: {exc}") from None
