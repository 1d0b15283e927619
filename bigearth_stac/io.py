"""The one I/O layer: bytes by URL, with one retry policy, for every reader of a catalog.

Every reader of a published catalog (catalog and collection documents, the index, the sample
table's COGs in the loader and the xarray view, item JSON for mosaics) turns an href into bytes
here, after :mod:`bigearth_stac.hrefs` has resolved and confined it to the catalog (DESIGN.md #13):

- :func:`open_url` - a whole small object (JSON documents), size-capped;
- :class:`ObjectReader` - whole-object GETs for many threads (the :class:`~bigearth_stac.fetch.Fetcher`
  runs it on a pool), one client per scheme per process;
- :func:`filesystem_for` - a ``pyarrow`` filesystem and path for range reads of Parquet indexes;
- :func:`open_raster` - a COG through GDAL (GTiff driver only).

How to reach S3 (endpoint, credentials, retries, GDAL options) comes from the
:class:`~bigearth_stac.settings.StorageSettings` passed in; nothing keeps a process-wide default.

Retries, in one place. :class:`ObjectReader` reads ``s3://`` objects with obstore (Rust, when
installed: ``settings.reader``) with obstore's own retries off, so every retry of an S3 GET, like
every http(s) retry, is made here by :class:`RetryPolicy`, built from ``settings.max_attempts``.
With boto3 as the reader, botocore retries S3 requests itself (throttling, 5xx, dropped
connections: ``settings.max_attempts`` attempts, configured once in
:meth:`StorageSettings.botocore_config`) and only what it does not retry (an error while
streaming a body) is retried here. Permanent failures (404, 403, a missing file) fail at once.
Every retry is counted (:attr:`ObjectReader.retries`).
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from bigearth_stac.hrefs import (
    S3Location,
    Scope,
    catalog_root,
    parse,
    parse_s3_url,
    resolve_href,
    scheme_of,
)
from bigearth_stac.settings import StorageSettings

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    from rasterio.io import DatasetReader

log = logging.getLogger(__name__)

__all__ = [
    "DOCUMENT_MAX_BYTES",
    "ObjectReader",
    "ObjectTooLarge",
    "RetryPolicy",
    "S3Location",
    "catalog_root",
    "filesystem_for",
    "gdal_path",
    "is_transient",
    "open_raster",
    "open_url",
    "parse_s3_url",
    "resolve_href",
]

T = TypeVar("T")

#: Largest JSON document (catalog, collection, item) a reader accepts: a crafted catalog cannot
#: make a reader allocate more than this for one document.
DOCUMENT_MAX_BYTES = 64 * 2**20

_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
_TRANSIENT_S3_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests",
}  # fmt: skip


class ObjectTooLarge(OSError):
    """An object larger than the reader's cap; names the URL, its size and the cap."""


class HTTPStatusError(OSError):
    """An http(s) response other than 200/206."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status} {reason}")


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried (exponential backoff with full jitter)."""

    attempts: int = 5
    """Attempts per object, the first included."""
    base_delay: float = 0.05
    """Delay before the first retry in seconds; doubles each retry."""
    max_delay: float = 5.0
    """Cap on one delay."""

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> RetryPolicy:
        """The policy of ``settings`` (``max_attempts``)."""
        return cls(attempts=max(1, settings.max_attempts))

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**retry))


