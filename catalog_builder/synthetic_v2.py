"""Synthetic pairs in the exact raw BigEarthNet v2.0 (reBEN) layout, for tests and benchmarks.

Pairs are drawn from the official v1 table (``s1_s2_name_country_season``) and mapped to v2
names the way the real archive names them: the S2 product gets a padded sensing time, a
processing baseline ``N9999``, a relative orbit and the tile
(``S2A_MSIL2A_20171101T094132_N9999_R036_T35VNJ``), the patch its v1 grid position padded to two
digits (``..._T35VNJ_00_00``); S1 names are v1's; ``s2v1_name`` is the v1 S2 name with its
quirks (``S2A_MSIL2A_20171101T94132_0_0``). Footprints are where the real patches are (the
tile's MGRS square plus the grid position, :func:`~catalog_builder.synthetic.patch_origin`),
in the tile's UTM zone.

Written: ``BigEarthNet-S2/<product>/<patch_id>/<patch_id>_<band>.tif`` (12 uint16 bands at
120/60/20 px, nodata 0), ``BigEarthNet-S1/<S1 product>/<s1_name>/<s1_name>_VV.tif, _VH.tif``
(float32), all plain striped uncompressed GeoTIFFs; ``Reference_Maps/<product>/<patch_id>/
<patch_id>_reference_map.tif`` (uint16 CLC codes, DEFLATE with predictor 2, nodata 0); and the
two tables with the real column names and types: ``metadata.parquet`` and, for the patches with
seasonal snow or cloud/shadow, ``metadata_for_patches_with_snow_cloud_or_shadow.parquet``.

Maps are patchworks of 1-5 CLC classes; the official 19-class labels are their projection, except
for ``disagree`` patches, whose labels gain a class the map does not hold (the build reports
them). :class:`V2Tree` carries the truth of every patch for tests.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import rasterio
from rasterio.session import DummySession

from bigearth_stac.vocab import CLC_CODES, LABELS_19, S1_BANDS, S2_BANDS, SPLITS, to_19
from catalog_builder.synthetic import _field, _tif, patch_origin
from catalog_builder.tables import load_tables

S2_FOLDER, S1_FOLDER, MAPS_FOLDER = "BigEarthNet-S2", "BigEarthNet-S1", "Reference_Maps"
METADATA = "metadata.parquet"
METADATA_SNOW_CLOUD = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
#: The tables' schema as the official files have it (pandas wrote them: its index is a column).
METADATA_SCHEMA = pa.schema([
    ("patch_id", pa.string()),
    ("labels", pa.list_(pa.string())),
    ("split", pa.string()),
    ("country", pa.string()),
    ("s1_name", pa.string()),
    ("s2v1_name", pa.string()),
    ("contains_seasonal_snow", pa.bool_()),
    ("contains_cloud_or_shadow", pa.bool_()),
    ("__index_level_0__", pa.int64()),
])


@dataclass(frozen=True)
class V2Patch:
    """What the generator wrote for one pair: names, official facts and the map's truth."""

    patch_id: str
    s1_name: str
    s2v1_name: str
    product: str
    s1_product: str
    tile: str
    epsg: int
    origin: tuple[float, float]
    split: str
    country: str
    seasonal_snow: bool
    cloud_or_shadow: bool
    labels_19: tuple[str, ...]
    """The official labels written to the table (official order)."""
    labels_43: tuple[str, ...]
    """The classes of the reference map (official order)."""
    fractions: dict[int, float]
    """Pixel fraction per CLC code of the map, 4 decimals."""
    disagrees: bool
    """The labels hold a class the map's 19-class projection does not."""

    @property
    def table(self) -> str:
        return METADATA_SNOW_CLOUD if self.seasonal_snow or self.cloud_or_shadow else METADATA


@dataclass(frozen=True)
class V2Tree:
    """A generated v2 archive: its roots, its tables, and the truth of every patch."""

    root: Path
    s2: Path
    s1: Path
    maps: Path
    metadata: tuple[Path, ...]
    """``metadata.parquet`` and the snow/cloud table (when any patch is in it)."""
    patches: tuple[V2Patch, ...]

    def by_id(self) -> dict[str, V2Patch]:
        return {p.patch_id: p for p in self.patches}


