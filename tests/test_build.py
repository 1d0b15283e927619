"""End to end on the six real pairs: valid STAC, both label sets, exact pixels, determinism."""

from __future__ import annotations

import ast
import hashlib
import importlib.resources
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from bigearth_stac.validate import validate_catalog
from bigearth_stac.vocab import CODE_OF_43, band_groups
from catalog_builder.build import BuildOptions, build
from catalog_builder.sources import open_source
from catalog_builder.store import LocalStore, read_manifest
from tests.conftest import STAC_SCHEMAS


def _official_mapping() -> dict[str, str | None]:
    source = importlib.resources.files("bigearthnet_common").joinpath("constants.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "OLD2NEW_LABELS_DICT":
            return ast.literal_eval(node.value)
    raise AssertionError("mapping not found")


def items(root: Path, collection: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob(f"{collection}/*/*/*.json"))]


def raw_json(raw: Path, patch: str) -> dict:
    return json.loads((raw / patch / f"{patch}_labels_metadata.json").read_text())


def test_catalog_is_valid_stac(real_catalog: Path) -> None:
    # offline, with the schemas the package ships (tests/test_stac_crawl.py blocks the network)
    count, problems = validate_catalog(real_catalog)
    tiles = {p.parent.parent.name for p in real_catalog.glob("bigearthnet-s2/*/*/*.json")}
    assert count == 1 + 2 + 2 * len(tiles) + 12
    assert problems == []
    if STAC_SCHEMAS.is_dir():  # the shared mirror gives the same answer
        assert validate_catalog(real_catalog, STAC_SCHEMAS) == (count, [])


def test_schema_rejects_wrong_items(real_catalog: Path) -> None:
    from bigearth_stac.validate import make_validator, validate_document

    validator = make_validator()
    item = items(real_catalog, "bigearthnet-s2")[0]
    bad = json.loads(json.dumps(item))
    bad["properties"]["bigearthnet:labels_43"] = ["Coniferus forest"]
    with pytest.raises(Exception, match="Coniferus forest|Validation failed"):
        validate_document(bad, validator)
    bad = json.loads(json.dumps(item))
    bad["properties"]["bigearthnet:splitt"] = "train"
    with pytest.raises(Exception, match="Validation failed"):
        validate_document(bad, validator)


def test_every_item_has_both_label_sets_from_the_official_mapping(real_catalog: Path, real_raw: tuple[Path, Path]) -> None:
    mapping = _official_mapping()
    s2_items = items(real_catalog, "bigearthnet-s2")
    s1_items = {i["id"]: i for i in items(real_catalog, "bigearthnet-s1")}
    assert len(s2_items) == 6 and len(s1_items) == 6
    for item in s2_items:
        props = item["properties"]
        raw = raw_json(real_raw[0], item["id"])
        assert sorted(props["bigearthnet:labels_43"]) == sorted(raw["labels"])
        assert props["bigearthnet:label_codes_43"] == [CODE_OF_43[n] for n in props["bigearthnet:labels_43"]]
        expected_19 = {mapping[n] for n in raw["labels"]} - {None}
        assert set(props["bigearthnet:labels_19"]) == expected_19
        partner = s1_items[props["bigearthnet:s1_id"]]
        assert partner["properties"]["bigearthnet:s2_id"] == item["id"]
        assert partner["properties"]["bigearthnet:labels_19"] == props["bigearthnet:labels_19"]
        # time comes from the JSON, not the (sometimes malformed) name
        assert props["datetime"] == raw["acquisition_date"].replace(" ", "T") + "Z"


def test_quirky_pair_and_official_tables(real_catalog: Path) -> None:
    by_id = {i["id"]: i["properties"] for i in items(real_catalog, "bigearthnet-s2")}
    quirky = by_id["S2B_MSIL2A_20180204T94161_57_38"]  # name time 94161, JSON 09:41:56
    assert quirky["datetime"] == "2018-02-04T09:41:56Z"
    assert quirky["bigearthnet:seasonal_snow"] is True and quirky["bigearthnet:split"] is None
    austria = by_id["S2A_MSIL2A_20170613T101031_87_48"]
    assert (austria["bigearthnet:country"], austria["bigearthnet:season"], austria["bigearthnet:split"]) == ("Austria", "Summer", "test")
    assert austria["bigearthnet:tile"] == "33UUP" and austria["proj:epsg"] == 32633 and austria["proj:code"] == "EPSG:32633"


