"""A loopback HTTP proxy that injects faults and latency in front of an S3 endpoint.

Clients talk to the proxy as if it were the S3 endpoint (``settings.endpoint_url`` set to
:attr:`FaultProxy.endpoint_url`); each request is forwarded to the upstream server over a
persistent connection, unless the current :class:`FaultPlan` decides to answer ``503 Slow Down``
instead, to drop the connection, or to delay the answer. Used by the publish tests (transient
and persistent failures) and by the loader benchmarks (a fixed 20 ms per request, a distant
object store on one machine).

Stdlib only. Bounded: it binds and forwards to loopback only, caps concurrent connections and
request bodies, and keeps a bounded log of what it saw.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import random
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

from bigearth_devtools.process import LOOPBACK

log = logging.getLogger(__name__)

MAX_BODY = 1 << 30
"""Largest request body forwarded (bytes); larger requests get 413."""
MAX_CONNECTIONS = 512
"""Client connections served at once; more wait in the listen queue."""
LOG_SIZE = 100_000
"""Requests remembered in :attr:`FaultProxy.requests` (oldest dropped first)."""

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate (injected by FaultProxy).</Message></Error>")

Match = Callable[[str, str], bool]
"""``(method, path) -> bool``: which requests a fault may hit (path includes ``/bucket/key``)."""


@dataclass(frozen=True)
class FaultPlan:
    """What the proxy does to the requests it forwards. The default forwards everything as is."""

    latency: float = 0.0
    """Seconds added before forwarding every request (a distant store: 0.020)."""
    error_share: float = 0.0
    """Share of matching requests answered ``503 SlowDown`` instead of being forwarded."""
    drop_share: float = 0.0
    """Share of matching requests whose connection is closed without an answer."""
    drop_after_forward: bool = False
    """Drop *after* the upstream handled the request (the write happened, the client does not
    know) rather than before forwarding it."""
    fail_first_share: float = 0.0
    """Share of distinct (method, path) whose first attempt gets ``503`` (chosen by a hash of
    the path, so the same keys fail on every run with the same seed)."""
    always_fail: frozenset[str] = frozenset()
    """Paths (``/bucket/key``) that get ``503`` on every attempt (a persistent failure)."""
    methods: frozenset[str] = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})
    """Methods that faults (not latency) apply to."""
    match: Match | None = None
    """Further restricts which requests faults apply to."""
    seed: int = 0
    """Seed of the random choices (shares), for reproducible runs."""

    def applies(self, method: str, path: str) -> bool:
        return method in self.methods and (self.match is None or self.match(method, path))


@dataclass(frozen=True)
class Seen:
    """One request as the proxy saw it."""

    method: str
    path: str
    status: int
    """The status the client got; 0 when the connection was dropped."""
    t: float = field(default=0.0, compare=False)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards the client
    server: _ProxyServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return None
        return self.rfile.read(length) if length else b""

    _conn: http.client.HTTPConnection | None = None

    def _upstream(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is None:
            conn = http.client.HTTPConnection(self.server.upstream_host, self.server.upstream_port, timeout=120)
            self._conn = conn
        return conn

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("connection", "transfer-encoding", "keep-alive", "proxy-connection")}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):  # a kept-alive upstream connection may have been closed meanwhile
            conn = self._upstream()
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, resp.getheaders(), data
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        length_sent = False
        for k, v in headers:
            kl = k.lower()
            if kl in ("connection", "transfer-encoding", "keep-alive"):
                continue
            if kl == "content-length":
                if self.command != "HEAD":
                    v = str(len(body))  # the body was de-chunked
                length_sent = True
            self.send_header(k, v)
        if not length_sent:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._send(413, [("Content-Type", "text/plain")], b"request body too large for FaultProxy")
            proxy._record(self.command, self.path, 413)
            return
        action = proxy._decide(self.command, self.path)
        if proxy.plan.latency > 0:
            time.sleep(proxy.plan.latency)
        if action == "error":
            self._send(503, [("Content-Type", "application/xml"), ("Retry-After", "0")], SLOW_DOWN)
            proxy._record(self.command, self.path, 503)
            return
        if action == "drop":
            self._drop()
            proxy._record(self.command, self.path, 0)
            return
        try:
            status, headers, data = self._forward(body)
        except OSError as exc:
            log.warning("upstream failed for %s %s: %s", self.command, self.path, exc)
            self._send(502, [("Content-Type", "text/plain")], f"upstream failed: {exc}".encode())
            proxy._record(self.command, self.path, 502)
            return
        if action == "drop-after":
            self._drop()
            proxy._record(self.command, self.path, 0)
            return
        self._send(status, headers, data)
        proxy._record(self.command, self.path, status)

    def _serve(self) -> None:
        with self.server.slots:
            try:
                self._handle()
            except (ConnectionError, TimeoutError):
                self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _serve

    def finish(self) -> None:
        if self._conn is not None:
            self._conn.close()
        with contextlib.suppress(OSError):
            super().finish()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    upstream_host: str
    upstream_port: int
    proxy: FaultProxy
    slots: threading.BoundedSemaphore


class FaultProxy:
    """A running proxy; change its behaviour with :meth:`configure`, stop it with :meth:`stop`."""

    def __init__(self, upstream: str, plan: FaultPlan = FaultPlan(), host: str = "127.0.0.1",
                 port: int = 0) -> None:
        up = urlsplit(upstream)
        if up.scheme != "http" or up.hostname not in LOOPBACK or up.port is None:
            raise ValueError(f"FaultProxy forwards to http://<loopback>:<port> only, not {upstream!r}")
        if host not in LOOPBACK:
            raise ValueError(f"FaultProxy binds to loopback only, not {host!r}")
        self.plan = plan
        self._lock = threading.Lock()
        self._rng = random.Random(plan.seed)
        self._attempts: Counter[tuple[str, str]] = Counter()
        self.requests: deque[Seen] = deque(maxlen=LOG_SIZE)
        """Requests in the order they were answered (bounded)."""
        self.counts: Counter[tuple[str, int]] = Counter()
        """(method, status) -> requests; status 0 is a dropped connection."""
        self._server = _ProxyServer((host, port), _Handler)
        self._server.upstream_host = up.hostname
        self._server.upstream_port = up.port
        self._server.proxy = self
        self._server.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.host = host
        self.port = int(self._server.server_address[1])
        self.endpoint_url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        log.info("fault proxy %s -> %s", self.endpoint_url, upstream)

    # -- plan ------------------------------------------------------------------------------

    def configure(self, plan: FaultPlan) -> None:
        """Use ``plan`` from the next request on (first-attempt memory is reset)."""
        with self._lock:
            self.plan = plan
            self._rng = random.Random(plan.seed)
            self._attempts.clear()

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.counts.clear()

    def _decide(self, method: str, path: str) -> str:
        plan = self.plan
        if not plan.applies(method, path):
            return "forward"
        with self._lock:
            key = (method, path)
            self._attempts[key] += 1
            first = self._attempts[key] == 1
            if path.split("?", 1)[0] in plan.always_fail:
                return "error"
            if first and plan.fail_first_share > 0 and _share_of(path, plan.seed) < plan.fail_first_share:
                return "error"
            roll = self._rng.random()
        if roll < plan.error_share:
            return "error"
        if roll < plan.error_share + plan.drop_share:
            return "drop-after" if plan.drop_after_forward else "drop"
        return "forward"

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append(Seen(method, path, status, time.monotonic()))
            self.counts[(method, status)] += 1

    # -- figures ---------------------------------------------------------------------------

    def count(self, method: str | None = None, status: int | None = None) -> int:
        """Requests seen with this method and/or status."""
        with self._lock:
            return sum(n for (m, s), n in self.counts.items()
                       if (method is None or m == method) and (status is None or s == status))

    def seen(self, method: str | None = None, status: int | None = None) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and (status is None or r.status == status)]

    # -- lifetime --------------------------------------------------------------------------

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _share_of(path: str, seed: int) -> float:
    """A stable number in [0, 1) for a path (which keys 'fail first' is reproducible)."""
    digest = hashlib.sha256(f"{seed}:{path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def start_fault_proxy(upstream: str, plan: FaultPlan = FaultPlan(), port: int = 0) -> FaultProxy:
    """Start a :class:`FaultProxy` on 127.0.0.1 in front of ``upstream`` (``http://127.0.0.1:PORT``)."""
    return FaultProxy(upstream, plan, port=port)


__all__ = ["FaultPlan", "FaultProxy", "Seen", "start_fault_proxy"]
