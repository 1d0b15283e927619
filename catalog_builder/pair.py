"""Build one pair: raw bands -> COGs -> two STAC items, or skip it if its outputs already match.

This is the unit of work the Dask graph maps; it runs on workers and touches only the source
and the store it is given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import rasterio
from rasterio.session import DummySession

from bigearth_stac.contract import REFERENCE_MAP_ASSET, collection_id
from bigearth_stac.vocab import (
    BANDS,
    CLC_NODATA,
    RELEASE_V1,
    RELEASE_V2,
    SCHEMA_URI,
    Layout,
    band_groups,
)
from catalog_builder.cog import COG_MEDIA_TYPE, CogBytes, CogOptions, encode_cog
from catalog_builder.index import items_to_table
from catalog_builder.rawio import loads_bounded
from catalog_builder.records import PairRecord, SourceError, SourceProblem
from catalog_builder.sources.base import ReleaseSource
from catalog_builder.stac import (
    GEOJSON_MEDIA_TYPE,
    MAP_BAND,
    PREDECESSOR_REL,
    ExtentAccumulator,
    asset_path,
    build_item,
    item_path,
)
from catalog_builder.store import (
    STAGE_COG,
    STAGE_ITEM,
    ManifestEntry,
    OutputStore,
    json_bytes,
    put,
    sha256_hex,
)

log = logging.getLogger(__name__)


@dataclass
class PairOutcome:
    """What building one unit produced."""

    unit: str
    partner: str | None = None
    """S2 name of the pair, once the unit's metadata named it."""
    items: list[dict[str, Any]] = field(default_factory=list)
    """The S2 and S1 items (empty when the pair failed)."""
    manifest: list[ManifestEntry] = field(default_factory=list)
    skipped: bool = False
    """True when the outputs already matched their recorded sizes and checksums."""
    problem: SourceProblem | None = None
    warning: SourceProblem | None = None
    """A problem the pair was built despite (v2: its reference map disagrees with its labels)."""


def encode_pair(pair: PairRecord, pixels: dict[str, np.ndarray], layout: Layout,
                options: CogOptions = CogOptions()) -> dict[str, dict[str, CogBytes]]:
    """COGs of both sides of a pair: modality -> asset key -> encoded COG.

    A reference map among ``pixels`` (:data:`~bigearth_stac.contract.REFERENCE_MAP_ASSET`, CLC
    codes on the 10 m grid) becomes one more S2 COG, with nodata 0.
    """
    out: dict[str, dict[str, CogBytes]] = {}
    for modality, patch in (("s2", pair.s2), ("s1", pair.s1)):
        origin = (patch.bounds[0], patch.bounds[1])
        cogs = {}
        for key, bands in band_groups(modality, layout).items():  # type: ignore[arg-type]
            res = BANDS[bands[0]].resolution
            cogs[key] = encode_cog([pixels[b] for b in bands], patch.epsg, origin, res, bands, options)
        if modality == "s2" and REFERENCE_MAP_ASSET in pixels:
            cogs[REFERENCE_MAP_ASSET] = encode_cog([pixels[REFERENCE_MAP_ASSET]], patch.epsg, origin, 10,
                                                   (MAP_BAND,), options, nodata=CLC_NODATA)
        out[modality] = cogs
    return out


PREVIOUS_RELEASE = {RELEASE_V2: RELEASE_V1}
"""The release whose items a release's items link to as their predecessors, when published."""


def predecessor_links(store: OutputStore, pair: PairRecord) -> dict[str, list[dict[str, Any]]]:
    """Modality -> links to the same patch's items of the previous release, where the store has them.

    v2 S2 items link their v1 item (``s2v1_name``), S1 items the v1 item of the same S1 name.
    """
    links: dict[str, list[dict[str, Any]]] = {"s2": [], "s1": []}
    previous = PREVIOUS_RELEASE.get(pair.release)
    if previous is None:
        return links
    for modality, name in (("s2", pair.s2v1_name), ("s1", pair.s1.id)):
        if name is None:
            continue
        path = item_path(collection_id(previous, modality), pair.tile, name)
        if store.size(path) is not None:
            links[modality].append({"rel": PREDECESSOR_REL, "href": f"../../../{path}", "type": GEOJSON_MEDIA_TYPE,
                                    "title": f"{previous} item {name}"})
    return links


MAX_ITEM_BYTES = 4 * 2**20
"""An existing item JSON larger than this is not one this builder wrote: the pair is rebuilt."""
MAX_ITEM_DEPTH = 32
"""Nesting an existing item may have (this builder writes 5 levels)."""


def _asset_name(asset: Any) -> tuple[str, int, str] | None:
    """(file name, size, sha256 hex) of an asset this builder wrote, or ``None``."""
    if not isinstance(asset, dict):
        return None
    href, size, checksum = asset.get("href"), asset.get("file:size"), asset.get("file:checksum")
    if not (isinstance(href, str) and isinstance(size, int) and isinstance(checksum, str)):
        return None
    name = href.removeprefix("./")
    if not name or "/" in name or "\\" in name or name in (".", ".."):  # our assets sit beside the item
        return None
    return name, size, checksum[4:]


