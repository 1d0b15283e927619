"""Hostile raw input and hostile catalogs (issue 12): bounded, named, and never half-published.

The builder: a deeply nested JSON, a huge (sparse) band file or JSON, a symlink leading out of
the raw root, a FIFO, names with a trailing newline or non-ASCII digits. Each is a problem that
names the file, and every other pair is still built. Publishing: local paths hidden by JSON
escapes, hrefs that climb out of the catalog, and a refusal that uploads nothing at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog_builder.build import BuildOptions, build
from catalog_builder.publish import PublishError, check_publishable, load_manifest, publish
from catalog_builder.rawio import (
    LocalReader,
    OutsideRootError,
    RawInputError,
    TooLargeError,
    loads_bounded,
)
from catalog_builder.records import SourceError
from catalog_builder.s3raw import S3Reader
from catalog_builder.sources import V1Source, band_byte_limit, open_source
from catalog_builder.store import (
    MANIFEST,
    STAGE_ITEM,
    LocalStore,
    ManifestEntry,
    manifest_bytes,
    read_manifest,
)
from catalog_builder.tables import OfficialTables, load_tables
from tests.s3fixtures import S3TestServer

AUSTRIA = "S2A_MSIL2A_20170613T101031_87_48"
IRELAND_1 = "S2A_MSIL2A_20170617T113321_36_85"
IRELAND_2 = "S2A_MSIL2A_20170617T113321_4_55"
FINLAND_1 = "S2B_MSIL2A_20170924T93020_69_24"
PORTUGAL = "S2A_MSIL2A_20171221T112501_56_35"
FINLAND_2 = "S2B_MSIL2A_20180204T94161_57_38"
ALL_S2 = [AUSTRIA, IRELAND_1, IRELAND_2, FINLAND_1, PORTUGAL, FINLAND_2]
S1_AUSTRIA = "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48"
S1_FINLAND_2 = "S1A_IW_GRDH_1SDV_20180204T043253_35VPK_57_38"


@pytest.fixture()
def raw(real_raw: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the six real pairs: (S2 root, S1 root)."""
    return (shutil.copytree(real_raw[0], tmp_path / "raw" / "s2"),
            shutil.copytree(real_raw[1], tmp_path / "raw" / "s1"))


def _json_path(root: Path, patch: str) -> Path:
    return root / patch / f"{patch}_labels_metadata.json"


def _band_path(root: Path, patch: str, band: str) -> Path:
    return root / patch / f"{patch}_{band}.tif"


def _build(raw: tuple[Path, Path], out: Path) -> tuple[object, list[str], float]:
    started = time.perf_counter()
    report = build(open_source(str(raw[0]), str(raw[1])), LocalStore(out), BuildOptions(scheduler="synchronous"))
    return report, [str(p) for p in report.problems], time.perf_counter() - started


def _built_s2(out: Path) -> list[str]:
    return sorted(p.stem for p in out.glob("bigearthnet-s2/*/*/*.json"))


def _assert_catalog_of(out: Path, good: list[str]) -> None:
    """The good pairs are built and indexed, and the catalog is complete (index, collections, root)."""
    assert _built_s2(out) == sorted(good)
    assert (out / "catalog.json").is_file() and (out / MANIFEST).is_file()
    assert pq.read_metadata(out / "index" / "bigearthnet-s2.parquet").num_rows == len(good)
    coll = json.loads((out / "bigearthnet-s2" / "collection.json").read_text())
    assert coll["bigearthnet:item_count"] == len(good)


# ---------------------------------------------------------------------------------------------
# 1-3: deep JSON, huge files and symlinks out of the root in one build
# ---------------------------------------------------------------------------------------------


