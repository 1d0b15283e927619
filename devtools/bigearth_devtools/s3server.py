"""A real S3-compatible HTTP server on loopback (moto's server mode), as a separate process.

``start_s3_server()`` starts ``python -m moto.server`` bound to 127.0.0.1, waits until it
answers, and returns an :class:`S3Server` that stops exactly that process (by its own PID) on
:meth:`S3Server.stop` or when used as a context manager. Clients reach it over HTTP like any S3
endpoint; moto accepts any credentials, but boto3 and GDAL still need some to sign requests
(see :data:`DUMMY_CREDENTIALS`).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from bigearth_devtools.process import LOOPBACK, ServerProcess, answers, check_loopback, free_port
from bigearth_stac.settings import StorageSettings

log = logging.getLogger(__name__)

#: Environment that lets boto3, pyarrow and GDAL sign requests for the test server, and keeps
#: them from looking for real credentials (config files, the EC2 metadata service).
DUMMY_CREDENTIALS: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}
#: Variables that would redirect clients elsewhere; unset while the test credentials are active.
CONFLICTING_ENV = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_NO_SIGN_REQUEST")

class S3Server(ServerProcess):
    """A running moto server process; stop it with :meth:`stop` (or use it as a context manager)."""

    kind = "moto server"

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int) -> None:
        super().__init__(process, host, port)
        self.endpoint_url = self.base_url

    def settings(self, **overrides: Any) -> StorageSettings:
        """Settings for this endpoint: path-style addressing, checksums as non-AWS stores need."""
        base: dict[str, Any] = {"endpoint_url": self.endpoint_url, "region": "us-east-1",
                                "checksums": "when_required"}
        base.update(overrides)
        return StorageSettings(**base)

    def client(self, **overrides: Any) -> Any:
        """A fresh boto3 S3 client for this server."""
        return self.settings(**overrides).boto3_client()

    def create_bucket(self, name: str) -> str:
        """Create ``name`` (idempotent) and return it."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API)."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

def start_s3_server(host: str = "127.0.0.1", port: int | None = None,
                    startup_timeout: float = 30.0) -> S3Server:
    """Start moto's S3 server on loopback and wait until it answers HTTP.

    ``port=None`` picks a free port (retried once if another process takes it first). Only
    loopback hosts are accepted: the server has no authentication.
    """
    check_loopback(host, "the unauthenticated test S3 server")
    attempts = 1 if port is not None else 3
    last_error = ""
    for _ in range(attempts):
        chosen = port if port is not None else free_port(host)
        cmd = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(chosen)]
        # moto logs every request on stderr: send it to an unlinked temporary file (the child
        # keeps its own descriptor) instead of a pipe nobody drains; read it if startup fails.
        with tempfile.TemporaryFile() as errlog:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errlog)
            server = S3Server(proc, host, chosen)
            deadline = time.monotonic() + startup_timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    errlog.seek(0)
                    last_error = errlog.read().decode(errors="replace")[-2000:]
                    break
                if answers(f"{server.endpoint_url}/moto-api/", timeout=1, any_status=True):
                    log.info("moto S3 server at %s (pid %d)", server.endpoint_url, proc.pid)
                    return server
                time.sleep(0.1)
            else:
                server.stop()
                raise TimeoutError(f"moto server on {host}:{chosen} did not answer within {startup_timeout} s")
    raise RuntimeError(f"moto server could not start on {host}: {last_error.strip() or 'exited early'}")


__all__ = ["CONFLICTING_ENV", "DUMMY_CREDENTIALS", "LOOPBACK", "S3Server", "free_port", "start_s3_server"]
