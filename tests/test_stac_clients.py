"""The STAC clients users reach for load the catalog's pixels exactly, on the COGs' own grid.

odc-stac selects bands by name (``B02``) and by common name (``blue``) from both layouts;
stackstac stacks pystac-read items of the per-band layout once :func:`restore_epsg` has put back
the ``proj:epsg`` pystac drops. Every array is compared with rasterio's read of the COG.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio

from bigearth_stac.stac_items import PROJECTION_V1_2, epsg_of, restore_epsg, restore_epsg_all
from bigearth_stac.validate import make_validator

LAYOUTS = ["real_catalog", "real_catalog_per_band"]


def _items(root: Path, collection: str) -> list[pystac.Item]:
    return [pystac.Item.from_file(str(p)) for p in sorted(root.glob(f"{collection}/*/*/*.json"))]


def _cog_band(item: pystac.Item, band: str) -> tuple[np.ndarray, Any]:
    """rasterio's read of the COG band ``band`` (a name or a common name) of ``item``, and its transform."""
    for asset in item.assets.values():
        bands = asset.extra_fields["bands"]
        eo = asset.extra_fields.get("eo:bands", [{}] * len(bands))
        for i, (b, e) in enumerate(zip(bands, eo, strict=True), start=1):
            if band in (b["name"], e.get("common_name")):
                with rasterio.open(asset.get_absolute_href()) as cog:
                    assert cog.descriptions[i - 1] == b["name"]
                    return cog.read(i), cog.transform
    raise AssertionError(f"{item.id} has no band {band}")


@pytest.mark.parametrize("fixture", LAYOUTS)
@pytest.mark.parametrize("band", ["B02", "blue", "B8A", "nir08", "B01", "coastal"])
def test_odc_stac_loads_bands_by_name_and_common_name(fixture: str, band: str, request: pytest.FixtureRequest) -> None:
    odc_stac = pytest.importorskip("odc.stac")
    root: Path = request.getfixturevalue(fixture)
    for item in _items(root, "bigearthnet-s2"):
        ds = odc_stac.load([item], bands=[band], groupby="id", crs=item.properties["proj:code"], resolution=10)
        expected, transform = _cog_band(item, band)
        got = ds[band].values
        assert got.shape == (1, 120, 120) and got.dtype == expected.dtype
        # the COG's own grid: odc-stac's coordinates are pixel centres
        assert float(ds.x[0]) - 5 == transform.c and float(ds.y[0]) + 5 == transform.f
        factor = 120 // expected.shape[0]  # 20 m and 60 m bands: nearest-neighbour at 10 m
        np.testing.assert_array_equal(got[0], np.repeat(np.repeat(expected, factor, 0), factor, 1))


@pytest.mark.parametrize("fixture", LAYOUTS)
def test_odc_stac_loads_several_items_by_id(fixture: str, request: pytest.FixtureRequest) -> None:
    """Patches sharing a timestamp stay apart with ``groupby="id"`` (the default merges them)."""
    odc_stac = pytest.importorskip("odc.stac")
    root: Path = request.getfixturevalue(fixture)
    items = [i for i in _items(root, "bigearthnet-s2") if i.properties["bigearthnet:tile"] == "29UPU"]
    assert len(items) == 2 and items[0].datetime == items[1].datetime
    ds = odc_stac.load(items, bands=["red", "B08"], groupby="id", crs=items[0].properties["proj:code"], resolution=10)
    assert ds.sizes["time"] == 2
    found = []
    for item in items:
        expected, transform = _cog_band(item, "B04")
        col = int(round((transform.c + 5 - float(ds.x[0])) / 10))  # coordinates are pixel centres
        row = int(round((float(ds.y[0]) + 5 - transform.f) / 10))
        window = ds["red"].values[:, row:row + 120, col:col + 120]
        found += [t for t in range(2) if np.array_equal(window[t], expected)]
    assert sorted(found) == [0, 1]  # each patch is exactly one layer of its own


@pytest.mark.parametrize("fixture", LAYOUTS)
def test_odc_stac_loads_sentinel_1(fixture: str, request: pytest.FixtureRequest) -> None:
    odc_stac = pytest.importorskip("odc.stac")
    root: Path = request.getfixturevalue(fixture)
    item = _items(root, "bigearthnet-s1")[0]
    # per-band: assets are named VV/VH; stacked: one asset "s1" whose bands odc-stac names s1.1, s1.2
    name = "VH" if "VH" in item.assets else "s1.2"
    ds = odc_stac.load([item], bands=[name], groupby="id", crs=item.properties["proj:code"], resolution=10)
    expected, _ = _cog_band(item, "VH")
    assert {b.units for b in odc_stac.parse_item(item).collection.bands.values()} == {"dB"}
    np.testing.assert_array_equal(ds[name].values[0], expected)


