"""The build: map pairs over Dask, then write the schema, indexes, tile catalogs, collections,
manifest and root (in that order).

``build()`` is the library entry point; the CLI only parses arguments and draws a progress bar
through the ``progress`` callback.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bigearth_stac.contract import (
    COLLECTIONS,
    REFERENCE_MAP_ASSET,
    SCHEMA_MEDIA_TYPE,
    SCHEMA_PATH,
    collection_id,
    collection_path,
)
from bigearth_stac.validate import own_schema_bytes
from bigearth_stac.vocab import PREFIX, SCHEMA_URI, Layout
from catalog_builder.cog import CogOptions
from catalog_builder.index import index_path, sort_by_location, table_to_parquet_bytes
from catalog_builder.pair import BatchResult, build_batch
from catalog_builder.records import SourceProblem
from catalog_builder.sources.base import ReleaseSource
from catalog_builder.stac import (
    INDEX_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    ExtentAccumulator,
    build_catalog,
    build_collection,
    build_tile_catalog,
    tile_catalog_path,
)
from catalog_builder.store import (
    MANIFEST,
    MANIFEST_SCHEMA,
    STAGE_META,
    STAGE_ROOT,
    ManifestEntry,
    OutputStore,
    json_bytes,
    manifest_bytes,
    put,
    sha256_hex,
)

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class BuildOptions:
    """How a catalog is built."""

    layout: Layout = "stacked"
    """``stacked``: one multi-band COG per S2 resolution group + one S1 COG (4 objects per pair);
    ``per-band``: one single-band COG per band (14 per pair, what stackstac needs)."""
    cog: CogOptions = field(default_factory=CogOptions)
    batch_size: int = 32
    """Pairs per Dask task."""
    scheduler: str | None = None
    """``None``: a LocalCluster; ``"synchronous"``: in this process (no Dask workers); otherwise
    the address of a running Dask scheduler (``tcp://host:8786``)."""
    n_workers: int | None = None
    """Workers of the LocalCluster (default: one per core)."""
    verify_existing: bool = True
    """On rerun, re-hash existing outputs (``False``: trust matching sizes)."""
    limit: int | None = None
    """Build only the first ``limit`` pairs (sorted by name)."""
    schema_url: str | None = None
    """URL of the ``bigearthnet:`` extension's schema that items and collections list in
    ``stac_extensions``: for a catalog to be published at ``X``,
    ``bigearth_stac.validate.schema_url_for(X)`` (``X/schema/v1.0.0/schema.json``, where the
    build writes the schema), so every validator resolves it. ``None``: the extension's canonical
    identifier ``bigearth_stac.vocab.SCHEMA_URI``, which does not depend on where the catalog
    ends up and which ``bigearth-stac validate`` maps to the schema shipped in the package."""

    @property
    def extension_url(self) -> str:
        """The ``bigearthnet:`` schema URL items list (:attr:`schema_url` or the canonical one)."""
        return self.schema_url or SCHEMA_URI


@dataclass
class BuildReport:
    """What a build did."""

    url: str
    pairs: int = 0
    built: int = 0
    skipped: int = 0
    problems: list[SourceProblem] = field(default_factory=list)
    manifest: list[ManifestEntry] = field(default_factory=list)
    label_disagreements: list[SourceProblem] = field(default_factory=list)
    """Pairs built although two of their label sources disagree (v2: the reference map's
    19-class projection and the official labels, which the items keep). Warnings: ``ok`` stays
    true."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        lines = [f"{self.pairs} pairs at {self.url}: {self.built} built, {self.skipped} already up to date, "
                 f"{len(self.problems)} with problems"]
        lines += [f"  - {p}" for p in self.problems]
        if self.label_disagreements:
            lines.append(f"{len(self.label_disagreements)} built pairs whose labels disagree (a warning):")
            lines += [f"  ~ {p}" for p in self.label_disagreements]
        return "\n".join(lines)


WORKER_MODULES = ("distributed", "catalog_builder.pair")
"""What the workers of the build's own LocalCluster import before their first task: the
forkserver they are forked from imports them once (spawned workers each import them, about
2 s of CPU per worker here, and take as long again to exit)."""
_forkserver_env: dict[str, str] | None = None
"""The environment the preloaded forkserver started with (``None``: not started by a build)."""


def _start_method() -> str:
    """How the LocalCluster starts its workers: from a forkserver preloaded with
    :data:`WORKER_MODULES`, or as Dask is configured.

    The forkserver is used where the platform has one, Dask is left at its default (``spawn``)
    and the environment is the one the server started with: forked workers inherit the server's
    environment, not the caller's, so a build after the environment changed (credentials,
    endpoints) spawns its workers as usual.
    """
    global _forkserver_env
    import multiprocessing

    import dask
    from distributed.utils import get_mp_context

    configured = dask.config.get("distributed.worker.multiprocessing-method")
    if configured != "spawn" or "forkserver" not in multiprocessing.get_all_start_methods():
        return configured
    if _forkserver_env is None:
        with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
            get_mp_context()  # distributed's own preload list, set once per process
        multiprocessing.get_context("forkserver").set_forkserver_preload(list(WORKER_MODULES))
        return "forkserver"
    return "forkserver" if dict(os.environ) == _forkserver_env else "spawn"


@contextmanager
def _executor(options: BuildOptions) -> Iterator[Any]:
    """A Dask client (or ``None`` for synchronous runs) for the build's lifetime."""
    global _forkserver_env
    if options.scheduler == "synchronous":
        yield None
        return
    import dask
    from distributed import Client, LocalCluster

    if options.scheduler:
        with Client(options.scheduler) as client:
            yield client
        return
    method = _start_method()
    settings = {
        "distributed.worker.multiprocessing-method": method,
        # The workers' statistical profiler samples the task thread every 10 ms, for the
        # dashboard's profile page only: a few % of a build's CPU.
        "distributed.worker.profile.enabled": False,
        # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, so that glibc hands freed
        # memory back at once; a task allocates and frees ~100 KB arrays and buffers for every
        # COG, and the trimming and faulting back of those pages doubled the workers' system
        # time (8 against 3 ms per pair here). A task's memory is bounded by its batch.
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    }
    with dask.config.set(settings), LocalCluster(n_workers=options.n_workers, threads_per_worker=1, processes=True,
                                                 dashboard_address=":0") as cluster, Client(cluster) as client:
        if method == "forkserver" and _forkserver_env is None:
            # The server started with the first worker, in the environment Dask's nanny had
            # just extended (its pre-spawn variables).
            _forkserver_env = dict(os.environ)
        yield client


