"""Lazy xarray views of a search result: a patch cube, and mosaics of a region.

:func:`to_xarray` gives an ``xarray.Dataset`` with one variable (the modality, ``"s2"`` or
``"s1"``) of dims ``(patch, band, y, x)``, one Dask chunk per group of ``chunk_patches`` patches;
a chunk fetches its patches' objects concurrently and decodes them with the same fast path as
the PyTorch loader. Nothing is read until computed. ``y``/``x`` are pixel rows/columns inside a
patch (patches lie in different UTM zones, so they share no map grid); footprint centres, when the
source has them, are the ``center_lon``/``center_lat`` coordinates. For BigEarthNet v2.0 the
reference maps can come along as a second variable, ``mask`` (``patch, y, x``): the CLC codes, or
class indices of either nomenclature as the loader yields them.

:func:`mosaic` puts all patches of a region on one map grid with stackstac. stackstac reads
single-band assets only, so it needs a catalog built in the per-band layout.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dask.array as da
import numpy as np
import pyarrow as pa
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from bigearth_stac.bandplan import (
    BandPlan,
    MaskPlan,
    band_plan,
    downsample_mean,
    mask_plan,
    reference_map_expectation,
    split_bands,
    upsample_nearest,
)
from bigearth_stac.contract import REFERENCE_MAP_ASSET, prop
from bigearth_stac.fetch import Fetcher, FetchError
from bigearth_stac.hrefs import Scope, join
from bigearth_stac.samples import as_sample_table, scope_of
from bigearth_stac.settings import StorageSettings
from bigearth_stac.stac_items import restore_epsg
from bigearth_stac.vocab import BANDS, CLASS_ORDERS, CLC_NODATA, PATCH_SIZE_M

log = logging.getLogger(__name__)

__all__ = ["mosaic", "to_xarray"]

_FETCHERS: dict[tuple[int, str, int, Scope | None], Fetcher] = {}
_FETCHERS_LOCK = threading.Lock()


def _fetcher(settings: StorageSettings, max_in_flight: int, scope: Scope | None) -> Fetcher:
    """This process's Fetcher for these settings and scope (a Dask worker reuses its clients)."""
    key = (os.getpid(), repr(settings), max_in_flight, scope)
    with _FETCHERS_LOCK:
        if key not in _FETCHERS:
            _FETCHERS[key] = Fetcher(settings, max_in_flight, scope=scope)
        return _FETCHERS[key]


@dataclass(frozen=True)
class _Block:
    """What one Dask chunk reads: its patches' ids, hrefs and band plans."""

    ids: tuple[str, ...]
    hrefs: tuple[tuple[str, ...], ...]
    plans: tuple[BandPlan, ...]
    resolution: int
    dtype: str
    settings: StorageSettings
    max_in_flight: int
    scope: Scope | None = None
    """The catalog's roots: every href is checked against them before it is fetched."""


