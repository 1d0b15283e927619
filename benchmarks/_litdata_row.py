"""The LitData peer rows of the loader benchmark: the same samples as LitData chunks.

``optimize_pairs`` writes the raw arrays of every pair (uint16 S2 bands per resolution group,
float32 S1, the 19-class multi-hot, the id) with ``litdata.optimize``, in the order of the sample
table, as raw or zstd-compressed chunks. ``run`` reads them back with a ``StreamingDataset``
and turns each item into what the project's loader yields (float32 normalised tensors per
resolution group, float32 multi-hot), either a full epoch through a ``StreamingDataLoader`` or a
subset by index (the rows of a label search), locally or from S3.

Bytes read: locally, the chunks the samples live in; from S3, what LitData's downloader
transferred (whole chunks, or the byte ranges of single items it reads from uncompressed chunks).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bigearth_stac.bandplan import asset_expectations
from bigearth_stac.decode import decode
from bigearth_stac.vocab import BAND_STATS, LABELS_19, band_groups

GROUPS = {**band_groups("s2", "stacked"), **band_groups("s1", "stacked")}
_CONSTANTS = {
    key: (np.array([BAND_STATS[b][0] for b in bands], np.float32)[:, None, None],
          np.array([BAND_STATS[b][1] for b in bands], np.float32)[:, None, None])
    for key, bands in GROUPS.items()
}  # fmt: skip
_INDEX = {c: i for i, c in enumerate(LABELS_19)}


def _pair(row: dict[str, Any]) -> dict[str, Any]:
    """One sample as LitData stores it: the decoded raw arrays, the multi-hot, the id."""
    expect = {**asset_expectations("s2", "stacked"), **asset_expectations("s1", "stacked")}
    keys = list(band_groups("s2", "stacked")) + list(band_groups("s1", "stacked"))
    hrefs = row["s2_assets"] + row["s1_assets"]
    item: dict[str, Any] = {key: decode(Path(h).read_bytes(), expect[key]) for key, h in zip(keys, hrefs, strict=True)}
    hot = np.zeros(len(LABELS_19), np.uint8)
    hot[[_INDEX[c] for c in row["labels_19"]]] = 1
    item["label"] = hot
    item["id"] = row["id"]
    return item


def optimize_pairs(table: pa.Table, out: Path, compression: str | None, chunk_bytes: str) -> None:
    """LitData chunks of the table's pairs (in table order) at ``out``."""
    from litdata import optimize

    rows = table.select(["id", "s2_assets", "s1_assets", "labels_19"]).to_pylist()
    optimize(fn=_pair, inputs=rows, output_dir=str(out), chunk_bytes=chunk_bytes, compression=compression,
             num_workers=1, reorder_files=False, verbose=False)


def convert(item: dict[str, Any]) -> dict[str, Any]:
    """A stored item -> the loader's sample: float32 normalised groups, float32 multi-hot."""
    import torch

    out: dict[str, Any] = {"s2": {}}
    for key, (mean, std) in _CONSTANTS.items():
        x = np.subtract(np.asarray(item[key]), mean, dtype=np.float32)
        np.divide(x, std, out=x)
        if key == "s1":
            out["s1"] = torch.from_numpy(x)
        else:
            out["s2"][key.removeprefix("s2_")] = torch.from_numpy(x)
    out["label"] = torch.from_numpy(np.asarray(item["label"], np.float32))
    out["id"] = item["id"]
    return out


def chunk_table(input_dir: Path) -> list[tuple[int, int, str]]:
    """(samples, bytes, file name) of each chunk, from the local ``index.json``."""
    index = json.loads((input_dir / "index.json").read_text())
    return [(c["chunk_size"], c["chunk_bytes"], c["filename"]) for c in index["chunks"]]


def chunks_touched(chunks: list[tuple[int, int, str]], indices: list[int]) -> tuple[int, int]:
    """(chunks, bytes) holding ``indices``."""
    bounds = np.cumsum([0] + [n for n, _, _ in chunks])
    which = set(np.searchsorted(bounds, indices, side="right") - 1)
    return len(which), sum(chunks[i][1] for i in which)