def test_hostile_files_are_named_and_the_rest_is_built(raw: tuple[Path, Path], tmp_path: Path) -> None:
    s2, s1 = raw
    # 1. a 200 KB metadata JSON nested 100,000 deep
    deep = _json_path(s2, AUSTRIA)
    deep.write_text("[" * 100_000 + "]" * 100_000)
    # 2. a 5 GB (sparse: no disk) band file, and a 200 MB (sparse) JSON
    huge_band = _band_path(s2, IRELAND_1, "B03")
    with huge_band.open("r+b") as fh:
        fh.truncate(5 * 2**30)
    huge_json = _json_path(s2, IRELAND_2)
    with huge_json.open("r+b") as fh:
        fh.truncate(200 * 2**20)
    # 3. a band file and a JSON that are symlinks leading out of the raw root (to valid files)
    outside = tmp_path / "outside"
    outside.mkdir()
    linked_band = _band_path(s2, FINLAND_1, "B04")
    shutil.move(linked_band, outside / linked_band.name)
    linked_band.symlink_to(outside / linked_band.name)
    linked_json = _json_path(s1, S1_FINLAND_2)
    shutil.move(linked_json, outside / linked_json.name)
    linked_json.symlink_to(outside / linked_json.name)

    out = tmp_path / "catalog"
    report, problems, seconds = _build(raw, out)
    assert len(problems) == 5, problems
    expected = {
        deep: "nested deeper than",
        huge_band: "5,368,709,120 bytes, more than",
        huge_json: "209,715,200 bytes, more than",
        linked_band: "leads outside the raw root",
        linked_json: "leads outside the raw root",
    }
    for path, problem in expected.items():
        assert sum(str(path) in m and problem in m for m in problems) == 1, (path, problems)
    assert not any("S1 partner" in m for m in problems), problems  # each pair named once
    assert report.built == 1  # type: ignore[attr-defined]
    _assert_catalog_of(out, [PORTUGAL])
    assert seconds < 120  # bounded: nothing above was read whole


def test_reader_refuses_before_reading(raw: tuple[Path, Path], tmp_path: Path) -> None:
    s2 = raw[0]
    reader = LocalReader(s2)
    band = f"{AUSTRIA}/{AUSTRIA}_B02.tif"
    size = (s2 / band).stat().st_size
    assert reader.read(band, max_bytes=size) == (s2 / band).read_bytes()
    with pytest.raises(TooLargeError, match=f"{size:,} bytes, more than the {size - 1:,}"):
        reader.read(band, max_bytes=size - 1)
    sparse = f"{IRELAND_1}/{IRELAND_1}_B02.tif"
    with (s2 / sparse).open("r+b") as fh:
        fh.truncate(5 * 2**30)
    started = time.perf_counter()
    with pytest.raises(TooLargeError):
        reader.read(sparse, max_bytes=band_byte_limit("B02"))
    assert time.perf_counter() - started < 1.0
    # a FIFO must not block the build, a folder is not a band, '..' never leaves the root
    fifo = _band_path(s2, AUSTRIA, "B03")
    fifo.unlink()
    os.mkfifo(fifo)
    with pytest.raises(RawInputError, match="not a regular file"):
        reader.read(f"{AUSTRIA}/{fifo.name}")
    folder = _band_path(s2, AUSTRIA, "B04")
    folder.unlink()
    folder.mkdir()
    with pytest.raises(RawInputError, match="not a regular file"):
        reader.read(f"{AUSTRIA}/{folder.name}")
    with pytest.raises(OutsideRootError):
        reader.read(f"../s1/{S1_AUSTRIA}/{S1_AUSTRIA}_VV.tif")
    with pytest.raises(SourceError, match=r"_B03\.tif: band B03 is not a regular file"):
        source = open_source(str(s2), str(raw[1]))
        source.read_pixels(source.read_pair(S1_AUSTRIA))


def test_symlinks_inside_the_root_still_work(raw: tuple[Path, Path], tmp_path: Path) -> None:
    """Containment is checked on the resolved path: links within the raw data are fine."""
    s2 = raw[0]
    band = _band_path(s2, AUSTRIA, "B02")
    stash = s2 / ".stash"
    stash.mkdir()
    shutil.move(band, stash / band.name)
    band.symlink_to(Path("..", ".stash", band.name))
    source = open_source(str(s2), str(raw[1]))
    pixels = source.read_pixels(source.read_pair(S1_AUSTRIA))
    assert pixels["B02"].shape == (120, 120)


