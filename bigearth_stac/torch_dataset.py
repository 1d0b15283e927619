"""A search result as a PyTorch ``IterableDataset`` that streams straight from object storage.

Pipeline per DataLoader worker (DESIGN.md #3, #5, #6, #7)::

    sample table (Arrow) -> epoch order -> this rank's and worker's shard
      -> Fetcher: whole-object GETs, ``max_in_flight`` at a time, retried
      -> on ``decode_threads`` threads: decode (tifffile + imagecodecs for our COGs, GDAL
         otherwise), band selection and normalisation, written straight into the sample's (or
         the batch's) preallocated float32 tensors
      -> in the loop: optional resampling, multi-hot label, the sample dict (or batch)

The loop's own work per sample is small (no stacking, no conversion, no per-sample constants:
the per-band mean and standard deviation are prepared once), so a worker's time goes to
decoding. Memory per worker is the sample table plus a window of ``prefetch`` samples, whatever
the size of the dataset. The loop never touches pystac.

Threads and processes: each process (the main one with ``num_workers=0``, else each DataLoader
worker) decodes on ``decode_threads`` threads, by default its share of the cores (the cores
divided by the DataLoader's workers), while ``max_in_flight`` GETs wait on the network. More
decoding threads than cores only add GIL hand-offs; DataLoader workers already run torch with one
intra-op thread, and the decode path uses numpy and imagecodecs, not torch.

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
``"mask"``
    only with ``mask="19"`` or ``"43"`` (BigEarthNet v2.0): int64 ``(120, 120)``, the S2 item's
    reference map on the grid of the 10 m bands, its CLC codes mapped through the official table
    to class indices of :attr:`BigEarthNetStream.mask_classes` (the named class order); nodata
    and, for ``"19"``, the 11 classes without a 19-class counterpart are ``ignore_index``.
``"id"``
    the sample id (the S2 patch name for pairs).

``batch_size=B`` yields whole batches instead, decoded straight into one tensor per key with a
leading batch axis (``"id"`` a list): exactly the batches ``DataLoader(stream, batch_size=B)``
forms from single samples, worker by worker, with a shorter last batch per worker. Use it with
``DataLoader(stream, batch_size=None)``; it saves the collate copy.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.context
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

from bigearth_stac.bandplan import BandPlan, MaskPlan, band_plan, mask_plan, split_bands
from bigearth_stac.decode import Expected, decode_pixels
from bigearth_stac.fetch import Fetcher, FetchError, available_cores
from bigearth_stac.samples import as_sample_table, scope_of
from bigearth_stac.settings import StorageSettings
from bigearth_stac.sharding import Uneven, epoch_order, per_rank, resolve_world, shard
from bigearth_stac.vocab import (
    BAND_STATS,
    BAND_STATS_BY_RELEASE,
    BANDS,
    CLASS_ORDERS,
    RELEASE_V1,
    RELEASE_V2,
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
# Rows of the sample table turned into Python values at a time (ids, hrefs, labels).
_ROW_BLOCK = 256


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
    """Whole-object GETs in flight per worker (threads waiting on remote objects)."""
    decode_threads: int | None = None
    """Threads per worker that decode, select bands and normalise (and read local files);
    ``0``: do that on the iterating thread itself, only the remote GETs running ahead.
    ``None``: this process's share of the cores (the cores divided by the DataLoader's
    workers), and ``0`` in a DataLoader worker whose share is one core or less."""
    batch_size: int | None = None
    """Yield whole batches of this many samples, decoded straight into preallocated batch
    tensors, for ``DataLoader(stream, batch_size=None)``: the same batches that
    ``DataLoader(stream, batch_size=batch_size)`` would collate from single samples (a
    shorter last batch per worker). ``None``: yield single samples."""
    prefetch: int | None = None
    """Samples fetched ahead per worker; ``None``: enough to keep the GETs busy, times 2."""
    on_error: OnError = "raise"
    """A sample that fails: ``"raise"`` a :class:`SampleError`, or ``"skip"``: log it, leave it
    out, count it in ``stats`` and list it in ``skipped_ids``."""
    mask: Nomenclature | None = None
    """BigEarthNet v2.0: ``"19"`` or ``"43"`` adds ``"mask"`` to each sample, the reference map as
    int64 ``(120, 120)`` class indices of that nomenclature in ``class_order`` (one more GET per
    sample); ``None``: no mask. A source without reference maps (v1.0, S1 searches, a v2 catalog
    built without maps) is a ``ValueError``."""
    ignore_index: int = 255
    """The mask's value for nodata pixels and, with ``mask="19"``, for the classes without a
    19-class counterpart; not a class index (``CrossEntropyLoss(ignore_index=...)``)."""

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
        if self.decode_threads is not None and self.decode_threads < 0:
            raise ValueError(f"decode_threads must be >= 0, got {self.decode_threads}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.batch_size is not None and self.transform is not None:
            raise ValueError("transform applies to single samples: with batch_size, transform the batches "
                             "in the training loop (or leave batch_size=None)")
        if self.transform is not None and not callable(self.transform):
            raise TypeError(f"transform must be callable, got {type(self.transform).__name__}")
        if self.mask is not None:
            mask = str(self.mask) if isinstance(self.mask, (str, int)) and not isinstance(self.mask, bool) else None
            if mask not in ("19", "43"):
                raise ValueError(f"mask must be None, '19' or '43', got {self.mask!r}")
            object.__setattr__(self, "mask", mask)
            mask_plan(mask, self.class_order, self.ignore_index)  # checks ignore_index against the classes
        elif isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, int):
            raise ValueError(f"ignore_index must be an integer, got {self.ignore_index!r}")


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
class _Run:
    """Consecutive bands of one decoded asset that go to consecutive places of one output."""

    out: str
    """Output key (``"s2/10m"``, ``"s2"``, ``"s1"``, ...)."""
    src: int
    """First band in the file."""
    dst: int
    """First place in the output (per sample)."""
    count: int
    mean: np.ndarray | None
    """float32 ``(count, 1, 1)``; ``None``: no normalisation."""
    std: np.ndarray | None


@dataclass(frozen=True)
class _Writer:
    """Decodes one fetched asset and writes its requested bands, as float32 and normalised,
    into the sample's output arrays. Runs on the fetcher's decoding threads; numpy and
    imagecodecs release the GIL for the pixel work."""

    expect: Expected
    runs: tuple[_Run, ...]

    def __call__(self, outs: Mapping[str, np.ndarray], data: bytes) -> None:
        pixels = decode_pixels(data, self.expect)  # checked against the asset's bands, size, dtype
        for r in self.runs:
            src = pixels[r.src : r.src + r.count]
            dst = outs[r.out][r.dst : r.dst + r.count]
            if r.mean is None or r.std is None:
                np.copyto(dst, src, casting="unsafe")
            else:
                # (x - mean) / std in float32, as torch would compute it, in place.
                np.subtract(src, r.mean, out=dst, dtype=np.float32)
                np.divide(dst, r.std, out=dst)


@dataclass(frozen=True)
class _Outputs:
    """Where the requested bands go: one float32 array per output key, and for each
    (modality, layout) one writer per fetched asset."""

    shapes: dict[str, tuple[int, int, int]]
    """Output key -> per-sample shape."""
    writers: dict[tuple[str, str], tuple[_Writer, ...]]
    upsample: tuple[tuple[str, tuple[int, ...]], ...]
    """``resample_to_10m``: (native-resolution key, places in ``"s2"``) to upsample in the loop."""


def _outputs(bands: Mapping[str, tuple[str, ...]], plans: Mapping[tuple[str, str], BandPlan], normalize: bool,
             resample: bool, stats: Mapping[str, tuple[float, float]] = BAND_STATS) -> _Outputs:
    """Output arrays and per-asset writers for the requested bands (output order); ``stats``:
    the per-band (mean, standard deviation) of the samples' release."""
    place: dict[str, tuple[str, int]] = {}  # band -> (output key, place in it)
    shapes: dict[str, tuple[int, int, int]] = {}
    upsample = []
    for m, names in bands.items():
        if m != "s2":
            shapes[m] = (len(names), _PATCH_PX, _PATCH_PX)
            place.update({b: (m, i) for i, b in enumerate(names)})
            continue
        if resample:
            shapes["s2"] = (len(names), _PATCH_PX, _PATCH_PX)
        for res in (10, 20, 60):
            at = [i for i, b in enumerate(names) if BANDS[b].resolution == res]
            if not at:
                continue
            key = f"s2/{res}m"
            if resample and BANDS[names[at[0]]].size == _PATCH_PX:
                place.update({names[i]: ("s2", i) for i in at})
                continue
            shapes[key] = (len(at), BANDS[names[at[0]]].size, BANDS[names[at[0]]].size)
            place.update({names[i]: (key, k) for k, i in enumerate(at)})
            if resample:
                upsample.append((key, tuple(at)))
    writers = {}
    for (m, lay), plan in plans.items():
        per_asset: list[list[tuple[int, str, int, str]]] = [[] for _ in plan.assets]
        for band, (asset, src) in zip(plan.bands, plan.picks, strict=True):
            per_asset[asset].append((src, *place[band], band))
        writers[(m, lay)] = tuple(_Writer(expect, _runs(sorted(picks), normalize, stats))
                                  for expect, picks in zip(plan.expected, per_asset, strict=True))
    return _Outputs(shapes, writers, tuple(upsample))