def run(args: dict[str, Any]) -> dict[str, Any]:
    """One measured LitData run (in a fresh process); see the module docstring."""
    import torch  # noqa: F401 - imported before the clock starts
    from litdata import StreamingDataLoader, StreamingDataset

    local = Path(args["local_dir"])
    chunks = chunk_table(local)
    total = sum(n for n, _, _ in chunks)
    subset = args.get("subset")
    storage = {"endpoint_url": args["endpoint"]} if args.get("endpoint") else None
    if storage and args["endpoint"].startswith("http://"):
        # LitData builds its obstore store without allow_http: fine for S3 (https), refused for
        # a loopback server. Allow it, as LitData would with an https endpoint.
        import litdata.streaming.downloader as downloader

        downloader._OBSTORE_CLIENT_OPTIONS = {**downloader._OBSTORE_CLIENT_OPTIONS, "allow_http": True}
    counted = _count_s3_transfers() if storage else None
    with tempfile.TemporaryDirectory(prefix="litdata-cache-") as cache:
        t0, c0 = time.perf_counter(), _cpu()
        ds = StreamingDataset(args["input_dir"], cache_dir=cache if storage else None, storage_options=storage,
                              shuffle=bool(args.get("shuffle")) and subset is None,
                              transform=None if subset is not None else convert)
        n = 0
        if subset is None:
            loader = StreamingDataLoader(ds, batch_size=args["batch_size"], num_workers=args["workers"])
            for batch in loader:
                n += len(batch["id"])
            indices = list(range(total))
        else:
            indices = sorted(subset)
            for i in indices:  # in chunk order: LitData's best case for random access
                convert(ds[i])
                n += 1
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    touched, nbytes = chunks_touched(chunks, indices)
    out = {"samples": n, "seconds": seconds, "cpu": cpu, "bytes": nbytes, "chunks_read": touched, "chunks": len(chunks)}
    if counted is not None:
        out.update(bytes_downloaded=counted["bytes"], requests=counted["requests"])
    return out


def _cpu() -> float:
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _count_s3_transfers() -> dict[str, int]:
    """Count what LitData's S3 downloader transfers (whole chunks, or item byte ranges, which
    this LitData reads from uncompressed chunks it has not cached): wraps its methods."""
    import functools
    import threading

    from litdata.streaming.downloader import S3Downloader

    counted = {"bytes": 0, "requests": 0}
    lock = threading.Lock()

    def add(nbytes: int) -> None:
        with lock:
            counted["bytes"] += nbytes
            counted["requests"] += 1

    def files(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(self: Any, remote: str, local: str, *a: Any, **k: Any) -> Any:
            existed = os.path.exists(local)
            out = fn(self, remote, local, *a, **k)
            if not existed and os.path.exists(local):
                add(os.path.getsize(local))
            return out

        return wrapper

    def afiles(fn: Any) -> Any:
        @functools.wraps(fn)
        async def wrapper(self: Any, remote: str, local: str, *a: Any, **k: Any) -> Any:
            existed = os.path.exists(local)
            out = await fn(self, remote, local, *a, **k)
            if not existed and os.path.exists(local):
                add(os.path.getsize(local))
            return out

        return wrapper

    def ranges(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            out = fn(*a, **k)
            add(len(out))
            return out

        return wrapper

    def aranges(fn: Any) -> Any:
        @functools.wraps(fn)
        async def wrapper(*a: Any, **k: Any) -> Any:
            out = await fn(*a, **k)
            add(len(out))
            return out

        return wrapper

    S3Downloader.download_file = files(S3Downloader.download_file)  # type: ignore[method-assign]
    S3Downloader.adownload_file = afiles(S3Downloader.adownload_file)  # type: ignore[method-assign]
    S3Downloader.download_bytes = ranges(S3Downloader.download_bytes)  # type: ignore[method-assign]
    S3Downloader.adownload_bytes = aranges(S3Downloader.adownload_bytes)  # type: ignore[method-assign]
    S3Downloader.adownload_fileobj = aranges(S3Downloader.adownload_fileobj)  # type: ignore[method-assign]
    return counted


__all__ = ["convert", "optimize_pairs", "run"]