def test_deep_or_odd_json_is_a_problem_not_a_crash(raw: tuple[Path, Path]) -> None:
    s2, s1 = raw
    cases = {
        "[" * 100_000: "nested deeper than",  # unbalanced, so no pre-scan can shortcut it
        '{"a":' * 50_000 + "1" + "}" * 50_000: "nested deeper than",
        '{"labels": ' + "1" * 5000 + "}": "malformed JSON",  # over Python's int digit limit
        '"' + '\\"' * 300_000: "malformed JSON",
    }
    for text, problem in cases.items():
        _json_path(s2, AUSTRIA).write_text(text)
        source = open_source(str(s2), str(s1))
        started = time.perf_counter()
        with pytest.raises(SourceError, match=problem) as err:
            source.read_pair(S1_AUSTRIA)
        assert time.perf_counter() - started < 5
        assert err.value.record.file == str(_json_path(s2, AUSTRIA))
        assert err.value.partner == AUSTRIA
    with pytest.raises(ValueError, match="nested deeper than 3"):
        loads_bounded(b'{"a": [[["x"]]]}', max_depth=3)
    assert loads_bounded(b'{"a": [["[[[{{{\\"\\\\"]]}', max_depth=3) == {"a": [['[[[{{{"\\']]}


# ---------------------------------------------------------------------------------------------
# 4: names that become ids and folder names
# ---------------------------------------------------------------------------------------------


def _rename_patch(root: Path, old: str, new: str) -> Path:
    folder = root / new
    (root / old).rename(folder)
    for f in folder.iterdir():
        f.rename(folder / f.name.replace(old, new))
    return folder


def _no_tables() -> OfficialTables:
    """Official tables that list no pair, as for patches outside the official release."""
    return OfficialTables(load_tables().table.slice(0, 0))


@pytest.mark.parametrize("suffix", ["\n", "\r\n"], ids=["newline", "crlf"])
def test_s2_partner_name_with_a_trailing_newline_is_refused(raw: tuple[Path, Path], suffix: str) -> None:
    s2, s1 = raw
    _rename_patch(s2, AUSTRIA, AUSTRIA + suffix)
    s1_json = _json_path(s1, S1_AUSTRIA)
    doc = json.loads(s1_json.read_text())
    doc["corresponding_s2_patch"] = AUSTRIA + suffix
    s1_json.write_text(json.dumps(doc))
    source = open_source(str(s2), str(s1))
    with pytest.raises(SourceError, match="'corresponding_s2_patch' is not an S2 patch name") as err:
        source.read_pair(S1_AUSTRIA)
    assert err.value.record.file == str(s1_json)


@pytest.mark.parametrize("name", [
    S1_AUSTRIA + "\n",
    S1_AUSTRIA.replace("20170613", "\u0662\u0660\u0661\u0667\u0660\u0666\u0661\u0663"),  # Arabic-Indic digits
], ids=["newline", "unicode-digits"])
def test_s1_folder_names_must_match_in_full(raw: tuple[Path, Path], name: str) -> None:
    s2, s1 = raw
    _rename_patch(s1, S1_AUSTRIA, name)
    source = V1Source(LocalReader(s2), LocalReader(s1), tables=_no_tables())
    assert name in source.units()
    with pytest.raises(SourceError, match="is not a v1 S1 patch name"):
        source.read_pair(name)


def test_a_name_with_a_newline_cannot_forge_report_lines(raw: tuple[Path, Path], tmp_path: Path) -> None:
    s2, s1 = raw
    forged = S1_AUSTRIA + "\n  - all good"
    _rename_patch(s1, S1_AUSTRIA, forged)
    report, problems, _ = _build(raw, tmp_path / "catalog")
    assert report.describe().count("\n  - ") == len(problems) == 2, report.describe()  # type: ignore[attr-defined]
    assert any("\\n  - all good" in m and "not a v1 S1 patch name" in m for m in problems), problems


def test_tile_from_a_non_ascii_product_name_is_not_used(raw: tuple[Path, Path]) -> None:
    s2, s1 = raw
    path = _json_path(s2, AUSTRIA)
    doc = json.loads(path.read_text())
    doc["tile_source"] = "S2A_MSIL2A_20170613T101031_N9999_R022_T\u0663\u0663UUP_20170613T101031"
    path.write_text(json.dumps(doc))
    pair = open_source(str(s2), str(s1)).read_pair(S1_AUSTRIA)
    assert pair.tile == "33UUP"  # from the S1 name, not the Arabic-Indic digits


# ---------------------------------------------------------------------------------------------
# 5: one bad pair, one problem
# ---------------------------------------------------------------------------------------------


