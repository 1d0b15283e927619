"""Whole-object GETs, many in flight: local files, http(s) and s3; decoding on a few threads.

A :class:`Fetcher` owns an :class:`~bigearth_stac.io.ObjectReader` (the I/O layer: one client
per scheme, shared by the threads, and the one retry policy) and two kinds of threads:

- remote objects: ``max_in_flight`` threads, each mostly waiting for its GET (the GIL is
  released meanwhile); what follows a GET (``then``, e.g. a decoder) runs on the same thread but
  at most ``decode_threads`` at a time, so 32 requests in flight do not mean 32 threads
  competing for the GIL and the cores;
- local files: ``decode_threads`` threads that read and decode (a read from the page cache is
  CPU work like decoding: more threads than cores only add GIL hand-offs). :meth:`Fetcher.submit_each`
  reads and decodes a sample's local files in one job, so a sample costs one hand-off, not four.

With ``decode_threads=0``, :meth:`Fetcher.submit_each` decodes (and reads local files) on the
thread that asks for the result, only the remote GETs running ahead: right for a process that
has one core to itself (a DataLoader worker among as many workers as cores), where a decoding
thread would only trade the GIL back and forth with the thread waiting for it.

Objects are small (a COG of a patch is 1-100 KB), so each is read whole in one request: ranged
reads cost more round trips than they save (DESIGN.md #6). Every href is checked against the
scope before it is read; a local file's symlinks are checked on the file as opened (its real
path, one ``readlink`` of ``/proc/self/fd``), so what is read is what was checked. Transient failures (connection errors, timeouts,
HTTP 429 and 5xx, throttling) are retried with exponential backoff and jitter; permanent ones
(404, 403, a missing file) fail at once. Every error names the href, and the loader adds the
sample id.

A Fetcher is created in the process that uses it (a DataLoader worker, a Dask task): it holds
threads and sockets, which do not survive pickling or ``fork``.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from bigearth_stac.hrefs import HrefError, Scope, parse
from bigearth_stac.io import ObjectReader, RetryPolicy, is_transient
from bigearth_stac.settings import StorageSettings

log = logging.getLogger(__name__)

__all__ = ["FetchError", "Fetcher", "RetryPolicy", "available_cores", "is_transient"]

_REMOTE = ("s3://", "http://", "https://")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)

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


class _Deferred:
    """A job that runs on the thread asking for its result, optionally on the result of a
    future (a GET running ahead); the part of ``concurrent.futures.Future`` the loader uses."""

    def __init__(self, fn: Callable[..., Any], upstream: Future[Any] | None = None) -> None:
        self._fn = fn
        self._upstream = upstream
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._value = self._fn() if self._upstream is None else self._fn(self._upstream.result())
        except BaseException as exc:  # kept, raised by result()
            self._error = exc

    def result(self) -> Any:
        self._run()
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self) -> BaseException | None:
        self._run()
        return self._error

    def cancel(self) -> bool:
        if self._done:
            return False
        self._done = True
        self._error = CancelledError()
        if self._upstream is not None:
            self._upstream.cancel()
        return True


class Fetcher:
    """Concurrent whole-object reads through the I/O layer; counts requests, bytes and retries.

    ``scope``: the roots reads must stay in (a sample table built from a catalog carries its
    catalog's scope); an href outside it fails with a :class:`FetchError` whose cause is an
    :class:`~bigearth_stac.hrefs.HrefError`, before any request is sent.

    ``max_in_flight``: remote GETs at once. ``decode_threads``: how many ``then`` callbacks
    (decoders) run at once, and how many threads read local files; ``None``: the cores
    available to this process; ``0``: :meth:`submit_each` decodes on the calling thread.
    """

    def __init__(
        self,
        settings: StorageSettings | None = None,
        max_in_flight: int = 32,
        retry: RetryPolicy | None = None,
        scope: Scope | None = None,
        decode_threads: int | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if decode_threads is not None and decode_threads < 0:
            raise ValueError(f"decode_threads must be >= 0, got {decode_threads}")
        self.settings = settings or StorageSettings.from_env()
        self.max_in_flight = max_in_flight
        self.decode_threads = available_cores() if decode_threads is None else decode_threads
        self.scope = scope
        self.reader = ObjectReader(self.settings, pool_size=max_in_flight, retry=retry)
        self._pool: ThreadPoolExecutor | None = None
        self._local_pool: ThreadPoolExecutor | None = None
        self._decoding = threading.BoundedSemaphore(max(1, self.decode_threads))
        self._pool_lock = threading.Lock()

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

    def _executor(self, remote: bool = True) -> ThreadPoolExecutor:
        with self._pool_lock:
            if remote:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="bigearth-fetch")
                return self._pool
            if self._local_pool is None:
                self._local_pool = ThreadPoolExecutor(max(1, self.decode_threads), thread_name_prefix="bigearth-read")
            return self._local_pool

    def _confined(self, href: str) -> tuple[str, bool]:
        """``href`` checked against the scope, and whether it is a local file (whose symlinks
        are checked on the open file: :meth:`_confine_opened`)."""
        if self.scope is None:
            loc = parse(href)
            return loc.url, loc.scheme == "file"
        url = self.scope.check(href)
        return url, not href.startswith(_REMOTE)

    def _confine_opened(self, href: str, url: str) -> Callable[[str], None] | None:
        """For a local file: a check that its real path (as opened) is still inside the scope."""
        scope = self.scope
        if scope is None:
            return None

        def confine(real: str) -> None:
            if real != url and not scope.contains(real):
                raise HrefError(href, f"it is a symlink leading to {real}, outside the catalog root {scope.root}")

        return confine

    def get(self, href: str) -> builtins.bytes:
        """The whole object at ``href``, retrying transient failures; :class:`FetchError` else."""
        try:
            url, local = self._confined(href)
            if local:
                return self.reader.get_file(url, self._confine_opened(href, url))
            return self.reader.get(url)
        except HrefError as exc:
            raise FetchError(href, exc, 1) from exc
        except Exception as exc:
            raise FetchError(href, exc, getattr(exc, "attempts", 1)) from exc

    def submit(self, href: str, then: Callable[[builtins.bytes], T] | None = None) -> Future[Any]:
        """Fetch ``href`` on the pool; ``then`` (e.g. a decoder) runs on the same thread, at most
        ``decode_threads`` of them at once."""
        remote = href.startswith(_REMOTE)
        if then is None:
            return self._executor(remote).submit(self.get, href)
        decoding = self._decoding if remote else None  # local: the pool itself has decode_threads

        def job() -> T:
            data = self.get(href)
            try:
                if decoding is None:
                    return then(data)
                with decoding:
                    return then(data)
            except Exception as exc:  # a corrupt object: name it like a failed read
                raise FetchError(href, exc, 1) from exc

        return self._executor(remote).submit(job)

    def submit_each(self, jobs: Sequence[tuple[str, Callable[[builtins.bytes], Any]]]) -> list[Any]:
        """Fetch each ``(href, then)`` and run ``then`` on its bytes; futures to wait on
        (``result()``, ``exception()``, ``cancel()``), whose errors are :class:`FetchError`
        naming the href. Remote objects get one future each (their GETs run at once); local
        files are read and decoded one after the other in one job on the decoding threads (a
        sample's files: one hand-off instead of one per file). With ``decode_threads=0`` the
        decoding and the local reads wait for ``result()`` and run on the thread calling it."""
        local = [(h, then) for h, then in jobs if not h.startswith(_REMOTE)]
        remote = [(h, then) for h, then in jobs if h.startswith(_REMOTE)]

        def read_local() -> None:
            for href, then in local:
                self._then(href, then, self.get(href))

        if self.decode_threads == 0:
            out: list[Any] = [_Deferred(partial(self._then, h, then), self._executor().submit(self.get, h))
                              for h, then in remote]
            if local:
                out.append(_Deferred(read_local))
            return out
        futures = [self.submit(h, then) for h, then in remote]
        if local:
            futures.append(self._executor(remote=False).submit(read_local))
        return futures

    @staticmethod
    def _then(href: str, then: Callable[[builtins.bytes], T], data: builtins.bytes) -> T:
        try:
            return then(data)
        except Exception as exc:  # a corrupt object: name it like a failed read
            raise FetchError(href, exc, 1) from exc

    def close(self) -> None:
        """Stop the threads (pending fetches are cancelled)."""
        with self._pool_lock:
            pools, self._pool, self._local_pool = (self._pool, self._local_pool), None, None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Threads stay behind; the reader drops its clients and the copy makes its own.
        state = self.__dict__.copy()
        state.update(_pool=None, _local_pool=None, _decoding=None, _pool_lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._decoding = threading.BoundedSemaphore(self.decode_threads)
        self._pool_lock = threading.Lock()
