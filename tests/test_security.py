"""Security: hrefs that leave the catalog, formats other than GTiff, unsafe archives, leaked paths."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import rasterio.transform
from rasterio.errors import RasterioIOError

from bigearth_stac.io import gdal_path, open_raster, resolve_href
from catalog_builder.examples import safe_extract
from catalog_builder.publish import PublishError, check_publishable, load_manifest, publish
from catalog_builder.stac import INDEX_MEDIA_TYPE
from catalog_builder.store import (
    MANIFEST,
    STAGE_ITEM,
    ManifestEntry,
    manifest_bytes,
    read_manifest,
    sha256_hex,
)
from tests.s3fixtures import S3TestServer

S3_ROOT = "s3://bucket/bigearthnet/v1/catalog.json"
S3_ITEM = "s3://bucket/bigearthnet/v1/bigearthnet-s2/33UUP/S2A_X/S2A_X.json"
HTTP_ROOT = "https://data.example.org/bigearthnet/v1/catalog.json"
HTTP_ITEM = "https://data.example.org/bigearthnet/v1/bigearthnet-s2/33UUP/S2A_X/S2A_X.json"

# -- hrefs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("base", "href", "expected"), [
    (S3_ITEM, "./S2A_X_s2_10m.tif", "s3://bucket/bigearthnet/v1/bigearthnet-s2/33UUP/S2A_X/S2A_X_s2_10m.tif"),
    (S3_ITEM, "../../collection.json", "s3://bucket/bigearthnet/v1/bigearthnet-s2/collection.json"),
    (S3_ITEM, "../../../catalog.json", "s3://bucket/bigearthnet/v1/catalog.json"),
    (S3_ROOT, "s3://bucket/bigearthnet/v1/index/x.parquet", "s3://bucket/bigearthnet/v1/index/x.parquet"),
    (HTTP_ITEM, "./S2A_X_s1.tif", "https://data.example.org/bigearthnet/v1/bigearthnet-s2/33UUP/S2A_X/S2A_X_s1.tif"),
    (HTTP_ROOT, "/bigearthnet/v1/index/x.parquet", "https://data.example.org/bigearthnet/v1/index/x.parquet"),
])
def test_hrefs_inside_the_catalog_resolve(base: str, href: str, expected: str) -> None:
    root = S3_ROOT if base.startswith("s3") else HTTP_ROOT
    assert resolve_href(base, href, root) == expected


@pytest.mark.parametrize(("base", "href"), [
    (S3_ITEM, "../../../../../etc/passwd"),
    (S3_ITEM, "../../../../other-dataset/secret.tif"),  # same bucket, outside the prefix
    (S3_ITEM, "../../../../../../../../../../etc/passwd"),  # more .. than the path is deep
    (S3_ITEM, "s3://another-bucket/bigearthnet/v1/x.tif"),
    (S3_ITEM, "s3://bucket/bigearthnet/v1/../../secret.tif"),
    (S3_ITEM, "https://evil.example.com/x.tif"),
    (S3_ITEM, "file:///etc/passwd"),
    (S3_ITEM, "/etc/passwd"),
    (S3_ITEM, "..%2F..%2F..%2F..%2Fetc%2Fpasswd"),
    (S3_ITEM, "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd"),
    (S3_ITEM, "..\\..\\..\\..\\etc\\passwd"),
    (HTTP_ITEM, "//evil.example.com/bigearthnet/v1/x.tif"),
    (HTTP_ITEM, "https://data.example.org.evil.com/bigearthnet/v1/x.tif"),
    (HTTP_ITEM, "http://data.example.org/bigearthnet/v1/x.tif"),  # downgrade to plain HTTP
    (HTTP_ROOT, "/other/x.tif"),
    (HTTP_ROOT, "../x.tif"),
])
def test_traversal_and_foreign_hrefs_are_refused(base: str, href: str) -> None:
    root = S3_ROOT if base.startswith("s3") else HTTP_ROOT
    with pytest.raises(ValueError, match="refusing href") as err:
        resolve_href(base, href, root)
    assert repr(href) in str(err.value)


def test_local_catalog_hrefs(real_catalog: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(real_catalog, catalog)
    root = str(catalog / "catalog.json")
    item = next(catalog.glob("bigearthnet-s2/*/*/*.json"))
    tif = resolve_href(str(item), f"./{item.stem}_s2_10m.tif", root)
    assert Path(tif).is_file() and Path(tif).parent == item.parent.resolve()
    assert resolve_href(item.as_uri(), "../../collection.json", catalog.as_uri()).endswith("bigearthnet-s2/collection.json")

    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    os.symlink(secret, item.parent / "link.tif")  # a link inside the catalog that leads out
    for href in ("../../../../secret.txt", str(secret), secret.as_uri(), "./link.tif",
                 "https://example.org/x.tif", "s3://bucket/x.tif"):
        with pytest.raises(ValueError, match="refusing href"):
            resolve_href(str(item), href, root)


# -- only GTiff ---------------------------------------------------------------------------------


def _vrt_pointing_at(target: Path) -> bytes:
    return f"""<VRTDataset rasterXSize="120" rasterYSize="120">
  <GeoTransform>500000, 10, 0, 5000000, 0, -10</GeoTransform>
  <VRTRasterBand dataType="UInt16" band="1">
    <SimpleSource><SourceFilename relativeToVRT="0">{target}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>
  </VRTRasterBand>
