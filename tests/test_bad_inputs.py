"""Bad raw inputs give errors that name the file and the problem; the rest still builds right."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from catalog_builder.build import BuildOptions, build
from catalog_builder.records import SourceError
from catalog_builder.sources import open_source
from catalog_builder.store import LocalStore

AUSTRIA = "S2A_MSIL2A_20170613T101031_87_48"
IRELAND_1 = "S2A_MSIL2A_20170617T113321_36_85"
IRELAND_2 = "S2A_MSIL2A_20170617T113321_4_55"
FINLAND_1 = "S2B_MSIL2A_20170924T93020_69_24"
PORTUGAL = "S2A_MSIL2A_20171221T112501_56_35"
FINLAND_2 = "S2B_MSIL2A_20180204T94161_57_38"
S1_OF = {
    AUSTRIA: "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48",
    FINLAND_2: "S1A_IW_GRDH_1SDV_20180204T043253_35VPK_57_38",
}


@pytest.fixture()
def raw_copy(real_raw: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    s2 = shutil.copytree(real_raw[0], tmp_path / "s2")
    s1 = shutil.copytree(real_raw[1], tmp_path / "s1")
    return s2, s1


def _edit_json(path: Path, **changes: object) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def _read(raw: tuple[Path, Path], s1_name: str) -> None:
    source = open_source(str(raw[0]), str(raw[1]))
    pair = source.read_pair(s1_name)
    source.read_pixels(pair)


def test_missing_band(raw_copy: tuple[Path, Path]) -> None:
    missing = raw_copy[0] / AUSTRIA / f"{AUSTRIA}_B05.tif"
    missing.unlink()
    with pytest.raises(SourceError) as err:
        _read(raw_copy, S1_OF[AUSTRIA])
    assert str(missing) in str(err.value) and "band B05 is missing" in str(err.value)


def test_wrong_shape(raw_copy: tuple[Path, Path]) -> None:
    path = raw_copy[0] / AUSTRIA / f"{AUSTRIA}_B02.tif"
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(width=100, height=100)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((1, 100, 100), "uint16"))
    with pytest.raises(SourceError, match=r"_B02\.tif: wrong shape 100x100; band B02 at 10 m must be 120x120"):
        _read(raw_copy, S1_OF[AUSTRIA])


def test_wrong_dtype_and_not_a_tiff(raw_copy: tuple[Path, Path]) -> None:
    path = raw_copy[1] / S1_OF[AUSTRIA] / f"{S1_OF[AUSTRIA]}_VV.tif"
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    profile.update(dtype="uint16")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype("uint16"))
    with pytest.raises(SourceError, match="_VV.tif: expected dtype float32, found uint16"):
        _read(raw_copy, S1_OF[AUSTRIA])
    path.write_bytes(b"this is not a tiff")
    with pytest.raises(SourceError, match="_VV.tif: not a readable GeoTIFF"):
        _read(raw_copy, S1_OF[AUSTRIA])


def test_bad_json(raw_copy: tuple[Path, Path]) -> None:
    path = raw_copy[0] / AUSTRIA / f"{AUSTRIA}_labels_metadata.json"
    path.write_text(path.read_text()[:50])
    with pytest.raises(SourceError, match=r"_labels_metadata\.json: malformed JSON"):
        _read(raw_copy, S1_OF[AUSTRIA])


def test_unknown_label_suggests_the_closest(raw_copy: tuple[Path, Path]) -> None:
    path = raw_copy[0] / AUSTRIA / f"{AUSTRIA}_labels_metadata.json"
    _edit_json(path, labels=["Non-irrigated arable land", "Coniferus forest"])
    with pytest.raises(SourceError) as err:
        _read(raw_copy, S1_OF[AUSTRIA])
    message = str(err.value)
    assert str(path) in message and "'Coniferus forest'" in message and "Coniferous forest" in message


def test_bad_time_and_coordinates(raw_copy: tuple[Path, Path]) -> None:
    path = raw_copy[0] / AUSTRIA / f"{AUSTRIA}_labels_metadata.json"
    _edit_json(path, acquisition_date="2017-06-13 25:10:31")
    with pytest.raises(SourceError, match="bad 'acquisition_date'"):
        _read(raw_copy, S1_OF[AUSTRIA])
    s1 = raw_copy[1] / S1_OF[AUSTRIA] / f"{S1_OF[AUSTRIA]}_labels_metadata.json"
    doc = json.loads(s1.read_text())
    del doc["coordinates"]["lly"]
    s1.write_text(json.dumps(doc))
    with pytest.raises(SourceError, match="'coordinates' needs ulx, uly, lrx, lly"):
        _read(raw_copy, S1_OF[AUSTRIA])


def test_missing_partner(raw_copy: tuple[Path, Path]) -> None:
    shutil.rmtree(raw_copy[0] / AUSTRIA)
    with pytest.raises(SourceError, match=f"S2 partner of {S1_OF[AUSTRIA]} is missing"):
        _read(raw_copy, S1_OF[AUSTRIA])


def test_build_reports_every_bad_pair_and_builds_the_rest(raw_copy: tuple[Path, Path], tmp_path: Path) -> None:
    (raw_copy[0] / AUSTRIA / f"{AUSTRIA}_B05.tif").unlink()
    _edit_json(raw_copy[0] / FINLAND_2 / f"{FINLAND_2}_labels_metadata.json", labels=["Mixed forrest"])
    # an S2 patch with no S1 partner is reported too
    shutil.rmtree(raw_copy[1] / S1_OF[AUSTRIA].replace("87_48", "87_48"))
    out = tmp_path / "catalog"
    report = build(open_source(str(raw_copy[0]), str(raw_copy[1])), LocalStore(out), BuildOptions(scheduler="synchronous"))
    assert not report.ok
    messages = [str(p) for p in report.problems]
    assert any("Mixed forrest" in m and FINLAND_2 in m for m in messages), messages
    assert any(AUSTRIA in m and "S1 partner" in m for m in messages), messages
    assert report.built == 4
    built = sorted(p.stem for p in out.glob("bigearthnet-s2/*/*/*.json"))
    assert built == sorted([IRELAND_1, IRELAND_2, FINLAND_1, PORTUGAL])
    # the catalog of the good pairs is complete: collections count them, the root exists
    coll = json.loads((out / "bigearthnet-s2/collection.json").read_text())
    assert coll["bigearthnet:item_count"] == 4 and (out / "catalog.json").is_file()
