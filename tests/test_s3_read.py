"""The read side over a real HTTP S3 endpoint: raw input from s3://, bytes, Parquet and pixels."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from bigearth_stac.io import open_raster, open_url, resolve_href
from bigearth_stac.settings import StorageSettings
from catalog_builder.build import BuildOptions, build
from catalog_builder.publish import publish
from catalog_builder.rawio import LocalReader, open_reader
from catalog_builder.s3raw import S3Reader
from catalog_builder.sources import open_source
from catalog_builder.store import MANIFEST, STAGE_ITEM, LocalStore, read_manifest
from tests.s3fixtures import S3TestServer

RAW_PREFIX = "raw"


@pytest.fixture(scope="module")
def raw_bucket(s3_server: S3TestServer, real_raw: tuple[Path, Path]) -> str:
    """The six real raw pairs uploaded to s3://<bucket>/raw/{S2,S1}/ as they are on disk."""
    bucket = s3_server.create_bucket("raw-input")
    s3_server.upload_tree(real_raw[0], bucket, f"{RAW_PREFIX}/S2")
    s3_server.upload_tree(real_raw[1], bucket, f"{RAW_PREFIX}/S1")
    return bucket


@pytest.fixture(scope="module")
def published(s3_server: S3TestServer, real_catalog: Path) -> str:
    """The real catalog published to S3 and made public-read; returns the root catalog's s3:// URL."""
    bucket = s3_server.create_bucket("published-read")
    publish(real_catalog, f"s3://{bucket}/bigearthnet/v1", s3_server.settings)
    client = s3_server.client()
    for key in s3_server.keys(bucket):  # a public dataset: unsigned GETs (plain HTTP) are allowed
        client.put_object_acl(Bucket=bucket, Key=key, ACL="public-read")
    return f"s3://{bucket}/bigearthnet/v1/catalog.json"


def test_s3_reader_matches_local_reader(s3_server: S3TestServer, raw_bucket: str, real_raw: tuple[Path, Path]) -> None:
    remote = open_reader(f"s3://{raw_bucket}/{RAW_PREFIX}/S2/", s3_server.settings)
    assert isinstance(remote, S3Reader)
    local = LocalReader(real_raw[0])
    assert remote.listdir() == local.listdir()
    folder = local.listdir()[0]
    assert remote.listdir(folder) == local.listdir(folder)
    name = f"{folder}/{folder}_B02.tif"
    assert remote.read(name) == local.read(name)
    assert remote.describe(name) == f"s3://{raw_bucket}/{RAW_PREFIX}/S2/{name}"

    with pytest.raises(FileNotFoundError, match=f"s3://{raw_bucket}/{RAW_PREFIX}/S2/{folder}/missing.tif"):
        remote.read(f"{folder}/missing.tif")
    with pytest.raises(FileNotFoundError, match="not found"):
        remote.listdir("no-such-folder")
    with pytest.raises(FileNotFoundError):
        S3Reader(f"s3://no-such-bucket/{RAW_PREFIX}", s3_server.settings).listdir()

    clone = pickle.loads(pickle.dumps(remote))
    assert clone.read(name) == local.read(name)


def test_build_from_s3_input_matches_local_build(s3_server: S3TestServer, raw_bucket: str, real_catalog: Path,
                                                 tmp_path: Path) -> None:
    source = open_source(f"s3://{raw_bucket}/{RAW_PREFIX}/S2", f"s3://{raw_bucket}/{RAW_PREFIX}/S1",
                         settings=s3_server.settings)
    report = build(source, LocalStore(tmp_path), BuildOptions(scheduler="synchronous"))
    assert report.ok, report.describe()
    assert report.built == 6
    from_s3 = read_manifest((tmp_path / MANIFEST).read_bytes())
    from_disk = read_manifest((real_catalog / MANIFEST).read_bytes())
    assert {(e.path, e.sha256) for e in from_s3} == {(e.path, e.sha256) for e in from_disk}
    for e in from_s3:
        if e.stage == STAGE_ITEM:
            assert json.loads((tmp_path / e.path).read_text()) == json.loads((real_catalog / e.path).read_text())


def _items(root_url: str, settings: StorageSettings) -> list[tuple[str, dict[str, Any]]]:
    manifest = read_manifest(open_url(resolve_href(root_url, MANIFEST, root_url), settings))
    out = []
    for e in manifest:
        if e.stage == STAGE_ITEM:
            url = resolve_href(root_url, e.path, root_url)
            out.append((url, json.loads(open_url(url, settings))))
    return out


