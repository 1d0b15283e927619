"""A full-archive index without the pixels: 590,326 rows per collection in the index's schema.

For the search benchmark and the remote-read tests. Names, countries and seasons come from the
official ``s1_s2_name_country_season`` table, splits and snow / cloud flags from the official
lists (:func:`catalog_builder.tables.load_tables`); labels and footprints are synthesized
(footprints on a 1.2 km grid in each tile's real UTM zone, :func:`synthetic.patch_origin`).

Building 590k item dicts and parsing them with stac-geoparquet takes minutes, so the table is
built column by column instead: one real item per collection (``stac.build_item``) gives the
schema and the constant nested values, and the per-row values replace theirs. Rows are then
typed, sorted and written exactly as the builder writes an index (:mod:`catalog_builder.index`).
"""

from __future__ import annotations

import json
import logging
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from pyproj import Transformer

from bigearth_stac.contract import (
    CATALOG_FILE,
    asset_path,
    collection_path,
    index_href,
    item_path,
    tile_catalog_path,
)
from bigearth_stac.vocab import (
    CODE_OF_43,
    LABELS_43,
    S1_COLLECTION,
    S2_COLLECTION,
    band_groups,
    to_19,
)
from catalog_builder.cog import CogBytes
from catalog_builder.index import (
    ROW_GROUP_SIZE,
    index_path,
    items_to_table,
    sort_by_location,
    table_to_parquet_bytes,
    with_property_types,
)
from catalog_builder.records import PairRecord, PatchRecord
from catalog_builder.stac import build_catalog, build_collection, build_item
from catalog_builder.synthetic import official_pairs, patch_origin
from catalog_builder.tables import load_tables

log = logging.getLogger(__name__)


def _time_of(s2_name: str) -> datetime:
    # Real names drop the leading zero of early hours and can hold impossible seconds (see synthetic.py).
    stamp = s2_name.split("_")[2]
    hhmmss = stamp[9:].rjust(6, "0")
    sec = min(int(hhmmss[4:]), 59)
    return datetime(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]), int(hhmmss[:2]), int(hhmmss[2:4]), sec,
                    tzinfo=timezone.utc)


def _template_item(modality: str, layout: str) -> dict[str, Any]:
    t = datetime(2017, 6, 1, tzinfo=timezone.utc)
    s2 = PatchRecord("S2A_MSIL2A_20170601T000000_1_1", "s2", t, 32633, (500000.0, 5500000.0, 501200.0, 5498800.0), {}, "x", (), "x")
    s1 = PatchRecord("S1A_IW_GRDH_1SDV_20170601T000000_33UUP_1_1", "s1", t, 32633, s2.bounds, {}, "x", (), "x")
    pair = PairRecord(s2, s1, "33UUP", ("Pastures",), ("Pastures",), "train", "Austria", "Summer", False, False)
    cogs = {k: CogBytes(b"", "0" * 64) for k in band_groups(modality, layout)}  # type: ignore[arg-type]
    return build_item(pair, modality, cogs, layout)  # type: ignore[arg-type]


def _replace(struct: pa.StructArray, **children: pa.Array) -> pa.StructArray:
    names = [struct.type.field(i).name for i in range(struct.type.num_fields)]
    arrays = [children.get(n, struct.field(n)) for n in names]
    return pa.StructArray.from_arrays(arrays, fields=[struct.type.field(i) for i in range(struct.type.num_fields)])


def _checksums(rng: np.random.Generator, n: int) -> list[str]:
    digests = rng.bytes(32 * n).hex()
    return ["1220" + digests[j * 64:(j + 1) * 64] for j in range(n)]


def _labels(rng: np.random.Generator, n: int) -> tuple[list[list[str]], list[list[str]]]:
    counts = rng.integers(1, 6, n)
    l43: list[list[str]] = []
    for c in counts:
        picks = np.sort(rng.choice(len(LABELS_43), int(c), replace=False))
        l43.append([LABELS_43[i] for i in picks])
    return l43, [to_19(x) for x in l43]