def _runs(picks: Sequence[tuple[int, str, int, str]], normalize: bool,
          stats: Mapping[str, tuple[float, float]] = BAND_STATS) -> tuple[_Run, ...]:
    """(band in file, output key, place, band name), sorted -> merged runs with their statistics."""
    groups: list[list[tuple[int, str, int, str]]] = []
    for p in picks:
        last = groups[-1][-1] if groups else None
        if last is not None and p[1] == last[1] and p[0] == last[0] + 1 and p[2] == last[2] + 1:
            groups[-1].append(p)
        else:
            groups.append([p])
    runs = []
    for g in groups:
        mean = std = None
        if normalize:
            mean = np.array([stats[p[3]][0] for p in g], np.float32)[:, None, None]
            std = np.array([stats[p[3]][1] for p in g], np.float32)[:, None, None]
        runs.append(_Run(g[0][1], g[0][0], g[0][2], len(g), mean, std))
    return tuple(runs)


def _empty(shape: tuple[int, ...], shared: bool) -> torch.Tensor:
    """A float32 tensor; in shared memory when it will cross to the main process (a DataLoader
    worker's batch), as ``default_collate`` allocates its batches, so sending it copies nothing."""
    if not shared:
        return torch.empty(shape, dtype=torch.float32)
    numel = int(np.prod(shape))
    storage = torch.empty(0, dtype=torch.float32)._typed_storage()._new_shared(numel, device="cpu")
    return torch.empty(0, dtype=torch.float32).new(storage).view(shape)


