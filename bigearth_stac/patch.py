"""Read one whole patch (all bands of a sample-table row) into numpy, for plots and inspection.

Not the training path (that is :mod:`bigearth_stac.torch_dataset`); this reads one sample with
the same fetcher and decoder and returns plain arrays by band name. Every object is checked
against what its asset must hold (bands, size, dtype) like the loader does; a failure is a
:class:`~bigearth_stac.fetch.FetchError` naming the sample id and the href.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bigearth_stac.bandplan import asset_expectations
from bigearth_stac.fetch import Fetcher, FetchError
from bigearth_stac.hrefs import Scope
from bigearth_stac.settings import StorageSettings
from bigearth_stac.vocab import band_groups

__all__ = ["Patch", "read_patch"]


@dataclass(frozen=True)
class Patch:
    """All bands of one sample, by band name, with its labels."""

    id: str
    bands: dict[str, np.ndarray]
    labels_19: tuple[str, ...]
    labels_43: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)


def read_patch(row: Mapping[str, Any], settings: StorageSettings | None = None, scope: Scope | None = None) -> Patch:
    """A :class:`Patch` from one row of a sample table (see :mod:`bigearth_stac.samples`).

    ``scope``: the roots the reads must stay in (``samples.scope_of(table)`` of the row's table).
    """
    sample_id = str(row["id"])
    bands: dict[str, np.ndarray] = {}
    with Fetcher(settings, max_in_flight=8, scope=scope) as fetcher:
        for modality in ("s2", "s1"):
            hrefs = row[f"{modality}_assets"]
            if not hrefs:
                continue
            groups = band_groups(modality, row["layout"])
            expect = asset_expectations(modality, row["layout"])
            if len(hrefs) != len(groups) or None in hrefs:
                raise ValueError(f"sample {sample_id!r}: {modality} assets should be {len(groups)} hrefs "
                                 f"({', '.join(groups)}), got {hrefs!r}")
            futures = [fetcher.submit(h, expect[key].decode) for h, key in zip(hrefs, groups, strict=True)]
            for names, fut in zip(groups.values(), futures, strict=True):
                try:
                    array = fut.result()
                except FetchError as exc:
                    raise exc.for_sample(sample_id) from exc.cause
                for i, name in enumerate(names):
                    bands[name] = array[i]
    return Patch(sample_id, bands, tuple(row.get("labels_19") or ()), tuple(row.get("labels_43") or ()),
                 {"split": row.get("split")})
