"""Records + encoded assets -> STAC Items, Collections and the root Catalog, as plain dicts.

Items are built as dicts (no pystac in the per-pair path: it is slow and holds objects); the
tests validate every one of them with pystac against the published extension schemas.

Layout of a catalog, relative to its root (keys are partitioned by tile, see DESIGN.md #12)::

    catalog.json
    bigearthnet-s2/collection.json                links one child catalog per tile
    bigearthnet-s2/<tile>/catalog.json            links the items of the tile
    bigearthnet-s2/<tile>/<id>/<id>.json          one item per patch
    bigearthnet-s2/<tile>/<id>/<id>_<asset>.tif   its COGs
    bigearthnet-s1/...                            same for Sentinel-1
    bigearthnet-v2-s2/..., bigearthnet-v2-s1/...  the same for BigEarthNet v2.0 (reBEN), whose S2
                                                  items add <id>_reference_map.tif (CLC codes)
    index/bigearthnet-s2.parquet                  stac-geoparquet search index (one per collection)
    schema/v1.0.0/schema.json                     the bigearthnet: extension's JSON Schema

Collection ids come from :func:`bigearth_stac.contract.collection_id` of the pair's release; a
root links whichever collections a catalog holds, so v1 and v2 can share one. v2 items link the
same patch's v1 item (``predecessor-version``) when the catalog holds it.

The tree is crawlable (DESIGN.md #16): root -> collections -> one catalog per tile (~4,700
items each in v1, so no document holds 590,326 links) -> items, each item linking its tile
catalog as ``parent``. Every href is relative, so the catalog can be moved or published as is;
the one absolute URL is the ``bigearthnet:`` extension's schema in ``stac_extensions`` (see
:func:`bigearth_stac.validate.schema_url_for`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from pyproj import Transformer

from bigearth_stac.contract import (
    CATALOG_FILE,
    CLC_FRACTIONS,
    GEOJSON_MEDIA_TYPE,
    INDEX_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    PREDECESSOR_REL,
    REFERENCE_MAP_ASSET,
    REFERENCE_MAP_BAND,
    asset_path,
    collection_id,
    item_dir,
    item_path,
    release_and_modality,
    tile_catalog_path,
)
from bigearth_stac.vocab import (
    BAND_STATS_BY_RELEASE,
    BANDS,
    CLC_CODES,
    CLC_COLOURS,
    CLC_NODATA,
    CODE_OF_43,
    COUNTRIES,
    LABELS_19,
    LABELS_43,
    MAP_43_TO_19,
    PREFIX,
    RELEASE_V1,
    RELEASE_V2,
    SCHEMA_URI,
    SEASONS,
    SPLITS,
    Layout,
    band_groups,
)
from catalog_builder.cog import COG_MEDIA_TYPE, CogBytes, band_unit
from catalog_builder.records import PairRecord, PatchRecord

STAC_VERSION = "1.1.0"
# Projection v1.2.0, not v2.0.0: v2.0.0 forbids ``proj:epsg``, which stackstac still needs beside
# ``proj:code``; v1.2.0 defines both (``proj:epsg`` as deprecated).
# EO v1.1.0, not v2.0.0: odc-stac resolves band names and common names (``bands=["B02"]``,
# ``["blue"]``) and stackstac labels its band coordinate only from an asset's ``eo:bands``
# (read through pystac's EOExtension, which implements v1.1.0), and v2.0.0 forbids ``eo:bands``.
# The STAC 1.1 ``bands`` list beside it carries what v1.1.0 has no place for (data type, unit,
# statistics, resolution): odc-stac reads data types from there.
EXT = {
    "proj": "https://stac-extensions.github.io/projection/v1.2.0/schema.json",
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v2.0.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "sar": "https://stac-extensions.github.io/sar/v1.3.0/schema.json",
    "sci": "https://stac-extensions.github.io/scientific/v1.0.0/schema.json",
    "item_assets": "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
    # Classification v1.1.0, not v2.0.0: v2.0.0 requires class names without spaces; the
    # reference maps' classes carry the CLC names as BigEarthNet spells them.
    "classification": "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
}
LICENSE = "CDLA-Permissive-1.0"
CITATION = (
    "G. Sumbul, A. de Wall, T. Kreuziger, F. Marcelino, H. Costa, P. Benevides, M. Caetano, "
    "B. Demir, V. Markl, \"BigEarthNet-MM: A Large Scale Multi-Modal Multi-Label Benchmark "
    "Archive for Remote Sensing Image Classification and Retrieval\", IEEE Geoscience and "
    "Remote Sensing Magazine, 9(3), 174-180, 2021."
)
DOI = "10.1109/MGRS.2021.3089174"
S2_DOI = "10.1109/IGARSS.2019.8900532"
V2_CITATION = (
    "K. N. Clasen, L. Hackel, T. Burgert, G. Sumbul, B. Demir, V. Markl, \"reBEN: Refined BigEarthNet "
    "Dataset for Remote Sensing Image Analysis\", arXiv:2407.03653, 2024."
)
V2_DOI = "10.48550/arXiv.2407.03653"
V1_PUBLICATIONS = [{"doi": S2_DOI, "citation": "G. Sumbul, M. Charfuelan, B. Demir, V. Markl, \"BigEarthNet: A Large-Scale Benchmark Archive for Remote Sensing Image Understanding\", IGARSS 2019."}]


@dataclass(frozen=True)
class ReleaseInfo:
    """What a collection says about the release it holds."""

    name: str
    """``BigEarthNet v1.0``: the start of collection titles."""
    archive: str
    """The archive's own name in descriptions."""
    doi: str
    citation: str
    publications: list[dict[str, str]]
    """``sci:publications``: related papers."""
    seasons: bool
    """Whether the release publishes a season per patch."""
    labels_note: str = ""
    """What collection descriptions add about the release's labels."""


