"""Medians and spreads of a benchmark row's figures over its rounds (shared by the benchmarks)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any


def over_rounds(runs: list[dict[str, Any]], keys: Iterable[str], ranged: Iterable[str]) -> dict[str, Any]:
    """``rounds`` (the runs without an ``error``), the median of each of ``keys`` they report, and
    ``<key>_min`` / ``<key>_max`` for the ``ranged`` ones; ``error`` (the last run's) if none ran."""
    ok = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"rounds": len(ok)}
    if not ok:
        out["error"] = runs[-1].get("error") if runs else "not run"
        return out
    ranged = set(ranged)
    for key in keys:
        values = [r[key] for r in ok if r.get(key) is not None]
        if not values:
            continue
        out[key] = statistics.median(values)
        if key in ranged:
            out[f"{key}_min"], out[f"{key}_max"] = min(values), max(values)
    return out