def synthetic_tables(n: int | None = None, seed: int = 0, layout: str = "stacked") -> dict[str, pa.Table]:
    """Collection id -> index table (typed, sorted by location) of ``n`` official pairs (all: 590,326)."""
    pairs = official_pairs()
    if n is not None:
        pairs = random.Random(seed).sample(pairs, n)
    tables = load_tables()
    nrng = np.random.default_rng(seed)
    count = len(pairs)
    s1_ids = [p[0] for p in pairs]
    s2_ids = [p[1] for p in pairs]
    tiles = [s.split("_")[5] for s in s1_ids]
    origin = [patch_origin(s) for s in s1_ids]
    epsg = np.array([o[0] for o in origin])
    ulx = np.array([o[1] for o in origin], dtype=float)
    uly = np.array([o[2] for o in origin], dtype=float)
    lrx, lry = ulx + 1200, uly - 1200
    lon = np.empty((count, 5))
    lat = np.empty((count, 5))
    xs = np.stack([ulx, ulx, lrx, lrx, ulx], axis=1)
    ys = np.stack([uly, lry, lry, uly, uly], axis=1)
    for code in np.unique(epsg):
        sel = epsg == code
        lo, la = Transformer.from_crs(int(code), 4326, always_xy=True).transform(xs[sel], ys[sel])
        lon[sel], lat[sel] = np.round(lo, 7), np.round(la, 7)
    geoms = shapely.polygons(np.stack([lon, lat], axis=2))
    wkb = shapely.to_wkb(geoms)
    bbox = pa.StructArray.from_arrays(
        [pa.array(lon.min(1)), pa.array(lat.min(1)), pa.array(lon.max(1)), pa.array(lat.max(1))],
        names=["xmin", "ymin", "xmax", "ymax"])
    l43, l19 = _labels(nrng, count)
    facts = [tables.facts(s) for s in s2_ids]
    s2_times = [_time_of(s) for s in s2_ids]
    s1_times = [datetime.strptime(s.split("_")[4], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc) for s in s1_ids]
    common = {
        "bigearthnet:labels_43": pa.array(l43, pa.list_(pa.string())),
        "bigearthnet:labels_19": pa.array(l19, pa.list_(pa.string())),
        "bigearthnet:label_codes_43": pa.array([[CODE_OF_43[x] for x in row] for row in l43], pa.list_(pa.int64())),
        "bigearthnet:split": pa.array([f.split for f in facts], pa.string()),
        "bigearthnet:country": pa.array([f.country for f in facts], pa.string()),
        "bigearthnet:season": pa.array([f.season for f in facts], pa.string()),
        "bigearthnet:seasonal_snow": pa.array([f.seasonal_snow for f in facts]),
        "bigearthnet:cloud_or_shadow": pa.array([f.cloud_or_shadow for f in facts]),
        "bigearthnet:tile": pa.array(tiles),
        "bigearthnet:s2_id": pa.array(s2_ids),
        "bigearthnet:s1_id": pa.array(s1_ids),
        "proj:epsg": pa.array(epsg.astype(np.int64)),
        "proj:code": pa.array([f"EPSG:{e}" for e in epsg]),
        "proj:bbox": pa.array(np.stack([ulx, lry, lrx, uly], axis=1).tolist(), pa.list_(pa.float64())),
        "geometry": pa.array(wkb, pa.binary()),
        "bbox": bbox,
    }
    out: dict[str, pa.Table] = {}
    for modality, cid, ids, partners, times in (
        ("s2", S2_COLLECTION, s2_ids, s1_ids, s2_times), ("s1", S1_COLLECTION, s1_ids, s2_ids, s1_times),
    ):
        template = items_to_table([_template_item(modality, layout)])
        table = template.take(pa.array(np.zeros(count, dtype=np.int64)))
        other = S1_COLLECTION if modality == "s2" else S2_COLLECTION
        cols = dict(common)
        cols["id"] = pa.array(ids)
        cols["datetime"] = pa.array(times, pa.timestamp("us", tz="UTC"))
        cols["platform"] = pa.array([f"sentinel-{'2' if modality == 's2' else '1'}{i[2].lower()}" for i in ids])
        cols["bigearthnet:source_product"] = pa.array([f"{i[:3]}_synthetic_{t}" for i, t in zip(ids, tiles, strict=False)])
        up = index_href(cid, ".")  # from the index file to the catalog root
        assets = table.column("assets").combine_chunks()
        new_assets = {}
        for k in [assets.type.field(j).name for j in range(assets.type.num_fields)]:
            a = assets.field(k)
            res = a.field("gsd").to_numpy()
            transform = np.stack([res, np.zeros(count), ulx, np.zeros(count), -res, uly], axis=1)
            new_assets[k] = _replace(
                a,
                href=pa.array([f"{up}/{asset_path(cid, t, i, k)}" for t, i in zip(tiles, ids, strict=False)]),
                **{"file:size": pa.array(nrng.integers(20_000, 150_000, count)),
                   "file:checksum": pa.array(_checksums(nrng, count)),
                   "proj:transform": pa.array(transform.tolist(), a.field("proj:transform").type)},
            )
        cols["assets"] = pa.StructArray.from_arrays(list(new_assets.values()), fields=list(assets.type))
        links = table.column("links").combine_chunks()
        flat = links.flatten()
        hrefs = np.array(flat.field("href").to_pylist(), dtype=object)
        hrefs[1::4] = [f"{up}/{tile_catalog_path(cid, t)}" for t in tiles]  # parent: the tile catalog
        hrefs[3::4] = [f"{up}/{item_path(other, t, p)}" for t, p in zip(tiles, partners, strict=False)]
        titles = np.array(flat.field("title").to_pylist(), dtype=object)
        titles[3::4] = [f"{'Sentinel-1' if modality == 's2' else 'Sentinel-2'} partner {p}" for p in partners]
        new_flat = _replace(flat, href=pa.array(hrefs.tolist(), pa.string()), title=pa.array(titles.tolist(), pa.string()))
        cols["links"] = pa.ListArray.from_arrays(links.offsets, new_flat)
        for name, arr in cols.items():
            i = table.schema.get_field_index(name)
            field = table.schema.field(i)
            table = table.set_column(i, field, arr.cast(field.type) if arr.type != field.type else arr)
        out[cid] = sort_by_location(with_property_types(table))
        log.info("synthetic %s index: %d rows", cid, len(table))
    return out


