"""A local read-through cache of remote index files, by byte range, bounded in size.

Published objects never change (DESIGN.md #12), so the bytes of a remote index, once read, can
be kept on local disk and served from there: the second query of a session, and the first of a
new process, read nothing remote beyond the identity check (one HEAD, made anyway to learn the
object's size). What a cache entry is keyed by is the object's identity: its URL, size and
version (ETag or modification time) and, where the collection's ``geoparquet-items`` asset
carries one, its ``file:checksum``. A changed object (a new size, ETag or checksum) is a new
entry; the old one is never served for it.

Layout of the cache directory (one folder per format version)::

    v1/<key>.data   the object's bytes at their own offsets (a sparse file: only read ranges use disk)
    v1/<key>.json   url, size, identity, the cached byte ranges, last use
    v1/<key>.use    locked shared by every process that has the entry open (eviction skips it)
    v1/lock         serialises metadata updates and eviction between processes

Bytes are written before the ranges that describe them, so another process never reads a range
that is not there. The cache holds at most ``max_bytes`` (the sum of cached ranges): least
recently used entries that no process has open are evicted first; when the entry being read
alone would exceed the bound, new ranges are served from memory for the query and not stored.

Reads are planned, not discovered: :meth:`CacheEntry.ensure` takes the byte ranges a query
needs (column chunks of the row groups that survive pruning, from the footer), subtracts what
is cached, coalesces what is left into few requests and fetches them concurrently. The index
stores the chunks searches filter on for all row groups side by side at the start of the file
(:data:`~bigearth_stac.contract.INDEX_COLUMN_GROUPS`), so a query over the whole archive needs a
few requests, not one per row group.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from bigearth_stac._indexfs import _ReadOnlyFile

try:  # POSIX: advisory locks between processes
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process at a time is assumed
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FORMAT = "v1"
CACHE_ENV = "BIGEARTH_STAC_CACHE_DIR"
"""Environment variable naming the default cache directory (``off`` disables the default cache)."""
DEFAULT_MAX_BYTES = 2 * 2**30
"""Default bound of a cache directory: 2 GiB (the v1 archive's two indexes are a few hundred MB)."""
HOLE_BYTES = 256 * 1024
"""Missing ranges closer than this are fetched in one request (a round trip costs more than the hole)."""
PART_BYTES = 1 * 2**20
"""Largest single request; longer runs are split so that they download concurrently. The index
gathers the columns searches filter on into one run for all row groups (a few MB for the whole
archive: :data:`~bigearth_stac.contract.INDEX_COLUMN_GROUPS`): a label query fetches it as a few
1 MiB requests in flight at once rather than one long transfer."""
CONCURRENCY = 16
"""Range requests in flight per :meth:`CacheEntry.ensure`."""
FOOTER_BYTES = 1 * 2**20
"""Tail fetched in one request when an entry is new: the footer, however large, in one round trip."""

Range = tuple[int, int]
"""``[start, end)`` byte offsets."""
RangeReader = Callable[[int, int], bytes]
"""``(start, end) -> bytes`` of a remote object; thread-safe."""


def default_cache_dir() -> Path:
    """``$BIGEARTH_STAC_CACHE_DIR``, else the user's cache folder + ``bigearth-stac/index``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":  # pragma: no cover
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":  # pragma: no cover
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "bigearth-stac" / "index"


def identity_key(url: str, size: int, version: str, checksum: str | None) -> str:
    """The cache key of one version of one object (hex sha256 of what identifies it)."""
    text = json.dumps([url, int(size), version, checksum or ""])
    return hashlib.sha256(text.encode()).hexdigest()


# -----------------------------------------------------------------------------------------------
# Byte ranges
# -----------------------------------------------------------------------------------------------


def merge(ranges: Iterable[Range], hole: int = 0) -> list[Range]:
    """Sorted, non-overlapping ranges covering ``ranges``; neighbours closer than ``hole`` joined."""
    out: list[Range] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1] + hole:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def subtract(wanted: Sequence[Range], have: Sequence[Range]) -> list[Range]:
    """The parts of ``wanted`` (merged) not in ``have`` (merged, sorted)."""
    out: list[Range] = []
    starts = [h[0] for h in have]
    for start, end in wanted:
        pos = start
        i = max(0, bisect.bisect_right(starts, pos) - 1)
        while pos < end and i < len(have):
            h0, h1 = have[i]
            if h1 <= pos:
                i += 1
                continue
            if h0 > pos:
                out.append((pos, min(end, h0)))
            pos = max(pos, h1)
            i += 1
        if pos < end:
            out.append((pos, end))
    return out


def covered(ranges: Sequence[Range], start: int, end: int) -> bool:
    """Whether ``[start, end)`` lies inside one of the merged, sorted ``ranges``."""
    if end <= start:
        return True
    i = bisect.bisect_right(ranges, (start, sys.maxsize)) - 1
    return i >= 0 and ranges[i][0] <= start and ranges[i][1] >= end


def split(ranges: Iterable[Range], part: int | None = None) -> list[Range]:
    """Ranges cut into pieces of at most ``part`` bytes (default :data:`PART_BYTES`), so that
    they download concurrently."""
    part = PART_BYTES if part is None else part
    out: list[Range] = []
    for start, end in ranges:
        while end - start > part:
            out.append((start, start + part))
            start += part
        out.append((start, end))
    return out


def total(ranges: Iterable[Range]) -> int:
    return sum(e - s for s, e in ranges)


# -----------------------------------------------------------------------------------------------
# Locks
# -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed) for the ``with`` block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _try_exclusive(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path`` if nobody else holds it, else ``None``."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    if fcntl is None:  # pragma: no cover
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


# -----------------------------------------------------------------------------------------------
# The cache
# -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteObject:
    """What a cache entry needs to know about the object it caches."""

    url: str
    size: int
    version: str
    """ETag or modification time, as the store gives it (part of the identity)."""
    checksum: str | None
    read: RangeReader

    @property
    def key(self) -> str:
        return identity_key(self.url, self.size, self.version, self.checksum)


class IndexCache:
    """A folder of cached index files, at most ``max_bytes`` in all (sum of cached ranges).

    One object per folder and process is enough; several (in threads or processes) may share a
    folder. ``IndexCache()`` uses :func:`default_cache_dir`.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.max_bytes = max_bytes
        self.root = self.directory / FORMAT
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.root / "lock"

    def __repr__(self) -> str:
        return f"IndexCache({str(self.directory)!r}, max_bytes={self.max_bytes})"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    # -- entries -----------------------------------------------------------------------------
    def open(self, obj: RemoteObject) -> CacheEntry:
        """The entry of ``obj`` (created empty if new), held open until closed or collected."""
        return CacheEntry(self, obj)

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        return self.root / f"{key}.data", self.root / f"{key}.json", self.root / f"{key}.use"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with _locked(self._lock_path):
            yield

    def _entries(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for meta in self.root.glob("*.json"):
            try:
                out.append((meta.stem, json.loads(meta.read_text())))
            except (OSError, ValueError):
                continue
        return out

    def usage(self) -> int:
        """Bytes held by the cache (the sum of every entry's cached ranges)."""
        return sum(total(map(tuple, m.get("ranges", []))) for _, m in self._entries())

    def _make_room(self, need: int, keep: str) -> bool:
        """Evict unused entries (least recently used first) until ``need`` more bytes fit.

        Call with :meth:`locked` held. Returns whether the bytes fit.
        """
        entries = self._entries()
        used = sum(total(map(tuple, m.get("ranges", []))) for _, m in entries)
        if used + need <= self.max_bytes:
            return True
        for key, meta in sorted(entries, key=lambda e: e[1].get("used", 0)):
            if key == keep:
                continue
            data, metafile, use = self._paths(key)
            fd = _try_exclusive(use)
            if fd is None:
                continue  # another process reads it
            try:
                for p in (metafile, data, use):
                    with contextlib.suppress(OSError):  # gone already, or held open (Windows)
                        p.unlink()
            finally:
                os.close(fd)
            used -= total(map(tuple, meta.get("ranges", [])))
            log.debug("index cache: evicted %s (%s)", key[:12], meta.get("url"))
            if used + need <= self.max_bytes:
                return True
        return used + need <= self.max_bytes

    def clear(self) -> None:
        """Remove every entry no process has open."""
        with self.locked():
            for key, _ in self._entries():
                data, metafile, use = self._paths(key)
                fd = _try_exclusive(use)
                if fd is None:
                    continue
                try:
                    for p in (metafile, data, use):
                        with contextlib.suppress(OSError):
                            p.unlink()
                finally:
                    os.close(fd)


class CacheEntry:
    """One object's cached bytes: reads served locally where cached, fetched (and kept) where not."""

    def __init__(self, cache: IndexCache, obj: RemoteObject) -> None:
        self.cache = cache
        self.obj = obj
        self.key = obj.key
        self.size = obj.size
        self.data_path, self._meta_path, use_path = cache._paths(self.key)
        self._mutex = threading.Lock()
        self._pending: dict[Range, bytes] = {}
        """Fetched but not stored (the cache is full): served from memory until released."""
        self.fetched_bytes = 0
        self.fetches = 0
        with cache.locked():
            # Pin the entry first (eviction skips pinned entries), then create or load it.
            self._use_fd = os.open(use_path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is not None:
                fcntl.flock(self._use_fd, fcntl.LOCK_SH)
            meta = self._read_meta()
            if meta is None or meta.get("size") != self.size:
                with open(self.data_path, "wb") as fh:
                    fh.truncate(self.size)
                meta = {"url": obj.url, "size": self.size, "version": obj.version, "checksum": obj.checksum,
                        "ranges": []}
            meta["used"] = time.time()
            self._write_meta(meta)
            self._ranges: list[Range] = merge(map(tuple, meta["ranges"]))
        self._fd = os.open(self.data_path, os.O_RDWR)
        self._closed = False

    def __repr__(self) -> str:
        return f"<CacheEntry {self.obj.url} {total(self._ranges):,} of {self.size:,} bytes cached>"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)
            os.close(self._use_fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- metadata ----------------------------------------------------------------------------
    def _read_meta(self) -> dict[str, Any] | None:
        try:
            meta = json.loads(self._meta_path.read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and self.data_path.exists() else None

    def _write_meta(self, meta: dict[str, Any]) -> None:
        tmp = self._meta_path.with_suffix(f".json.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self._meta_path)

    def _refresh(self) -> None:
        """Pick up ranges other processes cached since we last looked."""
        meta = self._read_meta()
        if meta is not None and meta.get("size") == self.size:
            with self._mutex:
                self._ranges = merge([*self._ranges, *map(tuple, meta.get("ranges", []))])

    @property
    def ranges(self) -> list[Range]:
        """The cached byte ranges (merged, sorted)."""
        with self._mutex:
            return list(self._ranges)

    def missing(self, wanted: Iterable[Range]) -> list[Range]:
        with self._mutex:
            return subtract(merge(wanted), self._ranges)

    # -- reads -------------------------------------------------------------------------------
    def ensure(self, wanted: Iterable[Range], hole: int = HOLE_BYTES, concurrency: int = CONCURRENCY) -> int:
        """Make ``wanted`` local: fetch what is not cached in few concurrent requests. Returns bytes fetched."""
        wanted = merge(wanted)
        todo = self.missing(wanted)
        if todo:
            self._refresh()
            todo = self.missing(wanted)
        if not todo:
            return 0
        parts = split(merge(todo, hole))
        if len(parts) == 1 or concurrency <= 1:
            blobs = [self._fetch(*p) for p in parts]
        else:
            with ThreadPoolExecutor(min(concurrency, len(parts)), thread_name_prefix="index-range") as pool:
                blobs = list(pool.map(lambda p: self._fetch(*p), parts))
        self._store(list(zip(parts, blobs, strict=True)))
        return sum(len(b) for b in blobs)

    def _fetch(self, start: int, end: int) -> bytes:
        data = self.obj.read(start, end)
        if len(data) != end - start:
            raise OSError(f"{self.obj.url}: asked bytes {start}-{end - 1}, got {len(data)} bytes "
                          "(has the object changed?)")
        with self._mutex:
            self.fetched_bytes += len(data)
            self.fetches += 1
        return data

    def _store(self, blobs: list[tuple[Range, bytes]]) -> None:
        need = sum(len(b) for _, b in blobs)
        with self.cache.locked():
            fits = self.cache._make_room(need, keep=self.key)
            meta = self._read_meta() if fits else None
            if meta is None or meta.get("size") != self.size:
                fits = False  # evicted meanwhile, or cannot be stored: serve from memory
            if fits:
                for (start, _), data in blobs:
                    os.pwrite(self._fd, data, start)
                assert meta is not None
                ranges = merge([*map(tuple, meta["ranges"]), *(r for r, _ in blobs)])
                meta["ranges"] = [list(r) for r in ranges]
                meta["used"] = time.time()
                self._write_meta(meta)
                with self._mutex:
                    self._ranges = merge([*self._ranges, *ranges])
                return
        log.debug("index cache full (%d bytes): %d bytes of %s kept in memory", self.cache.max_bytes, need,
                  self.obj.url)
        with self._mutex:
            for r, data in blobs:
                self._pending[r] = data

    def release(self) -> None:
        """Forget what was fetched but could not be stored (after the query that needed it)."""
        with self._mutex:
            self._pending.clear()

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``: from disk if cached, from memory if pending, else fetched."""
        end = min(end, self.size)
        if end <= start:
            return b""
        hit, pending = self._lookup(start, end)
        if pending is not None:
            return pending
        if not hit:
            self.ensure([(start, end)], hole=0)
            hit, pending = self._lookup(start, end)
            if pending is not None:
                return pending
            if not hit:  # pragma: no cover - ensure() either stores or keeps pending
                return self._fetch(start, end)
        return os.pread(self._fd, end - start, start)

    def _lookup(self, start: int, end: int) -> tuple[bool, bytes | None]:
        """Whether ``[start, end)`` is on disk; else its bytes if a pending fetch holds them."""
        with self._mutex:
            if covered(self._ranges, start, end):
                return True, None
            for (p0, p1), data in self._pending.items():
                if p0 <= start and end <= p1:
                    return False, data[start - p0:end - p0]
        return False, None

    def complete(self, wanted: Iterable[Range]) -> bool:
        """Whether every byte of ``wanted``, and the Parquet footer, is on local disk (after
        looking at other processes' work): what a reader of :attr:`data_path` (DuckDB) needs.

        The footer counts because such a reader parses it from the file: with the cache full,
        the footer read at open may have been served from memory and never stored.
        """
        wanted = list(wanted)
        for attempt in (0, 1):
            if attempt:
                self._refresh()
            tail = (self.size - 8, self.size)
            if self.size < 8 or self.missing([tail]):
                continue
            length = int.from_bytes(os.pread(self._fd, 4, self.size - 8), "little")
            footer = (max(0, self.size - 8 - length), self.size)
            if not self.missing(merge([*wanted, footer])):
                return True
        return False

    def prime_footer(self) -> None:
        """Fetch the object's tail in one request if nothing of it is cached (a new entry)."""
        if self.size >= 8 and self.missing([(self.size - 8, self.size)]):
            self.ensure([(max(0, self.size - FOOTER_BYTES), self.size)])


# -----------------------------------------------------------------------------------------------
# A pyarrow filesystem over one cache entry
# -----------------------------------------------------------------------------------------------


class _EntryFile(_ReadOnlyFile):
    """A seekable read-only file over a :class:`CacheEntry` (what pyarrow's PythonFile wraps)."""

    def __init__(self, entry: CacheEntry) -> None:
        self._entry = entry
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        return self._entry.size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._entry.size}[whence]
        self._pos = base + offset
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = self._entry.size if n is None or n < 0 else min(self._entry.size, self._pos + n)
        data = self._entry.read(self._pos, end)
        self._pos += len(data)
        return data

class CachedObjectHandler(pafs.FileSystemHandler):
    """A read-only ``pyarrow`` filesystem holding one path: the cached remote object."""

    def __init__(self, path: str, entry: CacheEntry) -> None:
        self.path = path
        self.entry = entry

    def get_type_name(self) -> str:
        return "bigearth-index-cache"

    def equals(self, other: Any) -> bool:
        return other is self

    def normalize_path(self, path: str) -> str:
        return path

    def _check(self, path: str) -> None:
        if path != self.path:
            raise FileNotFoundError(f"{path}: not the cached index {self.path}")

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [pafs.FileInfo(p, pafs.FileType.File, size=self.entry.size) if p == self.path
                else pafs.FileInfo(p, pafs.FileType.NotFound) for p in paths]

    def open_input_file(self, path: str) -> pa.NativeFile:
        self._check(path)
        return pa.PythonFile(_EntryFile(self.entry), mode="r")

    def open_input_stream(self, path: str) -> pa.NativeFile:
        self._check(path)
        return pa.BufferReader(self.entry.read(0, self.entry.size))

    def _read_only(self, *_: Any, **__: Any) -> Any:
        raise OSError("the index cache is read-only through pyarrow")

    get_file_info_selector = create_dir = delete_dir = delete_dir_contents = _read_only
    delete_root_dir_contents = delete_file = move = copy_file = _read_only
    open_output_stream = open_append_stream = _read_only


def cached_filesystem(path: str, entry: CacheEntry) -> pafs.FileSystem:
    """A ``pyarrow`` filesystem whose only file, ``path``, reads through ``entry``."""
    return pafs.PyFileSystem(CachedObjectHandler(path, entry))


__all__ = ["CACHE_ENV", "DEFAULT_MAX_BYTES", "CacheEntry", "IndexCache", "RemoteObject", "cached_filesystem",
           "default_cache_dir", "identity_key"]
