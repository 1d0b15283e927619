"""Synthetic pairs in the exact raw v1 layout, for tests and benchmarks at scale.

Names, countries, seasons, splits and flags are real: pairs are drawn from the official
``s1_s2_name_country_season`` table, so the official tables join as they do for real data
(and the time quirks of real names come along). Pixels and labels are made up
(smooth random fields with realistic ranges; 1-5 of the 43 classes); footprints are where the
real patches are, within a few tens of metres: the tile's MGRS square and the grid position in
the name (:func:`patch_origin`).
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.session import DummySession
from rasterio.transform import from_origin

from bigearth_stac.vocab import LABELS_43, S1_BANDS, S2_BANDS
from catalog_builder.tables import load_tables

WKT_TEMPLATE = (
    'PROJCS["WGS 84 / UTM zone {zone}{hemi}",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",'
    '6378137,298.257223563,AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,'
    'AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],'
    'AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]],'
    'PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],'
    'PARAMETER["central_meridian",{cm}],PARAMETER["scale_factor",0.9996],'
    'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1,'
    'AUTHORITY["EPSG","9001"]],AXIS["Easting",EAST],AXIS["Northing",NORTH],AUTHORITY["EPSG","{epsg}"]]'
)
# Latitude of the southern edge of each MGRS latitude band (C..X, without I and O).
_BANDS = "CDEFGHJKLMNPQRSTUVWX"


@dataclass(frozen=True)
class SyntheticPair:
    s2_name: str
    s1_name: str
    tile: str


def official_pairs() -> list[tuple[str, str]]:
    """(s1_name, s2_name) of all 590,326 official pairs, in the table's order."""
    table = load_tables().table
    return list(zip(table.column("s1_name").to_pylist(), table.column("s2_name").to_pylist(), strict=True))


_COLUMN_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"


def mgrs_tile_corner(tile: str) -> tuple[int, int, int]:
    """(EPSG, west, north) of a Sentinel-2 tile: the north-west corner of its MGRS 100 km square.

    Column letters cycle through three sets by zone; row letters repeat every 2,000 km and start
    at F in even zones; the latitude band picks the 2,000 km cycle.
    """
    zone, band, col, row = int(tile[:2]), tile[2], tile[3], tile[4]
    west = (_COLUMN_SETS[(zone - 1) % 3].index(col) + 1) * 100_000
    row_index = (_ROW_LETTERS.index(row) - (5 if zone % 2 == 0 else 0)) % 20
    band_mid_lat = -80 + 8 * _BANDS.index(band) + 4
    target = band_mid_lat * 110_900  # ~northing of the band's middle (northern hemisphere)
    south = min((row_index * 100_000 + k * 2_000_000 for k in range(5)), key=lambda n: abs(n + 50_000 - target))
    return 32600 + zone, west, south + 100_000


def patch_origin(s1_name: str) -> tuple[int, float, float]:
    """(EPSG, ulx, uly) of a v1 patch from its name: its tile's corner plus 1.2 km per grid step.

    The real files agree (``S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48`` -> EPSG:32633,
    404400, 5342400), so synthetic footprints sit where the real patches are.
    """
    parts = s1_name.split("_")
    epsg, west, north = mgrs_tile_corner(parts[5])
    return epsg, float(west + 1200 * int(parts[6])), float(north - 1200 * int(parts[7]))