def test_stackstac_needs_the_epsg_pystac_drops(real_catalog_per_band: Path) -> None:
    stackstac = pytest.importorskip("stackstac")
    item = _items(real_catalog_per_band, "bigearthnet-s2")[0]
    assert "proj:epsg" not in item.properties  # pystac migrated projection v1.2 -> v2.0 on read
    item.make_asset_hrefs_absolute()
    with pytest.raises(ValueError, match="epsg"):
        stackstac.stack([item], assets=["B02"])
    # given epsg=, stackstac cannot place the asset by its transform: the WGS84 bbox, off the grid
    off = stackstac.stack([item], assets=["B02"], epsg=epsg_of(item.properties["proj:code"]))
    assert off.shape[-2:] != (120, 120)


def test_stackstac_stacks_pystac_items_on_the_cog_grid(real_catalog_per_band: Path) -> None:
    stackstac = pytest.importorskip("stackstac")
    items = restore_epsg_all(_items(real_catalog_per_band, "bigearthnet-s2"))
    for item in items:
        item.make_asset_hrefs_absolute()
        arr = stackstac.stack([item], assets=["B02", "B8A", "B01"], resolution=10).compute()
        assert arr.shape == (1, 3, 120, 120)
        assert list(arr.band.values) == ["B02", "B8A", "B01"]
        assert list(arr.common_name.values) == ["blue", "nir08", "coastal"]
        for band in ("B02", "B8A", "B01"):
            expected, transform = _cog_band(item, band)
            # stackstac's coordinates are the pixels' top-left corners
            assert float(arr.x[0]) == transform.c and float(arr.y[0]) == transform.f
            factor = 120 // expected.shape[0]
            np.testing.assert_array_equal(arr.sel(band=band).values[0],
                                          np.repeat(np.repeat(expected, factor, 0), factor, 1).astype(arr.dtype))


def test_stackstac_stacks_sentinel_1_per_band(real_catalog_per_band: Path) -> None:
    stackstac = pytest.importorskip("stackstac")
    item = restore_epsg(_items(real_catalog_per_band, "bigearthnet-s1")[0])
    item.make_asset_hrefs_absolute()
    arr = stackstac.stack([item], assets=["VV", "VH"]).compute()
    for band in ("VV", "VH"):
        expected, _ = _cog_band(item, band)
        np.testing.assert_array_equal(arr.sel(band=band).values[0], expected.astype(arr.dtype))


def test_restore_epsg_on_pystac_items_and_dicts(real_catalog: Path) -> None:
    path = next(real_catalog.glob("bigearthnet-s2/*/*/*.json"))
    written = json.loads(path.read_text())
    item = pystac.Item.from_file(str(path))
    assert "proj:epsg" not in item.properties
    assert restore_epsg(item) is item
    assert item.properties["proj:epsg"] == written["properties"]["proj:epsg"]
    assert PROJECTION_V1_2 in item.stac_extensions
    assert not any("projection/v2" in e for e in item.stac_extensions)
    item.validate(make_validator())  # projection v1.2.0 defines proj:epsg beside proj:code
    assert restore_epsg(copy.deepcopy(item)).to_dict() == item.to_dict()  # idempotent

    as_dict = item.to_dict()
    del as_dict["properties"]["proj:epsg"]
    as_dict["assets"]["s2_10m"]["proj:code"] = "EPSG:32601"
    restored = restore_epsg(as_dict)
    assert restored["properties"]["proj:epsg"] == written["properties"]["proj:epsg"]
    assert restored["assets"]["s2_10m"]["proj:epsg"] == 32601
    assert "proj:epsg" not in restored["assets"]["s2_20m"]  # no proj:code of its own

    assert epsg_of("EPSG:4326") == 4326 and epsg_of("epsg:32633") == 32633
    assert epsg_of("IAU_2015:30100") is None and epsg_of(None) is None


@pytest.mark.parametrize("fixture", LAYOUTS)
def test_gdal_sees_band_names_and_units(fixture: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(fixture)
    for collection, unit in (("bigearthnet-s2", None), ("bigearthnet-s1", "dB")):
        for item in _items(root, collection):
            for asset in item.assets.values():
                with rasterio.open(asset.get_absolute_href()) as cog:
                    assert list(cog.descriptions) == [b["name"] for b in asset.extra_fields["bands"]]
                    assert set(cog.units) == {unit}
                    assert [b.get("unit") for b in asset.extra_fields["bands"]] == [unit] * cog.count
