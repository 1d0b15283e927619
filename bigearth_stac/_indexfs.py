"""pyarrow filesystems the I/O layer builds on: range reads over http(s), and read counting.

Remote indexes are read with range requests only (the Parquet footer, then the column chunks a
query needs), through a ``pyarrow.fs`` filesystem that a ``pyarrow.dataset`` and DuckDB can scan
(DESIGN.md #4: no DuckDB extension, no fsspec HTTP behind DuckDB). Which filesystem serves a URL
is decided in one place, :func:`bigearth_stac.io.filesystem_for`; s3 uses pyarrow's own
``S3FileSystem`` (:meth:`StorageSettings.pyarrow_filesystem`), http(s) the
:class:`HttpRangeHandler` below (stdlib ``urllib``, retried under the settings' policy).

:func:`counting_filesystem` wraps any of them and counts bytes and reads, for tests and benchmarks.
"""

from __future__ import annotations

import io
import logging
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

log = logging.getLogger(__name__)

# -----------------------------------------------------------------------------------------------
# http(s): range requests
# -----------------------------------------------------------------------------------------------


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead out of the catalog: answer it as the error it is for us."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused", headers, fp)


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)


def _retrying(fn: Any, retry: Any, what: str) -> Any:
    if retry is None:
        return fn()
    from bigearth_stac.io import with_retries

    return with_retries(fn, retry, what)


class _ReadOnlyFile(io.RawIOBase):
    """``readall``/``readinto`` in terms of a subclass's ``read`` (what pyarrow's PythonFile calls)."""

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class ObjectChanged(OSError):
    """A remote object answered with another size or ETag than when it was opened."""