def _release(table: pa.Table, opts: StreamOptions) -> str | None:
    """The release of the table's samples (``"v1.0"`` for a table without a ``release`` column);
    ``None`` for a table mixing releases, which only ``normalize=False`` streams."""
    if "release" not in table.column_names:
        return RELEASE_V1
    found = pc.unique(table.column("release").fill_null(RELEASE_V1)).to_pylist()
    unknown = [r for r in found if r not in BAND_STATS_BY_RELEASE]
    if unknown:
        raise ValueError(f"samples of unknown release(s) {unknown}; releases: {sorted(BAND_STATS_BY_RELEASE)}")
    if len(found) == 1:
        return found[0]
    if opts.normalize:
        raise ValueError(f"the samples mix releases {sorted(found)}, whose pixels are normalised with different "
                         "statistics: stream each release on its own (search(release=...)), or normalize=False")
    return None


def _mask_source(table: pa.Table, opts: StreamOptions, release: str | None) -> tuple[MaskPlan, pa.Array]:
    """The mask plan and, per table row, the URL of its reference map; ``ValueError`` naming what is
    missing when a sample has none."""
    if release != RELEASE_V2:
        held = release or "mixed releases"
        raise ValueError(f"mask={opts.mask!r} needs the reference maps of BigEarthNet {RELEASE_V2}; this source holds "
                         f"{held} samples, which have none: open the catalog's v2.0 collections "
                         f"(Catalog.open(url, release='v2.0') or search(release='v2.0'))")
    urls = table.column("reference_map").combine_chunks() if "reference_map" in table.column_names else None
    if urls is None or urls.null_count == len(urls):
        raise ValueError(f"mask={opts.mask!r}: no sample of this source has a reference map (they come with the S2 "
                         "items of a v2.0 catalog built with its Reference_Maps: search modality='s2' or 'pair')")
    if urls.null_count:
        ids = table.column("id").filter(urls.is_null()).slice(0, 5).to_pylist()
        raise ValueError(f"mask={opts.mask!r}: {urls.null_count} of {len(urls)} samples have no reference map "
                         f"(e.g. {', '.join(map(repr, ids))}); leave them out of the search or stream without masks")
    return mask_plan(opts.mask, opts.class_order, opts.ignore_index), urls  # type: ignore[arg-type]


