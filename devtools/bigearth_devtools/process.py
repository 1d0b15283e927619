"""What the development servers share: a loopback port, a child process stopped by its PID, readiness.

:class:`ServerProcess` wraps a server started as a child process (moto's S3 server, the STAC
API under uvicorn): ``pid``, ``alive()``, ``stop()`` (SIGTERM to that PID, SIGKILL if it
lingers) and use as a context manager. :func:`free_port` and :func:`answers` serve the
``start_*`` functions; :func:`check_loopback` refuses any other address, since these servers
have no authentication worth the name.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import urllib.error
import urllib.request
from types import TracebackType
from typing import IO, Any

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_loopback(host: str, what: str) -> None:
    """Refuse to start ``what`` anywhere but on a loopback address."""
    if host not in LOOPBACK:
        raise ValueError(f"refusing to start {what} on {host!r}: use a loopback address {LOOPBACK}")


def answers(url: str, timeout: float = 2.0, any_status: bool = False) -> bool:
    """Whether ``url`` answers with 200 (or with any HTTP status, when ``any_status``)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return any_status or bool(resp.status == 200)
    except urllib.error.HTTPError:
        return any_status
    except OSError:
        return False


class ServerProcess:
    """A server running as a child process on ``host:port``; :meth:`stop` ends it by its PID."""

    kind = "server"

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int, output: IO[bytes] | None = None) -> None:
        self.process = process
        self.host = host
        self.port = port
        self._output = output

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        """What the server wrote so far (when its output goes to a file this object holds)."""
        if self._output is None:
            return ""
        self._output.seek(0)
        return self._output.read().decode(errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the server's PID (a graceful shutdown), SIGKILL if it lingers."""
        try:
            if self.process.poll() is None:
                log.debug("stopping %s pid %d", self.kind, self.process.pid)
                self.process.terminate()
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=timeout)
        finally:
            if self._output is not None:
                with contextlib.suppress(Exception):
                    self._output.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url}, pid={self.process.pid})"


__all__ = ["LOOPBACK", "ServerProcess", "answers", "check_loopback", "free_port"]
