"""Helpers for STAC items read through pystac, so other tools load them as written.

pystac (1.12 and later) migrates the projection extension v1.x to v2.0.0 whenever it reads an
item: it moves ``proj:epsg`` to ``proj:code`` and drops ``proj:epsg``. The catalog's items carry
both (projection v1.2.0, DESIGN.md #11), but stackstac 0.5 reads only ``proj:epsg``: without it,
it refuses the items ("Please specify a CRS with the epsg= argument") or, given ``epsg=``,
cannot place an asset by its ``proj:transform`` and falls back to the item's WGS84 ``bbox``
reprojected to UTM, which puts a 120 px patch on a 121 x 121 grid shifted by ~11 m.
:func:`restore_epsg` puts ``proj:epsg`` back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, MutableMapping
from typing import Any, TypeVar

import pystac

log = logging.getLogger(__name__)

__all__ = ["PROJECTION_V1_2", "epsg_of", "restore_epsg", "restore_epsg_all"]

PROJECTION_V1_2 = "https://stac-extensions.github.io/projection/v1.2.0/schema.json"
"""Projection v1.2.0 defines both ``proj:code`` and ``proj:epsg``; v2.0.0 forbids ``proj:epsg``."""
_PROJECTION_V2 = re.compile(r"https://stac-extensions\.github\.io/projection/v2\.\d+\.\d+/schema\.json", re.ASCII)
_EPSG_CODE = re.compile(r"EPSG:(\d+)", re.IGNORECASE | re.ASCII)

ItemT = TypeVar("ItemT", pystac.Item, MutableMapping[str, Any])


def epsg_of(code: object) -> int | None:
    """The EPSG number of a ``proj:code`` such as ``"EPSG:32633"``; ``None`` for other codes."""
    if not isinstance(code, str):
        return None
    match = _EPSG_CODE.fullmatch(code.strip())
    return int(match.group(1)) if match else None


def _restore(fields: MutableMapping[str, Any]) -> bool:
    if fields.get("proj:epsg") is not None:
        return False
    epsg = epsg_of(fields.get("proj:code"))
    if epsg is None:
        return False
    fields["proj:epsg"] = epsg
    return True


def restore_epsg(item: ItemT) -> ItemT:
    """Set ``proj:epsg`` from ``proj:code`` where it is missing; returns ``item``, changed in place.

    ``item`` is a :class:`pystac.Item` or an item dict. The item's properties and each asset
    that has a ``proj:code`` get the matching ``proj:epsg``. When something was added and the
    item declares projection v2.x (which forbids ``proj:epsg``), the declaration becomes v1.2.0,
    which defines both fields, so the item stays valid.
    """
    if isinstance(item, pystac.Item):
        changed = _restore(item.properties)
        for asset in item.assets.values():
            changed = _restore(asset.extra_fields) or changed
        extensions = item.stac_extensions
    else:
        changed = _restore(item.setdefault("properties", {}))
        for asset in (item.get("assets") or {}).values():
            if isinstance(asset, MutableMapping):
                changed = _restore(asset) or changed
        extensions = item.setdefault("stac_extensions", [])
    if changed:
        declared = [PROJECTION_V1_2 if _PROJECTION_V2.fullmatch(e) else e for e in extensions]
        extensions[:] = list(dict.fromkeys(declared))
    return item


def restore_epsg_all(items: Iterable[ItemT]) -> list[ItemT]:
    """:func:`restore_epsg` over items (e.g. an ``ItemCollection``), as a list."""
    return [restore_epsg(item) for item in items]
