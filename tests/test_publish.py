"""Publishing a local catalog to S3 over real HTTP: order, verification, reruns, injected faults."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from bigearth_devtools.faultproxy import FaultPlan, FaultProxy
from click.testing import CliRunner

from catalog_builder.cli import main
from catalog_builder.publish import PublishError, PublishOptions, load_manifest, publish
from catalog_builder.store import MANIFEST, STAGE_COG, STAGE_ITEM, STAGE_ROOT, ManifestEntry
from tests.s3fixtures import S3TestServer

PREFIX = "bigearthnet/v1"


def _stage_of(entries: list[ManifestEntry], bucket: str) -> dict[str, int]:
    """Request path (``/bucket/prefix/path``) -> stage."""
    return {f"/{bucket}/{PREFIX}/{e.path}": e.stage for e in entries}


def _assert_published_exactly(s3: S3TestServer, bucket: str, catalog: Path) -> list[ManifestEntry]:
    """Every manifest object is in the bucket with the local bytes, type and checksum; nothing else."""
    entries = load_manifest(catalog)
    assert set(s3.keys(bucket)) == {f"{PREFIX}/{e.path}" for e in entries}
    for e in entries:
        key = f"{PREFIX}/{e.path}"
        head = s3.head(bucket, key)
        assert head["ContentType"] == e.media_type, key
        assert head["Metadata"]["sha256"] == e.sha256, key
        data = s3.get(bucket, key)
        assert len(data) == e.size and hashlib.sha256(data).hexdigest() == e.sha256, key
        assert data == (catalog / e.path).read_bytes(), key
    return entries


def _assert_root_last(proxy: FaultProxy, entries: list[ManifestEntry], bucket: str) -> None:
    """Successful PUTs come in stage order, and the root's is the very last."""
    stages = _stage_of(entries, bucket)
    ok_puts = [r.path for r in proxy.seen("PUT", 200)]
    assert ok_puts[-1] == f"/{bucket}/{PREFIX}/catalog.json"
    order = [stages[p] for p in ok_puts]
    assert order == sorted(order), "a stage started before the previous one was complete"


def test_publish_in_stage_order_and_verified(s3_server: S3TestServer, s3_bucket: str, real_catalog: Path,
                                             fault_proxy: FaultProxy) -> None:
    settings = s3_server.settings_for(fault_proxy.endpoint_url)
    calls: list[tuple[int, int]] = []
    report = publish(real_catalog, f"s3://{s3_bucket}/{PREFIX}", settings, PublishOptions(workers=8),
                     progress=lambda done, total: calls.append((done, total)))
    entries = _assert_published_exactly(s3_server, s3_bucket, real_catalog)
    assert report.objects == len(entries) == report.uploaded
    assert report.skipped == 0
    assert report.bytes_uploaded == sum(e.size for e in entries)
    assert calls[-1] == (len(entries), len(entries))
    assert {e.stage for e in entries} == {0, 1, 2, 3}
    assert MANIFEST in {e.path for e in entries}
    _assert_root_last(fault_proxy, entries, s3_bucket)
    # One listing of the (empty) destination, then one PUT per object, each verified by a HEAD.
    assert fault_proxy.count("PUT") == len(entries)
    assert fault_proxy.count("HEAD") == len(entries)
    gets = fault_proxy.seen("GET")
    assert len(gets) == 1 and "list-type=2" in gets[0].path


def test_republish_uploads_nothing_and_repairs_what_changed(s3_server: S3TestServer, s3_bucket: str,
                                                             real_catalog: Path, fault_proxy: FaultProxy) -> None:
    dest = f"s3://{s3_bucket}/{PREFIX}"
    publish(real_catalog, dest, s3_server.settings)
    settings = s3_server.settings_for(fault_proxy.endpoint_url)

    again = publish(real_catalog, dest, settings)
    assert again.uploaded == 0 and again.skipped == again.objects
    assert fault_proxy.count("PUT") == 0
    assert fault_proxy.count("HEAD") == again.objects  # verified by HEAD alone
    assert all("list-type=2" in r.path for r in fault_proxy.seen("GET"))  # no object downloaded

    # An object changed behind our back, and one deleted: exactly those two are uploaded again.
    entries = load_manifest(real_catalog)
    item = next(e for e in entries if e.stage == STAGE_ITEM)
    cog = next(e for e in entries if e.stage == STAGE_COG)
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key=f"{PREFIX}/{item.path}", Body=b"{}", ContentType=item.media_type)
    client.delete_object(Bucket=s3_bucket, Key=f"{PREFIX}/{cog.path}")
    fault_proxy.reset_log()
    repaired = publish(real_catalog, dest, settings)
    assert repaired.uploaded == 2
    assert sorted(r.path for r in fault_proxy.seen("PUT")) == sorted(
        f"/{s3_bucket}/{PREFIX}/{e.path}" for e in (item, cog))
    _assert_published_exactly(s3_server, s3_bucket, real_catalog)


