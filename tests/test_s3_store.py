"""S3Store and building straight to S3, over real HTTP (moto server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from catalog_builder.build import BuildOptions, build
from catalog_builder.cli import main
from catalog_builder.cog import COG_MEDIA_TYPE
from catalog_builder.s3store import S3Store
from catalog_builder.sources import open_source
from catalog_builder.store import MANIFEST, STAGE_ROOT, OutputStore, open_store, read_manifest
from tests.s3fixtures import S3TestServer


def test_store_round_trip(s3_server: S3TestServer, s3_bucket: str) -> None:
    store = S3Store(f"s3://{s3_bucket}/cat/", s3_server.settings)
    assert isinstance(store, OutputStore)
    assert store.url == f"s3://{s3_bucket}/cat"
    assert store.read("a/b.json") is None
    assert store.size("a/b.json") is None

    store.write("a/b.json", b'{"x": 1}', "application/json")
    assert store.read("a/b.json") == b'{"x": 1}'
    assert store.size("a/b.json") == 8
    head = s3_server.head(s3_bucket, "cat/a/b.json")
    assert head["ContentType"] == "application/json"
    assert head["Metadata"]["sha256"] == hashlib.sha256(b'{"x": 1}').hexdigest()


def test_store_refuses_paths_outside_its_prefix(s3_server: S3TestServer, s3_bucket: str) -> None:
    store = S3Store(f"s3://{s3_bucket}/cat", s3_server.settings)
    for bad in ("../other/x.json", "/abs.json", "a//b", "a/./b", ""):
        with pytest.raises(ValueError, match="refusing path"):
            store.write(bad, b"x", "application/json")
    assert s3_server.keys(s3_bucket) == []


def test_open_store_dispatches_and_store_pickles_without_its_client(s3_server: S3TestServer, s3_bucket: str) -> None:
    store = open_store(f"s3://{s3_bucket}/p", settings=s3_server.settings)
    assert isinstance(store, S3Store)
    store.write("x.txt", b"hello", "text/plain")
    _ = store.client  # created in this process ...
    blob = pickle.dumps(store)
    assert b"botocore" not in blob  # ... but never pickled
    # Another process (as a Dask worker would) reads through its own client.
    code = ("import pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); "
            "sys.stdout.buffer.write(s.read('x.txt'))")
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, check=True, timeout=60)
    assert out.stdout == b"hello"


def test_build_straight_to_s3(s3_server: S3TestServer, s3_bucket: str, real_raw: tuple[Path, Path],
                              real_catalog: Path, fault_proxy) -> None:
    # Through the (pass-through) proxy, to see the order of the writes.
    settings = s3_server.settings_for(fault_proxy.endpoint_url)
    store = S3Store(f"s3://{s3_bucket}/bigearthnet", settings)
    report = build(open_source(str(real_raw[0]), str(real_raw[1]), settings=settings), store,
                   BuildOptions(scheduler="synchronous"))
    assert report.ok, report.describe()
    assert report.built == 6

    manifest = read_manifest(s3_server.get(s3_bucket, f"bigearthnet/{MANIFEST}"))
    keys = set(s3_server.keys(s3_bucket, "bigearthnet/"))
    assert keys == {f"bigearthnet/{e.path}" for e in manifest} | {f"bigearthnet/{MANIFEST}"}
    for e in manifest:
        head = s3_server.head(s3_bucket, f"bigearthnet/{e.path}")
        assert head["ContentLength"] == e.size
        assert head["ContentType"] == e.media_type
        assert head["Metadata"]["sha256"] == e.sha256
    assert {e.media_type for e in manifest if e.path.endswith(".tif")} == {COG_MEDIA_TYPE}

    # The root is the last object written; no local path leaks into it.
    puts = [r.path for r in fault_proxy.seen("PUT", 200)]
    assert puts[-1] == f"/{s3_bucket}/bigearthnet/catalog.json"
    assert [e.path for e in manifest if e.stage == STAGE_ROOT] == ["catalog.json"]

    # Same bytes as a local build of the same pairs (deterministic encoding).
    local = {e.path: e.sha256 for e in read_manifest((real_catalog / MANIFEST).read_bytes())}
    assert {e.path: e.sha256 for e in manifest} == local
    root = json.loads(s3_server.get(s3_bucket, "bigearthnet/catalog.json"))
    assert all(not link["href"].startswith(("/", "file:")) for link in root["links"])

    # A rerun finds every pair intact and writes only the small metadata again.
    fault_proxy.reset_log()
    again = build(open_source(str(real_raw[0]), str(real_raw[1]), settings=settings), store,
                  BuildOptions(scheduler="synchronous"))
    assert again.skipped == 6 and again.built == 0
    assert not [p for p in (r.path for r in fault_proxy.seen("PUT")) if p.endswith(".tif")]


def test_cli_build_to_s3(s3_server: S3TestServer, s3_bucket: str, real_raw: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(main, [
        "build", "--s2", str(real_raw[0]), "--s1", str(real_raw[1]), "--out", f"s3://{s3_bucket}/cli",
        "--scheduler", "synchronous", "--limit", "2", "--endpoint-url", s3_server.endpoint_url,
    ])
    assert result.exit_code == 0, result.output
    keys = s3_server.keys(s3_bucket, "cli/")
    assert "cli/catalog.json" in keys and "cli/manifest.parquet" in keys
    assert sum(k.endswith(".tif") for k in keys) == 2 * 4