def is_transient(exc: BaseException, s3: bool = False) -> bool:
    """Whether a failed GET is worth retrying here.

    ``s3=True`` marks a boto3 S3 request: a ``ClientError`` that reaches us has used up
    botocore's own attempts or is permanent, so only errors while streaming the body are retried.
    obstore's errors reach this function translated (:func:`_from_obstore`): an HTTP status is an
    :class:`HTTPStatusError`, a failed connection or a timeout a ``ConnectionError``.
    """
    if isinstance(exc, HTTPStatusError):
        return exc.status in _TRANSIENT_HTTP
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in _TRANSIENT_HTTP
    if isinstance(exc, urllib.error.URLError):
        return True
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                        ObjectTooLarge, ValueError)):
        return False
    try:
        from botocore import exceptions as bce
    except ImportError:  # pragma: no cover - boto3 is an optional dependency
        bce = None
    if bce is not None:
        if isinstance(exc, bce.ClientError):
            if s3:
                return False
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return err.get("Code") in _TRANSIENT_S3_CODES or status in _TRANSIENT_HTTP
        if isinstance(exc, (bce.ResponseStreamingError, bce.IncompleteReadError, bce.ReadTimeoutError)):
            return True
        if isinstance(exc, bce.BotoCoreError):
            return not s3
    import urllib3.exceptions

    if isinstance(exc, urllib3.exceptions.HTTPError):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def _not_found(url: str, exc: BaseException | str) -> FileNotFoundError:
    return FileNotFoundError(f"{url}: no such object ({exc})")


_STATUS = re.compile(r"status code: (\d{3})( [^:\n]*)?")
_S3_CODE = re.compile(r"<Code>(\w+)</Code>")


def _from_obstore(url: str, exc: Exception) -> Exception:
    """An obstore error as the exception this layer raises: a missing object is a
    ``FileNotFoundError``, refused credentials a ``PermissionError``, an HTTP answer an
    :class:`HTTPStatusError` (with the S3 error code), a failed connection or timeout a
    ``ConnectionError``; each names ``url`` in one line (obstore's messages carry a debug dump)."""
    from obstore import exceptions as oe

    text = str(exc)
    first = text.split("\n", 1)[0].strip()
    if isinstance(exc, FileNotFoundError):
        return _not_found(url, "404")
    if isinstance(exc, (oe.PermissionDeniedError, oe.UnauthenticatedError)):
        return PermissionError(f"{url}: {first}")
    status = _STATUS.search(text)
    if status is not None:
        code = _S3_CODE.search(text)
        reason = (status.group(2) or "").strip() + (f" ({code.group(1)})" if code else "")
        return HTTPStatusError(int(status.group(1)), f"{reason}: {url}")
    if isinstance(exc, (ValueError, oe.InvalidPathError, oe.NotSupportedError, oe.UnknownConfigurationKeyError)):
        return ValueError(f"{url}: {first}")
    return ConnectionError(f"{url}: {first}")


def _obstore_installed() -> bool:
    try:
        import obstore  # noqa: F401
    except ImportError:
        return False
    return True


# obstore runs its requests on one tokio runtime per process, created on first use, whose threads
# do not survive ``fork``: a child forked after its parent used obstore hangs on its first
# request. So a process remembers whether it started the runtime, and a child forked from such a
# process reads S3 with boto3 instead (DataLoader workers use fork by default on Linux).
_OBSTORE_STARTED = False
_OBSTORE_INHERITED = False
_FORK_WARNED = False


def _after_fork_in_child() -> None:
    global _OBSTORE_INHERITED, _FORK_WARNED
    if _OBSTORE_STARTED:
        _OBSTORE_INHERITED = True
        _FORK_WARNED = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _s3_client_kind(choice: str) -> str:
    """``"obstore"`` or ``"boto3"`` for a reader asked for ``choice``, in this process."""
    if choice not in ("auto", "obstore", "boto3"):
        raise ValueError(f"the S3 reader must be 'auto', 'obstore' or 'boto3', got {choice!r}")
    if choice == "boto3":
        return "boto3"
    if not _obstore_installed():
        if choice == "obstore":
            raise ImportError("the S3 reader is 'obstore' but obstore is not installed (pip install obstore)")
        return "boto3"
    if _OBSTORE_INHERITED:
        global _FORK_WARNED
        if not _FORK_WARNED:
            _FORK_WARNED = True
            log.warning("this process was forked after its parent used obstore, whose runtime does not survive "
                        "fork: reading S3 with boto3 here. DataLoader(multiprocessing_context='forkserver') "
                        "keeps obstore in the workers")
        return "boto3"
    return "obstore"


