"""Bad raw inputs give errors that name the file and the problem; the rest still builds right
(v1 and v2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import rasterio

from bigearth_stac.contract import REFERENCE_MAP_ASSET
from bigearth_stac.vocab import S1_BAND_NAMES, S2_BAND_NAMES
from catalog_builder.build import BuildOptions, build
from catalog_builder.records import SourceError
from catalog_builder.sources import open_source
from catalog_builder.store import LocalStore
from catalog_builder.synthetic_v2 import V2Patch, V2Tree, generate_v2

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


# ---------------------------------------------------------------------------------------------
# BigEarthNet v2.0 (reBEN): the same discipline
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v2_small(tmp_path_factory: pytest.TempPathFactory) -> V2Tree:
    """8 synthetic v2 pairs whose maps agree with their labels."""
    return generate_v2(tmp_path_factory.mktemp("v2-small"), 8, seed=21, disagree=0)


@pytest.fixture()
def v2_copy(v2_small: V2Tree, tmp_path: Path) -> V2Tree:
    """A private copy of ``v2_small`` to break."""
    root = shutil.copytree(v2_small.root, tmp_path / "v2")
    return V2Tree(root, root / v2_small.s2.name, root / v2_small.s1.name, root / v2_small.maps.name,
                  tuple(root / m.name for m in v2_small.metadata), v2_small.patches)


def _v2_source(tree: V2Tree, **kwargs: object) -> object:
    return open_source(str(tree.s2), str(tree.s1), metadata=[str(m) for m in tree.metadata], **kwargs)  # type: ignore[arg-type]


def _v2_read(tree: V2Tree, patch: V2Patch) -> dict[str, np.ndarray]:
    source = _v2_source(tree)
    return source.read_pixels(source.read_pair(patch.patch_id))  # type: ignore[attr-defined]


def _s2_file(tree: V2Tree, p: V2Patch, band: str) -> Path:
    return tree.s2 / p.product / p.patch_id / f"{p.patch_id}_{band}.tif"


def _map_file(tree: V2Tree, p: V2Patch) -> Path:
    return tree.maps / p.product / p.patch_id / f"{p.patch_id}_reference_map.tif"


def _rewrite(path: Path, array: np.ndarray, **changes: object) -> None:
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(width=array.shape[1], height=array.shape[0], dtype=array.dtype, **changes)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def _edit_table(tree: V2Tree, patch: V2Patch, **changes: object) -> None:
    path = tree.root / patch.table
    table = pq.read_table(path)
    rows = table.to_pylist()
    for row in rows:
        if row["patch_id"] == patch.patch_id:
            row.update(changes)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


def test_v2_reads_like_the_raw_files(v2_copy: V2Tree) -> None:
    p = v2_copy.patches[0]
    pixels = _v2_read(v2_copy, p)
    assert set(pixels) == {*S2_BAND_NAMES, *S1_BAND_NAMES, REFERENCE_MAP_ASSET}
    with rasterio.open(_map_file(v2_copy, p)) as src:
        assert np.array_equal(pixels[REFERENCE_MAP_ASSET], src.read(1))


def test_v2_missing_band(v2_copy: V2Tree) -> None:
    p = v2_copy.patches[1]
    missing = _s2_file(v2_copy, p, "B05")
    missing.unlink()
    with pytest.raises(SourceError) as err:
        _v2_read(v2_copy, p)
    assert str(missing) in str(err.value) and "band B05 is missing" in str(err.value)
    assert err.value.record.pair == p.patch_id


def test_v2_map_of_the_wrong_shape_or_grid_or_codes(v2_copy: V2Tree) -> None:
    p = v2_copy.patches[1]
    path = _map_file(v2_copy, p)
    _rewrite(path, np.full((100, 100), 311, "uint16"))
    with pytest.raises(SourceError, match=r"_reference_map\.tif: wrong shape 100x100; a reference map must be 120x120"):
        _v2_read(v2_copy, p)
    _rewrite(path, np.full((120, 120), 31, "uint8"))
    with pytest.raises(SourceError, match="_reference_map.tif: expected dtype uint16, found uint8"):
        _v2_read(v2_copy, p)
    codes = np.full((120, 120), 311, "uint16")
    codes[:3, :3] = 999
    _rewrite(path, codes)
    with pytest.raises(SourceError, match="_reference_map.tif: holds value.s. 999 that are not CLC Level-3 codes"):
        _v2_read(v2_copy, p)
    # a map on another grid than its patch's bands: the bands are then the ones that disagree
    with rasterio.open(_s2_file(v2_copy, p, "B02")) as src:
        t = src.transform
    _rewrite(path, np.full((120, 120), 311, "uint16"), transform=rasterio.Affine(10, 0, t.c + 1200, 0, -10, t.f))
    with pytest.raises(SourceError, match=r"_B01\.tif: origin .* does not match the S2 patch's grid \(its reference map\)"):
        _v2_read(v2_copy, p)


def test_v2_s1_partner_on_another_grid_or_missing(v2_copy: V2Tree) -> None:
    p = v2_copy.patches[2]
    vv = v2_copy.s1 / p.s1_product / p.s1_name / f"{p.s1_name}_VV.tif"
    with rasterio.open(vv) as src:
        data, t = src.read(1), src.transform
    _rewrite(vv, data, crs="EPSG:32631" if p.epsg != 32631 else "EPSG:32632")
    with pytest.raises(SourceError, match=r"_VV\.tif: CRS EPSG:3263. does not match EPSG:\d+ of the S2 patch's grid"):
        _v2_read(v2_copy, p)
    _rewrite(vv, data, crs=f"EPSG:{p.epsg}", transform=rasterio.Affine(10, 0, t.c, 0, -10, t.f - 10))
    with pytest.raises(SourceError, match=r"_VV\.tif: origin .* does not match the S2 patch's grid"):
        _v2_read(v2_copy, p)
    shutil.rmtree(vv.parent)
    with pytest.raises(SourceError, match=f"its S1 partner {p.s1_name} is missing from the S1 root"):
        _v2_read(v2_copy, p)


def test_v2_bad_rows(v2_copy: V2Tree) -> None:
    p = v2_copy.patches[3]
    _edit_table(v2_copy, p, labels=["Coniferous forrest", "Pastures"])
    with pytest.raises(SourceError, match="unknown 19-class label.*'Coniferous forrest' .closest: Coniferous forest"):
        _v2_read(v2_copy, p)
    _edit_table(v2_copy, p, labels=["Pastures"], split="training")
    with pytest.raises(SourceError, match="split 'training' is not one of train, validation, test"):
        _v2_read(v2_copy, p)
    _edit_table(v2_copy, p, split="train", s1_name="S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48\n")
    with pytest.raises(SourceError, match="s1_name .* is not an S1 patch name"):
        _v2_read(v2_copy, p)
    _edit_table(v2_copy, p, s1_name=p.s1_name, s2v1_name="../../etc/passwd")
    with pytest.raises(SourceError, match="s2v1_name .* is not a v1 S2 patch name") as err:
        _v2_read(v2_copy, p)
    assert err.value.record.file == str(v2_copy.root / p.table)
    # one S1 patch cannot partner two S2 patches: both are refused
    _edit_table(v2_copy, p, s2v1_name=p.s2v1_name)
    other = next(q for q in v2_copy.patches if q.table == p.table and q != p)
    _edit_table(v2_copy, other, s1_name=p.s1_name)
    for patch in (p, other):
        with pytest.raises(SourceError, match=f"s1_name {p.s1_name} is the partner of several patch_ids"):
            _v2_read(v2_copy, patch)


def test_v2_build_names_every_bad_pair_and_builds_the_rest(v2_copy: V2Tree, tmp_path: Path) -> None:
    patches = [p for p in v2_copy.patches if p.table == v2_copy.metadata[0].name]
    band_gone, wrong_map, no_folder, no_row, s1_gone = patches[:5]
    (band_gone_file := _s2_file(v2_copy, band_gone, "B11")).unlink()
    _rewrite(_map_file(v2_copy, wrong_map), np.full((60, 60), 311, "uint16"))
    shutil.rmtree(v2_copy.s2 / no_folder.product / no_folder.patch_id)  # a row with no folder
    table = pq.read_table(v2_copy.metadata[0])
    pq.write_table(table.filter(pc.not_equal(table.column("patch_id"), no_row.patch_id)), v2_copy.metadata[0])
    shutil.rmtree(v2_copy.s1 / s1_gone.s1_product / s1_gone.s1_name)
    # a patch listed in both tables
    dup = v2_copy.patches[-1]
    other = next(m for m in v2_copy.metadata if m.name != dup.table)
    extra = pq.read_table(v2_copy.root / dup.table)
    extra = extra.filter(pc.equal(extra.column("patch_id"), dup.patch_id))
    pq.write_table(pa.concat_tables([pq.read_table(other), extra.cast(pq.read_schema(other))]), other)
    out = tmp_path / "catalog"
    report = build(_v2_source(v2_copy), LocalStore(out), BuildOptions(scheduler="synchronous"))  # type: ignore[arg-type]
    assert not report.ok
    messages = [str(p) for p in report.problems]

    def one(patch_id: str, *needles: str) -> None:
        hits = [m for m in messages if patch_id in m and all(n in m for n in needles)]
        assert len(hits) == 1, (patch_id, needles, messages)

    one(band_gone.patch_id, str(band_gone_file), "band B11 is missing")
    one(wrong_map.patch_id, "_reference_map.tif", "wrong shape 60x60")
    one(no_folder.patch_id, "no S2 patch folder for this patch_id")
    one(no_row.patch_id, str(v2_copy.s2 / no_row.product / no_row.patch_id), "no row of the metadata table(s) has this patch_id")
    one(no_row.s1_name, "no row of the metadata table(s) has this s1_name")
    one(s1_gone.patch_id, f"its S1 partner {s1_gone.s1_name} is missing")
    one(dup.patch_id, "listed 2 times in the metadata tables")
    assert len(messages) == 7, messages
    good = sorted(p.patch_id for p in v2_copy.patches if p not in (band_gone, wrong_map, no_folder, no_row, s1_gone, dup))
    assert report.built == len(good) == 2
    assert sorted(p.stem for p in out.glob("bigearthnet-v2-s2/*/*/*.json")) == good
    coll = json.loads((out / "bigearthnet-v2-s2" / "collection.json").read_text())
    assert coll["bigearthnet:item_count"] == len(good) and (out / "catalog.json").is_file()
    assert pq.read_metadata(out / "index" / "bigearthnet-v2-s2.parquet").num_rows == len(good)


def test_v2_tables_that_cannot_be_used_are_refused(v2_copy: V2Tree, tmp_path: Path) -> None:
    (tmp_path / "not.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(ValueError, match="not.parquet is not a readable Parquet file"):
        open_source(str(v2_copy.s2), str(v2_copy.s1), metadata=[str(tmp_path / "not.parquet")])
    table = pq.read_table(v2_copy.metadata[0])
    ints = table.set_column(table.schema.get_field_index("labels"), "labels", pa.array([1] * table.num_rows))
    pq.write_table(ints, tmp_path / "ints.parquet")
    with pytest.raises(ValueError, match="column 'labels' of type int64 is not list"):
        open_source(str(v2_copy.s2), str(v2_copy.s1), metadata=[str(tmp_path / "ints.parquet")])
    with pytest.raises(ValueError, match="missing.parquet"):
        open_source(str(v2_copy.s2), str(v2_copy.s1), metadata=[str(tmp_path / "missing.parquet")])
    for m in v2_copy.metadata:
        m.unlink()
    with pytest.raises(ValueError, match="v2 needs its metadata table"):
        open_source(str(v2_copy.s2), str(v2_copy.s1), release="v2")
    # without tables beside it, the layout is still recognised by its product folders
    with pytest.raises(ValueError, match="v2 needs its metadata table"):
        open_source(str(v2_copy.s2), str(v2_copy.s1))