def _range_get(url: str, start: int, end: int, size: int, etag: str | None, timeout: float,
               retry: Any) -> tuple[bytes, bool]:
    """Bytes ``[start, end)`` of ``url`` by one ``Range`` GET (thread-safe), and whether the
    server sent the whole object instead (it ignores ``Range``).

    The answer must be of the object that was opened: a ``Content-Range`` total or an ``ETag``
    that differs raises :class:`ObjectChanged` rather than mixing bytes of two versions.
    """
    req = urllib.request.Request(url, headers={"Range": f"bytes={start}-{end - 1}"})

    def get() -> tuple[int, Any, bytes]:
        with _NO_REDIRECTS.open(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()

    status, headers, body = _retrying(get, retry, url)
    tag = headers.get("ETag")
    if etag is not None and tag is not None and tag != etag:
        raise ObjectChanged(f"{url} changed while it was read (ETag {etag} -> {tag})")
    if status == 206:
        total = (headers.get("Content-Range") or "").rpartition("/")[2]
        if total.isdigit() and int(total) != size:
            raise ObjectChanged(f"{url} changed while it was read ({size} -> {total} bytes)")
        return body[: end - start], False
    if len(body) != size:
        raise ObjectChanged(f"{url} changed while it was read ({size} -> {len(body)} bytes)")
    return body, True


class _HttpRangeFile(_ReadOnlyFile):
    """A seekable, read-only view of an HTTP object; each ``read`` is one ``Range`` GET."""

    def __init__(self, url: str, size: int, timeout: float, retry: Any = None, etag: str | None = None) -> None:
        self.url = url
        self._retry = retry
        self._size = size
        self._pos = 0
        self._timeout = timeout
        self._etag = etag
        self._whole: bytes | None = None  # servers that ignore Range: keep the body we got

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = self._size if n is None or n < 0 else min(self._size, self._pos + n)
        if end <= self._pos:
            return b""
        data = self._range(self._pos, end)
        self._pos += len(data)
        return data

    def _range(self, start: int, end: int) -> bytes:
        if self._whole is not None:
            return self._whole[start:end]
        body, whole = _range_get(self.url, start, end, self._size, self._etag, self._timeout, self._retry)
        if not whole:
            return body
        log.warning("%s ignores Range requests; read the whole object (%d bytes)", self.url, len(body))
        self._whole = body
        return body[start:end]


class HttpRangeHandler(pafs.FileSystemHandler):
    """A read-only ``pyarrow`` filesystem over one http(s) origin; paths are ``/path`` on it."""

    def __init__(self, origin: str, timeout: float = 60.0, retry: Any = None) -> None:
        self.origin = origin.rstrip("/")
        self.timeout = timeout
        self.retry = retry
        self._heads: dict[str, tuple[int, str | None, str | None]] = {}
        """path -> (size, ETag, Last-Modified) from its HEAD, once per handler."""
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # picklable (DataLoader workers): a fresh lock there
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HttpRangeHandler) and other.origin == self.origin

    def __hash__(self) -> int:
        return hash(self.origin)

    def _url(self, path: str) -> str:
        return self.origin + "/" + path.lstrip("/")

    def _head(self, path: str) -> tuple[int, str | None, str | None]:
        with self._lock:
            if path in self._heads:
                return self._heads[path]
        req = urllib.request.Request(self._url(path), method="HEAD")

        def head() -> tuple[int, str | None, str | None]:
            with _NO_REDIRECTS.open(req, timeout=self.timeout) as resp:
                return int(resp.headers["Content-Length"]), resp.headers.get("ETag"), resp.headers.get("Last-Modified")

        try:
            found = _retrying(head, self.retry, self._url(path))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise FileNotFoundError(self._url(path)) from exc
            raise OSError(f"HEAD {self._url(path)}: HTTP {exc.code}") from exc
        with self._lock:
            self._heads[path] = found
        return found

    def _size(self, path: str) -> int:
        return self._head(path)[0]

    def remote_object(self, path: str) -> tuple[int, str, Any]:
        """``(size, version, read)`` of ``path`` (see :func:`remote_object`): one HEAD."""
        size, etag, modified = self._head(path)
        return size, f"etag:{etag}" if etag else f"modified:{modified or ''}", (
            lambda start, end: self.read_range(path, start, end))

    def read_range(self, path: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``path`` by one ``Range`` GET; thread-safe (concurrent fetches)."""
        size, etag, _ = self._head(path)
        body, whole = _range_get(self._url(path), start, end, size, etag, self.timeout, self.retry)
        return body[start:end] if whole else body

    # -- the parts pyarrow needs to read ---------------------------------------------------------
    def get_type_name(self) -> str:
        return "http-range"

    def equals(self, other: Any) -> bool:
        return self == other

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        infos = []
        for p in paths:
            try:
                infos.append(pafs.FileInfo(p, pafs.FileType.File, size=self._size(p)))
            except FileNotFoundError:
                infos.append(pafs.FileInfo(p, pafs.FileType.NotFound))
        return infos

    def open_input_file(self, path: str) -> pa.NativeFile:
        size, etag, _ = self._head(path)
        return pa.PythonFile(_HttpRangeFile(self._url(path), size, self.timeout, self.retry, etag), mode="r")

    def open_input_stream(self, path: str) -> pa.NativeFile:
        url = self._url(path)

        def get() -> bytes:
            with _NO_REDIRECTS.open(url, timeout=self.timeout) as resp:
                return resp.read()

        try:
            return pa.BufferReader(_retrying(get, self.retry, url))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise FileNotFoundError(url) from exc
            raise OSError(f"GET {url}: HTTP {exc.code}") from exc

    # -- read-only: everything else is refused ---------------------------------------------------
    def _read_only(self, *_: Any, **__: Any) -> Any:
        raise OSError(f"{self.origin} is read-only through this client")

    get_file_info_selector = create_dir = delete_dir = delete_dir_contents = _read_only
    delete_root_dir_contents = delete_file = move = copy_file = _read_only
    open_output_stream = open_append_stream = _read_only


# -----------------------------------------------------------------------------------------------
# Any filesystem: the identity check and thread-safe range reads (what the index cache needs)
# -----------------------------------------------------------------------------------------------


def remote_object(fs: pafs.FileSystem, path: str) -> tuple[int, str, Any]:
    """``(size, version, read)`` of ``path`` in ``fs``: the identity check of the index cache (one
    HEAD on http(s) and s3) and a thread-safe ``read(start, end) -> bytes`` (one range request per
    call) that reuses what the check opened.

    The version is the ETag where the store sends one, else the modification time: with the
    size, what tells one version of a published object from the next.
    """
    handler = getattr(fs, "handler", None)
    if handler is not None and hasattr(handler, "remote_object"):
        return handler.remote_object(path)
    try:
        f = fs.open_input_file(path)  # s3: one HEAD, whose answer the file keeps
    except FileNotFoundError:
        raise
    meta = {(k.decode() if isinstance(k, bytes) else k).lower(): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (f.metadata() or {}).items()}
    if meta.get("etag"):
        version = f"etag:{meta['etag']}"
    elif meta.get("last-modified"):
        version = f"modified:{meta['last-modified']}"
    else:  # local files and stores that say nothing: the modification time
        version = f"mtime:{fs.get_file_info(path).mtime_ns}"

    def read(start: int, end: int) -> bytes:
        return f.read_at(end - start, start)  # Arrow's ReadAt is thread-safe

    return int(f.size()), version, read


# -----------------------------------------------------------------------------------------------
# Counting bytes read (tests, benchmarks)
# -----------------------------------------------------------------------------------------------


@dataclass
class ReadStats:
    """Bytes and read calls through a :class:`CountingFileSystem` (thread-safe updates)."""

    bytes: int = 0
    reads: int = 0
    opens: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            self.reads += 1

    def reset(self) -> None:
        with self._lock:
            self.bytes = self.reads = self.opens = 0


class _CountingReader(_ReadOnlyFile):
    def __init__(self, inner: pa.NativeFile, stats: ReadStats) -> None:
        self._inner = inner
        self._stats = stats

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        return self._inner.size()

    def tell(self) -> int:
        return self._inner.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._inner.seek(offset, whence)

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read() if n is None or n < 0 else self._inner.read(n)
        self._stats.add(len(data))
        return data

    def close(self) -> None:
        self._inner.close()
        super().close()


class _CountingHandler(pafs.FileSystemHandler):
    def __init__(self, inner: pafs.FileSystem, stats: ReadStats) -> None:
        self.inner = inner
        self.stats = stats

    def get_type_name(self) -> str:
        return f"counting+{self.inner.type_name}"

    def equals(self, other: Any) -> bool:
        return other is self

    def normalize_path(self, path: str) -> str:
        return self.inner.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.inner.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.inner.get_file_info(selector)

    def open_input_file(self, path: str) -> pa.NativeFile:
        self.stats.opens += 1
        return pa.PythonFile(_CountingReader(self.inner.open_input_file(path), self.stats), mode="r")

    def remote_object(self, path: str) -> tuple[int, str, Any]:
        size, version, inner = remote_object(self.inner, path)

        def read(start: int, end: int) -> bytes:
            data = inner(start, end)
            self.stats.add(len(data))
            return data

        return size, version, read

    def open_input_stream(self, path: str) -> pa.NativeFile:
        self.stats.opens += 1
        data = self.inner.open_input_stream(path).read()
        self.stats.add(len(data))
        return pa.BufferReader(data)

    def _read_only(self, *_: Any, **__: Any) -> Any:
        raise OSError("a counting filesystem is read-only")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
    delete_file = move = copy_file = open_output_stream = open_append_stream = _read_only


def counting_filesystem(inner: pafs.FileSystem) -> tuple[pafs.FileSystem, ReadStats]:
    """A filesystem that forwards reads to ``inner``, and the :class:`ReadStats` it counts into."""
    stats = ReadStats()
    return pafs.PyFileSystem(_CountingHandler(inner, stats)), stats