RELEASES: dict[str, ReleaseInfo] = {
    RELEASE_V1: ReleaseInfo("BigEarthNet v1.0", "BigEarthNet-MM v1.0", DOI, CITATION, V1_PUBLICATIONS, True),
    RELEASE_V2: ReleaseInfo("BigEarthNet v2.0 (reBEN)", "BigEarthNet v2.0 (reBEN)", V2_DOI, V2_CITATION,
                            [{"doi": DOI, "citation": CITATION}, *V1_PUBLICATIONS], False,
                            " The 19-class labels are the official ones of the release; the 43-class labels and "
                            "the share of each class's pixels (bigearthnet:clc_fractions) are derived from the "
                            "pixel-level reference maps (absent from a catalog built without them)."),
}
MAP_BAND = REFERENCE_MAP_BAND


def P(name: str) -> str:
    """A property name of the project's own extension (``bigearthnet:<name>``)."""
    return f"{PREFIX}:{name}"



@lru_cache(maxsize=64)
def _to_wgs84(epsg: int) -> Transformer:
    return Transformer.from_crs(epsg, 4326, always_xy=True)


def footprint(patch: PatchRecord) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON polygon (WGS84, counter-clockwise) and bbox of a patch from its UTM corners."""
    ulx, uly, lrx, lry = patch.bounds
    xs = [ulx, ulx, lrx, lrx, ulx]
    ys = [uly, lry, lry, uly, uly]
    lon, lat = _to_wgs84(patch.epsg).transform(xs, ys)
    ring = [[round(x, 7), round(y, 7)] for x, y in zip(lon, lat, strict=True)]
    bbox = [min(r[0] for r in ring), min(r[1] for r in ring), max(r[0] for r in ring), max(r[1] for r in ring)]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _band_entry(name: str, release: str = RELEASE_V1) -> dict[str, Any]:
    """A band of STAC 1.1 ``bands``: name, data type, unit, resolution, the release's statistics."""
    band = BANDS[name]
    mean, std = BAND_STATS_BY_RELEASE[release][name]
    entry: dict[str, Any] = {"name": name}
    if not band.common_name:
        entry["description"] = f"{name} backscatter"
    entry["data_type"] = band.dtype
    if unit := band_unit(name):
        entry["unit"] = unit
    entry["raster:spatial_resolution"] = band.resolution
    entry["statistics"] = {"mean": mean, "stddev": std}
    return entry


def _eo_band(name: str) -> dict[str, Any]:
    """A band of ``eo:bands`` (EO v1.1.0): name, common name, centre wavelength, bandwidth."""
    band = BANDS[name]
    return {
        "name": name,
        "common_name": band.common_name,
        "center_wavelength": band.center_wavelength,
        "full_width_half_max": band.full_width_half_max,
    }