</VRTDataset>""".encode()


def _png() -> bytes:
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="PNG", width=8, height=8, count=1, dtype="uint8",
                      transform=rasterio.transform.from_origin(0, 8, 1, 1)) as dst:
            dst.write(np.zeros((1, 8, 8), dtype="uint8"))
        return mem.read()


def test_only_the_gtiff_driver_opens_assets(real_raw: tuple[Path, Path], tmp_path: Path) -> None:
    band = next(real_raw[0].glob("*/*_B02.tif"))
    with open_raster(str(band)) as ds:  # a real GeoTIFF opens
        assert ds.driver == "GTiff"
    vrt = tmp_path / "evil.tif"
    vrt.write_bytes(_vrt_pointing_at(band))
    with rasterio.open(vrt) as ds:  # GDAL alone would follow the VRT to another file
        assert ds.driver == "VRT"
    png = tmp_path / "image.tif"
    png.write_bytes(_png())
    for path in (vrt, png):
        with pytest.raises(RasterioIOError), open_raster(str(path)):
            pass


def test_only_gtiff_over_s3(s3_server: S3TestServer, s3_bucket: str, real_raw: tuple[Path, Path]) -> None:
    band = next(real_raw[0].glob("*/*_B02.tif"))
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="good.tif", Body=band.read_bytes())
    client.put_object(Bucket=s3_bucket, Key="evil.tif", Body=_vrt_pointing_at(band))
    with open_raster(f"s3://{s3_bucket}/good.tif", s3_server.settings) as ds:
        assert ds.driver == "GTiff" and ds.read(1).shape == (120, 120)
    with pytest.raises(RasterioIOError), open_raster(f"s3://{s3_bucket}/evil.tif", s3_server.settings):
        pass


@pytest.mark.parametrize("url", ["/vsizip//tmp/x.zip/a.tif", "ftp://example.org/a.tif", "gs://bucket/a.tif"])
def test_gdal_paths_other_than_ours_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        gdal_path(url)


# -- archives ------------------------------------------------------------------------------------


def _tar(*members: tarfile.TarInfo) -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(b"evil") if m.isfile() else None)
    buf.seek(0)
    return tarfile.open(fileobj=buf, mode="r")


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 4
    return info


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize("member", [
    _file("../evil"),
    _file("ok/../../evil"),
    _file("/tmp/absolute-evil"),
    _file("\\absolute-evil"),
    _link("escape", "/etc/passwd"),
    _link("escape", "../../outside"),
    _link("hard", "/etc/passwd", tarfile.LNKTYPE),
], ids=["dotdot", "nested-dotdot", "absolute", "absolute-backslash", "symlink-absolute", "symlink-dotdot", "hardlink"])
def test_unsafe_archive_members_are_refused(tmp_path: Path, member: tarfile.TarInfo) -> None:
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(ValueError, match="refusing unsafe archive member"), _tar(_file("fine.txt"), member) as tar:
        safe_extract(tar, dest)
    assert not (tmp_path / "a" / "b" / "evil").exists()
    assert not (tmp_path / "a" / "evil").exists()
    assert not Path("/tmp/absolute-evil").exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_symlink()]


def test_symlink_then_write_through_it_is_refused(tmp_path: Path) -> None:
    # The classic two-step: a link to a folder outside, then a file "inside" the link.
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    with pytest.raises(ValueError), _tar(_link("d", str(outside)), _file("d/pwned")) as tar:
        safe_extract(tar, dest)
    assert not (outside / "pwned").exists()


def test_safe_archive_extracts(tmp_path: Path) -> None:
    with _tar(_file("folder/a.txt"), _link("folder/b.txt", "a.txt")) as tar:
        safe_extract(tar, tmp_path / "dest")
    assert (tmp_path / "dest" / "folder" / "a.txt").read_bytes() == b"evil"


# -- nothing local or secret is published -----------------------------------------------------------


def _rewrite_item(catalog: Path, edit) -> ManifestEntry:
    """Edit the first item's JSON and record it in the manifest, as a buggy build could have."""
    entries = read_manifest((catalog / MANIFEST).read_bytes())
    target = next(e for e in entries if e.stage == STAGE_ITEM)
    doc = json.loads((catalog / target.path).read_text())
    edit(doc)
    data = json.dumps(doc).encode()
    (catalog / target.path).write_bytes(data)
    fixed = replace(target, size=len(data), sha256=sha256_hex(data))
    (catalog / MANIFEST).write_bytes(manifest_bytes([fixed if e.path == target.path else e for e in entries]))
    return fixed


