"""Read one whole patch (all bands of a sample-table row) into numpy, for plots and inspection.

Not the training path (that is :mod:`bigearth_stac.torch_dataset`); this reads one sample with
the same fetcher and decoder and returns plain arrays by band name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bigearth_stac.decode import decode
from bigearth_stac.fetch import Fetcher
from bigearth_stac.settings import StorageSettings
from bigearth_stac.vocab import band_groups


@dataclass(frozen=True)
class Patch:
    """All bands of one sample, by band name, with its labels."""

    id: str
    bands: dict[str, np.ndarray]
    labels_19: tuple[str, ...]
    labels_43: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)


def read_patch(row: Mapping[str, Any], settings: StorageSettings | None = None) -> Patch:
    """A :class:`Patch` from one row of a sample table (see :mod:`bigearth_stac.samples`)."""
    bands: dict[str, np.ndarray] = {}
    with Fetcher(settings, max_in_flight=8) as fetcher:
        for modality in ("s2", "s1"):
            hrefs = row[f"{modality}_assets"]
            if not hrefs:
                continue
            groups = band_groups(modality, row["layout"])
            futures = [fetcher.submit(h, decode) for h in hrefs]
            for names, fut in zip(groups.values(), futures, strict=True):
                array = fut.result()
                for i, name in enumerate(names):
                    bands[name] = array[i]
    return Patch(str(row["id"]), bands, tuple(row.get("labels_19") or ()), tuple(row.get("labels_43") or ()),
                 {"split": row.get("split")})