def asset_template(bands: tuple[str, ...], release: str = RELEASE_V1) -> dict[str, Any]:
    """Asset fields that depend only on the band group (shared by items and ``item_assets``).

    Sentinel-2 assets list their bands twice: ``eo:bands`` (names and common names, what
    odc-stac and stackstac resolve band names from) and STAC 1.1 ``bands`` (data type,
    statistics, resolution). Sentinel-1 items do not implement EO; their ``bands`` name the
    polarisations and carry the ``dB`` unit.
    """
    res = BANDS[bands[0]].resolution
    title = bands[0] if len(bands) == 1 else f"{', '.join(bands)} ({res} m)"
    template: dict[str, Any] = {
        "type": COG_MEDIA_TYPE,
        "title": title,
        "roles": ["data"],
        "gsd": res,
    }
    if all(BANDS[b].common_name for b in bands):
        template["eo:bands"] = [_eo_band(b) for b in bands]
    template["bands"] = [_band_entry(b, release) for b in bands]
    return template


def clc_class(code: int) -> dict[str, Any]:
    """A ``classification:classes`` entry of a CLC Level-3 code (value = the code)."""
    name = CLC_CODES[code]
    return {"value": code, "name": name, "description": f"CORINE Land Cover Level-3 class {code}: {name}",
            "color_hint": CLC_COLOURS[code].lstrip("#")}


def reference_map_template(codes: Iterable[int] = CLC_CODES) -> dict[str, Any]:
    """Fields of a reference-map asset: one band of CLC codes on the 10 m grid, its classes.

    Items list the classes present in their map; ``item_assets`` all 43.
    """
    return {
        "type": COG_MEDIA_TYPE,
        "title": "Reference map: CORINE Land Cover 2018 Level-3 code per 10 m pixel",
        # data: a raster odc-stac and stackstac load on the grid of the 10 m bands; labels: what it is.
        "roles": ["data", "labels"],
        "gsd": 10,
        "bands": [{"name": MAP_BAND, "description": f"CLC Level-3 code ({CLC_NODATA}: no data)",
                   "data_type": "uint16", "nodata": CLC_NODATA, "raster:spatial_resolution": 10}],
        "classification:classes": [clc_class(c) for c in codes],
    }


def _common_properties(pair: PairRecord, patch: PatchRecord) -> dict[str, Any]:
    """Properties of both items of a pair. Facts the input does not give are null (split,
    country, season, flags) or absent (43-class labels without a reference map, the v2-only
    ``s2v1_name`` and ``clc_fractions``); none is invented."""
    props: dict[str, Any] = {
        "proj:code": f"EPSG:{patch.epsg}",
        "proj:epsg": patch.epsg,  # projection v2 dropped it, but stackstac reads only this
        "proj:bbox": list(patch.bounds[i] for i in (0, 3, 2, 1)),
    }
    if pair.labels_43 is not None:
        props[P("labels_43")] = list(pair.labels_43)
        props[P("label_codes_43")] = [CODE_OF_43[n] for n in pair.labels_43]
    props.update({
        P("labels_19"): list(pair.labels_19),
        P("split"): pair.split,
        P("country"): pair.country,
        P("season"): pair.season,
        P("seasonal_snow"): pair.seasonal_snow,
        P("cloud_or_shadow"): pair.cloud_or_shadow,
        P("tile"): pair.tile,
        P("s2_id"): pair.s2.id,
        P("s1_id"): pair.s1.id,
        P("release"): pair.release,
        P("source_product"): patch.source_product,
    })
    if pair.s2v1_name is not None:
        props[P("s2v1_name")] = pair.s2v1_name
    if pair.clc_fractions is not None:
        props[CLC_FRACTIONS] = {str(code): pair.clc_fractions[code] for code in sorted(pair.clc_fractions)}
    return props