def _raw_band(real_raw: tuple[Path, Path], item: dict[str, Any], band: str) -> np.ndarray:
    folder = real_raw[0] if item["collection"] == "bigearthnet-s2" else real_raw[1]
    with rasterio.open(folder / item["id"] / f"{item['id']}_{band}.tif") as src:
        return src.read(1)


def test_pixels_read_back_exactly_through_gdal_over_s3(s3_server: S3TestServer, published: str,
                                                       real_raw: tuple[Path, Path]) -> None:
    settings = s3_server.settings
    items = _items(published, settings)
    assert len(items) == 12
    compared = 0
    for item_url, item in items:
        for asset in item["assets"].values():
            url = resolve_href(item_url, asset["href"], published)
            assert url.startswith("s3://")
            with open_raster(url, settings) as ds:
                assert ds.driver == "GTiff"
                assert ds.name.startswith("/vsis3/")
                pixels = ds.read()
            for i, band in enumerate(asset["bands"]):
                expected = _raw_band(real_raw, item, band["name"])
                assert pixels[i].dtype == expected.dtype
                np.testing.assert_array_equal(pixels[i], expected)
                compared += 1
    assert compared == 6 * (12 + 2)


def test_pixels_over_http_vsicurl(s3_server: S3TestServer, published: str, real_raw: tuple[Path, Path]) -> None:
    # Public-read objects answer unsigned GETs: the bucket behind plain HTTP(S).
    http_root = published.replace("s3://", f"{s3_server.endpoint_url}/")
    item_url, item = next((u, i) for u, i in _items(published, s3_server.settings) if i["collection"] == "bigearthnet-s1")
    http_item = item_url.replace("s3://", f"{s3_server.endpoint_url}/")
    url = resolve_href(http_item, item["assets"]["s1"]["href"], http_root)
    with open_raster(url, s3_server.settings) as ds:
        assert ds.name.startswith("/vsicurl/http://127.0.0.1")
        np.testing.assert_array_equal(ds.read(1), _raw_band(real_raw, item, "VV"))


def test_open_url_local_http_s3(s3_server: S3TestServer, published: str, real_catalog: Path) -> None:
    expected = (real_catalog / "catalog.json").read_bytes()
    assert open_url(published, s3_server.settings) == expected
    assert open_url(published.replace("s3://", f"{s3_server.endpoint_url}/"), s3_server.settings) == expected
    assert open_url(str(real_catalog / "catalog.json")) == expected
    assert open_url((real_catalog / "catalog.json").as_uri()) == expected
    missing = published.replace("catalog.json", "nope.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        open_url(missing, s3_server.settings)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        open_url(missing.replace("s3://", f"{s3_server.endpoint_url}/"), s3_server.settings)
    with pytest.raises(ValueError, match="unsupported scheme"):
        open_url("ftp://example.com/catalog.json")


def test_anonymous_settings_send_unsigned_requests(s3_server: S3TestServer, published: str) -> None:
    anon = s3_server.server.settings(anonymous=True)
    seen: list[dict[str, str]] = []
    client = anon.boto3_client()
    client.meta.events.register("before-send.s3", lambda request, **_: seen.append(dict(request.headers)))
    bucket, _, key = published.removeprefix("s3://").partition("/")
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert seen and "Authorization" not in seen[-1]


def test_requester_pays_header_is_signed(s3_server: S3TestServer, published: str) -> None:
    payer = s3_server.server.settings(requester_pays=True)
    seen: list[dict[str, str]] = []
    client = payer.boto3_client()
    client.meta.events.register("before-send.s3", lambda request, **_: seen.append(dict(request.headers)))
    bucket, _, key = published.removeprefix("s3://").partition("/")
    client.head_object(Bucket=bucket, Key=key)
    headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in seen[-1].items()}
    assert headers["x-amz-request-payer"] == "requester"
    assert "x-amz-request-payer" in headers["authorization"]  # among the signed headers
    assert payer.gdal_env()["AWS_REQUEST_PAYER"] == "requester"


def test_index_over_pyarrow_s3_filesystem(s3_server: S3TestServer, published: str) -> None:
    fs = s3_server.settings.pyarrow_filesystem()
    path = published.removeprefix("s3://").replace("catalog.json", "index/bigearthnet-s2.parquet")
    pf = pq.ParquetFile(path, filesystem=fs)
    assert pf.metadata.num_rows == 6
    table = pf.read(columns=["id"])
    assert sorted(table.column("id").to_pylist())[0].startswith("S2")
