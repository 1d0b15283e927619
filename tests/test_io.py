"""The I/O layer: one retry policy whose retries are counted, size caps, parsing in one place."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from bigearth_devtools.faultproxy import FaultPlan, FaultProxy

from bigearth_stac.fetch import Fetcher, FetchError
from bigearth_stac.hrefs import HrefError, Scope, join, parse, parse_s3_url
from bigearth_stac.io import HTTPStatusError, ObjectReader, ObjectTooLarge, gdal_path, open_url
from tests.s3fixtures import S3TestServer

# The S3 read clients: obstore (the default when installed) and boto3 (the fallback).
READERS = [pytest.param("obstore", id="obstore"), pytest.param("boto3", id="boto3")]


def _seen(proxy: FaultProxy, method: str, status: int | None = None, expected: int = 0) -> int:
    """Requests the proxy saw; it logs one after answering it, so give its thread a moment."""
    deadline = time.monotonic() + 2
    while proxy.count(method, status) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return proxy.count(method, status)


@pytest.fixture(params=READERS)
def reader(request: pytest.FixtureRequest) -> str:
    if request.param == "obstore":
        pytest.importorskip("obstore")
    return str(request.param)


@pytest.mark.parametrize("max_attempts", [3])
def test_transient_errors_are_retried_and_counted(s3_server: S3TestServer, s3_bucket: str, fault_proxy: FaultProxy,
                                                  reader: str, max_attempts: int) -> None:
    client = s3_server.client()
    for i in range(4):
        client.put_object(Bucket=s3_bucket, Key=f"o{i}", Body=b"x" * (i + 1))
    fault_proxy.configure(FaultPlan(fail_first_share=1.0, methods=frozenset({"GET"})))
    settings = s3_server.settings_for(fault_proxy.endpoint_url, max_attempts=max_attempts, reader=reader)
    with Fetcher(settings, max_in_flight=2) as fetcher:
        assert fetcher.reader.s3_client_kind == reader
        assert [fetcher.get(f"s3://{s3_bucket}/o{i}") for i in range(4)] == [b"x" * (i + 1) for i in range(4)]
        assert fetcher.retries == 4  # each first GET got a 503 that was retried
        assert fetcher.requests == 8
    assert _seen(fault_proxy, "GET", 503, 4) == 4


def test_persistent_errors_use_up_the_attempts_and_name_the_href(
    s3_server: S3TestServer, s3_bucket: str, fault_proxy: FaultProxy, reader: str
) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="k", Body=b"x")
    fault_proxy.configure(FaultPlan(always_fail=frozenset({f"/{s3_bucket}/k"})))
    settings = s3_server.settings_for(fault_proxy.endpoint_url, max_attempts=3, reader=reader)
    with Fetcher(settings, max_in_flight=2) as fetcher, pytest.raises(FetchError) as info:
        fetcher.get(f"s3://{s3_bucket}/k")
    assert info.value.href == f"s3://{s3_bucket}/k" and f"s3://{s3_bucket}/k" in str(info.value)
    assert fetcher.requests == 3 and fetcher.retries == 2  # settings.max_attempts, one policy
    assert _seen(fault_proxy, "GET", 503, 3) == 3


def test_a_missing_object_fails_at_once(s3_server: S3TestServer, s3_bucket: str, fault_proxy: FaultProxy,
                                        reader: str) -> None:
    settings = s3_server.settings_for(fault_proxy.endpoint_url, max_attempts=5, reader=reader)
    with Fetcher(settings, max_in_flight=2) as fetcher, pytest.raises(FetchError) as info:
        fetcher.get(f"s3://{s3_bucket}/gone.tif")
    assert isinstance(info.value.cause, FileNotFoundError) and f"s3://{s3_bucket}/gone.tif" in str(info.value)
    assert info.value.attempts == 1 and fetcher.retries == 0 and fetcher.requests == 1
    assert _seen(fault_proxy, "GET", None, 1) == 1  # not retried


def test_obstore_and_boto3_read_the_same_bytes(s3_server: S3TestServer, s3_bucket: str) -> None:
    pytest.importorskip("obstore")
    rng = np.random.default_rng(0)
    objects = {f"cat/a b/{i}.tif": rng.bytes(int(n)) for i, n in enumerate((0, 1, 100_000, 3_000_000))}
    client = s3_server.client()
    for key, body in objects.items():
        client.put_object(Bucket=s3_bucket, Key=key, Body=body)
    got = {}
    for kind in ("obstore", "boto3"):
        with Fetcher(s3_server.settings_for(s3_server.endpoint_url, reader=kind), max_in_flight=4) as fetcher:
            futures = {k: fetcher.submit(f"s3://{s3_bucket}/{k}") for k in objects}
            got[kind] = {k: f.result() for k, f in futures.items()}
            assert fetcher.requests == len(objects) and fetcher.bytes == sum(map(len, objects.values()))
    assert got["obstore"] == got["boto3"] == objects
    reader = ObjectReader(s3_server.settings_for(s3_server.endpoint_url, reader="obstore"))
    with pytest.raises(ObjectTooLarge, match="3.tif"):  # the size is checked before the body is read
        reader.get(f"s3://{s3_bucket}/cat/a b/3.tif", max_bytes=1000)


def test_http_redirects_are_refused(tmp_path: Path) -> None:
    """A redirect could lead out of the catalog: the reader does not follow it."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.path)
            self.send_response(302)
            self.send_header("Location", "/elsewhere/x.tif")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        href = f"http://127.0.0.1:{server.server_address[1]}/cat/a.tif"
        with Fetcher(max_in_flight=1) as fetcher, pytest.raises(FetchError) as info:
            fetcher.get(href)
        assert isinstance(info.value.cause, HTTPStatusError) and info.value.cause.status == 302
        assert seen == ["/cat/a.tif"]
    finally:
        server.shutdown()
        server.server_close()