def _field(rng: np.random.Generator, size: int, low: float, high: float) -> np.ndarray:
    coarse = rng.uniform(low, high, (size // 10 + 2, size // 10 + 2))
    up = np.kron(coarse, np.ones((10, 10)))[:size, :size]
    return up + rng.normal(0, (high - low) * 0.03, (size, size))


def _tif(path: Path, array: np.ndarray, epsg: int, x: float, y: float, res: int, nodata: float | None = None,
         **creation: object) -> None:
    # Raw v1 and v2 bands are plain striped, uncompressed GeoTIFFs (v2 S2 bands declare nodata 0;
    # v2 reference maps are DEFLATE-compressed: ``creation`` options).
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                       dtype=array.dtype, crs=f"EPSG:{epsg}", transform=from_origin(x, y, res, res),
                       nodata=nodata, **creation) as dst:
        dst.write(array, 1)


def write_pair(s2_root: Path, s1_root: Path, s1_name: str, s2_name: str, seed: int) -> SyntheticPair:
    """Write one synthetic pair (14 GeoTIFFs and 2 JSON files) in the raw v1 layout."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    tile = s1_name.split("_")[5]
    epsg, ulx, uly = patch_origin(s1_name)
    zone = epsg - 32600
    wkt = WKT_TEMPLATE.format(zone=zone, hemi="N", cm=-183 + 6 * zone, epsg=epsg)
    labels = sorted(rng.sample(LABELS_43, rng.randint(1, 5)), key=LABELS_43.index)
    coords = {"ulx": ulx, "uly": uly, "lrx": ulx + 1200, "lry": uly - 1200}
    s2_dir = s2_root / s2_name
    s2_dir.mkdir(parents=True, exist_ok=True)
    for band in S2_BANDS:
        arr = np.clip(_field(nrng, band.size, 100, 4000), 0, 65535).astype("uint16")
        _tif(s2_dir / f"{s2_name}_{band.name}.tif", arr, epsg, ulx, uly, band.resolution)
    s2_time = s2_name.split("_")[2]
    date = f"{s2_time[:4]}-{s2_time[4:6]}-{s2_time[6:8]}"
    # Real names drop the leading zero of early hours (T93020 is 09:30:20) and can hold
    # impossible seconds (T94161): the JSON holds a valid time, as in the real data.
    hhmmss = s2_time[9:].rjust(6, "0")
    hhmmss = hhmmss[:4] + str(min(int(hhmmss[4:]), 59)).zfill(2)
    tile_source = f"{s2_name[:3]}_MSIL1C_{s2_time}_N0205_R{rng.randrange(1, 143):03d}_T{tile}_{s2_time[:9]}{''.join(rng.choices(string.digits, k=6))}.SAFE"
    (s2_dir / f"{s2_name}_labels_metadata.json").write_text(json.dumps({
        "labels": labels, "coordinates": coords, "projection": wkt, "tile_source": tile_source,
        "acquisition_date": f"{date} {hhmmss[:2]}:{hhmmss[2:4]}:{hhmmss[4:6]}",
    }))
    s1_dir = s1_root / s1_name
    s1_dir.mkdir(parents=True, exist_ok=True)
    for band in S1_BANDS:
        low, high = (-20.0, -5.0) if band.name == "VV" else (-28.0, -12.0)
        _tif(s1_dir / f"{s1_name}_{band.name}.tif", _field(nrng, 120, low, high).astype("float32"), epsg, ulx, uly, 10)
    s1_time = s1_name.split("_")[4]
    s1_coords = {"ulx": ulx, "uly": uly, "lrx": ulx + 1200, "lly": uly - 1200}  # the real 'lly' quirk
    (s1_dir / f"{s1_name}_labels_metadata.json").write_text(json.dumps({
        "labels": labels, "coordinates": s1_coords, "projection": wkt,
        "corresponding_s2_patch": s2_name,
        "scene_source": f"{s1_name[:25]}_{s1_time}_{''.join(rng.choices(string.digits, k=6))}_01C579_7EEC",
        "acquisition_time": f"{s1_time[:4]}-{s1_time[4:6]}-{s1_time[6:8]}T{s1_time[9:11]}:{s1_time[11:13]}:{s1_time[13:15]}",
    }))
    return SyntheticPair(s2_name, s1_name, tile)


def generate(dest: str | Path, n: int, seed: int = 0, exclude: Collection[str] = (),
             progress: Callable[[int, int], None] | None = None) -> tuple[Path, Path]:
    """Write ``n`` synthetic pairs under ``dest``; returns the (S2 root, S1 root) folders.

    ``exclude``: S2 names not to draw (e.g. real pairs written beside the synthetic ones).
    ``progress(done, total)`` is called after each pair.
    """
    out = Path(dest)
    s2_root, s1_root = out / "BigEarthNet-v1.0", out / "BigEarthNet-S1-v1.0"
    s2_root.mkdir(parents=True, exist_ok=True)
    s1_root.mkdir(parents=True, exist_ok=True)
    pairs = official_pairs()
    skip = set(exclude)
    chosen = [k for k in random.Random(seed).sample(range(len(pairs)), n + len(skip)) if pairs[k][1] not in skip][:n]
    # One GDAL Env for all writes: without it rasterio builds one per file from the environment,
    # which with AWS credentials set costs a boto3 session (~30 ms) per band.
    with rasterio.Env(session=DummySession()):
        for i, k in enumerate(chosen):
            s1_name, s2_name = pairs[k]
            write_pair(s2_root, s1_root, s1_name, s2_name, seed * 1_000_003 + i)
            if progress is not None:
                progress(i + 1, n)
    return s2_root, s1_root
