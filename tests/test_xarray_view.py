"""Lazy xarray views and stackstac mosaics, checked against the raw files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio

from bigearth_stac.fetch import FetchError
from bigearth_stac.samples import sample_table
from bigearth_stac.vocab import S2_BAND_NAMES, multi_hot
from bigearth_stac.xarray_view import mosaic, to_xarray


def s2_table(root: Path) -> pa.Table:
    idx = root / "index" / "bigearthnet-s2.parquet"
    return sample_table(pq.read_table(idx), str(idx), "s2")


def raw(real_raw: tuple[Path, Path], patch: str, band: str) -> np.ndarray:
    with rasterio.open(real_raw[0] / patch / f"{patch}_{band}.tif") as src:
        return src.read(1)


@pytest.mark.parametrize("layout", ["stacked", "per-band"])
def test_cube_matches_raw_files(layout: str, real_catalog: Path, real_catalog_per_band: Path, real_raw: tuple[Path, Path]) -> None:
    table = s2_table(real_catalog if layout == "stacked" else real_catalog_per_band)
    ds = to_xarray(table, chunk_patches=4)
    cube = ds["s2"]
    assert cube.dims == ("patch", "band", "y", "x") and cube.shape == (6, 12, 120, 120)
    assert cube.dtype == np.uint16 and cube.chunks[0] == (4, 2)
    assert list(ds.band.values) == list(S2_BAND_NAMES)
    values = cube.values
    for p, patch in enumerate(ds.patch.values):
        for b, band in enumerate(S2_BAND_NAMES):
            native = raw(real_raw, patch, band)
            f = 120 // native.shape[0]
            assert np.array_equal(values[p, b], np.repeat(np.repeat(native, f, 0), f, 1)), (patch, band)
    labels = table.column("labels_19").to_pylist()
    assert ds.labels_19.values.tolist() == [multi_hot(lab, "19") for lab in labels]
    assert ds.labels_43.shape == (6, 43) and list(ds.split.values) == table.column("split").to_pylist()


def test_coarser_resolution_and_s1(real_catalog: Path, real_raw: tuple[Path, Path]) -> None:
    idx = real_catalog / "index"
    table = sample_table(pq.read_table(idx / "bigearthnet-s2.parquet"), str(idx / "bigearthnet-s2.parquet"), "pair",
                         pq.read_table(idx / "bigearthnet-s1.parquet"), str(idx / "bigearthnet-s1.parquet"))
    ds = to_xarray(table, bands=["B02", "B05"], resolution=20)
    patch = ds.patch.values[0]
    got = ds.s2.sel(patch=patch).values
    assert got.dtype == np.float32 and got.shape == (2, 60, 60)
    b02 = raw(real_raw, patch, "B02").astype(np.float32).reshape(60, 2, 60, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(got[0], b02, rtol=1e-6)
    assert np.array_equal(got[1], raw(real_raw, patch, "B05"))
    s1 = to_xarray(table, modality="s1", chunk_patches=6)
    assert s1.s1.shape == (6, 2, 120, 120) and s1.s1.dtype == np.float32
    assert np.isfinite(s1.s1.values).all()


def test_nothing_is_read_until_computed(real_catalog: Path, tmp_path: Path) -> None:
    table = s2_table(real_catalog)
    rows = table.to_pylist()
    missing = str(real_catalog.resolve() / "nowhere_s2_10m.tif")  # inside the catalog, but absent
    rows[4]["s2_assets"] = [missing] + rows[4]["s2_assets"][1:]
    broken = pa.Table.from_pylist(rows, schema=table.schema)
    ds = to_xarray(broken, chunk_patches=2)  # builds the graph without touching any object
    assert ds.s2.isel(patch=slice(0, 4)).values.shape == (4, 12, 120, 120)  # other chunks read fine
    with pytest.raises(FetchError) as info:
        ds.s2.isel(patch=4).compute()
    assert rows[4]["id"] in str(info.value) and missing in str(info.value)


def test_footprint_centres_when_the_table_has_bboxes(real_catalog: Path) -> None:
    idx = real_catalog / "index" / "bigearthnet-s2.parquet"
    index = pq.read_table(idx)
    table = sample_table(index, str(idx), "s2").append_column("bbox", index.column("bbox"))
    ds = to_xarray(table)
    b = index.column("bbox")[0].as_py()
    assert ds.center_lon.values[0] == pytest.approx((b["xmin"] + b["xmax"]) / 2)
    assert ds.center_lat.values[0] == pytest.approx((b["ymin"] + b["ymax"]) / 2)


def test_mosaic_pixels_match_raw_files(real_catalog_per_band: Path, real_raw: tuple[Path, Path]) -> None:
    """The two real 29UPU patches (EPSG:32629) on one grid: each window equals its raw file."""
    index = pq.read_table(real_catalog_per_band / "index" / "bigearthnet-s2.parquet")
    tile = pa.compute.equal(index.column("bigearthnet:tile"), "29UPU")
    rows = index.filter(tile)
    assert len(rows) == 2
    boxes = rows.column("bbox").to_pylist()
    bbox = (min(b["xmin"] for b in boxes) - 0.001, min(b["ymin"] for b in boxes) - 0.001,
            max(b["xmax"] for b in boxes) + 0.001, max(b["ymax"] for b in boxes) + 0.001)
    table = sample_table(rows, str(real_catalog_per_band / "index" / "bigearthnet-s2.parquet"), "s2")
    for band, res in (("B02", 10), ("B05", 20)):
        m = mosaic(table, bbox, bands=[band], resolution=res)
        assert m.attrs["crs"].lower() == "epsg:32629"
        xs, ys = m.x.values, m.y.values
        for patch in rows.column("id").to_pylist():
            with rasterio.open(real_raw[0] / patch / f"{patch}_{band}.tif") as src:
                expected, t = src.read(1), src.transform
            col = int(np.flatnonzero(np.isclose(xs, t.c, rtol=0, atol=1e-6))[0])
            row = int(np.flatnonzero(np.isclose(ys, t.f, rtol=0, atol=1e-6))[0])
            window = m.isel(band=0, y=slice(row, row + expected.shape[0]), x=slice(col, col + expected.shape[1])).values
            assert np.array_equal(window, expected), (patch, band)


def test_mosaic_refuses_stacked_assets(real_catalog: Path) -> None:
    with pytest.raises(ValueError, match="per-band"):
        mosaic(s2_table(real_catalog), (-180, -90, 180, 90))


def test_the_readme_mosaic_example_runs_as_written(real_catalog_per_band: Path) -> None:
    import bigearth_stac

    catalog = bigearth_stac.Catalog.open(str(real_catalog_per_band))
    box = (13.70, 48.21, 13.74, 48.23)
    rgb = bigearth_stac.mosaic(catalog.search(bbox=box), bbox=box, bands=["B04", "B03", "B02"])
    assert rgb.shape == (3, 229, 301)
    values = rgb.compute().values
    assert values.dtype == np.uint16 and (values > 0).sum() >= 3 * 120 * 120  # the whole patch is inside
    # pystac items (proj:epsg dropped by pystac's migration) go through the same path
    items = catalog.search(bbox=box).to_item_collection()
    assert all(i.properties["proj:epsg"] == 32633 for i in items)
    again = bigearth_stac.mosaic(items, bbox=box, bands=["B04", "B03", "B02"]).compute().values
    assert (again == values).all()
