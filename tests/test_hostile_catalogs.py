"""A corpus of hostile catalogs: hrefs and links that leave the catalog, by every scheme.

Each is refused, with an error naming the href, by every reader: opening the catalog, result
rows, item dicts and pystac items, the sample table, the PyTorch loader, the xarray view and
mosaics. No byte outside the catalog is read and no request leaves for a foreign host.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bigearth_stac import Catalog
from bigearth_stac.fetch import Fetcher, FetchError
from bigearth_stac.hrefs import HrefError, Scope
from bigearth_stac.samples import scope_of, with_scope
from tests.s3fixtures import S3TestServer


class Listener:
    """A TCP listener on 127.0.0.1 that records whether anything connected (it answers nothing)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture
def outside(tmp_path: Path, real_catalog: Path) -> Path:
    """A folder beside the catalog holding a valid COG and a JSON document (the 'secrets')."""
    out = tmp_path / "outside"
    out.mkdir()
    cog = next(real_catalog.rglob("*_s2_10m.tif"))
    shutil.copy(cog, out / "x.tif")
    (out / "secret.json").write_text(json.dumps({"type": "Catalog", "id": "secret", "links": []}))
    return out


def _copy(real_catalog: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "cat"
    shutil.copytree(real_catalog, dst)
    return dst


def _set_index_href(root: Path, href: str, collection: str = "bigearthnet-s2", key: str | None = None) -> None:
    """Rewrite the first row's asset href (``key``: the first asset) in a collection's index."""
    path = root / "index" / f"{collection}.parquet"
    table = pq.read_table(path)
    meta = pq.read_metadata(path).metadata
    assets = table.column("assets").combine_chunks()
    key = key or assets.type.field(0).name
    fields = []
    for i in range(assets.type.num_fields):
        f = assets.field(i)
        if assets.type.field(i).name == key:
            hrefs = f.field("href").to_pylist()
            hrefs[0] = href
            children = [f.field(j) if f.type.field(j).name != "href" else pa.array(hrefs, pa.string())
                        for j in range(f.type.num_fields)]
            f = pa.StructArray.from_arrays(children, fields=list(f.type))
        fields.append(f)
    new = pa.StructArray.from_arrays(fields, fields=list(assets.type))
    table = table.set_column(table.schema.get_field_index("assets"), table.schema.field("assets"), new)
    pq.write_table(table.replace_schema_metadata(meta), path)


def _hostile_hrefs(outside: Path, port: int) -> list[str]:
    return [
        "../../outside/x.tif",                 # relative escape from index/
        "../../../outside/x.tif",
        str(outside / "x.tif"),                # absolute local path
        (outside / "x.tif").as_uri(),          # file:// URL
        f"http://127.0.0.1:{port}/x.tif",      # a host of the attacker's choosing (SSRF)
        "http://169.254.169.254/latest/meta-data/",
        "s3://another-bucket/x.tif",           # another bucket, inside a local catalog
        "%2e%2e/%2e%2e/outside/x.tif",         # percent-encoded traversal
        "..%2f..%2foutside%2fx.tif",
        "..\\..\\outside\\x.tif",
        "/vsicurl/http://127.0.0.1/x.tif",     # GDAL virtual path
    ]


READERS: dict[str, Callable[[Catalog], Any]] = {
    "rows": lambda c: list(c.search()),
    "item_dicts": lambda c: list(c.search().item_dicts()),
    "item_collection": lambda c: c.search().to_item_collection(),
    "sample_table": lambda c: c.search().sample_table(),
    "pairs": lambda c: c.search(modality="pair").sample_table(),
    "torch": lambda c: list(c.search().to_torch(on_error="raise")),
    "xarray": lambda c: c.search().to_xarray().compute(),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_index_hrefs_outside_the_catalog_are_refused_by_every_reader(
        reader: str, real_catalog: Path, tmp_path: Path, outside: Path, listener: Listener) -> None:
    hrefs = _hostile_hrefs(outside, listener.port)
    for n, href in enumerate(hrefs):
        root = _copy(real_catalog, tmp_path / str(n))
        _set_index_href(root, href)
        cat = Catalog.open(str(root))
        with pytest.raises(HrefError) as err:
            READERS[reader](cat)
        assert repr(href) in str(err.value) or href in str(err.value), (href, str(err.value))
    assert listener.connections == 0


def test_partner_hrefs_are_confined_too(real_catalog: Path, tmp_path: Path, outside: Path) -> None:
    root = _copy(real_catalog, tmp_path)
    _set_index_href(root, "../../outside/x.tif", collection="bigearthnet-s1")
    with pytest.raises(HrefError, match="outside/x.tif"):
        Catalog.open(str(root)).search(modality="pair").sample_table()


@pytest.mark.parametrize("href", ["../outside/secret.json", "/etc/hostname", "file:///etc/hostname",
                                  "http://127.0.0.1:9/catalog.json", "s3://another-bucket/collection.json"])
def test_child_links_leaving_the_root_are_not_followed(href: str, real_catalog: Path, tmp_path: Path,
                                                       outside: Path) -> None:
    root = _copy(real_catalog, tmp_path)
    doc = json.loads((root / "catalog.json").read_text())
    doc["links"].append({"rel": "child", "href": href})
    (root / "catalog.json").write_text(json.dumps(doc))
    with pytest.raises(HrefError) as err:
        Catalog.open(str(root))
    assert repr(href) in str(err.value)
    # The validator's crawler reports the link and does not follow it.
    from bigearth_stac.validate import validate_catalog

    _, problems = validate_catalog(root)
    assert any(href in str(p) and "outside the catalog root" in str(p) for p in problems), problems


def test_item_links_leaving_the_root_are_not_crawled(real_catalog: Path, tmp_path: Path, outside: Path) -> None:
    """An ``item`` link of a tile catalog pointing outside: reported by the validator, never read."""
    from bigearth_stac.validate import validate_catalog

    root = _copy(real_catalog, tmp_path)
    tile = next((root / "bigearthnet-s2").glob("*/catalog.json"))
    doc = json.loads(tile.read_text())
    doc["links"].append({"rel": "item", "href": "../../../outside/secret.json", "type": "application/geo+json"})
    tile.write_text(json.dumps(doc))
    count, problems = validate_catalog(root)
    assert count > 0
    assert [p for p in problems if "outside/secret.json" in str(p)], problems
    assert not [p for p in problems if "secret" in str(p) and "outside the catalog root" not in str(p)]


@pytest.mark.parametrize("href", ["../../outside/index.parquet", "/tmp/index.parquet",
                                  "s3://another-bucket/index/bigearthnet-s2.parquet",
                                  "http://127.0.0.1:9/index.parquet"])
def test_index_asset_outside_the_root_is_refused(href: str, real_catalog: Path, tmp_path: Path,
                                                 outside: Path) -> None:
    root = _copy(real_catalog, tmp_path)
    path = root / "bigearthnet-s2" / "collection.json"
    doc = json.loads(path.read_text())
    doc["assets"]["geoparquet-items"]["href"] = href
    path.write_text(json.dumps(doc))
    with pytest.raises(HrefError) as err:
        Catalog.open(str(root))
    assert repr(href) in str(err.value)


def test_an_allow_list_admits_a_second_root(real_catalog: Path, tmp_path: Path, outside: Path) -> None:
    root = _copy(real_catalog, tmp_path)
    _set_index_href(root, str(outside / "x.tif"))
    table = Catalog.open(str(root), allow=[str(outside)]).search().sample_table()
    assert str((outside / "x.tif").resolve()) in pc.list_flatten(table.column("s2_assets")).to_pylist()


def test_a_tampered_sample_table_is_refused(real_catalog: Path, tmp_path: Path, outside: Path) -> None:
    table = Catalog.open(str(real_catalog)).search().sample_table()
    scope = scope_of(table)
    assert scope is not None and scope.root == str(real_catalog.resolve())
    assets = table.column("s2_assets").to_pylist()
    assets[0][0] = str(outside / "x.tif")
    bad = with_scope(table.set_column(1, "s2_assets", pa.array(assets, table.schema.field(1).type)), scope)
    from bigearth_stac.torch_dataset import BigEarthNetStream
    from bigearth_stac.xarray_view import to_xarray

    with pytest.raises(HrefError, match="outside"):
        BigEarthNetStream(bad)
    with pytest.raises(HrefError, match="outside"):
        to_xarray(bad)


def test_a_symlink_inside_the_catalog_cannot_lead_out(real_catalog: Path, tmp_path: Path, outside: Path) -> None:
    root = _copy(real_catalog, tmp_path)
    cog = next(root.rglob("*_s2_10m.tif"))
    cog.unlink()
    cog.symlink_to(outside / "x.tif")
    scope = Scope.of_catalog(str(root))
    with Fetcher(scope=scope) as fetcher, pytest.raises(FetchError, match="symlink") as err:
        fetcher.get(str(cog))
    assert isinstance(err.value.cause, HrefError)
    stream = Catalog.open(str(root)).search().to_torch(on_error="raise")
    with pytest.raises(Exception, match="symlink"):
        list(stream)


def test_a_remote_catalog_cannot_reach_another_bucket(s3_server: S3TestServer, real_catalog: Path,
                                                      tmp_path: Path) -> None:
    evil = s3_server.create_bucket("hostile-evil")
    s3_server.client().put_object(Bucket=evil, Key="x.tif", Body=next(real_catalog.rglob("*_s2_10m.tif")).read_bytes())
    root = _copy(real_catalog, tmp_path)
    _set_index_href(root, f"s3://{evil}/x.tif")
    bucket = s3_server.create_bucket("hostile-cat")
    s3_server.upload_tree(root, bucket, "cat")
    cat = Catalog.open(f"s3://{bucket}/cat/catalog.json", settings=s3_server.settings)
    with pytest.raises(HrefError, match=evil):
        cat.search().sample_table()
    with pytest.raises(HrefError, match=evil):
        list(cat.search().to_torch(settings=s3_server.settings))

    # geoparquet-items in another bucket
    doc = json.loads((root / "bigearthnet-s2" / "collection.json").read_text())
    doc["assets"]["geoparquet-items"]["href"] = f"s3://{evil}/index.parquet"
    s3_server.client().put_object(Bucket=bucket, Key="cat/bigearthnet-s2/collection.json", Body=json.dumps(doc).encode())
    with pytest.raises(HrefError, match=evil):
        Catalog.open(f"s3://{bucket}/cat/catalog.json", settings=s3_server.settings)


@pytest.mark.parametrize("doc", [b"[" * 200_000, b'{"links": 5}', b"\xff\xfe", b"null"])
def test_malformed_root_documents_are_catalog_errors(doc: bytes, tmp_path: Path) -> None:
    from bigearth_stac.catalog import CatalogError

    (tmp_path / "catalog.json").write_bytes(doc)
    with pytest.raises(CatalogError, match="catalog.json"):
        Catalog.open(str(tmp_path))