class ObjectReader:
    """Whole-object reads of local files, http(s) and s3, shared by many threads.

    ``s3://`` objects are read with obstore (one ``S3Store`` per bucket, built by
    :meth:`StorageSettings.obstore_s3_store`) or with one boto3 client, as ``s3_client`` (default:
    ``settings.reader``) says; in a process forked after its parent used obstore, always boto3
    (obstore's runtime does not survive ``fork``). http(s) with one urllib3 pool that never follows a redirect (a redirect could lead out
    of the catalog, DESIGN.md #13: obstore's HTTP client follows them, so it is not used there).
    Clients are created on first use in the process that uses them (they do not survive
    pickling or ``fork``: a copy makes its own). Counts requests, bytes and retries (botocore's
    included when boto3 reads).
    """

    def __init__(self, settings: StorageSettings | None = None, pool_size: int = 32,
                 retry: RetryPolicy | None = None, s3_client: str | None = None) -> None:
        self.settings = settings or StorageSettings.from_env()
        self.pool_size = max(1, pool_size)
        self.retry = retry or RetryPolicy.from_settings(self.settings)
        self._s3_choice = s3_client or self.settings.reader
        if self._s3_choice not in ("auto", "obstore", "boto3"):  # the client itself is resolved on first use
            raise ValueError(f"the S3 reader must be 'auto', 'obstore' or 'boto3', got {self._s3_choice!r}")
        self._s3: Any = None
        self._stores: dict[str, Any] = {}
        self._http: Any = None
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.retries = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_s3=None, _stores={}, _http=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- clients -------------------------------------------------------------------------------
    def _s3_client(self) -> Any:
        with self._lock:
            if self._s3 is None:
                wide = replace(self.settings, max_pool_connections=max(self.settings.max_pool_connections,
                                                                       self.pool_size))
                self._s3 = wide.shared_client()
            return self._s3

    def _s3_store(self, bucket: str) -> Any:
        with self._lock:
            store = self._stores.get(bucket)
            if store is None:
                wide = replace(self.settings, max_pool_connections=max(self.settings.max_pool_connections,
                                                                       self.pool_size))
                store = self._stores[bucket] = wide.obstore_s3_store(bucket)
            return store

    def _http_pool(self) -> Any:
        with self._lock:
            if self._http is None:
                import urllib3

                timeout = urllib3.Timeout(connect=self.settings.connect_timeout, read=self.settings.read_timeout)
                self._http = urllib3.PoolManager(maxsize=self.pool_size, retries=False, timeout=timeout)
            return self._http

    def _count(self, nbytes: int = 0, retries: int = 0, request: bool = True) -> None:
        with self._lock:
            self.requests += int(request) + retries
            self.bytes += nbytes
            self.retries += retries

    # -- one attempt ---------------------------------------------------------------------------
    def get_once(self, url: str, max_bytes: int | None = None) -> bytes:
        """One attempt at the whole object at ``url`` (an absolute, already confined location)."""
        loc = parse(url)
        if loc.scheme == "s3":
            return self._get_s3(url, loc.authority, loc.path.lstrip("/"), max_bytes)
        if loc.scheme in ("http", "https"):
            return self._get_http(loc.url, max_bytes)
        return self._get_local(loc.path, max_bytes)

    def _too_large(self, url: str, size: int, max_bytes: int | None) -> None:
        if max_bytes is not None and size > max_bytes:
            raise ObjectTooLarge(f"{url}: {size} bytes, more than the {max_bytes} bytes allowed")

    @property
    def s3_client_kind(self) -> str:
        """Which client reads ``s3://`` objects in this process: ``"obstore"`` or ``"boto3"``."""
        return _s3_client_kind(self._s3_choice)

    def _get_s3(self, url: str, bucket: str, key: str, max_bytes: int | None) -> bytes:
        if self.s3_client_kind == "obstore":
            return self._get_obstore(url, bucket, key, max_bytes)
        client = self._s3_client()
        try:
            resp = client.get_object(Bucket=bucket, Key=key)
        except client.exceptions.NoSuchKey as exc:
            raise _not_found(url, exc) from None
        except client.exceptions.ClientError as exc:
            meta = exc.response.get("ResponseMetadata", {})
            self._count(retries=int(meta.get("RetryAttempts", 0)), request=False)
            if exc.response.get("Error", {}).get("Code", "") in ("404", "NoSuchKey", "NotFound"):
                raise _not_found(url, exc) from None
            raise
        self._count(retries=int(resp.get("ResponseMetadata", {}).get("RetryAttempts", 0)), request=False)
        with resp["Body"] as body:
            self._too_large(url, int(resp.get("ContentLength") or 0), max_bytes)
            return body.read()

    def _get_obstore(self, url: str, bucket: str, key: str, max_bytes: int | None) -> bytes:
        import obstore

        global _OBSTORE_STARTED
        _OBSTORE_STARTED = True  # before the first request starts the runtime
        try:
            store = self._s3_store(bucket)
            # The GIL is released while obstore's runtime sends the request and reads the body.
            result = obstore.get(store, key)
            self._too_large(url, int(result.meta["size"]), max_bytes)
            return bytes(result.bytes())
        except (ObjectTooLarge, PermissionError):
            raise
        except Exception as exc:
            raise _from_obstore(url, exc) from None

    def _get_http(self, url: str, max_bytes: int | None) -> bytes:
        resp = self._http_pool().request("GET", url, preload_content=False, redirect=False)
        try:
            if resp.status == 404:
                raise FileNotFoundError(f"{url}: HTTP 404")
            if resp.status != 200:
                raise HTTPStatusError(resp.status, resp.reason or "")
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit():
                self._too_large(url, int(length), max_bytes)
            data = resp.read(None if max_bytes is None else max_bytes + 1)
            self._too_large(url, len(data), max_bytes)
            return data
        finally:
            resp.release_conn()

    def _get_local(self, path: str, max_bytes: int | None) -> bytes:
        try:
            with open(path, "rb") as fh:
                if max_bytes is not None:
                    self._too_large(path, os.fstat(fh.fileno()).st_size, max_bytes)
                return fh.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None

    def get_file(self, path: str, confine: Callable[[str], None] | None = None) -> bytes:
        """A whole local file, counted as one request; not retried (a local error is not transient).

        ``confine`` is called with the real path of the file as opened (symlinks resolved by the
        kernel: what is read is what was checked) before a byte is read, and may raise.
        """
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None
        with open(fd, "rb", closefd=True) as fh:
            if confine is not None:
                confine(_opened_path(fd, path))
            data = fh.read()
        self._count(len(data))
        return data

    # -- with retries --------------------------------------------------------------------------
    def get(self, url: str, max_bytes: int | None = None) -> bytes:
        """The whole object at ``url``, retrying transient failures under :attr:`retry`."""
        s3 = self.s3_client_kind == "boto3" and scheme_of(url) == "s3"  # botocore retried already
        attempt = 0
        while True:
            attempt += 1
            try:
                data = self.get_once(url, max_bytes)
            except Exception as exc:
                if attempt >= self.retry.attempts or not is_transient(exc, s3=s3):
                    exc.attempts = attempt  # type: ignore[attr-defined]
                    self._count()  # the failed last attempt was a request too
                    raise
                delay = self.retry.delay(attempt - 1)
                log.debug("retrying %s in %.2fs after %s", url, delay, exc)
                self._count(retries=1, request=False)
                time.sleep(delay)
                continue
            self._count(len(data))
            return data