def test_cli_publish(s3_server: S3TestServer, s3_bucket: str, real_catalog: Path) -> None:
    args = ["publish", str(real_catalog), f"s3://{s3_bucket}/{PREFIX}", "--endpoint-url", s3_server.endpoint_url,
            "--workers", "4", "--verify", "get"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "already there" in result.output
    _assert_published_exactly(s3_server, s3_bucket, real_catalog)
    rerun = CliRunner().invoke(main, args)
    assert rerun.exit_code == 0 and " 0 uploaded" in rerun.output, rerun.output

    bad = CliRunner().invoke(main, ["publish", str(real_catalog), "/tmp/not-s3"])
    assert bad.exit_code != 0 and "s3://" in bad.output


@pytest.mark.parametrize("plan", [
    # Throttling: 503 SlowDown on a share of all requests, and on the first PUT of a third of the keys.
    FaultPlan(error_share=0.12, fail_first_share=0.35, methods=frozenset({"PUT"}), seed=1),
    FaultPlan(error_share=0.08, seed=2),
    # Dropped connections: before the server saw the request, and after it stored the object.
    FaultPlan(drop_share=0.1, seed=3),
    FaultPlan(drop_share=0.15, drop_after_forward=True, methods=frozenset({"PUT"}), seed=4),
], ids=["503-put", "503-all", "drop-before", "drop-after-put"])
def test_publish_completes_under_transient_failures(s3_server: S3TestServer, s3_bucket: str, real_catalog: Path,
                                                    fault_proxy: FaultProxy, plan: FaultPlan) -> None:
    fault_proxy.configure(plan)
    settings = s3_server.settings_for(fault_proxy.endpoint_url, max_attempts=8)
    report = publish(real_catalog, f"s3://{s3_bucket}/{PREFIX}", settings)
    injected = fault_proxy.count(status=503) + fault_proxy.count(status=0)
    assert injected > 0, "the plan injected no fault"
    entries = _assert_published_exactly(s3_server, s3_bucket, real_catalog)
    assert report.uploaded == len(entries)
    _assert_root_last(fault_proxy, entries, s3_bucket)


def test_publish_stops_on_persistent_failure_then_resumes(s3_server: S3TestServer, s3_bucket: str,
                                                          real_catalog: Path, fault_proxy: FaultProxy) -> None:
    entries = load_manifest(real_catalog)
    broken = sorted(e.path for e in entries if e.stage == STAGE_ITEM)[3]
    fault_proxy.configure(FaultPlan(always_fail=frozenset({f"/{s3_bucket}/{PREFIX}/{broken}"}),
                                    methods=frozenset({"PUT"})))
    settings = s3_server.settings_for(fault_proxy.endpoint_url, max_attempts=2)
    dest = f"s3://{s3_bucket}/{PREFIX}"

    with pytest.raises(PublishError) as err:
        publish(real_catalog, dest, settings, PublishOptions(workers=4))
    assert err.value.where == f"{dest}/{broken}"
    assert broken in str(err.value) and "root catalog was not published" in str(err.value)
    present = set(s3_server.keys(s3_bucket))
    assert f"{PREFIX}/catalog.json" not in present
    assert f"{PREFIX}/{broken}" not in present
    assert all(f"{PREFIX}/{e.path}" in present for e in entries if e.stage == STAGE_COG)
    assert not any(f"{PREFIX}/{e.path}" in present for e in entries if e.stage > STAGE_ITEM)

    # The store recovers: the rerun uploads only what is missing and finishes with the root.
    fault_proxy.configure(FaultPlan())
    fault_proxy.reset_log()
    report = publish(real_catalog, dest, settings)
    assert report.uploaded == len(entries) - len(present)
    assert report.skipped == len(present)
    assert fault_proxy.count("PUT") == report.uploaded
    assert fault_proxy.seen("PUT")[-1].path == f"/{s3_bucket}/{PREFIX}/catalog.json"
    _assert_published_exactly(s3_server, s3_bucket, real_catalog)


def _copy(catalog: Path, tmp_path: Path) -> Path:
    out = tmp_path / "catalog"
    shutil.copytree(catalog, out)
    return out


def test_corrupt_local_file_is_refused(s3_server: S3TestServer, s3_bucket: str, real_catalog: Path,
                                       tmp_path: Path) -> None:
    catalog = _copy(real_catalog, tmp_path)
    entries = load_manifest(catalog)
    item = next(e for e in entries if e.stage == STAGE_ITEM)
    data = bytearray((catalog / item.path).read_bytes())
    data[10] ^= 0x01  # same size, different content
    (catalog / item.path).write_bytes(bytes(data))
    with pytest.raises(PublishError, match="corrupt or changed") as err:
        publish(catalog, f"s3://{s3_bucket}/{PREFIX}", s3_server.settings)
    assert err.value.where == str(catalog / item.path)
    assert f"{PREFIX}/catalog.json" not in s3_server.keys(s3_bucket)


def test_missing_or_resized_local_file_is_refused_before_any_upload(s3_server: S3TestServer, s3_bucket: str,
                                                                   real_catalog: Path, tmp_path: Path) -> None:
    catalog = _copy(real_catalog, tmp_path)
    cog = next(e for e in load_manifest(catalog) if e.stage == STAGE_COG)
    with (catalog / cog.path).open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(PublishError, match="the manifest says") as err:
        publish(catalog, f"s3://{s3_bucket}/{PREFIX}", s3_server.settings)
    assert err.value.where == str(catalog / cog.path)
    (catalog / cog.path).unlink()
    with pytest.raises(PublishError, match="missing"):
        publish(catalog, f"s3://{s3_bucket}/{PREFIX}", s3_server.settings)
    (catalog / MANIFEST).unlink()
    with pytest.raises(PublishError, match="no manifest"):
        publish(catalog, f"s3://{s3_bucket}/{PREFIX}", s3_server.settings)
    assert s3_server.keys(s3_bucket) == []


def test_manifest_lists_the_root(real_catalog: Path) -> None:
    roots = [e for e in load_manifest(real_catalog) if e.stage == STAGE_ROOT]
    assert [e.path for e in roots] == ["catalog.json"]
    assert roots[0].sha256 == hashlib.sha256((real_catalog / "catalog.json").read_bytes()).hexdigest()
