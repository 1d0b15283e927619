"""Whole-object GETs, many in flight: local files, http(s) and s3.

A :class:`Fetcher` owns a thread pool (``max_in_flight`` threads) and an
:class:`~bigearth_stac.io.ObjectReader` (the I/O layer: one client per scheme, shared by the
threads, and the one retry policy). Objects are small
(a COG of a patch is 1-100 KB), so each is read whole in one request: ranged reads cost more
round trips than they save (DESIGN.md #6). Transient failures (connection errors, timeouts,
HTTP 429 and 5xx, throttling) are retried with exponential backoff and jitter; permanent ones
(404, 403, a missing file) fail at once. Every error names the href, and the loader adds the
sample id.

A Fetcher is created in the process that uses it (a DataLoader worker, a Dask task): it holds
threads and sockets, which do not survive pickling or ``fork``.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from bigearth_stac.hrefs import HrefError, Scope, parse
from bigearth_stac.io import ObjectReader, RetryPolicy, is_transient
from bigearth_stac.settings import StorageSettings

log = logging.getLogger(__name__)

__all__ = ["FetchError", "Fetcher", "RetryPolicy", "is_transient"]

T = TypeVar("T")


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


class Fetcher:
    """Concurrent whole-object reads through the I/O layer; counts requests, bytes and retries.

    ``scope``: the roots reads must stay in (a sample table built from a catalog carries its
    catalog's scope); an href outside it fails with a :class:`FetchError` whose cause is an
    :class:`~bigearth_stac.hrefs.HrefError`, before any request is sent.
    """

    def __init__(
        self,
        settings: StorageSettings | None = None,
        max_in_flight: int = 32,
        retry: RetryPolicy | None = None,
        scope: Scope | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.settings = settings or StorageSettings.from_env()
        self.max_in_flight = max_in_flight
        self.scope = scope
        self.reader = ObjectReader(self.settings, pool_size=max_in_flight, retry=retry)
        self._pool: ThreadPoolExecutor | None = None

    @property
    def retry(self) -> RetryPolicy:
        return self.reader.retry

    @property
    def requests(self) -> int:
        """Requests sent, retries (botocore's included) counted."""
        return self.reader.requests

    @property
    def bytes(self) -> int:
        return self.reader.bytes

    @property
    def retries(self) -> int:
        """Retried requests, botocore's own retries of S3 requests included."""
        return self.reader.retries

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="bigearth-fetch")
        return self._pool

    def _confined(self, href: str) -> str:
        if self.scope is None:
            return parse(href).url
        url = self.scope.check(href)
        if parse(url).scheme == "file":
            url = self.scope.check_local(url)
        return url

    def get(self, href: str) -> builtins.bytes:
        """The whole object at ``href``, retrying transient failures; :class:`FetchError` else."""
        try:
            return self.reader.get(self._confined(href))
        except HrefError as exc:
            raise FetchError(href, exc, 1) from exc
        except Exception as exc:
            raise FetchError(href, exc, getattr(exc, "attempts", 1)) from exc

    def submit(self, href: str, then: Callable[[builtins.bytes], T] | None = None) -> Future[Any]:
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
        # Threads stay behind; the reader drops its clients and the copy makes its own.
        state = self.__dict__.copy()
        state["_pool"] = None
        return state