def test_geometry_is_wgs84_footprint_of_utm_corners(real_catalog: Path, real_raw: tuple[Path, Path]) -> None:
    from pyproj import Transformer

    for item in items(real_catalog, "bigearthnet-s2"):
        raw = raw_json(real_raw[0], item["id"])["coordinates"]
        to_wgs = Transformer.from_crs(item["properties"]["proj:epsg"], 4326, always_xy=True)
        cx, cy = to_wgs.transform((raw["ulx"] + raw["lrx"]) / 2, (raw["uly"] + raw["lry"]) / 2)
        w, s, e, n = item["bbox"]
        assert w < cx < e and s < cy < n
        assert 0.005 < e - w < 0.05 and 0.005 < n - s < 0.02  # 1.2 km at European latitudes
        ring = item["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 5


@pytest.mark.parametrize("fixture", ["real_catalog", "real_catalog_per_band"])
def test_pixels_round_trip_exactly(fixture: str, request: pytest.FixtureRequest, real_raw: tuple[Path, Path]) -> None:
    root: Path = request.getfixturevalue(fixture)
    compared = 0
    for collection, raw_root, modality in (("bigearthnet-s2", real_raw[0], "s2"), ("bigearthnet-s1", real_raw[1], "s1")):
        for item in items(root, collection):
            folder = next(root.glob(f"{collection}/*/{item['id']}"))
            layout = item["properties"]["bigearthnet:layout"]
            assert set(item["assets"]) == set(band_groups(modality, layout))
            for asset in item["assets"].values():
                path = folder / asset["href"].removeprefix("./")
                data = path.read_bytes()
                assert asset["file:size"] == len(data)
                assert asset["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest()
                valid, errors, _warnings = cog_validate(str(path))
                assert valid and not errors, (path, errors)
                with rasterio.open(path) as cog:
                    assert list(cog.descriptions) == [b["name"] for b in asset["bands"]]
                    assert [u or None for u in cog.units] == [b.get("unit") for b in asset["bands"]]
                    assert set(cog.units) == ({"dB"} if modality == "s1" else {None})
                    assert list(cog.transform)[:6] == asset["proj:transform"]
                    assert [cog.height, cog.width] == asset["proj:shape"]
                    assert cog.crs.to_epsg() == item["properties"]["proj:epsg"]
                    for i, band in enumerate(asset["bands"], start=1):
                        with rasterio.open(raw_root / item["id"] / f"{item['id']}_{band['name']}.tif") as raw:
                            expected = raw.read(1)
                        got = cog.read(i)
                        assert got.dtype == expected.dtype
                        np.testing.assert_array_equal(got, expected)
                        compared += 1
    assert compared == 6 * 14


def test_collections_and_index(real_catalog: Path) -> None:
    root = json.loads((real_catalog / "catalog.json").read_text())
    children = [link["href"] for link in root["links"] if link["rel"] == "child"]
    assert children == ["./bigearthnet-s2/collection.json", "./bigearthnet-s1/collection.json"]
    s2 = json.loads((real_catalog / "bigearthnet-s2/collection.json").read_text())
    assert s2["license"] == "CDLA-Permissive-1.0" and s2["sci:doi"]
    assert len(s2["bigearthnet:classes_43"]) == 43 and len(s2["bigearthnet:classes_19"]) == 19
    assert s2["bigearthnet:item_count"] == 6
    w, s, e, n = s2["extent"]["spatial"]["bbox"][0]
    for item in items(real_catalog, "bigearthnet-s2"):
        b = item["bbox"]
        assert w <= b[0] and s <= b[1] and e >= b[2] and n >= b[3]
    assert s2["extent"]["temporal"]["interval"][0] == ["2017-06-13T10:10:31Z", "2018-02-04T09:41:56Z"]
    index = pq.read_table(real_catalog / "index/bigearthnet-s2.parquet")
    assert sorted(index.column("id").to_pylist()) == sorted(i["id"] for i in items(real_catalog, "bigearthnet-s2"))
    assert index.schema.field("bigearthnet:labels_19").type.value_type == "string"
    # index hrefs resolve from the index file to the real COGs
    href = index.column("assets").combine_chunks().field("s2_10m").field("href")[0].as_py()
    assert (real_catalog / "index" / href).resolve().is_file()
    for link in items(real_catalog, "bigearthnet-s2")[0]["links"]:
        target = next(real_catalog.glob("bigearthnet-s2/*/*/")) / link["href"]
        assert target.resolve().is_file(), link


def test_manifest_lists_every_object_with_its_checksum(real_catalog: Path) -> None:
    entries = read_manifest((real_catalog / "manifest.parquet").read_bytes())
    files = {p.relative_to(real_catalog).as_posix() for p in real_catalog.rglob("*") if p.is_file()}
    assert {e.path for e in entries} | {"manifest.parquet", "catalog.json"} == files | {"catalog.json"}
    for e in entries:
        data = (real_catalog / e.path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (e.size, e.sha256)
    assert [e.stage for e in entries] == sorted(e.stage for e in entries)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_is_deterministic_and_rerun_skips(real_raw: tuple[Path, Path], real_catalog: Path, tmp_path: Path) -> None:
    source = open_source(str(real_raw[0]), str(real_raw[1]))
    report = build(source, LocalStore(tmp_path), BuildOptions(scheduler="synchronous", batch_size=2))
    assert report.built == 6 and report.skipped == 0
    assert _tree(tmp_path) == _tree(real_catalog)
    again = build(source, LocalStore(tmp_path), BuildOptions(scheduler="synchronous"))
    assert (again.built, again.skipped) == (0, 6)
    # a corrupted COG (same size, other bytes) is detected by its checksum and rebuilt
    cog = next(tmp_path.glob("bigearthnet-s2/*/*/*_s2_20m.tif"))
    data = bytearray(cog.read_bytes())
    data[-1] ^= 0xFF
    cog.write_bytes(bytes(data))
    fixed = build(source, LocalStore(tmp_path), BuildOptions(scheduler="synchronous"))
    assert (fixed.built, fixed.skipped) == (1, 5)
    assert _tree(tmp_path) == _tree(real_catalog)


def test_dask_local_cluster_build_matches_synchronous(real_raw: tuple[Path, Path], real_catalog: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches built here while the cluster starts and batches built by its workers make the
    catalog a synchronous build makes."""
    import time

    from distributed import default_client

    import catalog_builder.build as build_module

    here: list[int] = []

    def build_here(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        result = build_module.build_batch(*args, **kwargs)
        here.append(len(result.outcomes))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # hold on until the cluster is up: the rest goes to it
            try:
                default_client()
                break
            except ValueError:
                time.sleep(0.05)
        return result

    monkeypatch.setattr(build_module, "_build_here", build_here)
    source = open_source(str(real_raw[0]), str(real_raw[1]))
    report = build(source, LocalStore(tmp_path), BuildOptions(n_workers=2, batch_size=1))
    assert report.ok and report.built == 6
    assert 1 <= len(here) < 6, here  # the first batch here, at least one on the workers
    assert _tree(tmp_path) == _tree(real_catalog)


# ---------------------------------------------------------------------------------------------
# Raw bands are decoded without GDAL; GDAL stays the reference
# ---------------------------------------------------------------------------------------------


def test_raw_v1_bands_decode_like_gdal(real_raw: tuple[Path, Path], synthetic_raw: tuple[Path, Path]) -> None:
    from catalog_builder.sources.rawtiff import decode_raster_fast, decode_raster_gdal

    files = sorted(real_raw[0].rglob("*.tif")) + sorted(real_raw[1].rglob("*.tif"))
    assert len(files) == 6 * 14
    files += sorted(synthetic_raw[0].rglob("*.tif"))[:60] + sorted(synthetic_raw[1].rglob("*.tif"))[:20]
    for path in files:
        data = path.read_bytes()
        fast = decode_raster_fast(data)
        assert fast is not None, path  # every raw file takes the fast path
        header, pixels = decode_raster_gdal(data)
        assert fast[0] == header, path  # size, type, CRS, transform
        assert fast[1].dtype == pixels.dtype and np.array_equal(fast[1], pixels), path


def test_unusual_geotiffs_fall_back_to_gdal(real_catalog: Path, tmp_path: Path) -> None:
    from catalog_builder.sources.rawtiff import decode_raster, decode_raster_fast

    # our own COGs are tiled and compressed: GDAL reads them
    cog = next(real_catalog.glob("bigearthnet-s2/*/*/*_s2_60m.tif"))
    assert decode_raster_fast(cog.read_bytes()) is None
    header, pixels = decode_raster(cog.read_bytes())
    with rasterio.open(cog) as src:
        assert (header.count, header.epsg) == (2, src.crs.to_epsg()) and np.array_equal(pixels, src.read(1))
    # big-endian, and a point-registered raster (GDAL moves its origin by half a pixel)
    array = np.arange(400, dtype="uint16").reshape(20, 20)
    profile = {"driver": "GTiff", "width": 20, "height": 20, "count": 1, "dtype": "uint16", "crs": "EPSG:32633",
               "transform": rasterio.Affine(60, 0, 404400, 0, -60, 5342400)}
    big = tmp_path / "big.tif"
    with rasterio.open(big, "w", ENDIANNESS="BIG", **profile) as dst:
        dst.write(array, 1)
    assert big.read_bytes()[:2] == b"MM"
    assert decode_raster_fast(big.read_bytes()) is None and np.array_equal(decode_raster(big.read_bytes())[1], array)
    point = tmp_path / "point.tif"
    with rasterio.open(point, "w", **profile) as dst:
        dst.write(array, 1)
        dst.update_tags(AREA_OR_POINT="Point")
    data = point.read_bytes()
    with rasterio.open(point) as src:
        expected = tuple(src.transform)[:6]
    assert decode_raster_fast(data) is None and decode_raster(data)[0].transform == expected


def test_a_cluster_that_cannot_be_reached_fails_the_build(synthetic_raw: tuple[Path, Path], tmp_path: Path) -> None:
    """Batches built here while connecting stay (a rerun resumes); the error is the connection's."""
    import dask
    import distributed  # noqa: F401 - its defaults must be in dask's config before the override,
    # or leaving the override drops the whole "distributed" section

    source = open_source(str(synthetic_raw[0]), str(synthetic_raw[1]))
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), pytest.raises(OSError, match="127.0.0.1:9"):
        build(source, LocalStore(tmp_path), BuildOptions(scheduler="tcp://127.0.0.1:9", batch_size=4, limit=8))
    assert not (tmp_path / "catalog.json").exists()
    again = build(source, LocalStore(tmp_path), BuildOptions(scheduler="synchronous", batch_size=4, limit=8))
    assert again.ok and again.built + again.skipped == 8
