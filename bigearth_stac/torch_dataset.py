"""A search result as a PyTorch ``IterableDataset`` that streams straight from object storage.

Pipeline per DataLoader worker (DESIGN.md #3, #5, #6, #7)::

    sample table (Arrow) -> epoch order -> this rank's and worker's shard
      -> Fetcher: whole-object GETs, ``max_in_flight`` at a time, retried
      -> decode (tifffile + imagecodecs for our COGs, GDAL otherwise) on the fetch threads
      -> band selection, normalisation, optional resampling -> torch tensors + multi-hot label

Memory per worker is the sample table plus a window of ``prefetch`` samples, whatever the size
of the dataset. The loop never touches pystac.

Options are one frozen :class:`StreamOptions`; ``BigEarthNetStream(source, **kwargs)`` and
``result.to_torch(**kwargs)`` build it from keyword arguments. By default a stream yields the
modalities every sample of its source carries: an S2 search streams S2, an S1 search S1, a
``modality="pair"`` search both.

Every decoded object is checked against what the band plan says it holds (bands, height,
width, dtype; :func:`bigearth_stac.bandplan.asset_expectations`) on its header, on the fetch
threads. A sample that fails (a read, a decode, a shape, a label outside the nomenclature) is a
:class:`SampleError` naming its id (and the href), or with ``on_error="skip"`` is left out,
counted in :attr:`BigEarthNetStream.stats` and listed in :attr:`BigEarthNetStream.skipped_ids`,
across DataLoader workers.

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
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

from bigearth_stac.bandplan import BandPlan, band_plan, split_bands
from bigearth_stac.fetch import Fetcher, FetchError
from bigearth_stac.samples import as_sample_table, scope_of
from bigearth_stac.settings import StorageSettings
from bigearth_stac.sharding import Uneven, epoch_order, per_rank, resolve_world, shard
from bigearth_stac.vocab import (
    BAND_STATS,
    BANDS,
    CLASS_ORDERS,
    S1_BAND_NAMES,
    S2_BAND_NAMES,
    Modality,
    Nomenclature,
)

log = logging.getLogger(__name__)

__all__ = ["BigEarthNetStream", "SampleError", "StreamOptions", "as_sample_table"]

Resampling = Literal["bilinear", "nearest"]
OnError = Literal["raise", "skip"]
_PATCH_PX = 120
_MODALITIES: tuple[Modality, ...] = ("s2", "s1")
_BANDS_OF: dict[str, tuple[str, ...]] = {"s2": S2_BAND_NAMES, "s1": S1_BAND_NAMES}
# "recorded": how many skipped rows are listed (at most _MAX_SKIPPED_IDS); not a statistic.
_COUNTERS = ("epoch", "yielded", "skipped", "requests", "bytes", "retries", "recorded")
_MAX_SKIPPED_IDS = 10_000


class SampleError(RuntimeError):
    """A sample that could not be used: names the sample id and, for a failed read, the href.

    The cause is a read that failed after retries, bytes that do not decode, a COG whose bands,
    size or dtype differ from what its asset must hold, or labels outside the nomenclature.
    """

    def __init__(self, sample_id: str, href: str | None = None, cause: BaseException | str | None = None) -> None:
        if href is None and cause is None:
            # DataLoader re-raises a worker's exception as ``type(message)``: keep the type.
            self.sample_id = self.href = None
            super().__init__(sample_id)
            return
        self.sample_id = sample_id
        self.href = href
        what = f"could not read {href}" if href is not None else "bad sample"
        super().__init__(f"sample {sample_id!r}: {what}: {cause}")


class _Counters:
    """Counters and skipped rows shared by the dataset and its DataLoader workers.

    Shared memory: one int64 per counter and the table rows of the first
    ``_MAX_SKIPPED_IDS`` skipped samples (80 KB). Workers get the same memory (through fork, or
    through the worker's spawn arguments), so the main process sees what its workers yielded and
    skipped, and persistent workers see ``set_epoch``. A copy pickled any other way gets a
    private snapshot. The lock comes from the spawn context: a lock made in the fork context
    (Linux's default) refuses to travel to ``multiprocessing_context="spawn"`` or
    ``"forkserver"`` workers, while a spawn-context one also works in forked workers.
    """

    def __init__(self, values: Sequence[int] | None = None, rows: Sequence[int] = ()) -> None:
        lock = multiprocessing.get_context("spawn").RLock()
        self._array = multiprocessing.Array("q", list(values or [0] * len(_COUNTERS)), lock=lock)
        self._rows = multiprocessing.Array("q", _MAX_SKIPPED_IDS, lock=False)
        self._rows[: len(rows)] = list(rows)

    def get(self, name: str) -> int:
        return int(self._array[_COUNTERS.index(name)])

    def set(self, name: str, value: int) -> None:
        self._array[_COUNTERS.index(name)] = value

    def add(self, **deltas: int) -> None:
        with self._array.get_lock():
            for name, delta in deltas.items():
                self._array[_COUNTERS.index(name)] += delta

    def skip(self, row: int, **deltas: int) -> None:
        """Count a skipped sample (table row ``row``) and list it while there is room."""
        recorded = _COUNTERS.index("recorded")
        with self._array.get_lock():
            for name, delta in deltas.items():
                self._array[_COUNTERS.index(name)] += delta
            self._array[_COUNTERS.index("skipped")] += 1
            k = self._array[recorded]
            if k < _MAX_SKIPPED_IDS:
                self._rows[k] = row
                self._array[recorded] = k + 1

    def skipped_rows(self) -> list[int]:
        with self._array.get_lock():
            return list(self._rows[: self._array[_COUNTERS.index("recorded")]])

    def snapshot(self) -> dict[str, int]:
        with self._array.get_lock():
            return {name: int(self._array[i]) for i, name in enumerate(_COUNTERS)}

    def __getstate__(self) -> dict[str, Any]:
        if multiprocessing.context.get_spawning_popen() is not None:
            return {"array": self._array, "rows": self._rows}
        return {"values": [int(v) for v in self._array[:]], "skipped_rows": self.skipped_rows()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "array" in state:
            self._array, self._rows = state["array"], state["rows"]
        else:
            self.__init__(state["values"], state["skipped_rows"])  # type: ignore[misc]


@dataclass(frozen=True)
class StreamOptions:
    """How a :class:`BigEarthNetStream` selects, reads, shards and shapes its samples.

    ``BigEarthNetStream(source, **kwargs)`` and ``result.to_torch(**kwargs)`` build one from
    their keyword arguments (``BigEarthNetStream(source, options, **changes)`` starts from
    ``options``). Sequences are stored as tuples; every value is checked here.
    """

    modalities: tuple[Modality, ...] | None = None
    """Sensors a sample holds: ``("s2",)``, ``("s1",)`` or ``("s2", "s1")`` (``"pair"`` is
    short for both). ``None``: the modalities of ``bands`` when given, else every modality all
    samples of the source carry (an S2 search streams S2, an S1 search S1, a
    ``modality="pair"`` search both). Asking for one the source lacks is a ``ValueError``."""
    bands: tuple[str, ...] | None = None
    """Band names across modalities (``("B04", "B03", "B02", "VV")``), in output order; ``None``:
    all bands of each modality, in sensor order. Only the objects holding them are fetched."""
    resample_to_10m: bool = False
    """``True``: upsample 20 m and 60 m bands to 120 x 120 and stack all S2 bands,
    ``(C, 120, 120)``. ``False``: a dict of native resolutions ``{"10m": (k, 120, 120),
    "20m": (k, 60, 60), "60m": (k, 20, 20)}``."""
    resampling: Resampling = "bilinear"
    """Upsampling for ``resample_to_10m``: ``"bilinear"`` (as torchgeo reads BigEarthNet) or
    ``"nearest"`` (pixel repeat)."""
    normalize: bool = True
    """Subtract the official per-band mean and divide by the standard deviation."""
    nomenclature: Nomenclature = "19"
    """``"19"`` or ``"43"``: the classes of the multi-hot ``label``."""
    class_order: str = "original"
    """Order of the classes in ``label``: ``"original"`` (the paper's, torchgeo's) or ``"lex"``
    (ConfigILM's default)."""
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """Applied to each sample dict in the worker (must pickle for spawned workers)."""
    shuffle: bool = True
    """Read each epoch in a permutation drawn from ``(seed, epoch)``; ``False``: table order."""
    seed: int = 0
    """Seed of the epoch permutations; every rank and worker must use the same one."""
    uneven: Uneven = "pad"
    """How ranks get equal sample counts: ``"pad"`` repeats a few samples, ``"drop"`` leaves
    fewer than ``world_size`` out."""
    rank: int | None = None
    """This process's rank, when ``torch.distributed`` is not initialised (give ``world_size``
    too); ``None``: from torch.distributed, else the ``RANK`` environment variable, else 0."""
    world_size: int | None = None
    """Number of ranks, with ``rank``; ``None``: from torch.distributed, else ``WORLD_SIZE``, else 1."""
    settings: StorageSettings | None = None
    """Object storage settings (endpoint, credentials, retries); ``None``:
    ``StorageSettings.from_env()`` when the stream is built."""
    max_in_flight: int = 32
    """Whole-object GETs in flight per worker (the fetch threads)."""
    prefetch: int | None = None
    """Samples fetched ahead per worker; ``None``: enough to keep the GETs busy, times 2."""
    on_error: OnError = "raise"
    """A sample that fails: ``"raise"`` a :class:`SampleError`, or ``"skip"``: log it, leave it
    out, count it in ``stats`` and list it in ``skipped_ids``."""

    def __post_init__(self) -> None:
        mods = self.modalities
        if mods is not None:
            mods = _MODALITIES if mods == "pair" else (mods,) if isinstance(mods, str) else tuple(dict.fromkeys(mods))
            unknown = [m for m in mods if m not in _MODALITIES]
            if unknown or not mods:
                raise ValueError(f"unknown modalities {list(mods)}; choose from 's2', 's1' (or 'pair' for both)")
            object.__setattr__(self, "modalities", mods)
        if self.bands is not None:
            bands = (self.bands,) if isinstance(self.bands, str) else tuple(self.bands)
            implied = [m for m in _MODALITIES if any(b in _BANDS_OF[m] for b in bands)]
            split_bands(bands, self.modalities or implied or _MODALITIES)  # raises on unknown or stray bands
            object.__setattr__(self, "bands", bands)
        if self.nomenclature not in ("19", "43"):
            raise ValueError(f"nomenclature must be '19' or '43', got {self.nomenclature!r}")
        if self.class_order not in CLASS_ORDERS:
            raise ValueError(f"unknown class order {self.class_order!r}; choose from {sorted(CLASS_ORDERS)}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.resampling not in ("bilinear", "nearest"):
            raise ValueError(f"resampling must be 'bilinear' or 'nearest', got {self.resampling!r}")
        per_rank(1, 1, self.uneven)  # validates the policy
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if self.prefetch is not None and self.prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {self.prefetch}")
        if self.transform is not None and not callable(self.transform):
            raise TypeError(f"transform must be callable, got {type(self.transform).__name__}")


_OPTION_NAMES = frozenset(f.name for f in fields(StreamOptions))


def _options(options: StreamOptions | None, kwargs: Mapping[str, Any]) -> StreamOptions:
    """``options`` (or the defaults) with the keyword arguments applied."""
    if options is not None and not isinstance(options, StreamOptions):
        raise TypeError(
            f"the argument after the source must be a StreamOptions, got {type(options).__name__}: "
            "pass options by keyword (modalities=..., bands=...)"
        )
    unknown = sorted(set(kwargs) - _OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; StreamOptions has {sorted(_OPTION_NAMES)}")
    base = options if options is not None else StreamOptions()
    return replace(base, **kwargs) if kwargs else base


def _modalities(table: pa.Table, opts: StreamOptions) -> tuple[Modality, ...]:
    """The modalities to stream: as asked (or as the bands imply), else all every sample carries.

    Asking for a modality some samples lack is a ``ValueError`` naming it and those samples.
    """
    n = len(table)
    carried = {m: pc.list_value_length(table.column(f"{m}_assets")).fill_null(0) for m in _MODALITIES}
    present = {m: int(pc.sum(pc.greater(lengths, 0)).as_py() or 0) for m, lengths in carried.items()}
    asked = opts.modalities
    if asked is None and opts.bands is not None:
        asked = tuple(m for m in _MODALITIES if any(b in _BANDS_OF[m] for b in opts.bands))
    if asked is None:
        full = tuple(m for m in _MODALITIES if present[m] == n)
        if not full:
            raise ValueError(
                f"no modality is carried by every sample: s2 assets in {present['s2']} of {n} samples, "
                f"s1 assets in {present['s1']}; pass modalities=(...) and a table whose samples all have them"
            )
        for m in _MODALITIES:
            if 0 < present[m] < n:
                log.warning("streaming %s: only %d of %d samples carry %s assets, so %s is left out",
                            "+".join(full), present[m], n, m, m)
        return full
    for m in asked:
        if present[m] == n:
            continue
        holds = "+".join(o for o in _MODALITIES if present[o]) or "nothing"
        if present[m] == 0:
            raise ValueError(
                f"modality {m!r} requested but the source carries no {m} assets (its samples hold {holds}); "
                "stream what it holds, or search with modality='pair' for samples with both S2 and S1"
            )
        lacking = table.filter(pc.equal(carried[m], 0)).column("id").slice(0, 5).to_pylist()
        raise ValueError(f"modality {m!r} requested but {n - present[m]} of {n} samples have no {m} assets "
                         f"(e.g. {', '.join(map(repr, lacking))})")
    return asked


def _check_assets(table: pa.Table, plans: Mapping[tuple[str, str], BandPlan]) -> None:
    """Every row has the asset count of its layout and no null href (column-wise, once)."""
    if table.column("id").null_count:
        raise ValueError(f"{table.column('id').null_count} samples have no id")
    layout = table.column("layout")
    for (m, lay), plan in plans.items():
        column = table.column(f"{m}_assets")
        wrong = pc.and_(pc.equal(layout, lay), pc.not_equal(pc.list_value_length(column).fill_null(0), plan.asset_count))
        if pc.any(wrong).as_py():
            ids = table.filter(wrong).column("id").slice(0, 5).to_pylist()
            raise ValueError(f"{pc.sum(wrong).as_py()} of {len(table)} samples do not have the {plan.asset_count} "
                             f"{m} assets of the {lay} layout (e.g. {', '.join(map(repr, ids))})")
    for m in {m for m, _ in plans}:
        column = table.column(f"{m}_assets").combine_chunks()
        flat = pc.list_flatten(column)
        if flat.null_count:
            rows = pc.unique(pc.list_parent_indices(column).filter(pc.is_null(flat)))
            ids = table.column("id").take(rows).slice(0, 5).to_pylist()
            raise ValueError(f"null {m} href(s) in samples {', '.join(map(repr, ids))}")


@dataclass(frozen=True)
class _Group:
    """Bands of one resolution in a modality's output: positions, normalisation."""

    key: str
    positions: tuple[int, ...]
    mean: torch.Tensor | None
    std: torch.Tensor | None


def _groups(modality: str, bands: Sequence[str], normalize: bool) -> tuple[_Group, ...]:
    """Requested bands of ``modality`` by resolution (10, 20, 60 m), each with its statistics."""
    out = []
    for res in sorted({BANDS[b].resolution for b in bands}):
        positions = tuple(i for i, b in enumerate(bands) if BANDS[b].resolution == res)
        mean = std = None
        if normalize:
            mean = torch.tensor([BAND_STATS[bands[i]][0] for i in positions], dtype=torch.float32)[:, None, None]
            std = torch.tensor([BAND_STATS[bands[i]][1] for i in positions], dtype=torch.float32)[:, None, None]
        out.append(_Group(f"{res}m", positions, mean, std))
    if modality != "s2" and len(out) > 1:  # pragma: no cover - S1 bands share one resolution
        raise ValueError(f"{modality} bands of several resolutions: {bands}")
    return tuple(out)


@dataclass(frozen=True)
class _Row:
    position: int
    index: int
    sample_id: str
    layout: str
    hrefs: dict[str, list[str]]
    futures: dict[str, list[Future[Any]]]
    labels: list[str] | None


def _from_options(name: str, doc: str) -> Any:
    return property(lambda self: getattr(self.options, name), doc=doc)


class BigEarthNetStream(IterableDataset):
    """Stream BigEarthNet samples of a search result or sample table into PyTorch.

    ``BigEarthNetStream(source, options=None, **kwargs)``: ``source`` is a search result
    (``.sample_table()``) or a sample table (:mod:`bigearth_stac.samples`); the options are a
    :class:`StreamOptions`, or its fields as keyword arguments (which override ``options``).

    Sharded by ``torch.distributed`` rank (else ``rank``/``world_size``, else the ``RANK`` /
    ``WORLD_SIZE`` environment variables) and by DataLoader worker: each row is read exactly once
    per epoch across all of them, and every rank yields :func:`len` samples (``uneven="pad"``
    repeats a few samples, ``"drop"`` leaves fewer than ``world_size`` out). Call
    :meth:`set_epoch` before each epoch to reshuffle; :meth:`state_dict` /
    :meth:`load_state_dict` follow torchdata's ``StatefulDataLoader`` protocol.

    With ``on_error="skip"`` a sample that fails is logged (id and href), left out, counted in
    :attr:`stats` and listed in :attr:`skipped_ids`; ranks may then yield different numbers of
    samples, so keep ``"raise"`` (the default) for DDP unless your loop tolerates that.

    Attributes: ``options`` (the :class:`StreamOptions` in effect, with modalities, settings and
    prefetch resolved; its fields are also attributes of the stream), ``modalities``, ``bands``
    (requested bands per modality, in output order), ``bands_by_resolution`` (requested S2 bands
    per native resolution: the keys of ``sample["s2"]`` when not resampled) and ``classes`` (the
    class names of ``label``, in order).
    """

    def __init__(self, source: Any, options: StreamOptions | None = None, **kwargs: Any) -> None:
        super().__init__()
        opts = _options(options, kwargs)
        self._table = as_sample_table(source)
        self._scope = scope_of(self._table)  # the catalog's roots: the fetcher reads nothing outside
        if len(self._table) == 0:
            raise ValueError("the sample table is empty")
        self.modalities: tuple[Modality, ...] = _modalities(self._table, opts)
        self.bands: dict[str, tuple[str, ...]] = split_bands(opts.bands, self.modalities)
        self.bands_by_resolution: dict[str, tuple[str, ...]] = {
            f"{r}m": tuple(b for b in self.bands.get("s2", ()) if BANDS[b].resolution == r)
            for r in (10, 20, 60)
            if any(BANDS[b].resolution == r for b in self.bands.get("s2", ()))
        }
        self.classes: tuple[str, ...] = CLASS_ORDERS[opts.class_order][opts.nomenclature]
        resolve_world(opts.rank, opts.world_size)  # fail early on inconsistent arguments
        layouts = pc.unique(self._table.column("layout")).to_pylist()
        self._plans: dict[tuple[str, str], BandPlan] = {
            (m, lay): band_plan(m, lay, self.bands[m]) for m in self.modalities for lay in layouts
        }
        _check_assets(self._table, self._plans)
        # Per plan, the decoder of each fetched asset: decode, checking bands, size and dtype.
        self._decoders = {key: tuple(e.decode for e in plan.expected) for key, plan in self._plans.items()}
        self._groups = {m: _groups(m, self.bands[m], opts.normalize) for m in self.modalities}
        objects = max(sum(self._plans[(m, lay)].requests for m in self.modalities) for lay in layouts)
        self.options: StreamOptions = replace(
            opts,
            modalities=self.modalities,
            settings=opts.settings or StorageSettings.from_env(),
            prefetch=opts.prefetch if opts.prefetch is not None else max(2, 2 * -(-opts.max_in_flight // objects)),
        )
        self._class_index = {c: i for i, c in enumerate(self.classes)}
        self._counters = _Counters()
        self._position = 0
        self._resume: int | None = None
        self._resume_shape: tuple[int, int, int, int] | None = None
        self._fetcher: Fetcher | None = None

    resample_to_10m = _from_options("resample_to_10m", "``options.resample_to_10m``.")
    resampling = _from_options("resampling", "``options.resampling``.")
    normalize = _from_options("normalize", "``options.normalize``.")
    nomenclature = _from_options("nomenclature", "``options.nomenclature``.")
    transform = _from_options("transform", "``options.transform``.")
    shuffle = _from_options("shuffle", "``options.shuffle``.")
    seed = _from_options("seed", "``options.seed``.")
    uneven = _from_options("uneven", "``options.uneven``.")
    settings = _from_options("settings", "``options.settings`` (resolved from the environment if not given).")
    max_in_flight = _from_options("max_in_flight", "``options.max_in_flight``.")
    prefetch = _from_options("prefetch", "``options.prefetch`` (resolved).")
    on_error = _from_options("on_error", "``options.on_error``.")

    # -- sizes, epochs, statistics -------------------------------------------------------------
    def __len__(self) -> int:
        """Samples this rank yields per epoch (before any skipped with ``on_error="skip"``)."""
        return per_rank(len(self._table), self._world_info()[1], self.options.uneven)

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
        out.pop("recorded")
        return out

    @property
    def skipped_ids(self) -> list[str]:
        """Ids of the samples skipped with ``on_error="skip"``, across DataLoader workers, in the
        order they were skipped (the first 10,000; a sample skipped in two epochs appears twice)."""
        rows = self._counters.skipped_rows()
        return self._table.column("id").take(pa.array(rows, pa.int64())).to_pylist() if rows else []

    # -- resumption (torchdata StatefulDataLoader protocol) -------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where this (worker's) iteration stands: epoch and position in its shard."""
        rank, world = self._world_info()
        worker, workers = self._worker_info()
        return {
            "epoch": self.epoch,
            "position": self._position,
            "seed": self.options.seed,
            "shuffle": self.options.shuffle,
            "num_rows": len(self._table),
            "shard": (rank, world, worker, workers),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration starts after the last sample yielded when ``state`` was taken."""
        seed, shuffle = self.options.seed, self.options.shuffle
        if state.get("num_rows") != len(self._table) or state.get("seed") != seed or state.get("shuffle") != shuffle:
            raise ValueError(
                "state was saved for another dataset: "
                f"rows {state.get('num_rows')} vs {len(self._table)}, seed {state.get('seed')} vs {seed}, "
                f"shuffle {state.get('shuffle')} vs {shuffle}"
            )
        self._counters.set("epoch", int(state["epoch"]))
        self._position = int(state["position"])
        self._resume = self._position
        self._resume_shape = tuple(state["shard"])

    # -- sharding ----------------------------------------------------------------------------
    def _world_info(self) -> tuple[int, int]:
        return resolve_world(self.options.rank, self.options.world_size)

    @staticmethod
    def _worker_info() -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def shard_rows(self, epoch: int | None = None) -> np.ndarray:
        """Row numbers this rank and worker reads in ``epoch`` (default: the current one), in order."""
        rank, world = self._world_info()
        worker, workers = self._worker_info()
        opts = self.options
        order = epoch_order(len(self._table), opts.seed, self.epoch if epoch is None else epoch, opts.shuffle)
        return shard(order, rank, world, worker, workers, opts.uneven)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fetcher"] = None
        if self.options.rank is None:
            # A spawned DataLoader worker has no process group: carry the rank over.
            try:
                import torch.distributed as dist

                if dist.is_available() and dist.is_initialized():
                    state["options"] = replace(self.options, rank=dist.get_rank(), world_size=dist.get_world_size())
            except ImportError:  # pragma: no cover
                pass
        return state

    # -- the loop ------------------------------------------------------------------------------
    def _get_fetcher(self) -> Fetcher:
        if self._fetcher is None:
            self._fetcher = Fetcher(self.options.settings, self.options.max_in_flight, scope=self._scope)
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
        prefetch = self.options.prefetch or 1  # resolved in __init__
        before = (fetcher.requests, fetcher.bytes, fetcher.retries)
        window: deque[_Row] = deque()
        positions = iter(range(start, len(rows)))
        try:
            for pos in positions:
                window.append(self._submit(fetcher, pos, int(rows[pos])))
                if len(window) >= prefetch:
                    break
            while window:
                row = window.popleft()
                nxt = next(positions, None)
                if nxt is not None:
                    window.append(self._submit(fetcher, nxt, int(rows[nxt])))
                sample = self._finish(row)
                self._position = row.position + 1
                now = (fetcher.requests, fetcher.bytes, fetcher.retries)
                requests, nbytes, retries = (a - b for a, b in zip(now, before, strict=True))
                before = now
                if sample is None:
                    self._counters.skip(row.index, requests=requests, bytes=nbytes, retries=retries)
                    continue
                self._counters.add(yielded=1, requests=requests, bytes=nbytes, retries=retries)
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
            futures[m] = [fetcher.submit(h, dec) for h, dec in zip(hrefs[m], self._decoders[(m, layout)], strict=True)]
        labels = table.column(f"labels_{self.options.nomenclature}")[index].as_py()
        return _Row(position, index, table.column("id")[index].as_py(), layout, hrefs, futures, labels)

    def _fail(self, error: SampleError, cause: BaseException | None = None) -> None:
        """Raise ``error`` (``on_error="raise"``) or log it; the caller then skips the sample."""
        if self.options.on_error == "raise":
            raise error from cause
        log.warning("skipping %s", error)

    def _finish(self, row: _Row) -> dict[str, Any] | None:
        decoded: dict[str, list[np.ndarray]] = {}
        for m in self.modalities:
            try:
                # Each array was checked against its asset's bands, size and dtype on decode.
                decoded[m] = [f.result() for f in row.futures[m]]
            except FetchError as exc:
                self._fail(SampleError(row.sample_id, exc.href, exc.cause), exc)
                return None
        if row.labels is None:
            self._fail(SampleError(row.sample_id, None, f"no {self.options.nomenclature}-class labels (null)"))
            return None
        try:
            hot = [self._class_index[name] for name in row.labels]
        except KeyError as exc:
            self._fail(SampleError(row.sample_id, None, f"unknown {self.options.nomenclature}-class label {exc}"))
            return None
        sample: dict[str, Any] = {}
        for m in self.modalities:
            arrays = self._plans[(m, row.layout)].select(decoded[m])
            sample[m] = self._s2(arrays) if m == "s2" else self._stack(arrays, self._groups[m][0])
        label = torch.zeros(len(self.classes), dtype=torch.float32)
        label[hot] = 1.0
        sample["label"] = label
        sample["id"] = row.sample_id
        transform = self.options.transform
        return transform(sample) if transform is not None else sample

    # -- pixels -> tensors ---------------------------------------------------------------------
    @staticmethod
    def _stack(arrays: Sequence[np.ndarray], group: _Group) -> torch.Tensor:
        """Same-size bands -> float32 (k, h, w), normalised if asked."""
        x = torch.from_numpy(np.stack(arrays, dtype=np.float32))
        if group.mean is not None and group.std is not None:
            x.sub_(group.mean).div_(group.std)
        return x

    def _s2(self, arrays: list[np.ndarray]) -> torch.Tensor | dict[str, torch.Tensor]:
        groups = self._groups["s2"]
        stacked = {g.key: self._stack([arrays[i] for i in g.positions], g) for g in groups}
        if not self.options.resample_to_10m:
            return stacked
        out = torch.empty((len(arrays), _PATCH_PX, _PATCH_PX), dtype=torch.float32)
        nearest = self.options.resampling == "nearest"
        for g in groups:
            x = stacked[g.key]
            if x.shape[-1] != _PATCH_PX:
                if nearest:
                    f = _PATCH_PX // x.shape[-1]
                    x = x.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
                else:
                    x = F.interpolate(x[None], size=(_PATCH_PX, _PATCH_PX), mode="bilinear", align_corners=False)[0]
            out[list(g.positions)] = x
        return out
