"""Where an index lives: a URL -> (pyarrow filesystem, path), for local paths, http(s) and s3.

Remote indexes are read with range requests only (the Parquet footer, then the column chunks a
query needs), through a ``pyarrow.fs`` filesystem that a ``pyarrow.dataset`` and DuckDB can scan
(DESIGN.md #4: no DuckDB extension, no fsspec HTTP behind DuckDB):

- ``s3://bucket/key``: ``pyarrow.fs.S3FileSystem`` built from :class:`StorageSettings` (in
  pyarrow's wheel; nothing downloads at run time).
- ``http(s)://``: a small range-request reader (stdlib ``urllib``) behind ``pyarrow.fs.PyFileSystem``.
- anything else: the local filesystem.

:func:`counting_filesystem` wraps any of them and counts bytes and reads, for tests and benchmarks.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from bigearth_stac.settings import StorageSettings

log = logging.getLogger(__name__)

SCHEMES = ("file", "http", "https", "s3")


def split_url(url: str) -> tuple[str, str]:
    """``(scheme, rest)``; a plain path has scheme ``file``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "file", url
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported URL scheme {scheme!r} in {url!r}; use a local path, file://, http(s):// or s3://")
    return scheme, rest


def _s3_filesystem(settings: StorageSettings) -> pafs.FileSystem:
    build = getattr(settings, "pyarrow_filesystem", None)
    if build is not None:
        return build()
    kwargs: dict[str, Any] = {"anonymous": settings.anonymous, "region": settings.region or "us-east-1"}
    if settings.endpoint_url:
        scheme, _, host = settings.endpoint_url.partition("://")
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https")
    return pafs.S3FileSystem(**kwargs)


def filesystem_for(url: str, settings: StorageSettings | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem that reads ``url`` and the path of ``url`` inside it."""
    scheme, rest = split_url(url)
    if scheme == "s3":
        return _s3_filesystem(settings or StorageSettings.from_env()), rest
    if scheme in ("http", "https"):
        host, _, path = rest.partition("/")
        return pafs.PyFileSystem(HttpRangeHandler(f"{scheme}://{host}")), "/" + path
    return pafs.LocalFileSystem(), os.path.abspath(rest)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    """The whole object at ``path`` (small documents: catalog and collection JSON)."""
    with fs.open_input_stream(path) as fh:
        return fh.read()


# -----------------------------------------------------------------------------------------------
# http(s): range requests
# -----------------------------------------------------------------------------------------------


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

    def __init__(self, url: str, size: int, timeout: float) -> None:
        self.url = url
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
        with urllib.request.urlopen(req, timeout=self._timeout) as resp:
            body = resp.read()
            if resp.status == 206:
                return body
        log.warning("%s ignores Range requests; read the whole object (%d bytes)", self.url, len(body))
        self._whole = body
        return body[start:end]


class HttpRangeHandler(pafs.FileSystemHandler):
    """A read-only ``pyarrow`` filesystem over one http(s) origin; paths are ``/path`` on it."""

    def __init__(self, origin: str, timeout: float = 60.0) -> None:
        self.origin = origin.rstrip("/")
        self.timeout = timeout
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
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                size = int(resp.headers["Content-Length"])
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
        return pa.PythonFile(_HttpRangeFile(self._url(path), self._size(path), self.timeout), mode="r")

    def open_input_stream(self, path: str) -> pa.NativeFile:
        url = self._url(path)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                return pa.BufferReader(resp.read())
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