def _opened_path(fd: int, path: str) -> str:
    """The real path of the file open as ``fd`` (Linux: one ``readlink`` of ``/proc/self/fd``;
    elsewhere ``realpath(path)``, one ``lstat`` per path component)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


_READERS: dict[tuple[int, str], ObjectReader] = {}
_READERS_LOCK = threading.Lock()


def _shared_reader(settings: StorageSettings) -> ObjectReader:
    key = (os.getpid(), repr(settings))
    with _READERS_LOCK:
        reader = _READERS.get(key)
        if reader is None:
            # boto3 for small documents: obstore's runtime must not start in a process that may
            # later fork DataLoader workers (it does not survive fork).
            reader = _READERS[key] = ObjectReader(settings, pool_size=8, s3_client="boto3")
        return reader


def open_url(url: str, settings: StorageSettings | None = None, max_bytes: int | None = DOCUMENT_MAX_BYTES,
             scope: Scope | None = None) -> bytes:
    """The whole content of a local file, an ``http(s)://`` URL or an ``s3://`` object.

    ``scope``: refuse ``url`` unless it lies inside it (symlinks of local files resolved).
    Missing objects raise ``FileNotFoundError`` naming the URL; objects over ``max_bytes``
    :class:`ObjectTooLarge`; unsupported schemes :class:`~bigearth_stac.hrefs.HrefError`.
    """
    settings = settings or StorageSettings.from_env()
    loc = parse(url)
    if scope is not None:
        scope.check(loc.url)
        if loc.scheme == "file":
            scope.check_local(loc.path)
    reader = _shared_reader(settings)
    try:
        return reader.get(loc.url, max_bytes)
    except (FileNotFoundError, ObjectTooLarge, ValueError):
        raise
    except Exception as exc:
        raise OSError(f"{loc.url}: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# pyarrow filesystems (range reads of the index)
# ---------------------------------------------------------------------------------------------


def filesystem_for(url: str, settings: StorageSettings | None = None) -> tuple[pafs.FileSystem, str]:
    """The ``pyarrow`` filesystem that reads ``url`` with range requests, and ``url``'s path in it."""
    import pyarrow.fs as pafs

    from bigearth_stac._indexfs import HttpRangeHandler

    loc = parse(url)
    settings = settings or StorageSettings.from_env()
    if loc.scheme == "s3":
        return settings.pyarrow_filesystem(), loc.authority + loc.path
    if loc.scheme in ("http", "https"):
        handler = HttpRangeHandler(f"{loc.scheme}://{loc.authority}", timeout=settings.read_timeout,
                                   retry=RetryPolicy.from_settings(settings))
        return pafs.PyFileSystem(handler), loc.path
    return pafs.LocalFileSystem(), loc.path