def _write_mask(plan: MaskPlan, outs: Mapping[str, np.ndarray], data: bytes) -> None:
    """Decode a reference map into ``outs["mask"]`` (on the fetcher's decoding threads)."""
    plan.write(outs["mask"], data)


def _mask_tensor(size: int, shared: bool) -> torch.Tensor:
    """A batch's int64 mask tensor, ``(size, 120, 120)``; in shared memory for DataLoader workers."""
    shape = (size, _PATCH_PX, _PATCH_PX)
    if not shared:
        return torch.empty(shape, dtype=torch.int64)
    storage = torch.empty(0, dtype=torch.int64)._typed_storage()._new_shared(int(np.prod(shape)), device="cpu")
    return torch.empty(0, dtype=torch.int64).new(storage).view(shape)


def _upsample(x: torch.Tensor, method: Resampling) -> torch.Tensor:
    """(..., k, h, w) -> (..., k, 120, 120)."""
    if method == "nearest":
        f = _PATCH_PX // x.shape[-1]
        return x.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    up = F.interpolate(flat, size=(_PATCH_PX, _PATCH_PX), mode="bilinear", align_corners=False)
    return up.reshape(*lead, x.shape[-3], _PATCH_PX, _PATCH_PX)


_RowInfo = tuple[int, int, str, str, dict[str, list[str]], "list[str] | None"]
"""(position in the shard, table row, id, layout, hrefs per modality, labels)."""


@dataclass
class _Row:
    position: int
    index: int
    sample_id: str
    futures: list[Any]
    """What to wait on: futures (or, decoding on the loop's thread, deferred jobs)."""
    hot: list[int]
    problem: str | None
    """Why the sample is bad before any read (labels), else ``None``."""
    outs: dict[str, np.ndarray] | None
    """Single samples: the sample's output arrays (handed out as tensors sharing them)."""
    slot: tuple[_Buffer, int] | None
    """Batches: the buffer and the slot in it."""


class _Buffer:
    """One batch's tensors, written slot by slot as samples finish."""

    def __init__(self, size: int, shapes: Mapping[str, tuple[int, int, int]], classes: int, shared: bool) -> None:
        # One storage for the whole batch: a batch sent from a DataLoader worker then costs one
        # shared-memory hand-over instead of one per tensor.
        layout = [(k, (size, *shape)) for k, shape in shapes.items()] + [("label", (size, classes))]
        flat = _empty((sum(int(np.prod(s)) for _, s in layout),), shared)
        views, start = {}, 0
        for key, shape in layout:
            n = int(np.prod(shape))
            views[key] = flat[start : start + n].view(shape)
            start += n
        self.label = views.pop("label").zero_()
        self.labels = self.label.numpy()
        self.tensors = views
        self.arrays = {k: t.numpy() for k, t in self.tensors.items()}
        self.ids: list[str] = [""] * size
        self.positions = [0] * size
        self.size = size
        self.assigned = 0
        self.done = 0
        self.valid: list[int] = []

    def views(self, slot: int) -> dict[str, np.ndarray]:
        return {k: a[slot] for k, a in self.arrays.items()}


