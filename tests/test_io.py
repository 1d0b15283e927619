"""The I/O layer: one retry policy whose retries are counted, size caps, parsing in one place."""

from __future__ import annotations

from pathlib import Path

import pytest
from bigearth_devtools.faultproxy import FaultPlan, FaultProxy

from bigearth_stac.fetch import Fetcher
from bigearth_stac.hrefs import HrefError, Scope, join, parse, parse_s3_url
from bigearth_stac.io import ObjectTooLarge, gdal_path, open_url
from tests.s3fixtures import S3TestServer


def test_botocore_retries_are_counted(s3_server: S3TestServer, s3_bucket: str, fault_proxy: FaultProxy) -> None:
    client = s3_server.client()
    for i in range(4):
        client.put_object(Bucket=s3_bucket, Key=f"o{i}", Body=b"x" * (i + 1))
    fault_proxy.configure(FaultPlan(fail_first_share=1.0, methods=frozenset({"GET"})))
    settings = s3_server.settings_for(fault_proxy.endpoint_url, max_attempts=3)
    with Fetcher(settings, max_in_flight=2) as fetcher:
        assert [fetcher.get(f"s3://{s3_bucket}/o{i}") for i in range(4)] == [b"x" * (i + 1) for i in range(4)]
        assert fetcher.retries == 4  # each first GET got a 503 that botocore retried
        assert fetcher.requests == 8
    assert fault_proxy.count("GET", 503) == 4


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
