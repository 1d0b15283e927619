"""BigEarthNet v2.0 (reBEN) end to end: generated tree -> valid catalog with both label sets,
reference-map assets and pixel fractions; search by label equals the generator's truth; the real
rico-hdl files decode bit-exactly through the builder; v1 and v2 side by side in one catalog."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import rasterio
import tifffile
from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate

from bigearth_stac.contract import (
    CLC_FRACTIONS,
    CLC_FRACTIONS_TYPE,
    COLLECTIONS,
    LABEL_MASK_COLUMNS,
    PROPERTY_TYPES,
    REFERENCE_MAP_ASSET,
    S1_V2_COLLECTION,
    S2_V2_COLLECTION,
    label_bits,
    prop,
    release_and_modality,
)
from bigearth_stac.validate import make_validator, validate_catalog, validate_document
from bigearth_stac.vocab import (
    CLC_CODES,
    CODE_OF_43,
    LABELS_19,
    LABELS_43,
    S1_BAND_NAMES,
    S2_BAND_NAMES,
    band_groups,
    to_19,
)
from catalog_builder.build import BuildOptions, build
from catalog_builder.cli import main as cli
from catalog_builder.sources import open_source
from catalog_builder.sources.rawtiff import decode_raster, decode_raster_fast, decode_raster_gdal
from catalog_builder.sources.v2 import V2Metadata, product_time
from catalog_builder.store import LocalStore, read_manifest
from catalog_builder.synthetic_v2 import METADATA_SCHEMA, METADATA_SNOW_CLOUD, V2Tree, generate_v2
from tests.conftest import RICO_V2, STAC_SCHEMAS, open_v2_source

SIX = ["S2A_MSIL2A_20170613T101031_87_48", "S2A_MSIL2A_20170617T113321_36_85", "S2A_MSIL2A_20170617T113321_4_55",
       "S2B_MSIL2A_20170924T93020_69_24", "S2A_MSIL2A_20171221T112501_56_35", "S2B_MSIL2A_20180204T94161_57_38"]


def _items(root: Path, collection: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob(f"{collection}/*/*/*.json"))]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band)


# ---------------------------------------------------------------------------------------------
# the generator writes the real layout
# ---------------------------------------------------------------------------------------------


def test_generator_writes_the_v2_layout(v2_raw: V2Tree) -> None:
    assert len(v2_raw.patches) == 30 and sum(p.disagrees for p in v2_raw.patches) == 2
    real = pq.read_schema(v2_raw.metadata[0])
    assert real.remove_metadata().equals(METADATA_SCHEMA.remove_metadata())
    assert str(real.field("labels").type) == "list<item: string>"  # as the official files have it
    assert [m.name for m in v2_raw.metadata] == ["metadata.parquet", METADATA_SNOW_CLOUD]
    flagged = pq.read_table(v2_raw.metadata[1])
    assert flagged.num_rows >= 1 and all(r["contains_seasonal_snow"] or r["contains_cloud_or_shadow"]
                                         for r in flagged.to_pylist())
    for p in v2_raw.patches:
        assert p.patch_id.startswith(p.product + "_") and p.product.endswith("_T" + p.tile)
        assert p.product.split("_")[3] == "N9999" and len(p.patch_id.split("_")[-1]) == 2
        assert p.s2v1_name.split("_")[-2:] == [str(int(x)) for x in p.patch_id.split("_")[-2:]]
        assert p.epsg == 32600 + int(p.tile[:2])
        assert p.labels_19 and set(to_19(p.labels_43)) == set(p.labels_19) or p.disagrees
        folder = v2_raw.s2 / p.product / p.patch_id
        assert sorted(f.name for f in folder.iterdir()) == sorted(f"{p.patch_id}_{b}.tif" for b in S2_BAND_NAMES)
        s1 = v2_raw.s1 / p.s1_product / p.s1_name
        assert sorted(f.name for f in s1.iterdir()) == sorted(f"{p.s1_name}_{b}.tif" for b in S1_BAND_NAMES)
        assert (v2_raw.maps / p.product / p.patch_id / f"{p.patch_id}_reference_map.tif").is_file()
    p = v2_raw.patches[0]
    with tifffile.TiffFile(v2_raw.s2 / p.product / p.patch_id / f"{p.patch_id}_B01.tif") as tif:
        page = tif.pages[0]
        assert (page.shape, page.dtype, page.compression, page.is_tiled) == ((20, 20), np.uint16, 1, False)
    with tifffile.TiffFile(v2_raw.maps / p.product / p.patch_id / f"{p.patch_id}_reference_map.tif") as tif:
        page = tif.pages[0]
        assert (page.shape, page.dtype, page.compression, page.predictor, page.is_tiled) == ((120, 120), np.uint16, 8, 2, False)


def test_fast_decoder_equals_gdal_on_generated_v2_files(v2_raw: V2Tree) -> None:
    files = sorted(v2_raw.root.rglob("*.tif"))[:120]
    for path in files:
        data = path.read_bytes()
        fast, gdal = decode_raster_fast(data), decode_raster_gdal(data)
        assert fast is not None, path
        assert fast[0] == gdal[0], path
        assert fast[1].dtype == gdal[1].dtype and np.array_equal(fast[1], gdal[1]), path


# ---------------------------------------------------------------------------------------------
# the catalog
# ---------------------------------------------------------------------------------------------


def test_v2_catalog_is_valid_stac(v2_catalog: Path) -> None:
    count, problems = validate_catalog(v2_catalog)
    tiles = {p.parent.parent.name for p in v2_catalog.glob(f"{S2_V2_COLLECTION}/*/*/*.json")}
    assert problems == []
    assert count == 1 + 2 + 2 * len(tiles) + 2 * 30
    if STAC_SCHEMAS.is_dir():
        assert validate_catalog(v2_catalog, STAC_SCHEMAS) == (count, [])
    root = json.loads((v2_catalog / "catalog.json").read_text())
    assert [link["href"] for link in root["links"] if link["rel"] == "child"] == [
        f"./{S2_V2_COLLECTION}/collection.json", f"./{S1_V2_COLLECTION}/collection.json"]


def test_schemas_reject_wrong_v2_items(v2_catalog: Path) -> None:
    validator = make_validator()
    item = next(i for i in _items(v2_catalog, S2_V2_COLLECTION) if REFERENCE_MAP_ASSET in i["assets"])
    validate_document(item, validator)
    for edit in (
        lambda d: d["properties"][CLC_FRACTIONS].update({"999": 0.5}),  # not a CLC code of the 43
        lambda d: d["properties"][CLC_FRACTIONS].update({"111": 1.5}),  # not a fraction
        lambda d: d["properties"].pop(CLC_FRACTIONS),  # 43-class labels without their fractions
        lambda d: d["assets"][REFERENCE_MAP_ASSET]["classification:classes"][0].update(color_hint="red"),
        lambda d: d["properties"].update({"bigearthnet:release": "v3"}),
    ):
        bad = json.loads(json.dumps(item))
        edit(bad)
        with pytest.raises(Exception, match="Validation failed|is not valid|does not match|dependency"):
            validate_document(bad, validator)


def test_items_carry_official_19_class_labels_and_43_classes_of_the_map(v2_catalog: Path, v2_raw: V2Tree) -> None:
    truth = v2_raw.by_id()
    s1_items = {i["id"]: i for i in _items(v2_catalog, S1_V2_COLLECTION)}
    s2_items = _items(v2_catalog, S2_V2_COLLECTION)
    assert sorted(i["id"] for i in s2_items) == sorted(truth)
    for item in s2_items:
        t = truth[item["id"]]
        props = item["properties"]
        assert item["collection"] == S2_V2_COLLECTION and props["bigearthnet:release"] == "v2.0"
        assert props["bigearthnet:labels_19"] == list(t.labels_19)  # official, even where the map disagrees
        assert props["bigearthnet:labels_43"] == list(t.labels_43)
        assert props["bigearthnet:label_codes_43"] == [CODE_OF_43[n] for n in t.labels_43]
        assert props[CLC_FRACTIONS] == {str(c): f for c, f in sorted(t.fractions.items())}
        assert abs(sum(props[CLC_FRACTIONS].values()) - 1) < 1e-3
        assert props["bigearthnet:s2v1_name"] == t.s2v1_name
        assert (props["bigearthnet:split"], props["bigearthnet:country"]) == (t.split, t.country)
        assert (props["bigearthnet:seasonal_snow"], props["bigearthnet:cloud_or_shadow"]) == (t.seasonal_snow, t.cloud_or_shadow)
        assert props["bigearthnet:season"] is None  # v2 publishes none: never invented
        assert props["bigearthnet:tile"] == t.tile and props["proj:epsg"] == t.epsg
        assert props["proj:bbox"] == [t.origin[0], t.origin[1] - 1200, t.origin[0] + 1200, t.origin[1]]
        assert props["datetime"] == product_time(t.product.split("_")[2]).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert props["bigearthnet:source_product"] == t.product
        partner = s1_items[t.s1_name]
        assert partner["properties"]["bigearthnet:s2_id"] == item["id"]
        assert partner["properties"]["bigearthnet:labels_19"] == props["bigearthnet:labels_19"]
        assert partner["properties"]["datetime"] == product_time(t.s1_name.split("_")[4]).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert partner["properties"]["bigearthnet:source_product"] == t.s1_product
        # band statistics are v2's own
        stats = item["assets"]["s2_10m"]["bands"][0]["statistics"]
        assert stats["mean"] == pytest.approx(438.372, abs=1e-3)


def test_label_disagreements_are_named_in_the_report(v2_build: tuple[Path, object], v2_raw: V2Tree) -> None:
    _, report = v2_build
    expected = sorted(p.patch_id for p in v2_raw.patches if p.disagrees)
    assert report.ok  # type: ignore[attr-defined]
    assert [w.pair for w in report.label_disagreements] == expected  # type: ignore[attr-defined]
    for warning in report.label_disagreements:  # type: ignore[attr-defined]
        assert warning.file.endswith("_reference_map.tif") and "only in the labels" in warning.problem
    described = report.describe()  # type: ignore[attr-defined]
    assert "2 built pairs whose labels disagree" in described and all(e in described for e in expected)


def test_reference_map_assets_and_pixels_equal_the_raw_files(v2_catalog: Path, v2_raw: V2Tree) -> None:
    truth = v2_raw.by_id()
    compared = 0
    for collection in (S2_V2_COLLECTION, S1_V2_COLLECTION):
        modality = release_and_modality(collection)[1]  # type: ignore[index]
        for item in _items(v2_catalog, collection)[:10]:
            t = truth[item["id"]] if modality == "s2" else truth[item["properties"]["bigearthnet:s2_id"]]
            folder = next(v2_catalog.glob(f"{collection}/*/{item['id']}"))
            expected_keys = set(band_groups(modality, "stacked")) | ({REFERENCE_MAP_ASSET} if modality == "s2" else set())
            assert set(item["assets"]) == expected_keys
            for key, asset in item["assets"].items():
                path = folder / asset["href"].removeprefix("./")
                data = path.read_bytes()
                assert asset["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest()
                valid, errors, _ = cog_validate(str(path))
                assert valid and not errors, (path, errors)
                with rasterio.open(path) as cog:
                    assert list(cog.transform)[:6] == asset["proj:transform"]
                    assert cog.crs.to_epsg() == t.epsg
                    for i, band in enumerate(asset["bands"], start=1):
                        if key == REFERENCE_MAP_ASSET:
                            raw = v2_raw.maps / t.product / t.patch_id / f"{t.patch_id}_reference_map.tif"
                            assert cog.nodata == 0 and band == {"name": "clc_code", "description": "CLC Level-3 code (0: no data)",
                                                                "data_type": "uint16", "nodata": 0, "raster:spatial_resolution": 10}
                        elif modality == "s2":
                            raw = v2_raw.s2 / t.product / t.patch_id / f"{t.patch_id}_{band['name']}.tif"
                        else:
                            raw = v2_raw.s1 / t.s1_product / t.s1_name / f"{t.s1_name}_{band['name']}.tif"
                        expected = _read(raw)
                        got = cog.read(i)
                        assert got.dtype == expected.dtype and np.array_equal(got, expected), (path, band)
                        compared += 1
            if modality == "s2":
                asset = item["assets"][REFERENCE_MAP_ASSET]
                assert "labels" in asset["roles"] and asset["proj:shape"] == [120, 120]
                assert "https://stac-extensions.github.io/classification/v1.1.0/schema.json" in item["stac_extensions"]
                classes = asset["classification:classes"]
                assert [c["value"] for c in classes] == sorted(t.fractions)
                assert [c["name"] for c in classes] == [CLC_CODES[c] for c in sorted(t.fractions)]
    assert compared == 10 * 13 + 10 * 2


def test_collections_state_release_doi_and_licence(v2_catalog: Path) -> None:
    for cid in (S2_V2_COLLECTION, S1_V2_COLLECTION):
        coll = json.loads((v2_catalog / cid / "collection.json").read_text())
        assert coll["id"] == cid and coll["bigearthnet:release"] == "v2.0"
        assert coll["title"].startswith("BigEarthNet v2.0 (reBEN)")
        assert coll["sci:doi"] == "10.48550/arXiv.2407.03653" and "reBEN" in coll["sci:citation"]
        assert coll["license"] == "CDLA-Permissive-1.0"
        assert coll["bigearthnet:item_count"] == 30
        assert "bigearthnet:season" not in coll["summaries"]
        has_maps = cid == S2_V2_COLLECTION
        assert (REFERENCE_MAP_ASSET in coll["item_assets"]) == has_maps
        if has_maps:
            classes = coll["item_assets"][REFERENCE_MAP_ASSET]["classification:classes"]
            assert [c["value"] for c in classes] == list(CLC_CODES)
        assert coll["assets"]["geoparquet-items"]["href"] == f"../index/{cid}.parquet"


# ---------------------------------------------------------------------------------------------
# the index: schema, label search and pixel fractions against the generator's truth
# ---------------------------------------------------------------------------------------------


def test_index_schema(v2_catalog: Path, real_catalog: Path) -> None:
    for root, cid in ((v2_catalog, S2_V2_COLLECTION), (v2_catalog, S1_V2_COLLECTION), (real_catalog, "bigearthnet-s2")):
        index = pq.read_table(root / "index" / f"{cid}.parquet")
        for name, typ in PROPERTY_TYPES.items():
            assert index.schema.field(name).type == typ, name
        assert index.schema.field(CLC_FRACTIONS).type == CLC_FRACTIONS_TYPE
        fractions = index.column(CLC_FRACTIONS)
        if root == real_catalog:  # v1 rows: no map, null
            assert fractions.null_count == index.num_rows
            assert index.column(prop("s2v1_name")).null_count == index.num_rows
        else:
            assert fractions.null_count == 0
            assert set(index.column(prop("release")).to_pylist()) == {"v2.0"}
            assert index.column(prop("season")).null_count == index.num_rows


def _index(root: Path, cid: str = S2_V2_COLLECTION) -> pa.Table:
    return pq.read_table(root / "index" / f"{cid}.parquet")


def _search(index: pa.Table, names: list[str], nomenclature: str, match: str) -> list[str]:
    """What the client's label search does: a bit test on the index's masks."""
    bits = label_bits(names, nomenclature)
    anded = pc.bit_wise_and(index.column(LABEL_MASK_COLUMNS[nomenclature]), pa.scalar(bits, pa.int64()))
    hit = pc.not_equal(anded, 0) if match == "any" else pc.equal(anded, bits)
    return sorted(index.filter(hit).column("id").to_pylist())


@pytest.mark.parametrize("match", ["any", "all"])
def test_label_search_on_the_index_equals_the_truth(v2_catalog: Path, v2_raw: V2Tree, match: str) -> None:
    index = _index(v2_catalog)
    present_19 = sorted({n for p in v2_raw.patches for n in p.labels_19}, key=LABELS_19.index)
    present_43 = sorted({n for p in v2_raw.patches for n in p.labels_43}, key=LABELS_43.index)
    queries = [("19", [n]) for n in present_19] + [("43", [n]) for n in present_43]
    queries += [("19", present_19[:2]), ("43", present_43[1:3]), ("19", present_19[-3:])]
    for nomenclature, names in queries:
        want = sorted(p.patch_id for p in v2_raw.patches
                      if (any if match == "any" else all)(
                          n in (p.labels_19 if nomenclature == "19" else p.labels_43) for n in names))
        assert _search(index, names, nomenclature, match) == want, (nomenclature, names)
    # the 19-class search uses the official labels: a disagreeing patch is found by its label
    wrong = next(p for p in v2_raw.patches if p.disagrees)
    extra = next(n for n in wrong.labels_19 if n not in to_19(wrong.labels_43))
    assert wrong.patch_id in _search(index, [extra], "19", "any")


def test_fraction_thresholds_on_the_index_equal_the_truth(v2_catalog: Path, v2_raw: V2Tree) -> None:
    index = _index(v2_catalog)
    fractions = index.column(CLC_FRACTIONS)
    assert fractions.type == CLC_FRACTIONS_TYPE
    codes = sorted({c for p in v2_raw.patches for c in p.fractions})
    for code in codes:
        for threshold in (0.0001, 0.2, 0.3, 0.5):
            column = pc.struct_field(fractions, str(code))
            got = sorted(index.filter(pc.greater_equal(column, np.float32(threshold))).column("id").to_pylist())
            want = sorted(p.patch_id for p in v2_raw.patches if np.float32(p.fractions.get(code, 0.0)) >= np.float32(threshold))
            assert got == want, (code, threshold)
    row = index.filter(pc.equal(index.column("id"), v2_raw.patches[0].patch_id)).column(CLC_FRACTIONS)[0].as_py()
    assert row == {str(c): float(np.float32(v2_raw.patches[0].fractions.get(c, 0.0))) for c in CLC_CODES}


def test_a_mixed_catalog_still_opens_for_v1_searches(real_catalog: Path, v2_raw: V2Tree, tmp_path: Path) -> None:
    """The client of today reads the v1 collections of a catalog that also holds v2 ones."""
    from bigearth_stac import Catalog

    mixed = shutil.copytree(real_catalog, tmp_path / "mixed")
    report = build(open_v2_source(v2_raw), LocalStore(mixed), BuildOptions(scheduler="synchronous", limit=4))
    assert report.ok and report.built == 4
    catalog = Catalog.open(str(mixed), release="v1.0")
    assert sorted(catalog.search(labels=["Coniferous forest"]).ids()) == sorted(
        ["S2B_MSIL2A_20180204T94161_57_38", "S2B_MSIL2A_20170924T93020_69_24"])


# ---------------------------------------------------------------------------------------------
# v1 and v2 side by side
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def six_v2(tmp_path_factory: pytest.TempPathFactory) -> V2Tree:
    """The v2 counterparts of the six real v1 pairs (synthetic pixels, real names)."""
    return generate_v2(tmp_path_factory.mktemp("six-v2"), 0, seed=5, include=SIX, disagree=0)


def _predecessors(root: Path, collection: str) -> dict[str, list[str]]:
    return {i["id"]: [link["href"] for link in i["links"] if link["rel"] == "predecessor-version"]
            for i in _items(root, collection)}


def test_v2_added_to_a_v1_catalog_shares_its_root(real_catalog: Path, real_raw: tuple[Path, Path], six_v2: V2Tree,
                                                 tmp_path: Path) -> None:
    mixed = shutil.copytree(real_catalog, tmp_path / "mixed")
    v1_items = {k: v for k, v in _tree(real_catalog).items() if k.startswith("bigearthnet-s")}
    report = build(open_v2_source(six_v2), LocalStore(mixed), BuildOptions(scheduler="synchronous"))
    assert report.ok and report.built == 6
    root = json.loads((mixed / "catalog.json").read_text())
    assert [link["title"] for link in root["links"] if link["rel"] == "child"] == list(COLLECTIONS)
    count, problems = validate_catalog(mixed)
    tile_catalogs = len(list(mixed.glob("*/*/catalog.json")))
    assert problems == [] and count == 1 + 4 + tile_catalogs + 4 * 6
    # every object is in the manifest with its checksum, v1's included
    entries = {e.path: e for e in read_manifest((mixed / "manifest.parquet").read_bytes())}
    files = {p.relative_to(mixed).as_posix() for p in mixed.rglob("*") if p.is_file()} - {"manifest.parquet"}
    assert set(entries) == files
    for path in files:
        assert entries[path].sha256 == hashlib.sha256((mixed / path).read_bytes()).hexdigest(), path
    # v1 objects untouched; v2 items link their v1 predecessors, which exist
    assert {k: v for k, v in _tree(mixed).items() if k in v1_items} == v1_items
    by_v1 = {p.patch_id: p.s2v1_name for p in six_v2.patches}
    for collection in (S2_V2_COLLECTION, S1_V2_COLLECTION):
        for item_id, hrefs in _predecessors(mixed, collection).items():
            assert len(hrefs) == 1, (item_id, hrefs)
            target = next(mixed.glob(f"{collection}/*/{item_id}")) / hrefs[0]
            assert target.resolve().is_file()
            if collection == S2_V2_COLLECTION:
                assert target.stem == by_v1[item_id]
    # rebuilding v1 into it keeps v2 (root and manifest)
    again = build(open_source(str(real_raw[0]), str(real_raw[1])), LocalStore(mixed), BuildOptions(scheduler="synchronous"))
    assert (again.built, again.skipped) == (0, 6)
    assert json.loads((mixed / "catalog.json").read_text()) == root
    assert {e.path for e in read_manifest((mixed / "manifest.parquet").read_bytes())} == files


def test_v2_built_first_links_v1_once_v1_is_published(real_raw: tuple[Path, Path], six_v2: V2Tree, tmp_path: Path) -> None:
    out = tmp_path / "catalog"
    first = build(open_v2_source(six_v2), LocalStore(out), BuildOptions(scheduler="synchronous"))
    assert first.built == 6 and not any(_predecessors(out, S2_V2_COLLECTION).values())
    build(open_source(str(real_raw[0]), str(real_raw[1])), LocalStore(out), BuildOptions(scheduler="synchronous"))
    rerun = build(open_v2_source(six_v2), LocalStore(out), BuildOptions(scheduler="synchronous"))
    assert (rerun.built, rerun.skipped) == (6, 0)  # rebuilt to link the v1 items now there
    assert all(len(h) == 1 for h in _predecessors(out, S2_V2_COLLECTION).values())
    assert validate_catalog(out)[1] == []
    last = build(open_v2_source(six_v2), LocalStore(out), BuildOptions(scheduler="synchronous"))
    assert (last.built, last.skipped) == (0, 6)


# ---------------------------------------------------------------------------------------------
# resume, variants of the input, s3, the command line
# ---------------------------------------------------------------------------------------------


def test_rerun_skips_and_a_corrupt_map_is_rebuilt(v2_raw: V2Tree, v2_catalog: Path, tmp_path: Path) -> None:
    out = shutil.copytree(v2_catalog, tmp_path / "copy")
    again = build(open_v2_source(v2_raw), LocalStore(out), BuildOptions(scheduler="synchronous", batch_size=7))
    assert (again.built, again.skipped) == (0, 30)
    cog = next(out.glob(f"{S2_V2_COLLECTION}/*/*/*_{REFERENCE_MAP_ASSET}.tif"))
    data = bytearray(cog.read_bytes())
    data[-1] ^= 0xFF
    cog.write_bytes(bytes(data))
    fixed = build(open_v2_source(v2_raw), LocalStore(out), BuildOptions(scheduler="synchronous"))
    assert (fixed.built, fixed.skipped) == (1, 29)
    assert _tree(out) == _tree(v2_catalog)


def test_without_reference_maps_43_class_facts_are_absent(v2_raw: V2Tree, tmp_path: Path) -> None:
    out = tmp_path / "no-maps"
    report = build(open_v2_source(v2_raw, reference_maps=""), LocalStore(out), BuildOptions(scheduler="synchronous", limit=5))
    assert report.ok and report.built == 5 and not report.label_disagreements
    assert validate_catalog(out)[1] == []
    truth = v2_raw.by_id()
    for item in _items(out, S2_V2_COLLECTION):
        props = item["properties"]
        assert REFERENCE_MAP_ASSET not in item["assets"]
        assert not {"bigearthnet:labels_43", "bigearthnet:label_codes_43", CLC_FRACTIONS} & set(props)
        assert props["bigearthnet:labels_19"] == list(truth[item["id"]].labels_19)
    index = _index(out)
    assert index.column(CLC_FRACTIONS).null_count == index.column(prop("labels_43")).null_count == 5
    assert REFERENCE_MAP_ASSET not in json.loads((out / S2_V2_COLLECTION / "collection.json").read_text())["item_assets"]


def test_a_table_with_only_the_required_columns(v2_raw: V2Tree, tmp_path: Path) -> None:
    table = pq.read_table(v2_raw.metadata[0]).select(["patch_id", "s1_name", "split", "labels"])
    minimal = tmp_path / "minimal.parquet"
    pq.write_table(table, minimal)
    out = tmp_path / "catalog"
    source = open_source(str(v2_raw.s2), str(v2_raw.s1), metadata=[str(minimal)])
    report = build(source, LocalStore(out), BuildOptions(scheduler="synchronous", limit=4))
    assert report.ok and report.built == 4
    assert validate_catalog(out)[1] == []
    for item in _items(out, S2_V2_COLLECTION):
        props = item["properties"]
        assert props["bigearthnet:country"] is None and props["bigearthnet:seasonal_snow"] is None
        assert props["bigearthnet:cloud_or_shadow"] is None and "bigearthnet:s2v1_name" not in props
        assert props["bigearthnet:split"] in ("train", "validation", "test")
    index = _index(out)
    assert index.column(prop("seasonal_snow")).null_count == 4 and index.column(prop("country")).null_count == 4
    # tables without a required column are refused, naming it
    pq.write_table(table.drop(["labels"]), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="lacks the required column.*labels"):
        V2Metadata.read([str(tmp_path / "bad.parquet")])


def test_v2_builds_from_s3_like_from_a_folder(s3_server: object, s3_bucket: str, v2_raw: V2Tree, v2_catalog: Path,
                                               tmp_path: Path) -> None:
    server = s3_server
    server.upload_tree(v2_raw.root, s3_bucket, "raw")  # type: ignore[attr-defined]
    base = f"s3://{s3_bucket}/raw"
    source = open_source(f"{base}/BigEarthNet-S2", f"{base}/BigEarthNet-S1", release="auto",
                         settings=server.settings)  # type: ignore[attr-defined]
    assert source.release == "v2.0" and source.maps is not None  # type: ignore[attr-defined]
    assert len(source.metadata.locations) == 2  # type: ignore[attr-defined]  # both official tables found beside
    out = tmp_path / "from-s3"
    report = build(source, LocalStore(out), BuildOptions(scheduler="synchronous"))
    assert report.ok and report.built == 30 and len(report.label_disagreements) == 2
    assert _tree(out) == _tree(v2_catalog)


def test_cli_generates_and_builds_v2(tmp_path: Path) -> None:
    runner = CliRunner()
    raw = tmp_path / "raw"
    result = runner.invoke(cli, ["synthetic", str(raw), "-n", "4", "--release", "v2", "--disagree", "1"])
    assert result.exit_code == 0, result.output
    assert "Metadata:" in result.output
    out = tmp_path / "catalog"
    result = runner.invoke(cli, ["build", "--s2", str(raw / "BigEarthNet-S2"), "--s1", str(raw / "BigEarthNet-S1"),
                                 "--out", str(out), "--scheduler", "synchronous"])
    assert result.exit_code == 0, result.output
    assert "4 built" in result.output and "1 built pairs whose labels disagree" in result.output
    assert len(list(out.glob(f"{S2_V2_COLLECTION}/*/*/*_{REFERENCE_MAP_ASSET}.tif"))) == 4
    bad = runner.invoke(cli, ["build", "--s2", str(raw / "BigEarthNet-S2"), "--s1", str(raw / "BigEarthNet-S1"),
                              "--out", str(out), "--metadata", str(tmp_path / "missing.parquet")])
    assert bad.exit_code == 2 and "missing.parquet" in bad.output


# ---------------------------------------------------------------------------------------------
# the real v2 files (rico-hdl)
# ---------------------------------------------------------------------------------------------

RICO_S2 = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_75_43"
RICO_S1 = "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_70_48"
RICO_MAP = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57"
RICO_PRODUCT = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP"
RICO_S1_PRODUCT = "S1A_IW_GRDH_1SDV_20170613T165043"


def _rico(kind: str, name: str, suffix: str) -> Path:
    product = RICO_S1_PRODUCT if kind == "BigEarthNet-S1" else RICO_PRODUCT
    return RICO_V2 / kind / product / name / f"{name}_{suffix}.tif"


def test_real_v2_files_decode_like_gdal() -> None:
    files = sorted(RICO_V2.rglob("*.tif"))
    assert len(files) == 12 + 2 + 1
    for path in files:
        data = path.read_bytes()
        fast = decode_raster_fast(data)
        gdal = decode_raster_gdal(data)
        assert fast is not None, path  # the fast path takes every real file
        assert fast[0] == gdal[0] and fast[0].epsg == 32633, path
        assert np.array_equal(fast[1], gdal[1]) and fast[1].dtype == gdal[1].dtype, path
        assert np.array_equal(decode_raster(data)[1], _read(path)), path


def _retie(src: Path, dst: Path, x: float, y: float) -> None:
    """Copy a GeoTIFF with its tie point moved to (x, y): header bytes only, pixels untouched."""
    data = bytearray(src.read_bytes())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    for i in range(entries):
        tag, _, _, offset = struct.unpack_from("<HHII", data, ifd + 2 + 12 * i)
        if tag == 33922:  # ModelTiepointTag: (I, J, K, X, Y, Z)
            struct.pack_into("<dd", data, offset + 24, x, y)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(data))


def test_real_v2_files_go_through_the_builder_bit_exactly(tmp_path: Path) -> None:
    """The real S2 patch as the archive holds it, with the real S1 patch and reference map put on
    its grid (their tie points moved; pixel bytes untouched) as its partner and map."""
    raw = tmp_path / "raw"
    shutil.copytree(RICO_V2 / "BigEarthNet-S2", raw / "BigEarthNet-S2")
    s1_name = f"{RICO_S1_PRODUCT}_33UUP_75_43"
    with rasterio.open(_rico("BigEarthNet-S2", RICO_S2, "B02")) as src:
        x, y = src.transform.c, src.transform.f
    for band in S1_BAND_NAMES:
        _retie(_rico("BigEarthNet-S1", RICO_S1, band), raw / "BigEarthNet-S1" / RICO_S1_PRODUCT / s1_name / f"{s1_name}_{band}.tif", x, y)
    _retie(_rico("Reference_Maps", RICO_MAP, "reference_map"),
           raw / "Reference_Maps" / RICO_PRODUCT / RICO_S2 / f"{RICO_S2}_reference_map.tif", x, y)
    ref = _read(_rico("Reference_Maps", RICO_MAP, "reference_map"))
    codes, counts = np.unique(ref, return_counts=True)
    labels_19 = to_19([CLC_CODES[int(c)] for c in codes])
    pq.write_table(pa.table({"patch_id": [RICO_S2], "s1_name": [s1_name], "split": ["test"], "labels": [labels_19]}),
                   raw / "metadata.parquet")
    out = tmp_path / "catalog"
    report = build(open_source(str(raw / "BigEarthNet-S2"), str(raw / "BigEarthNet-S1"), release="auto"),
                   LocalStore(out), BuildOptions(scheduler="synchronous"))
    assert report.ok and report.built == 1 and not report.label_disagreements, report.describe()
    assert validate_catalog(out)[1] == []
    (s2_item,) = _items(out, S2_V2_COLLECTION)
    (s1_item,) = _items(out, S1_V2_COLLECTION)
    props = s2_item["properties"]
    assert props["datetime"] == "2017-06-13T10:10:31Z" and s1_item["properties"]["datetime"] == "2017-06-13T16:50:43Z"
    assert props["proj:epsg"] == 32633 and props["proj:bbox"] == [x, y - 1200, x + 1200, y]
    assert props["bigearthnet:labels_43"] == [CLC_CODES[int(c)] for c in codes]
    assert props[CLC_FRACTIONS] == {str(int(c)): round(int(n) / ref.size, 4) for c, n in zip(codes, counts, strict=True)}
    folder = out / S2_V2_COLLECTION / "33UUP" / RICO_S2
    compared = 0
    for key, asset in s2_item["assets"].items():
        with rasterio.open(folder / asset["href"]) as cog:
            for i, band in enumerate(asset["bands"], start=1):
                real = ref if key == REFERENCE_MAP_ASSET else _read(_rico("BigEarthNet-S2", RICO_S2, band["name"]))
                assert np.array_equal(cog.read(i), real) and cog.read(i).dtype == real.dtype, band["name"]
                compared += 1
    with rasterio.open(out / S1_V2_COLLECTION / "33UUP" / s1_name / f"{s1_name}_s1.tif") as cog:
        for i, band in enumerate(S1_BAND_NAMES, start=1):
            real = _read(_rico("BigEarthNet-S1", RICO_S1, band))
            assert np.array_equal(cog.read(i), real, equal_nan=True) and cog.read(i).dtype == np.float32
            compared += 1
    assert compared == 12 + 1 + 2


def test_dask_local_cluster_build_matches_synchronous(v2_raw: V2Tree, v2_catalog: Path, tmp_path: Path) -> None:
    """Sources, their batch tables and the reports travel to worker processes and back."""
    out = tmp_path / "dask"
    report = build(open_v2_source(v2_raw), LocalStore(out), BuildOptions(n_workers=2, batch_size=8))
    assert report.ok and report.built == 30 and len(report.label_disagreements) == 2
    assert _tree(out) == _tree(v2_catalog)