TABLE_GROUP = 64
"""Batches whose table rows are cut from the full tables at once (then per batch from that cut)."""


def batch_sources(source: ReleaseSource, batches: list[list[str]]) -> Iterator[tuple[ReleaseSource, list[str]]]:
    """(source carrying only the batch's table rows, batch) for each batch.

    What travels to a worker with a task is its batch's rows, not the whole tables (hundreds of
    MB for a full release). Rows are cut with vectorised filters: once per :data:`TABLE_GROUP`
    batches from the full tables, then per batch from that cut.
    """
    cut = getattr(source, "with_tables_for", None)
    if cut is None:
        for batch in batches:
            yield source, batch
        return
    for g in range(0, len(batches), TABLE_GROUP):
        group = batches[g:g + TABLE_GROUP]
        outer = cut([u for batch in group for u in batch])
        for batch in group:
            yield outer.with_tables_for(batch), batch


def _outcomes(source: ReleaseSource, store: OutputStore, units: list[str], options: BuildOptions) -> Iterator[BatchResult]:
    """Build results batch by batch, in this process or on Dask workers, in completion order.

    A LocalCluster takes a second or two to start (the workers' forkserver imports GDAL, Arrow
    and Dask once), mostly on one core: this process builds pairs itself, :data:`LOCAL_STEP` at a
    time, until the cluster is up, then hands every remaining pair to it (the rest of the batch
    it was in as one task).
    """
    batches = [units[i:i + options.batch_size] for i in range(0, len(units), options.batch_size)]
    # The schema URL is passed only when set: a default build calls build_batch as before.
    extra: dict[str, Any] = {"schema_url": options.schema_url} if options.schema_url else {}
    args = (options.layout, options.cog, options.verify_existing)
    work = batch_sources(source, batches)
    if options.scheduler == "synchronous":
        for part, batch in work:
            yield build_batch(part, store, batch, *args, **extra)
        return
    from distributed import as_completed

    cluster = _StartedAside(options)
    try:
        rest = []
        for part, batch in work:
            # A few pairs at a time, so that the workers wait for at most that once it is up.
            done = 0
            while done < len(batch) and not cluster.ready.done():
                step = batch[done:done + LOCAL_STEP]
                yield _build_here(part, store, step, *args, **extra)
                done += len(step)
            if done < len(batch):
                rest.append((part, batch[done:]))
                break
        client = cluster.ready.result()
        futures = [client.submit(build_batch, part, store, batch, *args, pure=False, retries=1, **extra)
                   for part, batch in itertools.chain(rest, work)]
        for fut in as_completed(futures):
            yield fut.result()
            fut.release()
    finally:
        cluster.close()