def test_a_pair_with_a_bad_json_is_reported_once(raw: tuple[Path, Path], tmp_path: Path) -> None:
    s2, s1 = raw
    _json_path(s2, AUSTRIA).write_text("{not json")  # the S2 side
    _json_path(s1, S1_FINLAND_2).write_text("[]")  # the S1 side: its S2 partner comes from the tables
    out = tmp_path / "catalog"
    report, problems, _ = _build(raw, out)
    assert len(problems) == 2, problems
    austria = [m for m in problems if AUSTRIA in m]
    assert len(austria) == 1 and "malformed JSON" in austria[0] and str(_json_path(s2, AUSTRIA)) in austria[0]
    finland = [m for m in problems if FINLAND_2 in m or S1_FINLAND_2 in m]
    assert len(finland) == 1 and "not an object" in finland[0], problems
    assert not any("partner" in m for m in problems), problems
    _assert_catalog_of(out, [IRELAND_1, IRELAND_2, FINLAND_1, PORTUGAL])


def test_an_s2_patch_without_partner_is_still_reported(raw: tuple[Path, Path], tmp_path: Path) -> None:
    shutil.rmtree(raw[1] / S1_AUSTRIA)
    _, problems, _ = _build(raw, tmp_path / "catalog")
    assert problems == [f"{AUSTRIA}: {raw[0] / AUSTRIA}: its S1 partner {S1_AUSTRIA} is missing from the S1 root"]


# ---------------------------------------------------------------------------------------------
# 2 on S3: the cap holds for objects too
# ---------------------------------------------------------------------------------------------


def test_s3_reader_caps_reads(s3_server: S3TestServer, s3_bucket: str, real_raw: tuple[Path, Path]) -> None:
    s2 = real_raw[0]
    s3_server.upload_tree(s2 / AUSTRIA, s3_bucket, f"S2/{AUSTRIA}")
    s3_server.upload_tree(real_raw[1] / S1_AUSTRIA, s3_bucket, f"S1/{S1_AUSTRIA}")
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="S2/empty", Body=b"")
    reader = S3Reader(f"s3://{s3_bucket}/S2", s3_server.settings)
    band = f"{AUSTRIA}/{AUSTRIA}_B02.tif"
    local = (s2 / band).read_bytes()
    assert reader.read(band, max_bytes=len(local)) == local
    with pytest.raises(TooLargeError, match=f"{len(local):,} bytes, more than the 1,000"):
        reader.read(band, max_bytes=1000)
    assert reader.read("empty") == b""
    with pytest.raises(OutsideRootError):
        reader.read(f"../S1/{S1_AUSTRIA}/{S1_AUSTRIA}_VV.tif")

    # A band object larger than a band can be is a problem naming its URL; nothing is decoded.
    key = f"S2/{AUSTRIA}/{AUSTRIA}_B03.tif"
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"\0" * (band_byte_limit("B03") + 1))
    source = open_source(f"s3://{s3_bucket}/S2", f"s3://{s3_bucket}/S1", settings=s3_server.settings)
    with pytest.raises(SourceError, match="bytes, more than") as err:
        source.read_pixels(source.read_pair(S1_AUSTRIA))
    assert err.value.record.file == f"s3://{s3_bucket}/{key}"


# ---------------------------------------------------------------------------------------------
# 6: publish refuses before the first upload, on parsed JSON
# ---------------------------------------------------------------------------------------------


def _replace_object(catalog: Path, path: str, data: bytes) -> None:
    """Change one object and its manifest entry, as a build would have written them."""
    (catalog / path).write_bytes(data)
    entries = read_manifest((catalog / MANIFEST).read_bytes())
    entries = [ManifestEntry(e.path, len(data), hashlib.sha256(data).hexdigest(), e.media_type, e.stage)
               if e.path == path else e for e in entries]
    (catalog / MANIFEST).write_bytes(manifest_bytes(entries))


def _inject(catalog: Path, path: str, where: str, literal: str) -> None:
    """Put the raw JSON ``literal`` (escapes kept as written) at ``where`` in the document ``path``."""
    doc = json.loads((catalog / path).read_text())
    if where == "links":
        doc["links"].append({"rel": "related", "href": "@@INJECTED@@"})
    else:
        doc.get("properties", doc)["bigearthnet:note"] = "@@INJECTED@@"
    text = json.dumps(doc).replace('"@@INJECTED@@"', literal)
    assert json.loads(text)  # still valid JSON
    _replace_object(catalog, path, text.encode())


def _first_item(catalog: Path) -> str:
    return sorted(e.path for e in load_manifest(catalog) if e.stage == STAGE_ITEM)[-1]


@pytest.fixture()
def catalog_copy(real_catalog: Path, tmp_path: Path) -> Path:
    return shutil.copytree(real_catalog, tmp_path / "catalog").resolve()


