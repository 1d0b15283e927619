"""S3 test-server fixtures: moto in server mode, real HTTP on 127.0.0.1 (no in-process patching).

``s3_server`` (session): one moto process for the whole session, with dummy credentials in the
environment while it runs; ``s3_bucket`` (function): a fresh, empty bucket per test;
``fault_proxy`` (function): a :class:`~bigearth_devtools.faultproxy.FaultProxy` in front of
the server, forwarding everything until a test configures faults.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bigearth_devtools.faultproxy import FaultProxy, start_fault_proxy
from bigearth_devtools.s3server import (
    CONFLICTING_ENV,
    DUMMY_CREDENTIALS,
    S3Server,
    start_s3_server,
)

from bigearth_stac.settings import StorageSettings

_bucket_numbers = itertools.count()


@dataclass
class S3TestServer:
    """What tests get from ``s3_server``: the endpoint, settings for it, and helpers."""

    server: S3Server

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    @property
    def settings(self) -> StorageSettings:
        """Settings for this endpoint (path-style, checksums relaxed as non-AWS stores need)."""
        return self.server.settings()

    def settings_for(self, endpoint_url: str, **overrides: Any) -> StorageSettings:
        """The same settings through another endpoint (a fault proxy in front of the server)."""
        return self.server.settings(endpoint_url=endpoint_url, **overrides)

    def client(self) -> Any:
        return self.settings.shared_client()

    def create_bucket(self, name: str) -> str:
        return self.server.create_bucket(name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (sorted)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def head(self, bucket: str, key: str) -> dict[str, Any]:
        return self.client().head_object(Bucket=bucket, Key=key)

    def upload_tree(self, local: Path, bucket: str, prefix: str) -> int:
        """Upload every file under ``local`` to ``s3://bucket/prefix/``; returns the count."""
        client = self.client()
        count = 0
        for path in sorted(local.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(local).as_posix()}"
                client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
                count += 1
        return count


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3TestServer]:
    """A moto S3 server process on 127.0.0.1, stopped by its PID at the end of the session."""
    with pytest.MonkeyPatch.context() as mp:
        for name in CONFLICTING_ENV:
            mp.delenv(name, raising=False)
        for name, value in DUMMY_CREDENTIALS.items():
            mp.setenv(name, value)
        server = start_s3_server("127.0.0.1")
        try:
            yield S3TestServer(server)
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3TestServer) -> str:
    """A fresh, empty bucket (unique name per test)."""
    return s3_server.create_bucket(f"test-{os.getpid()}-{next(_bucket_numbers)}")


@pytest.fixture
def fault_proxy(s3_server: S3TestServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the session's server (forwards everything by default)."""
    with start_fault_proxy(s3_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture(scope="session", autouse=True)
def index_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Remote-index reads cache into a folder of the test session, never the user's cache."""
    folder = tmp_path_factory.mktemp("index-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIGEARTH_STAC_CACHE_DIR", str(folder))
        yield folder