def build_item(
    pair: PairRecord,
    modality: str,
    cogs: Mapping[str, CogBytes],
    layout: Layout,
    schema_url: str = SCHEMA_URI,
    extra_links: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The STAC Item (a dict) of one side of a pair; ``cogs`` maps asset key -> encoded COG.

    ``schema_url`` is the URL of the ``bigearthnet:`` extension's schema listed in
    ``stac_extensions`` (:func:`bigearth_stac.validate.schema_url_for` of the catalog's public URL).
    A reference map among ``cogs`` (:data:`~bigearth_stac.contract.REFERENCE_MAP_ASSET`) becomes
    an asset with the classification extension. ``extra_links`` are appended to the links
    (e.g. :data:`PREDECESSOR_REL`).
    """
    patch = pair.s2 if modality == "s2" else pair.s1
    collection = collection_id(pair.release, modality)
    geometry, bbox = footprint(patch)
    props: dict[str, Any] = {"datetime": _iso(patch.datetime)}
    extensions = [EXT["proj"], EXT["raster"], EXT["file"], schema_url]
    if modality == "s2":
        props.update(
            platform=f"sentinel-2{patch.id[2].lower()}",
            constellation="sentinel-2",
            instruments=["msi"],
            gsd=10,
        )
        extensions.insert(1, EXT["eo"])
    else:
        props.update(
            {
                "platform": f"sentinel-1{patch.id[2].lower()}",
                "constellation": "sentinel-1",
                "instruments": ["c-sar"],
                "gsd": 10,
                "sar:instrument_mode": "IW",
                "sar:frequency_band": "C",
                "sar:center_frequency": 5.405,
                "sar:polarizations": ["VV", "VH"],
                "sar:product_type": "GRD",
            }
        )
        extensions.insert(1, EXT["sar"])
    props.update(_common_properties(pair, patch))
    props[P("layout")] = layout

    ulx, uly = patch.bounds[0], patch.bounds[1]
    assets: dict[str, Any] = {}
    for key, bands in band_groups(modality, layout).items():  # type: ignore[arg-type]
        cog = cogs[key]
        res = BANDS[bands[0]].resolution
        size = BANDS[bands[0]].size
        asset: dict[str, Any] = {"href": f"./{patch.id}_{key}.tif"}
        asset.update(asset_template(bands, pair.release))
        asset.update(
            {
                "proj:shape": [size, size],
                "proj:transform": [res, 0.0, ulx, 0.0, -res, uly],
                "file:size": cog.size,
                "file:checksum": cog.multihash,
            }
        )
        assets[key] = asset
    if REFERENCE_MAP_ASSET in cogs:
        cog = cogs[REFERENCE_MAP_ASSET]
        codes = sorted(pair.clc_fractions) if pair.clc_fractions else list(CLC_CODES)
        assets[REFERENCE_MAP_ASSET] = {
            "href": f"./{patch.id}_{REFERENCE_MAP_ASSET}.tif",
            **reference_map_template(codes),
            "proj:shape": [120, 120],
            "proj:transform": [10.0, 0.0, ulx, 0.0, -10.0, uly],
            "file:size": cog.size,
            "file:checksum": cog.multihash,
        }
        extensions.append(EXT["classification"])

    other = "s1" if modality == "s2" else "s2"
    partner_collection, partner = collection_id(pair.release, other), (pair.s1 if modality == "s2" else pair.s2)
    links = [
        {"rel": "root", "href": "../../../catalog.json", "type": JSON_MEDIA_TYPE},
        {"rel": "parent", "href": "../catalog.json", "type": JSON_MEDIA_TYPE},
        {"rel": "collection", "href": "../../collection.json", "type": JSON_MEDIA_TYPE},
        {
            "rel": "related",
            "href": f"../../../{item_path(partner_collection, pair.tile, partner.id)}",
            "type": GEOJSON_MEDIA_TYPE,
            "title": f"{'Sentinel-1' if modality == 's2' else 'Sentinel-2'} partner {partner.id}",
        },
        *(dict(link) for link in extra_links),
    ]
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": extensions,
        "id": patch.id,
        "collection": collection,
        "geometry": geometry,
        "bbox": bbox,
        "properties": props,
        "links": links,
        "assets": assets,
    }


# ---------------------------------------------------------------------------------------------
# Collections and catalog
# ---------------------------------------------------------------------------------------------


def class_table() -> dict[str, Any]:
    """Both nomenclatures, their codes, colours, the official mapping and named orders."""
    return {
        P("classes_43"): [
            {"code": code, "name": name, "color_hint": CLC_COLOURS[code].lstrip("#"), "class_19": MAP_43_TO_19[name]}
            for code, name in CLC_CODES.items()
        ],
        P("classes_19"): [{"index": i, "name": n} for i, n in enumerate(LABELS_19)],
        P("class_orders"): {
            "original": "order of label_indices.json (the paper's; torchgeo's)",
            "lex": "names sorted lexicographically (ConfigILM's default)",
        },
    }


def _extent(items_summary: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "spatial": {"bbox": [items_summary["bbox"]]},
        "temporal": {"interval": [[items_summary["start"], items_summary["end"]]]},
    }


def build_collection(
    modality: str,
    summary: Mapping[str, Any],
    layout: Layout,
    index_href: str | None,
    tiles: Iterable[str] = (),
    schema_url: str = SCHEMA_URI,
    release: str = RELEASE_V1,
    reference_maps: bool = False,
) -> dict[str, Any]:
    """A collection dict. ``summary`` holds ``bbox``, ``start``, ``end``, ``count``, ``epsg``, ``platforms``.

    ``tiles``: the tiles whose catalogs (:func:`build_tile_catalog`) the collection links as
    children, in that order; ``schema_url`` as in :func:`build_item`; ``release`` the release
    of its items (:data:`RELEASES`: title, DOI, citation); ``reference_maps``: its items carry a
    reference-map asset (listed in ``item_assets`` with the classification extension).
    """
    s2 = modality == "s2"
    info = RELEASES[release]
    cid = collection_id(release, modality)
    item_assets = {key: asset_template(bands, release) for key, bands in band_groups(modality, layout).items()}  # type: ignore[arg-type]
    if reference_maps:
        item_assets[REFERENCE_MAP_ASSET] = reference_map_template()
    summaries: dict[str, Any] = {
        "platform": sorted(summary["platforms"]),
        "constellation": ["sentinel-2" if s2 else "sentinel-1"],
        "instruments": ["msi" if s2 else "c-sar"],
        "gsd": [10],
        "proj:code": [f"EPSG:{e}" for e in sorted(summary["epsg"])],
        P("labels_43"): list(LABELS_43),
        P("labels_19"): list(LABELS_19),
        P("split"): list(SPLITS),
        P("country"): list(COUNTRIES),
    }
    if info.seasons:
        summaries[P("season")] = list(SEASONS)
    if not s2:
        summaries.update({"sar:instrument_mode": ["IW"], "sar:polarizations": ["VV", "VH"], "sar:product_type": ["GRD"]})
    coll: dict[str, Any] = {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [EXT["item_assets"], *([EXT["eo"]] if s2 else []), EXT["sci"],
                            *([EXT["classification"]] if reference_maps else []), schema_url],
        "id": cid,
        "title": f"{info.name} {'Sentinel-2 L2A' if s2 else 'Sentinel-1 GRD'} patches",
        "description": (
            f"{'Sentinel-2 L2A (12 bands at 10/20/60 m)' if s2 else 'Sentinel-1 GRD IW (VV, VH backscatter in dB)'} "
            f"patches of 1.2 km x 1.2 km from {info.archive}, with multi-labels in both the "
            "43-class CORINE Land Cover Level-3 and the 19-class nomenclature, official splits, "
            "seasonal-snow and cloud/shadow flags. Each item links to its partner in the other "
            f"collection.{info.labels_note}"
            + (" Each Sentinel-2 item holds its reference map as an asset." if reference_maps else "")
        ),
        "keywords": ["BigEarthNet", "Sentinel-2" if s2 else "Sentinel-1", "CORINE", "land cover", "multi-label"],
        "license": LICENSE,
        "providers": [
            {"name": "Remote Sensing Image Analysis (RSiM) Group, TU Berlin", "roles": ["producer", "licensor"], "url": "https://bigearth.net"},
            {"name": "European Space Agency, Copernicus Programme", "roles": ["producer"], "url": "https://www.copernicus.eu"},
            {"name": "bigearth-stac", "roles": ["processor"]},
        ],
        "extent": _extent(summary),
        "summaries": summaries,
        "item_assets": item_assets,
        "sci:doi": info.doi,
        "sci:citation": info.citation,
        "sci:publications": info.publications,
        P("item_count"): summary["count"],
        P("layout"): layout,
        P("release"): release,
        **class_table(),
        "links": [
            {"rel": "root", "href": "../catalog.json", "type": JSON_MEDIA_TYPE},
            {"rel": "parent", "href": "../catalog.json", "type": JSON_MEDIA_TYPE},
            {"rel": "license", "href": "https://cdla.dev/permissive-1-0/", "title": "CDLA-Permissive-1.0"},
            {"rel": "cite-as", "href": f"https://doi.org/{info.doi}"},
        ]
        + [{"rel": "child", "href": f"./{tile}/{CATALOG_FILE}", "type": JSON_MEDIA_TYPE, "title": tile} for tile in tiles],
        "assets": {},
    }
    if index_href is not None:
        coll["assets"]["geoparquet-items"] = {
            "href": index_href,
            "type": INDEX_MEDIA_TYPE,
            "title": "stac-geoparquet index of every item (the catalog's search engine)",
            "roles": ["stac-items", "index"],
        }
    return coll


def build_catalog(collection_ids: Iterable[str]) -> dict[str, Any]:
    """The root catalog linking to the collections."""
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": "bigearthnet",
        "title": "BigEarthNet (cloud-native)",
        "description": (
            "BigEarthNet as Cloud-Optimized GeoTIFFs and STAC, with a stac-geoparquet index per "
            "collection for search by label, region, time, split, country and season."
        ),
        "links": [{"rel": "root", "href": "./catalog.json", "type": JSON_MEDIA_TYPE}]
        + [{"rel": "child", "href": f"./{cid}/collection.json", "type": JSON_MEDIA_TYPE, "title": cid} for cid in collection_ids],
    }


def build_tile_catalog(collection_id: str, tile: str, item_ids: Iterable[str]) -> dict[str, Any]:
    """The catalog of one tile of a collection, linking its items (at ``<tile>/catalog.json``).

    Items are linked in the order given; the build passes them sorted by id, so the same items
    always give the same bytes.
    """
    known = release_and_modality(collection_id)
    sentinel = "Sentinel-1" if known is not None and known[1] == "s1" else "Sentinel-2"
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": f"{collection_id}-{tile}",
        "title": f"{sentinel} patches of tile {tile}",
        "description": f"The BigEarthNet {sentinel} patches of Sentinel-2 tile {tile} ({collection_id}).",
        "links": [
            {"rel": "root", "href": "../../catalog.json", "type": JSON_MEDIA_TYPE},
            {"rel": "parent", "href": "../collection.json", "type": JSON_MEDIA_TYPE},
        ]
        + [{"rel": "item", "href": f"./{i}/{i}.json", "type": GEOJSON_MEDIA_TYPE} for i in item_ids],
    }


class ExtentAccumulator:
    """Running bbox, time range, count, CRSs and platforms of the items of one collection."""

    def __init__(self) -> None:
        self.bbox = [180.0, 90.0, -180.0, -90.0]
        self.start: str | None = None
        self.end: str | None = None
        self.count = 0
        self.epsg: set[int] = set()
        self.platforms: set[str] = set()

    def add(self, item: Mapping[str, Any]) -> None:
        b = item["bbox"]
        self.bbox = [min(self.bbox[0], b[0]), min(self.bbox[1], b[1]), max(self.bbox[2], b[2]), max(self.bbox[3], b[3])]
        dt = item["properties"]["datetime"]
        self.start = dt if self.start is None or dt < self.start else self.start
        self.end = dt if self.end is None or dt > self.end else self.end
        self.count += 1
        self.epsg.add(item["properties"]["proj:epsg"])
        self.platforms.add(item["properties"]["platform"])

    def merge(self, other: ExtentAccumulator) -> None:
        """Fold another accumulator (e.g. of one Dask task) into this one."""
        if other.count == 0:
            return
        b = other.bbox
        self.bbox = [min(self.bbox[0], b[0]), min(self.bbox[1], b[1]), max(self.bbox[2], b[2]), max(self.bbox[3], b[3])]
        assert other.start is not None and other.end is not None
        self.start = other.start if self.start is None or other.start < self.start else self.start
        self.end = other.end if self.end is None or other.end > self.end else self.end
        self.count += other.count
        self.epsg |= other.epsg
        self.platforms |= other.platforms

    def summary(self) -> dict[str, Any]:
        return {"bbox": self.bbox, "start": self.start, "end": self.end, "count": self.count,
                "epsg": self.epsg, "platforms": self.platforms}


__all__ = [
    "EXT",
    "PREDECESSOR_REL",
    "RELEASES",
    "ReleaseInfo",
    "clc_class",
    "reference_map_template",
    "GEOJSON_MEDIA_TYPE",
    "INDEX_MEDIA_TYPE",
    "JSON_MEDIA_TYPE",
    "STAC_VERSION",
    "ExtentAccumulator",
    "asset_path",
    "asset_template",
    "build_catalog",
    "build_collection",
    "build_item",
    "build_tile_catalog",
    "class_table",
    "footprint",
    "item_dir",
    "item_path",
    "tile_catalog_path",
]
