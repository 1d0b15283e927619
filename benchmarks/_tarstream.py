"""WebDataset-style tar shards of the same samples, for the loader benchmark's row (e).

A shard is a plain tar (stdlib ``tarfile``) of consecutive samples; a sample's members share a
key (``<id>.s2_10m.tif``, ``<id>.s1.tif``, ``<id>.labels.json``), as WebDataset lays them out.
The reader fetches one whole shard per request (local or s3) with the project's Fetcher,
prefetching the next shard, and decodes with the same fast path as the loader.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset, get_worker_info

from bigearth_stac.decode import decode
from bigearth_stac.fetch import Fetcher
from bigearth_stac.settings import StorageSettings
from bigearth_stac.vocab import BAND_STATS, LABELS_19, band_groups


def write_shards(table: pa.Table, out: Path, per_shard: int = 64) -> list[Path]:
    """Write the samples of a (stacked-layout, local) sample table as tar shards."""
    out.mkdir(parents=True, exist_ok=True)
    rows = table.to_pylist()
    keys = {"s2": list(band_groups("s2", "stacked")), "s1": list(band_groups("s1", "stacked"))}
    paths = []
    for k in range(0, len(rows), per_shard):
        path = out / f"shard-{k // per_shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for row in rows[k : k + per_shard]:
                members = [(f"{row['id']}.{key}.tif", Path(href).read_bytes())
                           for m in ("s2", "s1") for key, href in zip(keys[m], row[f"{m}_assets"], strict=True)]
                members.append((f"{row['id']}.labels.json", json.dumps(row["labels_19"]).encode()))
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def _norm(array: np.ndarray, bands: Sequence[str]) -> torch.Tensor:
    x = torch.from_numpy(array.astype(np.float32, copy=False))
    mean = torch.tensor([BAND_STATS[b][0] for b in bands])[:, None, None]
    std = torch.tensor([BAND_STATS[b][1] for b in bands])[:, None, None]
    return (x - mean) / std


class TarShardStream(IterableDataset):
    """Samples from tar shards; shards are split between DataLoader workers."""

    def __init__(self, shards: Sequence[str], settings: StorageSettings | None = None) -> None:
        super().__init__()
        self.shards = list(shards)
        self.settings = settings or StorageSettings.from_env()
        self.fetched_bytes = 0
        self.requests = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid, n = (info.id, info.num_workers) if info else (0, 1)
        mine = self.shards[wid::n]
        groups = {**band_groups("s2", "stacked"), **band_groups("s1", "stacked")}
        index = {c: i for i, c in enumerate(LABELS_19)}
        with Fetcher(self.settings, max_in_flight=2) as fetcher:
            pending = fetcher.submit(mine[0]) if mine else None
            for i in range(len(mine)):
                data = pending.result()  # type: ignore[union-attr]
                pending = fetcher.submit(mine[i + 1]) if i + 1 < len(mine) else None
                self.requests += 1
                self.fetched_bytes += len(data)
                samples: dict[str, dict[str, bytes]] = {}
                with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                    for member in tar:
                        key, _, ext = member.name.partition(".")
                        samples.setdefault(key, {})[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
                for key, parts in samples.items():
                    s2 = {g[3:]: _norm(decode(parts[f"{g}.tif"]), groups[g]) for g in ("s2_10m", "s2_20m", "s2_60m")}
                    label = torch.zeros(len(LABELS_19))
                    label[[index[c] for c in json.loads(parts["labels.json"])]] = 1.0
                    yield {"s2": s2, "s1": _norm(decode(parts["s1.tif"]), groups["s1"]), "label": label, "id": key}