CASES = {
    # name: (document, where, JSON literal built from the local root, text the error must show)
    "escaped-slashes": ("item", "value", lambda root: json.dumps(str(root)).replace("/", "\\/"), "local catalog path"),
    "u002f": ("item", "value", lambda root: json.dumps(str(root) + "/raw").replace("/", "\\u002f"), "local catalog path"),
    "home-path": ("collection", "value", lambda root: '"\\/home\\/someone\\/raw"', "names a local path"),
    "file-url": ("item", "value", lambda root: '"file:\\/\\/\\/srv\\/raw"', "names a local path"),
    "absolute-href": ("item", "links", lambda root: '"\\/etc\\/passwd"', "/etc/passwd"),
    "dotdot-href": ("item", "links", lambda root: '"../../../../outside.json"', "leads outside the catalog root"),
    "percent-href": ("item", "links", lambda root: '"..%2f..%2f..%2f..%2foutside.json"', "leads outside the catalog root"),
    "root-dotdot": ("root", "links", lambda root: '"./bigearthnet-s2/../../x.json"', "leads outside the catalog root"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_publish_refuses_hidden_local_paths_before_any_upload(s3_server: S3TestServer, s3_bucket: str,
                                                            catalog_copy: Path, case: str) -> None:
    document, where, literal, shown = CASES[case]
    path = {"item": _first_item(catalog_copy), "collection": "bigearthnet-s2/collection.json",
            "root": "catalog.json"}[document]
    _inject(catalog_copy, path, where, literal(catalog_copy))
    with pytest.raises(PublishError) as err:
        publish(catalog_copy, f"s3://{s3_bucket}/v1", s3_server.settings)
    assert err.value.where == str(catalog_copy / path)
    assert shown in str(err.value), str(err.value)
    assert s3_server.keys(s3_bucket) == []  # refused before the first upload


def test_publish_refuses_a_deep_document_before_any_upload(s3_server: S3TestServer, s3_bucket: str,
                                                           catalog_copy: Path) -> None:
    path = _first_item(catalog_copy)
    _replace_object(catalog_copy, path, b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    with pytest.raises(PublishError, match="nested deeper than") as err:
        publish(catalog_copy, f"s3://{s3_bucket}/v1", s3_server.settings)
    assert err.value.where == str(catalog_copy / path)
    assert s3_server.keys(s3_bucket) == []


def test_publish_refuses_a_device_behind_a_symlink(s3_server: S3TestServer, s3_bucket: str,
                                                  catalog_copy: Path) -> None:
    """An object that is /dev/zero (size 0 to stat, endless to read) is refused, never read."""
    path = _first_item(catalog_copy)
    _replace_object(catalog_copy, path, b"")
    (catalog_copy / path).unlink()
    (catalog_copy / path).symlink_to("/dev/zero")
    with pytest.raises(PublishError, match="not a regular file") as err:
        publish(catalog_copy, f"s3://{s3_bucket}/v1", s3_server.settings)
    assert err.value.where == str(catalog_copy / path)
    assert s3_server.keys(s3_bucket) == []


def test_publish_refuses_an_index_href_out_of_the_catalog(catalog_copy: Path) -> None:
    path = "index/bigearthnet-s2.parquet"
    table = pq.read_table(catalog_copy / path)
    assets = table.column("assets").to_pylist()
    key = next(iter(assets[0]))
    assets[0][key]["href"] = "../../elsewhere/x.tif"
    table = table.set_column(table.schema.get_field_index("assets"), "assets",
                             pa.array(assets, table.schema.field("assets").type))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    entry = ManifestEntry(path, len(data), hashlib.sha256(data).hexdigest(), "application/vnd.apache.parquet", 2)
    with pytest.raises(PublishError, match="'../../elsewhere/x.tif'"):
        check_publishable(entry, data, catalog_copy)
    original = (catalog_copy / path).read_bytes()
    check_publishable(ManifestEntry(path, len(original), "", entry.media_type, 2), original, catalog_copy)


def test_publish_still_accepts_a_clean_catalog(s3_server: S3TestServer, s3_bucket: str, catalog_copy: Path) -> None:
    report = publish(catalog_copy, f"s3://{s3_bucket}/v1", s3_server.settings)
    assert report.uploaded == report.objects == len(load_manifest(catalog_copy))
