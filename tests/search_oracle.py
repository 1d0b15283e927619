"""Brute force over an index's rows: what a search must return, computed without SQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pyarrow.parquet as pq
import shapely

Row = dict[str, Any]


def index_rows(catalog_root: Any, collection: str = "bigearthnet-s2") -> list[Row]:
    """Every row of an index, in file order, with ``_geom`` (shapely) added."""
    rows = pq.read_table(f"{catalog_root}/index/{collection}.parquet").to_pylist()
    for r in rows:
        r["_geom"] = shapely.from_wkb(r["geometry"])
    return rows


def brute(rows: list[Row], *, labels: list[str] | None = None, match: str = "any", nomenclature: str = "19",
          bbox: tuple[float, float, float, float] | None = None, geometry: Any = None,
          interval: tuple[datetime | None, datetime | None] | None = None, split: list[str] | None = None,
          countries: list[str] | None = None, seasons: list[str] | None = None, exclude_snow: bool = False,
          exclude_clouds: bool = False, where: Callable[[Row], bool] | None = None) -> list[str]:
    out = []
    for r in rows:
        if labels:
            have = set(r[f"bigearthnet:labels_{nomenclature}"])
            if not (have & set(labels) if match == "any" else set(labels) <= have):
                continue
        if bbox is not None:
            w, s, e, n = bbox
            boxes = [shapely.box(w, s, 180, n), shapely.box(-180, s, e, n)] if w > e else [shapely.box(w, s, e, n)]
            if not any(shapely.intersects(r["_geom"], b) for b in boxes):
                continue
        if geometry is not None and not shapely.intersects(r["_geom"], geometry):
            continue
        if interval is not None:
            lo, hi = interval
            if (lo is not None and r["datetime"] < lo) or (hi is not None and r["datetime"] > hi):
                continue
        if split is not None and r["bigearthnet:split"] not in split:
            continue
        if countries is not None and r["bigearthnet:country"] not in countries:
            continue
        if seasons is not None and r["bigearthnet:season"] not in seasons:
            continue
        if exclude_snow and r["bigearthnet:seasonal_snow"]:
            continue
        if exclude_clouds and r["bigearthnet:cloud_or_shadow"]:
            continue
        if where is not None and not where(r):
            continue
        out.append(r["id"])
    return out