@pytest.mark.parametrize("bad_href", [
    "/home/builder/bigearthnet/S2A_X_s2_10m.tif",
    "file:///home/builder/bigearthnet/S2A_X_s2_10m.tif",
    "C:\\data\\S2A_X_s2_10m.tif",
    "https://user:secret@data.example.org/x.tif",
    "https://bucket.s3.amazonaws.com/x.tif?X-Amz-Credential=AKIA/x&X-Amz-Signature=abc",
])
def test_publish_refuses_local_paths_and_credentials(s3_server: S3TestServer, s3_bucket: str, real_catalog: Path,
                                                     tmp_path: Path, bad_href: str) -> None:
    catalog = tmp_path / "catalog"
    shutil.copytree(real_catalog, catalog)

    def edit(doc: dict) -> None:
        next(iter(doc["assets"].values()))["href"] = bad_href

    item = _rewrite_item(catalog, edit)
    with pytest.raises(PublishError, match="refusing to publish") as err:
        publish(catalog, f"s3://{s3_bucket}/cat", s3_server.settings)
    assert err.value.where == str(catalog / item.path) and repr(bad_href) in str(err.value)
    keys = s3_server.keys(s3_bucket)
    assert "cat/catalog.json" not in keys and f"cat/{item.path}" not in keys


def test_publish_refuses_a_json_naming_the_local_catalog(real_catalog: Path) -> None:
    doc = {"type": "Collection", "description": f"built in {real_catalog}"}
    data = json.dumps(doc).encode()
    entry = ManifestEntry("x/collection.json", len(data), sha256_hex(data), "application/json", 2)
    with pytest.raises(PublishError, match="local catalog path"):
        check_publishable(entry, data, real_catalog)


def test_index_hrefs_are_checked(real_catalog: Path, tmp_path: Path) -> None:
    for entry in load_manifest(real_catalog):  # the real indexes pass
        if entry.path.startswith("index/"):
            check_publishable(entry, (real_catalog / entry.path).read_bytes(), real_catalog)
    table = pa.table({
        "id": ["a", "b"],
        "assets": [{"data": {"href": "../x/a.tif"}}, {"data": {"href": "/home/builder/b.tif"}}],
        "links": [[{"rel": "root", "href": "../catalog.json"}], []],
    })
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    entry = ManifestEntry("index/bad.parquet", len(data), sha256_hex(data), INDEX_MEDIA_TYPE, 2)
    with pytest.raises(PublishError, match="/home/builder/b.tif"):
        check_publishable(entry, data, tmp_path)


def test_published_catalog_names_no_endpoint_or_credential(s3_server: S3TestServer, s3_bucket: str,
                                                           real_catalog: Path) -> None:
    publish(real_catalog, f"s3://{s3_bucket}/cat", s3_server.settings)
    host = s3_server.endpoint_url.split("://")[1]
    for key in s3_server.keys(s3_bucket, "cat/"):
        if key.endswith(".json"):
            text = s3_server.get(s3_bucket, key).decode()
            assert host not in text and "X-Amz-" not in text and str(real_catalog) not in text, key