def test_objects_over_the_cap_are_refused_before_reading(tmp_path: Path, s3_server: S3TestServer,
                                                         s3_bucket: str) -> None:
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(5 * 2**30)  # sparse: costs no disk; reading it would cost 5 GB of memory
    with pytest.raises(ObjectTooLarge, match="big.json"):
        open_url(str(big))
    s3_server.client().put_object(Bucket=s3_bucket, Key="c.json", Body=b"{}" * 1000)
    with pytest.raises(ObjectTooLarge, match="c.json"):
        open_url(f"s3://{s3_bucket}/c.json", s3_server.settings, max_bytes=100)
    assert open_url(f"s3://{s3_bucket}/c.json", s3_server.settings) == b"{}" * 1000


@pytest.mark.parametrize("url", ["ftp://h/x", "/vsicurl/http://h/x", "s3://", "s3://b/k#frag",
                                 "http://u:p@h/x", "a\\b", "x\x00y"])
def test_malformed_or_foreign_locations_are_refused(url: str) -> None:
    with pytest.raises(HrefError):
        parse(url)


def test_one_parser_for_every_scheme() -> None:
    assert parse_s3_url("s3://b/k/e y") == ("b", "k/e y")
    assert join("s3://b/cat/index/x.parquet", "../s2/a.tif") == "s3://b/cat/s2/a.tif"
    assert join("http://h:8/cat/c.json", "./a/../b.tif") == "http://h:8/cat/b.tif"
    assert join("/data/cat/catalog.json", "s2/collection.json") == "/data/cat/s2/collection.json"
    assert gdal_path("s3://b/k.tif") == "/vsis3/b/k.tif"
    scope = Scope.of_catalog("s3://b/cat/catalog.json", allow=["s3://mirror/cat"])
    assert scope.resolve("s3://b/cat/catalog.json", "s3://mirror/cat/x.tif") == "s3://mirror/cat/x.tif"
    with pytest.raises(HrefError, match="outside the catalog root s3://b/cat/"):
        scope.resolve("s3://b/cat/catalog.json", "s3://mirror/other/x.tif")
