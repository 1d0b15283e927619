"""A search result as a PyTorch ``IterableDataset`` that streams straight from object storage.

Pipeline per DataLoader worker (DESIGN.md #3, #5, #6, #7)::

    sample table (Arrow) -> epoch order -> this rank's and worker's shard
      -> Fetcher: whole-object GETs, ``max_in_flight`` at a time, retried
      -> decode (tifffile + imagecodecs for our COGs, GDAL otherwise) on the fetch threads
      -> band selection, normalisation, optional resampling -> torch tensors + multi-hot label

Memory per worker is the sample table plus a window of ``prefetch`` samples, whatever the size
of the dataset. The loop never touches pystac.

A sample is a dict:

``"s2"``
    ``resample_to_10m=True``: float32 ``(C, 120, 120)``, bands in the order of
    :attr:`BigEarthNetStream.bands` ``["s2"]``. ``False`` (the default): a dict of native
    resolutions, ``{"10m": (k, 120, 120), "20m": (k, 60, 60), "60m": (k, 20, 20)}``, holding only the
    resolutions with requested bands, each in requested order (:attr:`BigEarthNetStream.bands_by_resolution`).
    Native resolution is the default because it is what was measured, costs no interpolation and
    lets a model choose how to fuse resolutions.
``"s1"``
    float32 ``(k, 120, 120)`` (VV, VH).
``"label"``
    float32 multi-hot over the 19 or 43 classes in the named class order
    (:attr:`BigEarthNetStream.classes`).
``"id"``
    the sample id (the S2 patch name for pairs).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.context
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

from bigearth_stac.bandplan import BandPlan, band_plan, split_bands
from bigearth_stac.decode import decode
from bigearth_stac.fetch import Fetcher, FetchError
from bigearth_stac.samples import as_sample_table
from bigearth_stac.settings import StorageSettings
from bigearth_stac.sharding import Uneven, epoch_order, per_rank, resolve_world, shard
from bigearth_stac.vocab import BAND_STATS, BANDS, CLASS_ORDERS, Nomenclature

log = logging.getLogger(__name__)

__all__ = ["BigEarthNetStream", "SampleError", "as_sample_table"]

Resampling = Literal["bilinear", "nearest"]
OnError = Literal["raise", "skip"]
_PATCH_PX = 120
_COUNTERS = ("epoch", "yielded", "skipped", "requests", "bytes", "retries")


class SampleError(RuntimeError):
    """A sample that could not be read after retries; names the sample id and the href."""

    def __init__(self, sample_id: str, href: str | None = None, cause: BaseException | None = None) -> None:
        if href is None:
            # DataLoader re-raises a worker's exception as ``type(message)``: keep the type.
            self.sample_id = self.href = None
            super().__init__(sample_id)
            return
        self.sample_id = sample_id
        self.href = href
        super().__init__(f"sample {sample_id!r}: could not read {href}: {cause}")



class _Counters:
    """Counters shared by the dataset and its DataLoader workers (shared memory, one int64 each).

    Workers get the same memory (through fork, or through the worker's spawn arguments), so the
    main process sees what its workers skipped, and persistent workers see ``set_epoch``. A copy
    pickled any other way gets a private snapshot.
    """

    def __init__(self, values: Sequence[int] | None = None) -> None:
        self._array = multiprocessing.Array("q", list(values or [0] * len(_COUNTERS)))

    def get(self, name: str) -> int:
        return int(self._array[_COUNTERS.index(name)])

    def set(self, name: str, value: int) -> None:
        self._array[_COUNTERS.index(name)] = value

    def add(self, **deltas: int) -> None:
        with self._array.get_lock():
            for name, delta in deltas.items():
                self._array[_COUNTERS.index(name)] += delta

    def snapshot(self) -> dict[str, int]:
        with self._array.get_lock():
            return {name: int(self._array[i]) for i, name in enumerate(_COUNTERS)}

    def __getstate__(self) -> dict[str, Any]:
        if multiprocessing.context.get_spawning_popen() is not None:
            return {"array": self._array}
        return {"values": [int(self._array[i]) for i in range(len(_COUNTERS))]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "array" in state:
            self._array = state["array"]
        else:
            self.__init__(state["values"])  # type: ignore[misc]


@dataclass(frozen=True)
class _Row:
    position: int
    sample_id: str
    layout: str
    hrefs: dict[str, list[str]]
    futures: dict[str, list[Future[Any]]]
    labels: list[str]


class BigEarthNetStream(IterableDataset):
    """Stream BigEarthNet samples of a search result or sample table into PyTorch.

    Sharded by ``torch.distributed`` rank (else ``rank``/``world_size``, else the ``RANK`` /
    ``WORLD_SIZE`` environment variables) and by DataLoader worker: each row is read exactly once
    per epoch across all of them, and every rank yields :func:`len` samples (``uneven="pad"``
    repeats a few samples, ``"drop"`` leaves fewer than ``world_size`` out). Call
    :meth:`set_epoch` before each epoch to reshuffle; :meth:`state_dict` /
    :meth:`load_state_dict` follow torchdata's ``StatefulDataLoader`` protocol.

    With ``on_error="skip"`` a sample that fails after retries is logged (id and href), left out
    and counted in :attr:`stats`; ranks may then yield different numbers of samples, so keep
    ``"raise"`` (the default) for DDP unless your loop tolerates that.
    """

    def __init__(
        self,
        source: Any,
        modalities: Sequence[Literal["s2", "s1"]] = ("s2", "s1"),
        bands: Sequence[str] | None = None,
        resample_to_10m: bool = False,
        resampling: Resampling = "bilinear",
        normalize: bool = True,
        nomenclature: Nomenclature = "19",
        class_order: str = "original",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        uneven: Uneven = "pad",
        rank: int | None = None,
        world_size: int | None = None,
        settings: StorageSettings | None = None,
        max_in_flight: int = 32,
        prefetch: int | None = None,
        on_error: OnError = "raise",
    ) -> None:
        """
        Args:
            source: a search result (``.sample_table()``) or a sample table (``bigearth_stac.samples``).
            modalities: which sensors to yield.
            bands: band names across modalities (``["B04", "B03", "B02", "VV"]``); ``None``: all, sensor order.
            resample_to_10m: upsample 20 m and 60 m bands to 120 x 120 and stack all S2 bands.
            resampling: ``"bilinear"`` (as torchgeo reads BigEarthNet) or ``"nearest"`` (pixel repeat).
            normalize: subtract the official per-band mean, divide by the standard deviation.
            nomenclature: ``"19"`` or ``"43"`` classes in ``label``.
            class_order: ``"original"`` (the paper's, torchgeo's) or ``"lex"`` (ConfigILM's default).
            transform: applied to each sample dict in the worker.
            shuffle, seed: the epoch's order is a permutation drawn from ``(seed, epoch)``.
            uneven: ``"pad"`` or ``"drop"`` to give every rank the same number of samples.
            rank, world_size: explicit sharding when torch.distributed is not initialised.
            settings: object storage settings (endpoint, credentials, retries).
            max_in_flight: whole-object GETs in flight per worker.
            prefetch: samples fetched ahead per worker (default: enough to keep the GETs busy, x2).
            on_error: ``"raise"`` a :class:`SampleError`, or ``"skip"`` and count the sample.
        """
        super().__init__()
        self._table = as_sample_table(source)
        if len(self._table) == 0:
            raise ValueError("the sample table is empty")
        if nomenclature not in ("19", "43"):
            raise ValueError(f"nomenclature must be '19' or '43', got {nomenclature!r}")
        if class_order not in CLASS_ORDERS:
            raise ValueError(f"unknown class order {class_order!r}; choose from {sorted(CLASS_ORDERS)}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if resampling not in ("bilinear", "nearest"):
            raise ValueError(f"resampling must be 'bilinear' or 'nearest', got {resampling!r}")
        per_rank(1, 1, uneven)  # validates the policy
        self.modalities: tuple[str, ...] = tuple(dict.fromkeys(modalities))
        self.bands: dict[str, tuple[str, ...]] = split_bands(bands, self.modalities)
        for m in self.modalities:
            lengths = self._table.column(f"{m}_assets").combine_chunks().value_lengths()
            if pa.compute.min(lengths).as_py() in (0, None):
                raise ValueError(f"modality {m!r} requested but some samples have no {m} assets")
        self.bands_by_resolution: dict[str, tuple[str, ...]] = {
            f"{r}m": tuple(b for b in self.bands.get("s2", ()) if BANDS[b].resolution == r)
            for r in (10, 20, 60)
            if any(BANDS[b].resolution == r for b in self.bands.get("s2", ()))
        }
        self.classes: tuple[str, ...] = CLASS_ORDERS[class_order][nomenclature]
        self.nomenclature = nomenclature
        self.resample_to_10m = resample_to_10m
        self.resampling = resampling
        self.normalize = normalize
        self.transform = transform
        self.shuffle = shuffle
        self.seed = seed
        self.uneven: Uneven = uneven
        self._rank, self._world = rank, world_size
        resolve_world(rank, world_size)  # fail early on inconsistent arguments
        self.settings = settings or StorageSettings.from_env()
        self.max_in_flight = max_in_flight
        self.on_error: OnError = on_error
        layouts = set(self._table.column("layout").to_pylist())
        self._plans: dict[tuple[str, str], BandPlan] = {
            (m, lay): band_plan(m, lay, self.bands[m])  # type: ignore[arg-type]
            for m in self.modalities
            for lay in layouts
        }
        objects = max(sum(self._plans[(m, lay)].requests for m in self.modalities) for lay in layouts)
        self.prefetch = prefetch if prefetch is not None else max(2, 2 * -(-max_in_flight // objects))
        if self.prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self._class_index = {c: i for i, c in enumerate(self.classes)}
        self._counters = _Counters()
        self._position = 0
        self._resume: int | None = None
        self._resume_shape: tuple[int, int, int, int] | None = None
        self._fetcher: Fetcher | None = None
        self.skipped_ids: list[str] = []

    # -- sizes, epochs, statistics -------------------------------------------------------------
    def __len__(self) -> int:
        """Samples this rank yields per epoch (before any skipped with ``on_error="skip"``)."""
        return per_rank(len(self._table), self._world_info()[1], self.uneven)

    @property
    def num_rows(self) -> int:
        """Rows of the sample table."""
        return len(self._table)

    @property
    def epoch(self) -> int:
        return self._counters.get("epoch")

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (a new permutation from the seed) from the next iteration on.

        Setting a different epoch forgets a position restored by :meth:`load_state_dict`; setting
        the restored epoch keeps it, so a resumed loop can call ``set_epoch`` as usual.
        """
        if epoch != self.epoch:
            self._resume = None
            self._position = 0
        self._counters.set("epoch", epoch)

    @property
    def stats(self) -> dict[str, int]:
        """Counts across this dataset and its DataLoader workers: yielded, skipped, requests, bytes, retries."""
        out = self._counters.snapshot()
        out.pop("epoch")
        return out

    # -- resumption (torchdata StatefulDataLoader protocol) -------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where this (worker's) iteration stands: epoch and position in its shard."""
        rank, world = self._world_info()
        worker, workers = self._worker_info()
        return {
            "epoch": self.epoch,
            "position": self._position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "num_rows": len(self._table),
            "shard": (rank, world, worker, workers),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration starts after the last sample yielded when ``state`` was taken."""
        if state.get("num_rows") != len(self._table) or state.get("seed") != self.seed or state.get("shuffle") != self.shuffle:
            raise ValueError(
                "state was saved for another dataset: "
                f"rows {state.get('num_rows')} vs {len(self._table)}, seed {state.get('seed')} vs {self.seed}, "
                f"shuffle {state.get('shuffle')} vs {self.shuffle}"
            )
        self._counters.set("epoch", int(state["epoch"]))
        self._position = int(state["position"])
        self._resume = self._position
        self._resume_shape = tuple(state["shard"])

    # -- sharding ----------------------------------------------------------------------------
    def _world_info(self) -> tuple[int, int]:
        return resolve_world(self._rank, self._world)

    @staticmethod
    def _worker_info() -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def shard_rows(self, epoch: int | None = None) -> np.ndarray:
        """Row numbers this rank and worker reads in ``epoch`` (default: the current one), in order."""
        rank, world = self._world_info()
        worker, workers = self._worker_info()
        order = epoch_order(len(self._table), self.seed, self.epoch if epoch is None else epoch, self.shuffle)
        return shard(order, rank, world, worker, workers, self.uneven)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fetcher"] = None
        if self._rank is None:
            # A spawned DataLoader worker has no process group: carry the rank over.
            try:
                import torch.distributed as dist

                if dist.is_available() and dist.is_initialized():
                    state["_rank"], state["_world"] = dist.get_rank(), dist.get_world_size()
            except ImportError:  # pragma: no cover
                pass
        return state

    # -- the loop ------------------------------------------------------------------------------
    def _get_fetcher(self) -> Fetcher:
        if self._fetcher is None:
            self._fetcher = Fetcher(self.settings, self.max_in_flight)
        return self._fetcher

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rows = self.shard_rows()
        start = 0
        if self._resume is not None:
            here = (*self._world_info(), *self._worker_info())
            if self._resume_shape is not None and tuple(self._resume_shape) != here:
                raise ValueError(
                    f"state was saved by (rank, world_size, worker, num_workers) = {tuple(self._resume_shape)}, "
                    f"resuming as {here}: resume with the same world size and number of workers"
                )
            start, self._resume = self._resume, None
        self._position = start
        fetcher = self._get_fetcher()
        before = (fetcher.requests, fetcher.bytes, fetcher.retries)
        window: deque[_Row] = deque()
        positions = iter(range(start, len(rows)))
        try:
            for pos in positions:
                window.append(self._submit(fetcher, pos, int(rows[pos])))
                if len(window) >= self.prefetch:
                    break
            while window:
                row = window.popleft()
                nxt = next(positions, None)
                if nxt is not None:
                    window.append(self._submit(fetcher, nxt, int(rows[nxt])))
                sample = self._finish(row)
                self._position = row.position + 1
                now = (fetcher.requests, fetcher.bytes, fetcher.retries)
                deltas = dict(zip(("requests", "bytes", "retries"), (a - b for a, b in zip(now, before, strict=True)), strict=True))
                before = now
                if sample is None:
                    self._counters.add(skipped=1, **deltas)
                    continue
                self._counters.add(yielded=1, **deltas)
                yield sample
        finally:
            for row in window:
                for futures in row.futures.values():
                    for f in futures:
                        f.cancel()
            fetcher.close()

    def _submit(self, fetcher: Fetcher, position: int, index: int) -> _Row:
        table = self._table
        layout = table.column("layout")[index].as_py()
        hrefs: dict[str, list[str]] = {}
        futures: dict[str, list[Future[Any]]] = {}
        for m in self.modalities:
            plan = self._plans[(m, layout)]
            assets = table.column(f"{m}_assets")[index].as_py()
            hrefs[m] = [assets[a] for a in plan.assets]
            futures[m] = [fetcher.submit(h, decode) for h in hrefs[m]]
        labels = table.column(f"labels_{self.nomenclature}")[index].as_py()
        return _Row(position, table.column("id")[index].as_py(), layout, hrefs, futures, labels)

    def _finish(self, row: _Row) -> dict[str, Any] | None:
        decoded: dict[str, list[np.ndarray]] = {}
        for m in self.modalities:
            try:
                decoded[m] = [f.result() for f in row.futures[m]]
            except FetchError as exc:
                err = SampleError(row.sample_id, exc.href, exc.cause)
                if self.on_error == "raise":
                    raise err from exc
                log.warning("skipping %s", err)
                if len(self.skipped_ids) < 10_000:
                    self.skipped_ids.append(row.sample_id)
                return None
        sample: dict[str, Any] = {}
        for m in self.modalities:
            plan = self._plans[(m, row.layout)]
            arrays = plan.select(decoded[m])
            sample[m] = self._s2(arrays, plan.bands) if m == "s2" else self._stack(arrays, plan.bands)
        label = torch.zeros(len(self.classes), dtype=torch.float32)
        try:
            label[[self._class_index[name] for name in row.labels]] = 1.0
        except KeyError as exc:
            raise ValueError(f"sample {row.sample_id!r}: unknown {self.nomenclature}-class label {exc}") from None
        sample["label"] = label
        sample["id"] = row.sample_id
        return self.transform(sample) if self.transform is not None else sample

    # -- pixels -> tensors ---------------------------------------------------------------------
    def _stack(self, arrays: list[np.ndarray], bands: Sequence[str]) -> torch.Tensor:
        """Same-size bands -> float32 (k, h, w), normalised if asked."""
        x = torch.from_numpy(np.stack(arrays).astype(np.float32, copy=False))
        if self.normalize:
            mean = torch.tensor([BAND_STATS[b][0] for b in bands], dtype=torch.float32)[:, None, None]
            std = torch.tensor([BAND_STATS[b][1] for b in bands], dtype=torch.float32)[:, None, None]
            x = (x - mean) / std
        return x

    def _s2(self, arrays: list[np.ndarray], bands: Sequence[str]) -> torch.Tensor | dict[str, torch.Tensor]:
        by_res: dict[str, list[int]] = {}
        for i, b in sorted(enumerate(bands), key=lambda ib: BANDS[ib[1]].resolution):
            by_res.setdefault(f"{BANDS[b].resolution}m", []).append(i)
        groups = {r: self._stack([arrays[i] for i in idx], [bands[i] for i in idx]) for r, idx in by_res.items()}
        if not self.resample_to_10m:
            return groups
        out = torch.empty((len(bands), _PATCH_PX, _PATCH_PX), dtype=torch.float32)
        for r, idx in by_res.items():
            x = groups[r]
            if x.shape[-1] != _PATCH_PX:
                if self.resampling == "nearest":
                    f = _PATCH_PX // x.shape[-1]
                    x = x.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
                else:
                    x = F.interpolate(x[None], size=(_PATCH_PX, _PATCH_PX), mode="bilinear", align_corners=False)[0]
            out[idx] = x
        return out