class _Batcher:
    """Assigns samples to batch slots in order and hands out full batches of valid samples.

    Without skipped samples every batch is one buffer, handed out as is. A skipped sample leaves
    a hole: the next batches are then gathered (copied) from the valid slots, so they hold the same
    samples a DataLoader would batch from the single samples.
    """

    def __init__(self, stream: BigEarthNetStream, size: int, shared: bool) -> None:
        self.stream = stream
        self.size = size
        self.shared = shared
        self._filling: _Buffer | None = None
        self._ready: deque[tuple[_Buffer, list[int]]] = deque()  # finished buffers, slots not yet handed out

    def slot(self) -> tuple[_Buffer, int]:
        buf = self._filling
        if buf is None or buf.assigned == buf.size:
            buf = self._filling = _Buffer(self.size, self.stream._outputs.shapes, len(self.stream.classes), self.shared)
            if self.stream._mask is not None:  # int64, beside the float32 outputs
                mask = _mask_tensor(self.size, self.shared)
                buf.tensors["mask"], buf.arrays["mask"] = mask, mask.numpy()
        buf.assigned += 1
        return buf, buf.assigned - 1

    def finished(self, buf: _Buffer, slot: int, ok: bool) -> None:
        buf.done += 1
        if ok:
            buf.valid.append(slot)
        if buf.done == buf.size:
            self._complete(buf)

    def _complete(self, buf: _Buffer) -> None:
        if buf is self._filling:
            self._filling = None
        self.stream._upsample(buf.tensors, buf.done)
        if buf.valid:
            self._ready.append((buf, list(buf.valid)))

    def batches(self, final: bool = False) -> Iterator[tuple[dict[str, Any], int]]:
        """Full batches (and at the end the rest), each with the position after its last sample."""
        if final and self._filling is not None and self._filling.done == self._filling.assigned:
            self._complete(self._filling)
        while self._ready:
            available = sum(len(slots) for _, slots in self._ready)
            if available < self.size and not final:
                return
            buf, slots = self._ready[0]
            if len(slots) == buf.done and (len(slots) == self.size or (final and len(self._ready) == 1)):
                self._ready.popleft()  # a whole buffer: no copy
                n = len(slots)
                yield self.stream._batch(buf, slice(0, n)), buf.positions[n - 1] + 1
                continue
            parts, want = [], self.size
            while want and self._ready:
                buf, slots = self._ready[0]
                take, rest = slots[:want], slots[want:]
                parts.append((buf, take))
                want -= len(take)
                if rest:
                    self._ready[0] = (buf, rest)
                else:
                    self._ready.popleft()
            pieces = [self.stream._batch(b, torch.tensor(s, dtype=torch.long)) for b, s in parts]
            last_buf, last_slots = parts[-1]
            yield _concat(pieces), last_buf.positions[last_slots[-1]] + 1