def v2_names(s1_name: str, s2_name: str) -> tuple[str, str, str]:
    """(S2 product, patch_id, S1 product) of a v1 pair, named as the v2 archive names them."""
    platform, _, stamp, x, y = s2_name.split("_")
    tile = s1_name.split("_")[5]
    date, hms = stamp[:8], stamp[9:].rjust(6, "0")
    hms = hms[:4] + str(min(int(hms[4:]), 59)).zfill(2)  # v1 names hold impossible seconds (T94161)
    orbit = 1 + zlib.crc32(f"{platform}{date}{tile}".encode()) % 143
    product = f"{platform}_MSIL2A_{date}T{hms}_N9999_R{orbit:03d}_T{tile}"
    return product, f"{product}_{int(x):02d}_{int(y):02d}", "_".join(s1_name.split("_")[:5])


_CODES = tuple(CLC_CODES)
_MAPPED = tuple(c for c in _CODES if to_19([CLC_CODES[c]]))


def reference_map(rng: np.random.Generator, codes: list[int]) -> np.ndarray:
    """A 120 x 120 patchwork of ``codes`` (each present): 10 px blocks plus scattered pixels."""
    blocks = rng.choice(codes, size=(12, 12))
    cells = rng.permutation(144)[: len(codes)]
    blocks.flat[cells] = codes  # every class at least one block
    out = np.kron(blocks, np.ones((10, 10), dtype=np.int64))
    noise = rng.random((120, 120)) < 0.02
    out[noise] = rng.choice(codes, size=int(noise.sum()))
    return out.astype("uint16")