_build_here = build_batch
"""What this process runs while a LocalCluster starts (the workers run ``build_batch``)."""
LOCAL_STEP = 4
"""Pairs this process builds at a time while the cluster starts (about 80 ms of work)."""


class _StartedAside:
    """:func:`_executor` entered and left on a thread of its own: ``ready`` is its client (or
    the error that kept it from starting) while the caller goes on with other work."""

    def __init__(self, options: BuildOptions) -> None:
        self.ready: Future[Any] = Future()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(options,), name="bigearth-cluster", daemon=True)
        self._thread.start()

    def _run(self, options: BuildOptions) -> None:
        try:
            with _executor(options) as client:
                self.ready.set_result(client)
                self._done.wait()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through ``ready``
            if not self.ready.done():
                self.ready.set_exception(exc)
            else:
                log.warning("closing the Dask cluster failed: %s", exc)

    def close(self) -> None:
        """Wait for the start (if still starting), then close what it started."""
        self._done.set()
        self._thread.join()


def items_by_tile(index: pa.Table) -> dict[str, list[str]]:
    """Tile -> ids of its items, from a collection's index table; both sorted (deterministic)."""
    tile_col = f"{PREFIX}:tile"
    if index.column(tile_col).null_count:
        raise ValueError("an item without a tile cannot be placed in a tile catalog")
    grouped = index.select([tile_col, "id"]).group_by(tile_col).aggregate([("id", "list")])
    return {tile: sorted(ids) for tile, ids in sorted(zip(grouped.column(tile_col).to_pylist(),
                                                           grouped.column("id_list").to_pylist(), strict=True))}