def _existing(store: OutputStore, path: str, verify: bool) -> tuple[dict[str, Any], list[ManifestEntry]] | None:
    """An item and the manifest entries of it and its assets if all are present and match, else
    ``None`` (also for anything that is not an item this builder wrote)."""
    raw = store.read(path)
    if raw is None or len(raw) > MAX_ITEM_BYTES:
        return None
    try:
        item = loads_bounded(raw, MAX_ITEM_DEPTH)
    except ValueError:
        return None
    assets = item.get("assets") if isinstance(item, dict) else None
    if not isinstance(assets, dict) or not assets:
        return None
    base = path.rsplit("/", 1)[0]
    entries = [ManifestEntry(path, len(raw), sha256_hex(raw), GEOJSON_MEDIA_TYPE, STAGE_ITEM)]
    for asset in assets.values():
        described = _asset_name(asset)
        if described is None:
            return None
        name, asize, expected = described
        apath = f"{base}/{name}"
        if verify:
            data = store.read(apath)
            if data is None or len(data) != asize or sha256_hex(data) != expected:
                return None
        elif store.size(apath) != asize:
            return None
        entries.append(ManifestEntry(apath, asize, expected, COG_MEDIA_TYPE, STAGE_COG))
    return item, entries


def resume_state(store: OutputStore, pair: PairRecord, verify: bool = True,
                 links: dict[str, list[dict[str, Any]]] | None = None) -> tuple[list[dict[str, Any]], list[ManifestEntry]] | None:
    """The items and manifest of a pair already built and intact, or ``None`` to rebuild it.

    ``links``: the :func:`predecessor_links` the items must have (an item built before its
    predecessor was published is rebuilt to link it).
    """
    items: list[dict[str, Any]] = []
    manifest: list[ManifestEntry] = []
    for modality, patch in (("s2", pair.s2), ("s1", pair.s1)):
        found = _existing(store, item_path(collection_id(pair.release, modality), pair.tile, patch.id), verify)
        if found is None:
            return None
        if links is not None:
            have = [link for link in found[0].get("links", ()) if isinstance(link, dict) and link.get("rel") == PREDECESSOR_REL]
            if have != links[modality]:
                return None
        items.append(found[0])
        manifest.extend(found[1])
    return items, manifest


def build_pair(source: ReleaseSource, store: OutputStore, unit: str, layout: Layout,
               options: CogOptions = CogOptions(), verify_existing: bool = True,
               schema_url: str = SCHEMA_URI) -> PairOutcome:
    """Read, encode and write one pair; a bad input becomes a :class:`SourceProblem`, not an exception."""
    outcome = PairOutcome(unit)
    try:
        pair = source.read_pair(unit)
        outcome.partner = pair.s2.id
        outcome.warning = pair.label_disagreement
        links = predecessor_links(store, pair)
        done = resume_state(store, pair, verify_existing, links)
        if done is not None and all(schema_url in item.get("stac_extensions", ()) for item in done[0]):
            outcome.items, outcome.manifest = done
            outcome.skipped = True
            return outcome
        pixels = source.read_pixels(pair)
    except SourceError as exc:
        outcome.problem = exc.record
        if outcome.partner is None:  # the S2 patch is accounted for by this problem
            outcome.partner = exc.partner
        return outcome
    cogs = encode_pair(pair, pixels, layout, options)
    for modality, patch in (("s2", pair.s2), ("s1", pair.s1)):
        collection = collection_id(pair.release, modality)
        for key, cog in cogs[modality].items():
            path = asset_path(collection, pair.tile, patch.id, key)
            store.write(path, cog.data, COG_MEDIA_TYPE)
            outcome.manifest.append(ManifestEntry(path, cog.size, cog.sha256, COG_MEDIA_TYPE, STAGE_COG))
        item = build_item(pair, modality, cogs[modality], layout, schema_url, links[modality])
        # The item is written after its COGs: an item on disk means its assets are complete.
        outcome.manifest.append(put(store, item_path(collection, pair.tile, patch.id), json_bytes(item), GEOJSON_MEDIA_TYPE, STAGE_ITEM))
        outcome.items.append(item)
    return outcome


@dataclass
class BatchResult:
    """What one Dask task returns: outcomes without their items, the items as index rows.

    Items travel back to the client as Arrow tables (a few KB per item) rather than as Python
    dicts (several times larger), and the collection extents as running summaries, so the
    client's memory stays proportional to the index, not to the JSON of 1.2 million items.
    """

    outcomes: list[PairOutcome]
    tables: dict[str, pa.Table]
    extents: dict[str, ExtentAccumulator]


def build_batch(source: ReleaseSource, store: OutputStore, units: list[str], layout: Layout,
                options: CogOptions = CogOptions(), verify_existing: bool = True,
                schema_url: str = SCHEMA_URI) -> BatchResult:
    """:func:`build_pair` over a batch of units (one Dask task), items converted to index rows."""
    # GDAL only decodes and encodes bytes in memory here (raw objects are fetched with boto3).
    # Without an active Env, rasterio makes one per open from the environment: with AWS
    # credentials set, a boto3 session per band (~30 ms, 40x the decode). One Env for the batch.
    with rasterio.Env(session=DummySession()):
        outcomes = [build_pair(source, store, u, layout, options, verify_existing, schema_url) for u in units]
    by_collection: dict[str, list[dict[str, Any]]] = {}
    extents: dict[str, ExtentAccumulator] = {}
    for outcome in outcomes:
        for item in outcome.items:
            by_collection.setdefault(item["collection"], []).append(item)
            extents.setdefault(item["collection"], ExtentAccumulator()).add(item)
        outcome.items = []
    tables = {cid: items_to_table(items) for cid, items in by_collection.items() if items}
    return BatchResult(outcomes, tables, extents)
