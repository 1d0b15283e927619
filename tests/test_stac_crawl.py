"""A built catalog is a crawlable static STAC catalog that validates offline (DESIGN.md #16).

The real clients crawl it: pystac (``get_all_items``, ``validate_all``) and rustac (``walk``);
``bigearth-stac validate`` validates every document with the schemas the package ships and
names the document and the error when one is wrong. The network is blocked while validating,
so a schema fetched from the internet fails the test.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pystac
import pystac.validation as pv
import pytest
from click.testing import CliRunner

from bigearth_stac.cli import main as bigearth_cli
from bigearth_stac.validate import make_validator, schema_url_for, validate_catalog
from bigearth_stac.vocab import SCHEMA_URI
from catalog_builder.build import BuildOptions, build
from catalog_builder.sources import open_source
from catalog_builder.store import LocalStore
from tests.s3fixtures import S3TestServer

LAYOUTS = ["real_catalog", "real_catalog_per_band"]


def _loopback(address: Any) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection to another machine fails (local files and test servers on 127.0.0.1 work)."""
    connect = socket.socket.connect
    create_connection = socket.create_connection

    def guarded_connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
            raise OSError(f"network access in an offline test: {address}")
        return connect(sock, address)

    def guarded_create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        if not _loopback(address):
            raise OSError(f"network access in an offline test: {address}")
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)