def _concat(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    if len(pieces) == 1:
        return pieces[0]
    out: dict[str, Any] = {}
    for key, first in pieces[0].items():
        if isinstance(first, dict):
            out[key] = {k: torch.cat([p[key][k] for p in pieces]) for k in first}
        elif isinstance(first, list):
            out[key] = [i for p in pieces for i in p[key]]
        else:
            out[key] = torch.cat([p[key] for p in pieces])
    return out


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
    per native resolution: the keys of ``sample["s2"]`` when not resampled), ``classes`` (the
    class names of ``label``, in order), ``mask_classes`` (the class names of ``mask``'s indices;
    ``None`` without masks) and ``release`` (the samples' BigEarthNet release, whose
    normalisation statistics apply: :data:`~bigearth_stac.vocab.BAND_STATS_BY_RELEASE`).
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
        self.release: str | None = _release(self._table, opts)
        self._mask: MaskPlan | None = None
        self._mask_urls: pa.Array | None = None
        if opts.mask is not None:
            self._mask, self._mask_urls = _mask_source(self._table, opts, self.release)
        self.mask_classes: tuple[str, ...] | None = self._mask.classes if self._mask is not None else None
        resolve_world(opts.rank, opts.world_size)  # fail early on inconsistent arguments
        layouts = pc.unique(self._table.column("layout")).to_pylist()
        self._plans: dict[tuple[str, str], BandPlan] = {
            (m, lay): band_plan(m, lay, self.bands[m]) for m in self.modalities for lay in layouts
        }
        _check_assets(self._table, self._plans)
        # Per plan, the writer of each fetched asset: decode (checking bands, size and dtype),
        # normalise with precomputed per-band constants, write into the output arrays.
        self._outputs = _outputs(self.bands, self._plans, opts.normalize, opts.resample_to_10m,
                                 BAND_STATS_BY_RELEASE[self.release or RELEASE_V1])
        objects = max(sum(self._plans[(m, lay)].requests for m in self.modalities) for lay in layouts)
        objects += self._mask is not None
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
    decode_threads = _from_options("decode_threads", "``options.decode_threads`` (``None``: the cores divided by the workers).")
    batch_size = _from_options("batch_size", "``options.batch_size`` (``None``: single samples).")
    prefetch = _from_options("prefetch", "``options.prefetch`` (resolved).")
    on_error = _from_options("on_error", "``options.on_error``.")
    mask = _from_options("mask", "``options.mask`` (``None``: no mask).")
    ignore_index = _from_options("ignore_index", "``options.ignore_index``.")

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
    def _decode_threads(self) -> int:
        """Decoding threads for this process: its share of the cores. A DataLoader worker with a
        core (or less) to itself decodes on its own thread: a decoding thread would only trade
        the GIL back and forth with the worker's loop, which has nothing else to do."""
        if self.options.decode_threads is not None:
            return self.options.decode_threads
        share = available_cores() // self._worker_info()[1]
        if get_worker_info() is not None and share <= 1:
            return 0
        return max(1, share)

    def _get_fetcher(self) -> Fetcher:
        if self._fetcher is None:
            self._fetcher = Fetcher(self.options.settings, self.options.max_in_flight, scope=self._scope,
                                    decode_threads=self._decode_threads())
        return self._fetcher

    def _row_infos(self, rows: np.ndarray, start: int) -> Iterator[_RowInfo]:
        """The shard's rows from ``start`` on as Python values, converted a block at a time."""
        labels = f"labels_{self.options.nomenclature}"
        assets = [f"{m}_assets" for m in self.modalities]
        table = self._table.select(["id", "layout", labels, *assets])
        for lo in range(start, len(rows), _ROW_BLOCK):
            index = rows[lo : lo + _ROW_BLOCK]
            block = table.take(pa.array(index, pa.int64())).to_pydict()
            ids, layouts, names = block["id"], block["layout"], block[labels]
            hrefs = [block[a] for a in assets]
            for k in range(len(index)):
                yield (lo + k, int(index[k]), ids[k], layouts[k],
                       {m: hrefs[j][k] for j, m in enumerate(self.modalities)}, names[k])

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
        size = self.options.batch_size
        batcher = _Batcher(self, size, shared=get_worker_info() is not None) if size is not None else None
        before = (fetcher.requests, fetcher.bytes, fetcher.retries)
        window: deque[_Row] = deque()
        infos = self._row_infos(rows, start)
        try:
            for info in infos:
                window.append(self._submit(fetcher, info, batcher))
                if len(window) >= prefetch:
                    break
            while window:
                row = window.popleft()
                nxt = next(infos, None)
                if nxt is not None:
                    window.append(self._submit(fetcher, nxt, batcher))
                sample = self._finish(row)
                now = (fetcher.requests, fetcher.bytes, fetcher.retries)
                requests, nbytes, retries = (a - b for a, b in zip(now, before, strict=True))
                before = now
                if batcher is not None:
                    if sample is None:
                        self._counters.skip(row.index, requests=requests, bytes=nbytes, retries=retries)
                    else:
                        self._counters.add(requests=requests, bytes=nbytes, retries=retries)
                    batcher.finished(*row.slot, ok=sample is not None)  # type: ignore[misc]
                    for batch, position in batcher.batches():
                        self._position = position
                        self._counters.add(yielded=len(batch["id"]))
                        yield batch
                    continue
                self._position = row.position + 1
                if sample is None:
                    self._counters.skip(row.index, requests=requests, bytes=nbytes, retries=retries)
                    continue
                self._counters.add(yielded=1, requests=requests, bytes=nbytes, retries=retries)
                yield sample
            if batcher is not None:
                for batch, position in batcher.batches(final=True):
                    self._position = position
                    self._counters.add(yielded=len(batch["id"]))
                    yield batch
                self._position = len(rows)
        finally:
            for row in window:
                for future in row.futures:
                    future.cancel()
            fetcher.close()

    def _hot(self, labels: list[str] | None) -> tuple[list[int], str | None]:
        """Class positions of ``labels``, or why they cannot be used."""
        nomenclature = self.options.nomenclature
        if labels is None:
            return [], f"no {nomenclature}-class labels (null)"
        try:
            return [self._class_index[name] for name in labels], None
        except KeyError as exc:
            return [], f"unknown {nomenclature}-class label {exc}"

    def _submit(self, fetcher: Fetcher, info: _RowInfo, batcher: _Batcher | None) -> _Row:
        position, index, sample_id, layout, hrefs, labels = info
        hot, problem = self._hot(labels)
        # numpy, not torch, on this thread: torch calls release and retake the GIL, and every
        # hand-off costs while the decoding threads want it too.
        outs: dict[str, np.ndarray] | None = None
        slot: tuple[_Buffer, int] | None = None
        if batcher is None:
            arrays = outs = {k: np.empty(shape, np.float32) for k, shape in self._outputs.shapes.items()}
            if self._mask is not None:
                outs["mask"] = np.empty((_PATCH_PX, _PATCH_PX), np.int64)
        else:
            slot = batcher.slot()
            buf, i = slot
            buf.ids[i], buf.positions[i] = sample_id, position
            if hot:
                buf.labels[i, hot] = 1.0
            arrays = buf.views(i)
        futures: list[Any] = []
        if problem is None:  # a sample with bad labels is not read at all
            jobs = []
            for m in self.modalities:
                row_hrefs = hrefs[m]
                plan = self._plans[(m, layout)]
                for a, writer in zip(plan.assets, self._outputs.writers[(m, layout)], strict=True):
                    jobs.append((row_hrefs[a], partial(writer, arrays)))
            if self._mask is not None:
                jobs.append((self._mask_urls[index].as_py(), partial(_write_mask, self._mask, arrays)))  # type: ignore[index]
            futures = fetcher.submit_each(jobs)
        return _Row(position, index, sample_id, futures, hot, problem, outs, slot)

    def _fail(self, error: SampleError, cause: BaseException | None = None) -> None:
        """Raise ``error`` (``on_error="raise"``) or log it; the caller then skips the sample."""
        if self.options.on_error == "raise":
            raise error from cause
        log.warning("skipping %s", error)

    def _finish(self, row: _Row) -> dict[str, Any] | None:
        """Wait for the row's objects; the sample (``{}`` in batch mode), or ``None`` if skipped."""
        for k, future in enumerate(row.futures):
            try:
                # Each object was checked against its asset's bands, size and dtype on decode.
                future.result()
            except FetchError as exc:
                for other in row.futures[k + 1 :]:  # nothing may still write into the slot
                    if not other.cancel():
                        other.exception()
                self._fail(SampleError(row.sample_id, exc.href, exc.cause), exc)
                return None
        if row.problem is not None:
            self._fail(SampleError(row.sample_id, None, row.problem))
            return None
        if row.outs is None:
            return {}
        outs = {k: torch.from_numpy(a) for k, a in row.outs.items()}
        self._upsample(outs, None)
        sample = self._sample(outs)
        label = np.zeros(len(self.classes), np.float32)
        label[row.hot] = 1.0
        sample["label"] = torch.from_numpy(label)
        sample["id"] = row.sample_id
        transform = self.options.transform
        return transform(sample) if transform is not None else sample

    # -- pixels -> tensors ---------------------------------------------------------------------
    def _upsample(self, outs: Mapping[str, torch.Tensor], n: int | None) -> None:
        """``resample_to_10m``: upsample the 20 m and 60 m bands into ``outs["s2"]`` (of one
        sample, or of the first ``n`` samples of a batch)."""
        method = self.options.resampling
        for key, places in self._outputs.upsample:
            if n is None:
                outs["s2"][list(places)] = _upsample(outs[key], method)
            elif n:
                outs["s2"][:n, list(places)] = _upsample(outs[key][:n], method)

    def _sample(self, outs: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """The sample dict's pixel entries (without label and id) from the output tensors."""
        sample: dict[str, Any] = {}
        for m in self.modalities:
            if m == "s2" and not self.options.resample_to_10m:
                sample[m] = {res: outs[f"s2/{res}"] for res in self.bands_by_resolution}
            else:
                sample[m] = outs[m]
        if "mask" in outs:
            sample["mask"] = outs["mask"]
        return sample

    def _batch(self, buf: _Buffer, sel: slice | torch.Tensor) -> dict[str, Any]:
        """The batch dict of the slots ``sel`` of ``buf`` (a slice: views; indices: copies)."""
        batch = self._sample({k: t[sel] for k, t in buf.tensors.items()})
        batch["label"] = buf.label[sel]
        batch["id"] = buf.ids[sel] if isinstance(sel, slice) else [buf.ids[i] for i in sel.tolist()]
        return batch
