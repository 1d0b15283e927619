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


class _HttpRangeFile(_ReadOnlyFile):
    """A seekable, read-only view of an HTTP object; each ``read`` is one ``Range`` GET."""

    def __init__(self, url: str, size: int, timeout: float, retry: Any = None) -> None:
        self.url = url
        self._retry = retry
        self._size = size
        self._pos = 0
        self._timeout = timeout
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
        req = urllib.request.Request(self.url, headers={"Range": f"bytes={start}-{end - 1}"})

        def get() -> tuple[int, bytes]:
            with _NO_REDIRECTS.open(req, timeout=self._timeout) as resp:
                return resp.status, resp.read()

        status, body = _retrying(get, self._retry, self.url)
        if status == 206:
            return body[: end - start]
        log.warning("%s ignores Range requests; read the whole object (%d bytes)", self.url, len(body))
        self._whole = body
        return body[start:end]


class HttpRangeHandler(pafs.FileSystemHandler):
    """A read-only ``pyarrow`` filesystem over one http(s) origin; paths are ``/path`` on it."""

    def __init__(self, origin: str, timeout: float = 60.0, retry: Any = None) -> None:
        self.origin = origin.rstrip("/")
        self.timeout = timeout
        self.retry = retry
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HttpRangeHandler) and other.origin == self.origin

    def __hash__(self) -> int:
        return hash(self.origin)

    def _url(self, path: str) -> str:
        return self.origin + "/" + path.lstrip("/")

    def _size(self, path: str) -> int:
        with self._lock:
            if path in self._sizes:
                return self._sizes[path]
        req = urllib.request.Request(self._url(path), method="HEAD")

        def head() -> int:
            with _NO_REDIRECTS.open(req, timeout=self.timeout) as resp:
                return int(resp.headers["Content-Length"])

        try:
            size = _retrying(head, self.retry, self._url(path))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise FileNotFoundError(self._url(path)) from exc
            raise OSError(f"HEAD {self._url(path)}: HTTP {exc.code}") from exc
        with self._lock:
            self._sizes[path] = size
        return size

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
        return pa.PythonFile(_HttpRangeFile(self._url(path), self._size(path), self.timeout, self.retry), mode="r")

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