@pytest.fixture
def served_catalog(real_catalog: Path) -> Iterator[str]:
    """The real catalog served over HTTP on 127.0.0.1; yields its root URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(real_catalog)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def offline_pystac_validator(no_network: None) -> Iterator[pv.JsonSchemaSTACValidator]:
    """pystac's process-wide validator set to the package's offline schemas, restored afterwards."""
    previous = pv.RegisteredValidator.get_validator()
    validator = make_validator()
    pv.set_validator(validator)
    try:
        yield validator
    finally:
        pv.set_validator(previous)


def _item_files(root: Path) -> list[Path]:
    return sorted(root.glob("*/*/*/*.json"))


def _tiles(root: Path, collection: str) -> list[str]:
    return sorted({p.parent.parent.name for p in root.glob(f"{collection}/*/*/*.json")})


@pytest.mark.parametrize("fixture", LAYOUTS)
def test_pystac_crawls_every_item(fixture: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(fixture)
    catalog = pystac.Catalog.from_file(str(root / "catalog.json"))
    items = list(catalog.get_all_items())
    assert len(items) == 12
    assert sorted(i.id for i in items) == sorted(p.stem for p in _item_files(root))
    for collection in catalog.get_children():
        assert isinstance(collection, pystac.Collection)
        tiles = list(collection.get_children())
        assert [t.id for t in tiles] == [f"{collection.id}-{t}" for t in _tiles(root, collection.id)]
        for tile in tiles:
            for item in tile.get_items():
                # the tree: root -> collection -> tile catalog -> item, every link relative
                assert item.get_parent() is tile or item.get_parent().id == tile.id
                assert item.get_collection().id == collection.id == item.collection_id
                assert item.properties["bigearthnet:tile"] == tile.id.rsplit("-", 1)[1]
                assert Path(item.get_self_href()).parent.parent.name == item.properties["bigearthnet:tile"]
    for doc in [root / "catalog.json", *root.glob("*/collection.json"), *root.glob("*/*/catalog.json"), *_item_files(root)]:
        for link in json.loads(doc.read_text())["links"]:
            if link["rel"] in ("root", "parent", "child", "item", "collection", "related"):
                assert "://" not in link["href"] and not link["href"].startswith("/"), (doc, link)
                assert (doc.parent / link["href"]).resolve().is_file(), (doc, link)


@pytest.mark.parametrize("fixture", LAYOUTS)
def test_pystac_validate_all_offline(fixture: str, request: pytest.FixtureRequest,
                                     offline_pystac_validator: pv.JsonSchemaSTACValidator) -> None:
    root: Path = request.getfixturevalue(fixture)
    catalog = pystac.Catalog.from_file(str(root / "catalog.json"))
    assert catalog.validate_all() == 12  # pystac counts the items it validated
    broken = next(catalog.get_items(recursive=True))
    broken.properties["bigearthnet:cloud_or_shadow"] = "yes"
    with pytest.raises(pystac.STACValidationError, match="cloud_or_shadow|is not of type"):
        broken.validate()


@pytest.mark.parametrize("fixture", LAYOUTS)
def test_rustac_walks_every_item(fixture: str, request: pytest.FixtureRequest) -> None:
    rustac = pytest.importorskip("rustac")
    root: Path = request.getfixturevalue(fixture)

    async def walk() -> tuple[list[str], list[str]]:
        containers, items = [], []
        async for container, _children, found in rustac.walk(rustac.read_sync(str(root / "catalog.json"))):
            containers.append(container["id"])
            items.extend(i["id"] for i in found)
        return containers, items

    containers, items = asyncio.run(walk())
    assert sorted(items) == sorted(p.stem for p in _item_files(root))
    assert len(containers) == 1 + 2 + 2 * len(_tiles(root, "bigearthnet-s2"))
    # rustac also reads the stac-geoparquet index as an item collection
    index = rustac.read_sync(str(root / "index/bigearthnet-s2.parquet"))
    assert sorted(f["id"] for f in index["features"]) == sorted(p.stem for p in root.glob("bigearthnet-s2/*/*/*.json"))


@pytest.mark.parametrize("fixture", LAYOUTS)
def test_validate_command_passes_on_a_built_catalog(fixture: str, request: pytest.FixtureRequest, no_network: None) -> None:
    root: Path = request.getfixturevalue(fixture)
    result = CliRunner().invoke(bigearth_cli, ["validate", str(root)])
    assert result.exit_code == 0, result.output
    tiles = len(_tiles(root, "bigearthnet-s2"))
    assert f"{1 + 2 + 2 * tiles + 12} documents validated offline: 0 problems" in result.output


def test_validate_command_names_the_broken_document(real_catalog: Path, tmp_path: Path, no_network: None) -> None:
    root = tmp_path / "catalog"
    shutil.copytree(real_catalog, root)
    bad_item = _item_files(root)[0]
    item = json.loads(bad_item.read_text())
    item["properties"]["bigearthnet:seasonal_snow"] = "no"  # a wrong-typed property of our extension
    bad_item.write_text(json.dumps(item))
    unknown = next(root.glob("bigearthnet-s1/*/*/*.json"))
    item = json.loads(unknown.read_text())
    item["stac_extensions"].append("https://example.org/not-shipped/v1.0.0/schema.json")
    unknown.write_text(json.dumps(item))
    missing = next(root.glob("bigearthnet-s1/*/catalog.json"))
    links = json.loads(missing.read_text())
    links["links"].append({"rel": "item", "href": "./nowhere/nowhere.json"})
    missing.write_text(json.dumps(links))

    result = CliRunner().invoke(bigearth_cli, ["validate", str(root)])
    assert result.exit_code == 1
    rel = bad_item.relative_to(root).as_posix()
    assert f"invalid: {rel}: $.properties['bigearthnet:seasonal_snow']: 'no' is not of type 'boolean'" in result.output
    assert f"invalid: {unknown.relative_to(root).as_posix()}: schema https://example.org/not-shipped" in result.output
    assert "nowhere.json: cannot read" in result.output
    assert "3 problems" in result.output

    count, problems = validate_catalog(root)
    assert sorted(p.path for p in problems) == sorted([rel, unknown.relative_to(root).as_posix(),
                                                       missing.parent.joinpath("nowhere/nowhere.json").relative_to(root).as_posix()])


def test_validate_a_published_catalog_over_http_and_s3(real_catalog: Path, served_catalog: str, no_network: None,
                                                       s3_server: S3TestServer, s3_bucket: str) -> None:
    expected = validate_catalog(real_catalog)
    assert expected[1] == []
    assert validate_catalog(served_catalog) == expected
    assert validate_catalog(served_catalog + "catalog.json") == expected
    s3_server.upload_tree(real_catalog, s3_bucket, "bigearthnet")
    assert validate_catalog(f"s3://{s3_bucket}/bigearthnet", settings=s3_server.settings) == expected


def test_max_items_validates_fewer_items_of_each_tile(real_catalog: Path) -> None:
    tiles = len(_tiles(real_catalog, "bigearthnet-s2"))
    assert validate_catalog(real_catalog, max_items=0) == (1 + 2 + 2 * tiles, [])
    count, problems = validate_catalog(real_catalog, max_items=1)
    assert count == 1 + 2 + 2 * tiles + 2 * tiles and problems == []


def test_validation_refuses_links_leaving_the_catalog(real_catalog: Path, tmp_path: Path) -> None:
    root = tmp_path / "catalog"
    shutil.copytree(real_catalog, root)
    (tmp_path / "outside.json").write_text(json.dumps({"type": "Catalog"}))
    doc = json.loads((root / "catalog.json").read_text())
    doc["links"].append({"rel": "child", "href": "../outside.json"})
    (root / "catalog.json").write_text(json.dumps(doc))
    _count, problems = validate_catalog(root)
    assert [p.path for p in problems] == ["catalog.json"]
    assert "outside.json" in problems[0].message


def test_a_published_schema_that_differs_is_reported(real_catalog: Path, tmp_path: Path) -> None:
    root = tmp_path / "catalog"
    shutil.copytree(real_catalog, root)
    schema = root / "schema/v1.0.0/schema.json"
    schema.chmod(0o644)
    doc = json.loads(schema.read_text())
    doc["definitions"]["fields"] = {}
    schema.write_text(json.dumps(doc))
    _count, problems = validate_catalog(root)
    assert [p.path for p in problems] == ["schema/v1.0.0/schema.json"]


def test_schema_url_for_a_publication() -> None:
    assert schema_url_for("https://data.example.org/bigearthnet") == "https://data.example.org/bigearthnet/schema/v1.0.0/schema.json"
    assert schema_url_for("https://data.example.org/bigearthnet/catalog.json") == schema_url_for("https://data.example.org/bigearthnet/")
    assert schema_url_for("s3://bucket/prefix") == "s3://bucket/prefix/schema/v1.0.0/schema.json"
    with pytest.raises(ValueError, match="absolute"):
        schema_url_for("catalog/")


def test_a_build_for_a_base_url_lists_the_published_schema(real_raw: tuple[Path, Path], real_catalog: Path,
                                                           tmp_path: Path, no_network: None) -> None:
    url = schema_url_for("https://data.example.org/bigearthnet")
    out = tmp_path / "catalog"
    report = build(open_source(str(real_raw[0]), str(real_raw[1])), LocalStore(out),
                   BuildOptions(scheduler="synchronous", schema_url=url))
    assert report.ok and report.built == 6
    published = json.loads((out / "schema/v1.0.0/schema.json").read_text())
    assert published["$id"] == url
    docs = [*out.glob("*/collection.json"), *_item_files(out)]
    for doc in docs:
        extensions = json.loads(doc.read_text())["stac_extensions"]
        assert url in extensions and SCHEMA_URI not in extensions, doc
    # the default build lists the canonical identifier and publishes the schema as shipped
    assert json.loads((real_catalog / "schema/v1.0.0/schema.json").read_text())["$id"] == SCHEMA_URI
    assert validate_catalog(out) == (1 + 2 + 2 * len(_tiles(out, "bigearthnet-s2")) + 12, [])
    # pystac resolves the URL from the validator's cache, not from the (unreachable) host
    pystac_validator = make_validator(own_urls=[url])
    for doc in docs:
        pystac.read_file(str(doc)).validate(pystac_validator)
    # a rerun with another URL rebuilds the items (they list the URL), not a mix of both
    again = build(open_source(str(real_raw[0]), str(real_raw[1])), LocalStore(out), BuildOptions(scheduler="synchronous"))
    assert again.ok
    for doc in docs:
        assert SCHEMA_URI in json.loads(doc.read_text())["stac_extensions"], doc


def test_build_command_takes_a_base_url_or_a_schema_url(tmp_path: Path) -> None:
    from catalog_builder.cli import main as builder_cli

    args = ["build", "--s2", str(tmp_path), "--s1", str(tmp_path), "--out", str(tmp_path / "out")]
    both = CliRunner().invoke(builder_cli, [*args, "--base-url", "https://h/x", "--schema-url", "https://h/s.json"])
    assert both.exit_code == 2 and "not both" in both.output
    relative = CliRunner().invoke(builder_cli, [*args, "--base-url", "catalog/"])
    assert relative.exit_code == 2 and "absolute" in relative.output