def path_in_filesystem(url: str) -> str:
    """The path of ``url`` inside the filesystem :func:`filesystem_for` gives for it."""
    loc = parse(url)
    return loc.authority + loc.path if loc.scheme == "s3" else loc.path


# ---------------------------------------------------------------------------------------------
# Rasters through GDAL
# ---------------------------------------------------------------------------------------------


def gdal_path(url: str) -> str:
    """The GDAL path of a COG URL: ``s3://b/k`` -> ``/vsis3/b/k``, ``http(s)://`` -> ``/vsicurl/``.

    GDAL virtual paths (``/vsi...``) and other schemes are refused.
    """
    loc = parse(url)
    if loc.scheme == "s3":
        return f"/vsis3/{loc.authority}{loc.path}"
    if loc.scheme in ("http", "https"):
        return f"/vsicurl/{loc.url}"
    return loc.path


@contextmanager
def open_raster(url: str, settings: StorageSettings | None = None) -> Iterator[DatasetReader]:
    """Open a COG with rasterio, allowing only GDAL's GTiff driver, under the settings' GDAL env.

    The dataset is valid inside the ``with`` block. A file in any other format (a VRT, a PNG, ...)
    raises ``rasterio.errors.RasterioIOError`` even if it is named ``.tif``.
    """
    import rasterio

    settings = settings or StorageSettings.from_env()
    path = gdal_path(url)
    with settings.rasterio_env(), rasterio.open(path, driver="GTiff") as ds:
        yield ds


def with_retries(fn: Callable[[], T], policy: RetryPolicy, what: str) -> T:
    """``fn()``, retried under ``policy`` while it fails transiently (http range reads)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            if attempt >= policy.attempts or not is_transient(exc):
                raise
            log.debug("retrying %s after %s", what, exc)
            time.sleep(policy.delay(attempt - 1))