def merged_manifest_bytes(store: OutputStore, entries: list[ManifestEntry], kept_collections: list[str]) -> bytes:
    """The manifest of ``entries`` plus the existing manifest's entries of ``kept_collections``
    (collections of the same catalog that this build did not write: their folders and indexes).

    Merged as Arrow tables (a full release's manifest has millions of rows); with nothing to
    keep, exactly :func:`~catalog_builder.store.manifest_bytes` of ``entries``.
    """
    old = store.read(MANIFEST) if kept_collections else None
    kept = None
    if old is not None:
        try:
            table = pq.read_table(pa.BufferReader(old)).select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)
        except (pa.ArrowException, OSError, KeyError) as exc:
            log.warning("ignoring an unreadable manifest (%s): it will list only this build's objects", exc)
        else:
            path = table.column("path")
            mask = None
            for cid in kept_collections:
                hit = pc.or_(pc.starts_with(path, f"{cid}/"), pc.equal(path, index_path(cid)))
                mask = hit if mask is None else pc.or_(mask, hit)
            kept = table.filter(mask) if mask is not None else None
    if kept is None or kept.num_rows == 0:
        return manifest_bytes(entries)
    new = pa.Table.from_pylist([e.__dict__ for e in entries], schema=MANIFEST_SCHEMA)
    merged = pa.concat_tables([kept, new])
    merged = merged.take(pc.sort_indices(merged, sort_keys=[("stage", "ascending"), ("path", "ascending")]))
    sink = pa.BufferOutputStream()
    pq.write_table(merged, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def build(source: ReleaseSource, store: OutputStore, options: BuildOptions = BuildOptions(),
          progress: ProgressFn | None = None) -> BuildReport:
    """Build (or resume) a catalog from a release source into a store.

    Pairs with bad inputs are reported in the returned :class:`BuildReport` (naming the file and
    the problem) and left out; everything else is built. After the items: the extension schema,
    then per collection its index, one catalog per tile linking its items, and the collection
    linking the tile catalogs; then the manifest; the root ``catalog.json`` last.
    """
    units = source.units()
    if options.limit is not None:
        units = units[: options.limit]
    full_source = source
    report = BuildReport(url=store.url, pairs=len(units))
    discard = getattr(store, "discard_partials", None)
    if discard is not None and (stale := discard()):
        log.info("removed %d partial files of an interrupted build", stale)
    cids = {modality: collection_id(source.release, modality) for modality in ("s2", "s1")}
    tables: dict[str, list[pa.Table]] = {cid: [] for cid in cids.values()}
    extents = {cid: ExtentAccumulator() for cid in cids.values()}
    done = 0
    partners: set[str] = set()
    for batch in _outcomes(source, store, units, options):
        for cid, table in batch.tables.items():
            tables[cid].append(table)
            extents[cid].merge(batch.extents[cid])
        for outcome in batch.outcomes:
            done += 1
            if outcome.partner is not None:
                partners.add(outcome.partner)
            if outcome.warning is not None:
                report.label_disagreements.append(outcome.warning)
            if outcome.problem is not None:
                report.problems.append(outcome.problem)
                continue
            report.skipped += outcome.skipped
            report.built += not outcome.skipped
            report.manifest.extend(outcome.manifest)
        if progress is not None:
            progress(done, len(units))
    for location, problem in full_source.unpaired(partners) if options.limit is None else []:
        report.problems.append(SourceProblem(location.rsplit("/", 1)[-1], location, problem))
    report.problems.sort(key=lambda p: (p.pair, p.file))
    report.label_disagreements.sort(key=lambda p: (p.pair, p.file))

    if not tables[cids["s2"]]:
        log.warning("no pair could be built; not writing collections or the root catalog")
        return report

    url = options.extension_url
    report.manifest.append(put(store, SCHEMA_PATH, own_schema_bytes(url), SCHEMA_MEDIA_TYPE, STAGE_META))
    for modality, cid in cids.items():
        parts = tables[cid]
        index = sort_by_location(pa.concat_tables(parts, promote_options="permissive"))
        parts.clear()
        tiles = items_by_tile(index)
        maps = REFERENCE_MAP_ASSET in index.column("assets").type.names if modality == "s2" else False
        collection = build_collection(modality, extents[cid].summary(), options.layout, f"../{index_path(cid)}",
                                      tiles=tiles, schema_url=url, release=source.release, reference_maps=maps)
        report.manifest.append(put(store, index_path(cid), table_to_parquet_bytes(index, collection), INDEX_MEDIA_TYPE, STAGE_META))
        del index
        # Tile catalogs link items, the collection links the tile catalogs: written in that order.
        for tile, ids in tiles.items():
            doc = build_tile_catalog(cid, tile, ids)
            report.manifest.append(put(store, tile_catalog_path(cid, tile), json_bytes(doc), JSON_MEDIA_TYPE, STAGE_META))
        report.manifest.append(put(store, f"{cid}/collection.json", json_bytes(collection, pretty=True), JSON_MEDIA_TYPE, STAGE_META))
    # The root links every collection the output holds: a release built into the folder of
    # another's catalog adds to it (and their manifests merge) instead of replacing it.
    present = [cid for cid in COLLECTIONS if cid in cids.values() or store.size(collection_path(cid)) is not None]
    root = json_bytes(build_catalog(present), pretty=True)
    root_entry = ManifestEntry("catalog.json", len(root), sha256_hex(root), JSON_MEDIA_TYPE, STAGE_ROOT)
    # The manifest lists the root too (so a publish can verify it), but is written before it.
    others = [cid for cid in present if cid not in cids.values()]
    store.write(MANIFEST, merged_manifest_bytes(store, [*report.manifest, root_entry], others), INDEX_MEDIA_TYPE)
    store.write("catalog.json", root, JSON_MEDIA_TYPE)
    report.manifest.append(root_entry)
    log.info("%s", report.describe().splitlines()[0])
    return report