def write_pair(root: Path, s1_name: str, s2_name: str, facts: dict[str, object], seed: int,
               disagree: bool) -> V2Patch:
    """Write one pair (12 S2 bands, 2 S1 bands, a reference map) in the v2 layout."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    product, patch_id, s1_product = v2_names(s1_name, s2_name)
    epsg, ulx, uly = patch_origin(s1_name)
    codes = sorted(rng.sample(_CODES, rng.randint(0, 4)) + [rng.choice(_MAPPED)])
    codes = sorted(set(codes))
    ref = reference_map(nrng, codes)
    present, counts = np.unique(ref, return_counts=True)
    fractions = {int(c): round(int(n) / ref.size, 4) for c, n in zip(present, counts, strict=True)}
    labels_43 = tuple(CLC_CODES[c] for c in sorted(fractions))
    labels_19 = to_19(labels_43)
    if disagree:
        labels_19 = [n for n in LABELS_19 if n in labels_19 or n == next(x for x in LABELS_19 if x not in labels_19)]
    s2_dir = root / S2_FOLDER / product / patch_id
    s2_dir.mkdir(parents=True, exist_ok=True)
    for band in S2_BANDS:
        arr = np.clip(_field(nrng, band.size, 100, 4000), 1, 65535).astype("uint16")
        _tif(s2_dir / f"{patch_id}_{band.name}.tif", arr, epsg, ulx, uly, band.resolution, nodata=0)
    s1_dir = root / S1_FOLDER / s1_product / s1_name
    s1_dir.mkdir(parents=True, exist_ok=True)
    for band in S1_BANDS:
        low, high = (-20.0, -5.0) if band.name == "VV" else (-28.0, -12.0)
        _tif(s1_dir / f"{s1_name}_{band.name}.tif", _field(nrng, 120, low, high).astype("float32"), epsg, ulx, uly, 10)
    map_dir = root / MAPS_FOLDER / product / patch_id
    map_dir.mkdir(parents=True, exist_ok=True)
    _tif(map_dir / f"{patch_id}_reference_map.tif", ref, epsg, ulx, uly, 10, nodata=0, compress="deflate", predictor=2)
    return V2Patch(
        patch_id=patch_id, s1_name=s1_name, s2v1_name=s2_name, product=product, s1_product=s1_product,
        tile=s1_name.split("_")[5], epsg=epsg, origin=(ulx, uly),
        split=str(facts["split"]), country=str(facts["country"]),
        seasonal_snow=bool(facts["seasonal_snow"]), cloud_or_shadow=bool(facts["cloud_or_shadow"]),
        labels_19=tuple(labels_19), labels_43=labels_43, fractions=fractions, disagrees=disagree,
    )


def metadata_table(patches: list[V2Patch], first_index: int = 0) -> pa.Table:
    """The metadata rows of ``patches`` as the official table holds them (labels lex-sorted)."""
    return pa.table({
        "patch_id": [p.patch_id for p in patches],
        "labels": [sorted(p.labels_19) for p in patches],
        "split": [p.split for p in patches],
        "country": [p.country for p in patches],
        "s1_name": [p.s1_name for p in patches],
        "s2v1_name": [p.s2v1_name for p in patches],
        "contains_seasonal_snow": [p.seasonal_snow for p in patches],
        "contains_cloud_or_shadow": [p.cloud_or_shadow for p in patches],
        "__index_level_0__": list(range(first_index, first_index + len(patches))),
    }, schema=METADATA_SCHEMA)


def generate_v2(dest: str | Path, n: int, seed: int = 0, disagree: int = 2, exclude: Collection[str] = (),
                progress: Callable[[int, int], None] | None = None, include: Sequence[str] = ()) -> V2Tree:
    """Write ``n`` synthetic v2 pairs (``disagree`` of them with labels their map contradicts).

    About one in eight pairs (at least one) is drawn from the official seasonal-snow or
    cloud/shadow lists and goes to the second table, as in the archive. ``exclude``: v1 S2
    names not to draw; ``include``: v1 S2 names to write (all of them, ``n`` is then ignored;
    e.g. the v2 counterparts of v1 pairs built elsewhere).
    """
    root = Path(dest)
    table = load_tables().table
    flags = (table.column("seasonal_snow").to_numpy(zero_copy_only=False)
             | table.column("cloud_or_shadow").to_numpy(zero_copy_only=False))
    rng = random.Random(seed)
    if include:
        wanted = pc.is_in(table.column("s2_name"), value_set=pa.array(list(include), pa.string()))
        flags = flags & wanted.to_numpy(zero_copy_only=False)
        others = (~flags) & wanted.to_numpy(zero_copy_only=False)
        n = int(wanted.to_numpy(zero_copy_only=False).sum())
        if n != len(set(include)):
            raise ValueError("some of the included names are not in the official v1 table")
        draws = np.flatnonzero(flags).tolist() + np.flatnonzero(others).tolist()
        n_flagged = int(flags.sum())
        return _write(root, table.take(pa.array(draws, pa.int64())).to_pylist(), n_flagged, seed, rng, disagree,
                      progress)
    n_flagged = min(n, max(1, n // 8)) if n else 0
    spare = len(exclude) + 8
    draws = (rng.sample(np.flatnonzero(flags).tolist(), n_flagged + spare)
             + rng.sample(np.flatnonzero(~flags).tolist(), n - n_flagged + spare))
    rows = table.take(pa.array(draws, pa.int64())).to_pylist()
    return _write(root, rows, n_flagged, seed, rng, disagree, progress, n, exclude)


def _write(root: Path, rows: list[dict[str, object]], n_flagged: int, seed: int, rng: random.Random, disagree: int,
           progress: Callable[[int, int], None] | None, n: int | None = None, exclude: Collection[str] = ()) -> V2Tree:
    """Write the pairs of ``rows`` (the flagged ones first): ``n`` of them, ``n_flagged`` flagged."""
    n = len(rows) if n is None else n
    picked: list[dict[str, object]] = []
    names: set[str] = set()
    for want_flagged, count in ((True, n_flagged), (False, n - n_flagged)):
        group = [r for r in rows if bool(r["seasonal_snow"] or r["cloud_or_shadow"]) == want_flagged
                 and r["s2_name"] not in exclude]
        for r in group:
            patch_id = v2_names(str(r["s1_name"]), str(r["s2_name"]))[1]
            if count and patch_id not in names:
                names.add(patch_id)
                picked.append(r)
                count -= 1
    wrong = set(rng.sample(range(n_flagged, len(picked)), min(disagree, len(picked) - n_flagged)))
    patches: list[V2Patch] = []
    with rasterio.Env(session=DummySession()):
        for i, r in enumerate(picked):
            facts = dict(r)
            facts["split"] = rng.choices(SPLITS, weights=(2, 1, 1))[0]  # v2's own geographic splits
            patches.append(write_pair(root, str(r["s1_name"]), str(r["s2_name"]), facts, seed * 1_000_003 + i, i in wrong))
            if progress is not None:
                progress(i + 1, n)
    main = [p for p in patches if p.table == METADATA]
    other = [p for p in patches if p.table == METADATA_SNOW_CLOUD]
    paths = [root / METADATA]
    pq.write_table(metadata_table(main), paths[0], use_compliant_nested_type=False)
    if other:
        paths.append(root / METADATA_SNOW_CLOUD)
        pq.write_table(metadata_table(other, first_index=len(main)), paths[1], use_compliant_nested_type=False)
    return V2Tree(root, root / S2_FOLDER, root / S1_FOLDER, root / MAPS_FOLDER, tuple(paths), tuple(patches))


__all__ = ["METADATA", "METADATA_SCHEMA", "METADATA_SNOW_CLOUD", "V2Patch", "V2Tree", "generate_v2", "metadata_table",
           "reference_map", "v2_names", "write_pair"]
