"""Whole-object GETs, many in flight: local files, http(s) and s3.

A :class:`Fetcher` owns a thread pool (``max_in_flight`` threads) and one client per scheme,
shared by its threads (a boto3 client and a urllib3 pool are thread-safe). Objects are small
(a COG of a patch is 1-100 KB), so each is read whole in one request: ranged reads cost more
round trips than they save (DESIGN.md #6). Transient failures (connection errors, timeouts,
HTTP 429 and 5xx, throttling) are retried with exponential backoff and jitter; permanent ones
(404, 403, a missing file) fail at once. Every error names the href, and the loader adds the
sample id.

A Fetcher is created in the process that uses it (a DataLoader worker, a Dask task): it holds
threads and sockets, which do not survive pickling or ``fork``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from bigearth_stac.settings import StorageSettings

log = logging.getLogger(__name__)

__all__ = ["FetchError", "Fetcher", "RetryPolicy", "split_s3_url"]

T = TypeVar("T")

_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
_TRANSIENT_S3_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests",
}  # fmt: skip


class FetchError(OSError):
    """An object that could not be read; names the href (and the sample id when known)."""

    def __init__(self, href: str, cause: BaseException, attempts: int, sample_id: str | None = None) -> None:
        self.href = href
        self.cause = cause
        self.attempts = attempts
        self.sample_id = sample_id
        who = f"sample {sample_id!r}: " if sample_id else ""
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{who}could not read {href}{tries}: {type(cause).__name__}: {cause}")

    def for_sample(self, sample_id: str) -> FetchError:
        """The same error, naming the sample."""
        return FetchError(self.href, self.cause, self.attempts, sample_id)


class _HTTPStatusError(OSError):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status} {reason}")


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried."""

    attempts: int = 5
    """Attempts per object, the first included."""
    base_delay: float = 0.05
    """Delay before the first retry in seconds; doubles each retry, with full jitter."""
    max_delay: float = 5.0
    """Cap on one delay."""

    def delay(self, retry: int) -> float:
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**retry))


def is_transient(exc: BaseException, s3: bool = False) -> bool:
    """Whether a failed GET is worth retrying (here, on top of the client's own retries).

    boto3 already retries throttling, 5xx and connection errors of a request (``settings.
    max_attempts`` in all), so for s3 only errors while streaming the body are retried here; a
    ``ClientError`` that reaches us has used up botocore's attempts or is permanent (404, 403).
    """
    if isinstance(exc, _HTTPStatusError):
        return exc.status in _TRANSIENT_HTTP
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
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
        streaming = (bce.ResponseStreamingError, bce.IncompleteReadError, bce.ReadTimeoutError)
        if isinstance(exc, streaming):
            return True
        if isinstance(exc, bce.BotoCoreError):
            return not s3
    import urllib3.exceptions

    if isinstance(exc, urllib3.exceptions.HTTPError):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise ValueError(f"not an s3://bucket/key URL: {url!r}")
    return bucket, key


def _boto3_client(settings: StorageSettings, pool: int) -> Any:
    """A boto3 S3 client with a connection pool as large as the number of requests in flight."""
    wide = replace(settings, max_pool_connections=max(settings.max_pool_connections, pool))
    make = getattr(wide, "boto3_client", None)
    if callable(make):
        return make()
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    session = boto3.session.Session(profile_name=wide.profile) if wide.profile else boto3.session.Session()
    config = Config(
        retries={"max_attempts": wide.max_attempts, "mode": wide.retry_mode},
        max_pool_connections=wide.max_pool_connections,
        request_checksum_calculation=wide.checksums,
        response_checksum_validation=wide.checksums,
        s3={"addressing_style": "path"} if wide.endpoint_url else None,
        signature_version=UNSIGNED if wide.anonymous else None,
    )
    return session.client("s3", endpoint_url=wide.endpoint_url, region_name=wide.region or "us-east-1", config=config)


class Fetcher:
    """Concurrent whole-object reads with retries; counts requests, bytes and retries."""

    def __init__(
        self,
        settings: StorageSettings | None = None,
        max_in_flight: int = 32,
        retry: RetryPolicy | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.settings = settings or StorageSettings.from_env()
        self.max_in_flight = max_in_flight
        self.retry = retry or RetryPolicy(attempts=max(1, self.settings.max_attempts))
        self._pool: ThreadPoolExecutor | None = None
        self._s3: Any = None
        self._http: Any = None
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.retries = 0

    # -- clients, created on first use in the process that uses them ---------------------------
    def _s3_client(self) -> Any:
        with self._lock:
            if self._s3 is None:
                self._s3 = _boto3_client(self.settings, self.max_in_flight)
            return self._s3

    def _http_pool(self) -> Any:
        with self._lock:
            if self._http is None:
                import urllib3

                self._http = urllib3.PoolManager(maxsize=self.max_in_flight, retries=False)
            return self._http

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="bigearth-fetch")
        return self._pool

    # -- one GET -------------------------------------------------------------------------------
    def _get_once(self, href: str) -> bytes:
        if href.startswith("s3://"):
            bucket, key = split_s3_url(href)
            resp = self._s3_client().get_object(Bucket=bucket, Key=key)
            with resp["Body"] as body:
                return body.read()
        if href.startswith(("http://", "https://")):
            resp = self._http_pool().request("GET", href, preload_content=True)
            if resp.status != 200:
                raise _HTTPStatusError(resp.status, resp.reason or "")
            return resp.data
        if "://" in href and not href.startswith("file://"):
            raise ValueError(f"unsupported URL scheme in {href!r}: use a path, file://, http(s):// or s3://")
        return Path(href.removeprefix("file://")).read_bytes()

    def get(self, href: str) -> bytes:
        """The whole object at ``href``, retrying transient failures; :class:`FetchError` else."""
        attempt = 0
        while True:
            attempt += 1
            try:
                data = self._get_once(href)
            except Exception as exc:
                if attempt >= self.retry.attempts or not is_transient(exc, s3=href.startswith("s3://")):
                    raise FetchError(href, exc, attempt) from exc
                delay = self.retry.delay(attempt - 1)
                log.debug("retrying %s in %.2fs after %s", href, delay, exc)
                with self._lock:
                    self.requests += 1
                    self.retries += 1
                time.sleep(delay)
                continue
            with self._lock:
                self.requests += 1
                self.bytes += len(data)
            return data

    # -- many in flight ------------------------------------------------------------------------
    def submit(self, href: str, then: Callable[[bytes], T] | None = None) -> Future[Any]:
        """Fetch ``href`` on the pool; ``then`` (e.g. a decoder) runs on the same thread."""
        if then is None:
            return self._executor().submit(self.get, href)

        def job() -> T:
            data = self.get(href)
            try:
                return then(data)
            except Exception as exc:  # a corrupt object: name it like a failed read
                raise FetchError(href, exc, 1) from exc

        return self._executor().submit(job)

    def close(self) -> None:
        """Stop the threads (pending fetches are cancelled)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Threads, sockets and clients stay behind; the copy makes its own on first use.
        state = self.__dict__.copy()
        state.update(_pool=None, _s3=None, _http=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