def _read_block(block: _Block) -> np.ndarray:
    size = PATCH_SIZE_M // block.resolution
    nbands = len(block.plans[0].bands) if block.plans else 0
    out = np.empty((len(block.ids), nbands, size, size), dtype=block.dtype)
    fetcher = _fetcher(block.settings, block.max_in_flight, block.scope)
    futures = [[fetcher.submit(h, plan.expected[k].decode) for k, h in enumerate(hrefs)]
               for hrefs, plan in zip(block.hrefs, block.plans, strict=True)]
    try:
        for i, (sample_id, plan, futs) in enumerate(zip(block.ids, block.plans, futures, strict=True)):
            try:
                decoded = [f.result() for f in futs]
            except FetchError as exc:
                raise exc.for_sample(sample_id) from exc.cause
            for j, (name, array) in enumerate(zip(plan.bands, plan.select(decoded), strict=True)):
                native = BANDS[name].resolution
                if native > block.resolution:
                    array = upsample_nearest(array, native // block.resolution)
                elif native < block.resolution:
                    array = downsample_mean(array, block.resolution // native)
                out[i, j] = array
    finally:
        for futs in futures:
            for f in futs:
                f.cancel()
    return out



@dataclass(frozen=True)
class _MaskBlock:
    """What one Dask chunk of the ``mask`` variable reads: its patches' reference maps."""

    ids: tuple[str, ...]
    hrefs: tuple[str, ...]
    plan: MaskPlan | None
    """Codes -> class indices; ``None``: the CLC codes as they are."""
    settings: StorageSettings
    max_in_flight: int
    scope: Scope | None = None


def _read_masks(block: _MaskBlock) -> np.ndarray:
    expect = reference_map_expectation()
    dtype = np.int64 if block.plan is not None else expect.dtype
    out = np.empty((len(block.ids), expect.height, expect.width), dtype=dtype)
    fetcher = _fetcher(block.settings, block.max_in_flight, block.scope)
    decoder = block.plan.decode if block.plan is not None else expect.decode
    futures = [fetcher.submit(h, decoder) for h in block.hrefs]
    try:
        for i, (sample_id, fut) in enumerate(zip(block.ids, futures, strict=True)):
            try:
                decoded = fut.result()
            except FetchError as exc:
                raise exc.for_sample(sample_id) from exc.cause
            out[i] = decoded if block.plan is not None else decoded[0]
    finally:
        for f in futures:
            f.cancel()
    return out


def _centres(source: Any, table: pa.Table) -> tuple[np.ndarray, np.ndarray] | None:
    """Footprint centres (lon, lat) from a ``bbox`` column of the table or of ``source.table``."""
    candidates = [table, getattr(source, "table", None)]
    for cand in candidates:
        if isinstance(cand, pa.Table) and "bbox" in cand.column_names and "id" in cand.column_names:
            bbox = cand.column("bbox").combine_chunks()
            if not pa.types.is_struct(bbox.type):
                continue
            cx = (bbox.field("xmin").to_numpy(zero_copy_only=False) + bbox.field("xmax").to_numpy(zero_copy_only=False)) / 2
            cy = (bbox.field("ymin").to_numpy(zero_copy_only=False) + bbox.field("ymax").to_numpy(zero_copy_only=False)) / 2
            pos = {k: i for i, k in enumerate(cand.column("id").to_pylist())}
            try:
                rows = np.array([pos[k] for k in table.column("id").to_pylist()], dtype=np.int64)
            except KeyError:
                continue
            return cx[rows], cy[rows]
    return None


def to_xarray(
    source: Any,
    modality: Literal["s2", "s1"] = "s2",
    bands: Sequence[str] | None = None,
    resolution: Literal[10, 20, 60] = 10,
    chunk_patches: int = 64,
    settings: StorageSettings | None = None,
    max_in_flight: int = 32,
    mask: Literal["codes", "19", "43"] | None = None,
    ignore_index: int = 255,
    class_order: str = "original",
) -> xr.Dataset:
    """A lazy ``(patch, band, y, x)`` cube of a search result or sample table.

    Bands coarser than ``resolution`` are repeated (nearest neighbour: values and dtype kept),
    finer ones averaged over blocks (the cube is then float32). Coordinates: ``patch`` (ids),
    ``band``, ``y``/``x`` (pixel index), ``split``, multi-hot ``labels_19`` (patch, class_19) and
    ``labels_43`` (patch, class_43) in the original class order, and ``center_lon`` /
    ``center_lat`` when the source has footprints.

    ``mask`` (BigEarthNet v2.0 S2 results, ``resolution=10``): adds the variable ``mask``
    ``(patch, y, x)``, each patch's reference map: ``"codes"``, the CLC Level-3 codes (uint16,
    nodata 0); ``"19"`` / ``"43"``, int64 class indices in ``class_order`` with ``ignore_index``
    for nodata and classes without a 19-class counterpart, as the PyTorch loader's ``mask``
    (the class names are its ``classes`` attribute).
    """
    if resolution not in (10, 20, 60):
        raise ValueError(f"resolution must be 10, 20 or 60 m, got {resolution!r}")
    if mask is not None and mask not in ("codes", "19", "43"):
        raise ValueError(f"mask must be None, 'codes', '19' or '43', got {mask!r}")
    if mask is not None and resolution != 10:
        raise ValueError(f"mask: reference maps are on the 10 m grid; ask for resolution=10, not {resolution}")
    plan = mask_plan(mask, class_order, ignore_index) if mask in ("19", "43") else None
    if chunk_patches < 1:
        raise ValueError(f"chunk_patches must be >= 1, got {chunk_patches}")
    table = as_sample_table(source, keep_extra=True)
    scope = scope_of(table)
    n = len(table)
    names = split_bands(bands, (modality,))[modality]
    settings = settings or StorageSettings.from_env()
    plans = {lay: band_plan(modality, lay, names) for lay in set(table.column("layout").to_pylist())}
    ids = table.column("id").to_pylist()
    layouts = table.column("layout").to_pylist()
    assets = table.column(f"{modality}_assets").to_pylist()
    if any(not a for a in assets):
        raise ValueError(f"some samples have no {modality} assets")
    finer = any(BANDS[b].resolution < resolution for b in names)
    dtype = "float32" if finer or modality == "s1" else BANDS[names[0]].dtype
    size = PATCH_SIZE_M // resolution

    name = f"bigearthnet-{modality}-{tokenize(ids, assets, names, resolution, repr(settings), repr(scope))}"
    dsk: dict[Any, Any] = {}
    sizes: list[int] = []
    for k, start in enumerate(range(0, n, chunk_patches)):
        stop = min(n, start + chunk_patches)
        block = _Block(
            ids=tuple(ids[start:stop]),
            hrefs=tuple(tuple(assets[i][a] for a in plans[layouts[i]].assets) for i in range(start, stop)),
            plans=tuple(plans[layouts[i]] for i in range(start, stop)),
            resolution=resolution,
            dtype=dtype,
            settings=settings,
            max_in_flight=max_in_flight,
            scope=scope,
        )
        dsk[(name, k, 0, 0, 0)] = (_read_block, block)
        sizes.append(stop - start)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    cube = da.Array(graph, name, chunks=(tuple(sizes), (len(names),), (size,), (size,)), dtype=dtype)

    coords: dict[str, Any] = {
        "patch": ids,
        "band": list(names),
        "y": np.arange(size),
        "x": np.arange(size),
        "split": ("patch", table.column("split").to_pylist()),
    }
    for nom in ("19", "43"):
        classes = CLASS_ORDERS["original"][nom]
        index = {c: i for i, c in enumerate(classes)}
        hot = np.zeros((n, len(classes)), dtype=np.uint8)
        for i, labels in enumerate(table.column(f"labels_{nom}").to_pylist()):
            hot[i, [index[c] for c in labels or ()]] = 1
        coords[f"class_{nom}"] = list(classes)
        coords[f"labels_{nom}"] = (("patch", f"class_{nom}"), hot)
    centres = _centres(source, table)
    if centres is not None:
        coords["center_lon"] = ("patch", centres[0])
        coords["center_lat"] = ("patch", centres[1])
    # Label coordinates have a class dimension the pixel variable lacks: they live on the Dataset.
    var = xr.DataArray(cube, dims=("patch", "band", "y", "x"), name=modality, attrs={"resolution_m": resolution})
    variables: dict[str, xr.DataArray] = {modality: var}
    if mask is not None:
        variables["mask"] = _mask_variable(table, plan, chunk_patches, settings, max_in_flight, scope, name)
    return xr.Dataset(variables, coords=coords, attrs={"modality": modality, "resolution_m": resolution})


def _mask_variable(table: pa.Table, plan: MaskPlan | None, chunk_patches: int, settings: StorageSettings,
                   max_in_flight: int, scope: Scope | None, cube_name: str) -> xr.DataArray:
    """The lazy ``mask`` variable of :func:`to_xarray`, one chunk per ``chunk_patches`` patches."""
    urls = table.column(REFERENCE_MAP_ASSET).to_pylist() if REFERENCE_MAP_ASSET in table.column_names else None
    if urls is None or not any(urls):
        raise ValueError("mask: no patch of this source has a reference map (they come with the S2 items of a "
                         "BigEarthNet v2.0 catalog built with its Reference_Maps)")
    ids = table.column("id").to_pylist()
    missing = [i for i, u in zip(ids, urls, strict=True) if u is None]
    if missing:
        raise ValueError(f"mask: {len(missing)} of {len(ids)} patches have no reference map (e.g. {missing[:5]})")
    expect = reference_map_expectation()
    dtype = np.dtype(np.int64) if plan is not None else expect.dtype
    key = (plan.nomenclature, plan.class_order, plan.ignore_index) if plan is not None else ("codes",)
    name = f"{cube_name}-mask-{tokenize(*key)}"
    dsk: dict[Any, Any] = {}
    sizes: list[int] = []
    for k, start in enumerate(range(0, len(ids), chunk_patches)):
        stop = min(len(ids), start + chunk_patches)
        block = _MaskBlock(tuple(ids[start:stop]), tuple(urls[start:stop]), plan, settings, max_in_flight, scope)
        dsk[(name, k, 0, 0)] = (_read_masks, block)
        sizes.append(stop - start)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    array = da.Array(graph, name, chunks=(tuple(sizes), (expect.height,), (expect.width,)), dtype=dtype)
    attrs: dict[str, Any] = {"resolution_m": 10}
    if plan is None:
        attrs.update(content="CLC Level-3 codes", nodata=CLC_NODATA)
    else:
        attrs.update(content=f"{plan.nomenclature}-class indices ({plan.class_order} order)",
                     classes=list(plan.classes), ignore_index=plan.ignore_index)
    return xr.DataArray(array, dims=("patch", "y", "x"), name="mask", attrs=attrs)


# -- mosaics ---------------------------------------------------------------------------------


def _item_json_href(asset_href: str) -> str:
    """The item JSON beside an asset (the key layout of :mod:`bigearth_stac.contract`)."""
    folder = posixpath.dirname(asset_href)
    return f"{folder}/{posixpath.basename(folder)}.json"


def _items(source: Any, modality: str, settings: StorageSettings) -> list[dict[str, Any]]:
    """STAC items (dicts, absolute hrefs) of a search result, items, or a sample table."""
    if hasattr(source, "item_dicts"):
        return list(source.item_dicts())
    if hasattr(source, "items") and not isinstance(source, (dict, pa.Table)):
        source = list(source.items)
    if isinstance(source, list):
        return [dict(restore_epsg(i.to_dict() if hasattr(i, "to_dict") else dict(i))) for i in source]
    table = as_sample_table(source, keep_extra=True)
    scope = scope_of(table)
    hrefs = [_item_json_href(a[0]) for a in table.column(f"{modality}_assets").to_pylist() if a]
    fetcher = _fetcher(settings, 32, scope)
    futures = [(h, fetcher.submit(h, json.loads)) for h in hrefs]
    items = []
    for href, fut in futures:
        item = fut.result()
        if not isinstance(item, dict) or not isinstance(item.get("assets"), dict):
            raise ValueError(f"{href} is not a STAC item")
        # Item asset hrefs are relative to the item JSON: absolute (and confined) for stackstac.
        for asset in item["assets"].values():
            asset["href"] = scope.resolve(href, asset["href"]) if scope else join(href, asset["href"])
        items.append(item)
    return items


def mosaic(
    source: Any,
    bbox: Sequence[float],
    bands: Sequence[str] | None = None,
    modality: Literal["s2", "s1"] = "s2",
    resolution: float = 10,
    epsg: int | None = None,
    settings: StorageSettings | None = None,
    **stack_kwargs: Any,
) -> xr.DataArray:
    """All patches intersecting ``bbox`` (lon/lat) as one lazy ``(band, y, x)`` raster via stackstac.

    ``epsg`` defaults to the first item's ``proj:epsg``; items in other zones are reprojected by
    GDAL. Where patches overlap, the first non-zero value wins (``stackstac.mosaic``). Needs the
    per-band layout (single-band assets); zero is the fill value (nodata of BigEarthNet).
    """
    try:
        import stackstac
    except ImportError:
        raise ImportError("bigearth_stac.mosaic needs stackstac: pip install 'bigearth-stac[mosaic]'") from None

    settings = settings or StorageSettings.from_env()
    items = _items(source, modality, settings)
    if not items:
        raise ValueError("no items to mosaic")
    layout = items[0]["properties"].get(prop("layout"))
    if layout != "per-band":
        raise ValueError(
            f"mosaic needs single-band assets (a catalog built with --layout per-band); these items are {layout!r}"
        )
    names = list(split_bands(bands, (modality,))[modality])
    epsg = epsg or int(items[0]["properties"]["proj:epsg"])
    dtype = np.dtype(BANDS[names[0]].dtype)
    kwargs: dict[str, Any] = {
        "assets": names,
        "epsg": epsg,
        "resolution": resolution,
        "bounds_latlon": tuple(bbox),
        "dtype": dtype,
        # numpy 2 refuses stackstac's default NaN fill for integer data.
        "fill_value": dtype.type(0),
        "rescale": False,
        "gdal_env": stackstac.DEFAULT_GDAL_ENV.updated(always=settings.gdal_env()),
    }
    kwargs.update(stack_kwargs)
    stack = stackstac.stack(items, **kwargs)
    return stackstac.mosaic(stack, dim="time", nodata=0)
