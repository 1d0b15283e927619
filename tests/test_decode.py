"""The fast COG decoder (tifffile + imagecodecs) against GDAL, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from bigearth_stac.decode import DecodeError, decode, decode_fast, decode_gdal
from catalog_builder.cog import CogOptions, encode_cog


def _tifs(root: Path) -> list[Path]:
    return sorted(root.rglob("*.tif"))


@pytest.mark.parametrize("layout", ["stacked", "per-band"])
def test_fast_path_matches_gdal_bit_for_bit(layout: str, real_catalog: Path, real_catalog_per_band: Path) -> None:
    root = real_catalog if layout == "stacked" else real_catalog_per_band
    files = _tifs(root)
    assert len(files) == 6 * (4 if layout == "stacked" else 14)
    dtypes = set()
    for path in files:
        data = path.read_bytes()
        fast = decode_fast(data)
        assert fast is not None, f"{path.name} should take the fast path"
        with rasterio.open(path) as src:
            ref = src.read()
        assert fast.dtype == ref.dtype and fast.shape == ref.shape, path.name
        assert fast.tobytes() == ref.tobytes(), path.name  # bit for bit, NaN payloads included
        dtypes.add(fast.dtype.name)
    assert dtypes == {"uint16", "float32"}  # predictor 2 and predictor 3 both exercised


def test_tile_padding_and_shapes(real_catalog: Path) -> None:
    """60 px bands live in a 64 px tile and 20 px bands in a 32 px tile: the padding is cropped."""
    shapes = {p.name.rsplit("_", 1)[-1]: decode(p.read_bytes()).shape for p in _tifs(real_catalog)}
    assert shapes == {"10m.tif": (4, 120, 120), "20m.tif": (6, 60, 60), "60m.tif": (2, 20, 20), "s1.tif": (2, 120, 120)}


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_zstd_cogs_take_the_fast_path(dtype: str) -> None:
    rng = np.random.default_rng(1)
    bands = [rng.integers(0, 10_000, (60, 60)).astype(dtype) for _ in range(3)]
    cog = encode_cog(bands, 32633, (500_000.0, 5_000_000.0), 20.0, ["a", "b", "c"], CogOptions(compress="ZSTD"))
    fast = decode_fast(cog.data)
    assert fast is not None
    assert fast.tobytes() == decode_gdal(cog.data).tobytes() == np.stack(bands).tobytes()


def test_other_geotiffs_fall_back_to_gdal(real_raw: tuple[Path, Path]) -> None:
    """Raw v1 files are striped and uncompressed: not ours, so GDAL decodes them."""
    for path in sorted(real_raw[0].rglob("*_B0[12].tif"))[:2] + sorted(real_raw[1].rglob("*_VV.tif"))[:1]:
        data = path.read_bytes()
        assert decode_fast(data) is None
        with rasterio.open(path) as src:
            assert decode(data).tobytes() == src.read().tobytes()


def test_garbage_and_corrupt_tiles_raise(real_catalog: Path) -> None:
    with pytest.raises(DecodeError):
        decode(b"not a tiff at all")
    data = bytearray(_tifs(real_catalog)[0].read_bytes())
    data[-200:] = b"\x00" * 200  # damage the end of the single tile
    with pytest.raises(DecodeError):
        decode(bytes(data))


def test_own_header_parser_reads_our_cogs_and_rejects_the_rest(real_catalog: Path, real_raw: tuple[Path, Path]) -> None:
    from bigearth_stac.decode import _plan_from_ifd, _plan_with_tifffile, _read_ifd

    for path in sorted(real_catalog.glob("*/*/*/*.tif")):
        data = path.read_bytes()
        tags = _read_ifd(data)
        assert tags is not None, path
        # the hand-rolled parser and tifffile agree on every field of the plan
        assert _plan_from_ifd(tags) == _plan_with_tifffile(data), path
    raw_band = next(real_raw[0].glob("*/*_B02.tif")).read_bytes()
    assert _plan_from_ifd(_read_ifd(raw_band) or {}) is None  # striped: not ours
    assert _read_ifd(b"MM\x00*" + bytes(20)) is None  # big-endian: left to tifffile
    assert _read_ifd(raw_band[:10]) is None  # truncated header


def _gtiff(array: np.ndarray, block: int) -> bytes:
    """A one-tile GeoTIFF of ``array`` (bands, h, w) with ``block`` x ``block`` tiles, written by GDAL."""
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin

    bands, h, w = array.shape
    profile = {"driver": "GTiff", "width": w, "height": h, "count": bands, "dtype": array.dtype.name,
               "crs": "EPSG:32633", "transform": from_origin(500_000.0, 5_000_000.0, 60.0, 60.0),
               "tiled": True, "blockxsize": block, "blockysize": block, "compress": "deflate", "interleave": "pixel"}
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(array)
        return mem.read()


def test_tiles_far_larger_than_the_image_are_left_to_gdal() -> None:
    """A header may not make the fast path allocate a huge tile for a small image."""
    array = np.random.default_rng(2).integers(0, 10_000, (2, 20, 20)).astype("uint16")
    usual = _gtiff(array, 512)  # GDAL's default block: still the fast path
    assert decode_fast(usual) is not None and decode_fast(usual).tobytes() == array.tobytes()  # type: ignore[union-attr]
    huge = _gtiff(array, 2048)
    assert decode_fast(huge) is None
    assert decode(huge).tobytes() == array.tobytes()


def test_expected_shape_is_checked_on_the_header(real_catalog: Path) -> None:
    from bigearth_stac.bandplan import asset_expectations

    expect = asset_expectations("s2", "stacked")
    for path in _tifs(real_catalog):
        if path.stem.endswith("_s1"):
            continue
        key = "_".join(path.stem.split("_")[-2:])  # <id>_s2_10m
        data = path.read_bytes()
        assert decode(data, expect[key]).shape == expect[key].shape  # each group decodes as its asset
        wrong = expect["s2_20m" if key != "s2_20m" else "s2_60m"]
        with pytest.raises(DecodeError, match=rf"expected {wrong.bands} bands"):
            decode(data, wrong)
        with pytest.raises(DecodeError, match=rf"expected {wrong.bands} bands"):
            decode_gdal(data, wrong)