def write_synthetic_catalog(dest: str | Path, n: int | None = None, seed: int = 0, layout: str = "stacked",
                            row_group_size: int = ROW_GROUP_SIZE) -> Path:
    """A catalog root (``catalog.json``, two collections, two indexes; no COGs, no item JSON).

    ``row_group_size`` other than the builder's lets a small index have many row groups (tests).
    """
    root = Path(dest)
    for cid, table in synthetic_tables(n, seed, layout).items():
        modality = "s2" if cid == S2_COLLECTION else "s1"
        bbox = table.column("bbox").combine_chunks()
        times = table.column("datetime")
        summary = {
            "bbox": [pc.min(bbox.field("xmin")).as_py(), pc.min(bbox.field("ymin")).as_py(),
                     pc.max(bbox.field("xmax")).as_py(), pc.max(bbox.field("ymax")).as_py()],
            "start": pc.min(times).as_py().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": pc.max(times).as_py().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": len(table),
            "epsg": set(pc.unique(table.column("proj:epsg")).to_pylist()),
            "platforms": set(pc.unique(table.column("platform")).to_pylist()),
        }
        collection = build_collection(modality, summary, layout, f"../{index_path(cid)}")  # type: ignore[arg-type]
        (root / cid).mkdir(parents=True, exist_ok=True)
        (root / collection_path(cid)).write_text(json.dumps(collection, indent=1))
        (root / index_path(cid)).parent.mkdir(parents=True, exist_ok=True)
        (root / index_path(cid)).write_bytes(table_to_parquet_bytes(table, collection, row_group_size))
    (root / CATALOG_FILE).write_text(json.dumps(build_catalog([S2_COLLECTION, S1_COLLECTION]), indent=1))
    return root


__all__ = ["synthetic_tables", "write_synthetic_catalog"]
