"""Publish a locally built catalog to ``s3://bucket/prefix``: ordered, verified, resumable.

The local catalog's ``manifest.parquet`` lists every object with its size, sha256, media type
and stage. Objects are uploaded stage by stage (COGs, then items, then index / collections /
schema / manifest, then the root ``catalog.json``); a stage starts only when every object of
the previous one is uploaded *and verified*, so a reader never finds a root (or an item) that
points at a missing or partial object, and a failed publish never publishes the root.

Checks, in order, for each object:

* **Already there?** One listing of the destination (a request per 1,000 keys) says which keys
  exist; for those a ``HEAD``: if the object's size, media type and the sha256 in its metadata
  (``x-amz-meta-sha256``) match the manifest, it is skipped, so a rerun uploads only what is
  missing or different. A first publish costs two requests per object (PUT, HEAD), a rerun one.
* **Local file intact?** Its size is checked for every object before anything is uploaded; its
  sha256 right before its upload (the bytes are read once). A mismatch is an error naming the
  file.
* **Safe to publish?** JSON documents and Parquet indexes are refused if any href is an
  absolute local path (``/...``, ``file:``, ``C:\\``), carries credentials (``user:pass@``, a
  presigned query) or the JSON contains the local catalog's own path.
* **Upload** with ``Content-MD5`` (the server rejects a body damaged in transit) and the sha256
  in the object's metadata; boto3 retries throttling, 5xx and dropped connections (standard mode).
* **Verify** with a ``HEAD`` (size, media type, sha256 metadata): with the server's own MD5 check
  on the body this proves the object under the key is the one just sent, at one small request per
  object. ``verify="get"`` re-downloads and re-hashes every object instead (twice the traffic),
  for stores that ignore ``Content-MD5``.

The first object that still fails after retries stops the publish with a :class:`PublishError`
naming its key; nothing of a later stage has been sent, and a rerun resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bigearth_stac.settings import StorageSettings
from catalog_builder.s3store import SHA256_META, S3Store, check_relative
from catalog_builder.stac import INDEX_MEDIA_TYPE
from catalog_builder.store import MANIFEST, STAGE_META, STAGE_ROOT, ManifestEntry, read_manifest

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""``(objects done, objects total)``, called after each object is skipped or verified."""

STAGE_NAMES = {0: "COGs", 1: "items", 2: "index, collections, schema and manifest", 3: "root catalog"}
ROOT_CATALOG = "catalog.json"
JSON_TYPES = ("application/json", "application/geo+json", "application/schema+json")

#: An href that must never be published: an absolute local path, a file: URL, a Windows path,
#: a backslash, user:password@ in a URL, or a presigned / signed query string.
UNSAFE_HREF = re.compile(
    r"^(/|file:|[A-Za-z]:[\\/])|\\|^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@"
    r"|[?&](X-Amz-Credential|X-Amz-Signature|X-Amz-Security-Token|Signature|sig|token)=",
    re.IGNORECASE,
)


class PublishError(RuntimeError):
    """A publish that stopped: ``where`` names the key (or local file) at fault."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


@dataclass(frozen=True)
class PublishOptions:
    """How a catalog is published."""

    workers: int = 16
    """Concurrent uploads within a stage (threads sharing one boto3 client)."""
    verify: Literal["head", "get"] = "head"
    """``head``: verify each upload by size, media type and sha256 metadata (with the server's
    Content-MD5 check); ``get``: also download it again and hash it."""


@dataclass
class PublishReport:
    """What a publish did."""

    url: str
    objects: int = 0
    uploaded: int = 0
    skipped: int = 0
    bytes_uploaded: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        rate = self.objects / self.seconds if self.seconds else 0.0
        return (f"{self.objects} objects at {self.url}: {self.uploaded} uploaded "
                f"({self.bytes_uploaded / 1e6:.1f} MB), {self.skipped} already there and verified; "
                f"{self.seconds:.1f} s ({rate:.0f} objects/s)")


# ---------------------------------------------------------------------------------------------
# The local catalog
# ---------------------------------------------------------------------------------------------


def load_manifest(root: Path) -> list[ManifestEntry]:
    """The manifest's entries plus ``manifest.parquet`` itself (stage META), checked for shape."""
    path = root / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PublishError(str(path), "no manifest: is this a catalog built by catalog-builder?") from None
    try:
        entries = read_manifest(data)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise PublishError(str(path), f"unreadable manifest ({exc})") from None
    seen: set[str] = set()
    for e in entries:
        try:
            check_relative(e.path, str(root))
        except ValueError as exc:
            raise PublishError(str(path), str(exc)) from None
        if e.stage not in STAGE_NAMES:
            raise PublishError(str(path), f"entry {e.path!r} has unknown stage {e.stage}")
        if e.path in seen or e.path == MANIFEST:
            raise PublishError(str(path), f"entry {e.path!r} is listed twice")
        seen.add(e.path)
    if not any(e.stage == STAGE_ROOT for e in entries):
        local_root = root / ROOT_CATALOG
        if not local_root.is_file():
            raise PublishError(str(path), "lists no root catalog and there is no catalog.json: "
                                          "the build did not finish")
        # Catalogs built before the manifest listed the root: trust the local root as it is.
        log.warning("%s does not list %s; publishing the local file as it is", path, ROOT_CATALOG)
        raw = local_root.read_bytes()
        entries.append(ManifestEntry(ROOT_CATALOG, len(raw), hashlib.sha256(raw).hexdigest(),
                                     "application/json", STAGE_ROOT))
    entries.append(ManifestEntry(MANIFEST, len(data), hashlib.sha256(data).hexdigest(), INDEX_MEDIA_TYPE, STAGE_META))
    return entries


def check_local_sizes(root: Path, entries: list[ManifestEntry]) -> None:
    """Every object exists locally with its manifest size (cheap: ``stat`` only)."""
    for e in entries:
        local = root / e.path
        try:
            size = local.stat().st_size
        except FileNotFoundError:
            raise PublishError(str(local), "listed in the manifest but missing") from None
        if size != e.size:
            raise PublishError(str(local), f"is {size} bytes, the manifest says {e.size}: "
                                           "the local catalog changed after its build")


def read_verified(root: Path, entry: ManifestEntry) -> bytes:
    """The local object's bytes, checked against the manifest's size and sha256."""
    local = root / entry.path
    data = local.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != entry.size or digest != entry.sha256:
        raise PublishError(str(local), f"does not match the manifest (size {len(data)} vs {entry.size}, "
                                       f"sha256 {digest[:12]}... vs {entry.sha256[:12]}...): corrupt or changed")
    return data


# ---------------------------------------------------------------------------------------------
# What may be published
# ---------------------------------------------------------------------------------------------


def _hrefs(doc: Any) -> Iterator[str]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "href" and isinstance(v, str):
                yield v
            else:
                yield from _hrefs(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _hrefs(v)


def check_publishable(entry: ManifestEntry, data: bytes, local_root: Path) -> None:
    """Refuse documents whose hrefs name a local path or carry credentials.

    Raises :class:`PublishError` naming the local file (``local_root / entry.path``) and the href.
    """
    where = str(local_root / entry.path)
    if entry.media_type in JSON_TYPES or entry.path.endswith(".json"):
        text = data.decode("utf-8", errors="replace")
        if str(local_root) in text:
            raise PublishError(where, f"contains the local catalog path {local_root}: refusing to publish it")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PublishError(where, f"is not valid JSON ({exc})") from None
        for href in _hrefs(doc):
            if UNSAFE_HREF.search(href):
                raise PublishError(where, f"href {href!r} is a local path or carries credentials: "
                                               "refusing to publish it")
    elif entry.path.endswith(".parquet") and entry.path != MANIFEST:
        for href in _parquet_unsafe_hrefs(data, where):
            raise PublishError(where, f"index href {href!r} is a local path or carries credentials: "
                                           "refusing to publish it")


def _href_arrays(table: pa.Table) -> Iterator[pa.Array]:
    """The href strings of an index's ``assets`` (struct of structs) and ``links`` (list of structs)."""
    if "assets" in table.column_names:
        assets = table.column("assets").combine_chunks()
        if pa.types.is_struct(assets.type):
            for i in range(assets.type.num_fields):
                child = pc.struct_field(assets, [i])
                if pa.types.is_struct(child.type) and child.type.get_field_index("href") >= 0:
                    yield pc.struct_field(child, "href")
    if "links" in table.column_names:
        links = pc.list_flatten(table.column("links").combine_chunks())
        if pa.types.is_struct(links.type) and links.type.get_field_index("href") >= 0:
            yield pc.struct_field(links, "href")


def _parquet_unsafe_hrefs(data: bytes, where: str) -> Iterator[str]:
    try:
        schema = pq.read_schema(pa.BufferReader(data))
        columns = [c for c in ("assets", "links") if c in schema.names]
        table = pq.read_table(pa.BufferReader(data), columns=columns)
    except pa.ArrowException as exc:
        raise PublishError(where, f"is not a readable Parquet file ({exc})") from None
    for hrefs in _href_arrays(table):
        bad = pc.match_substring_regex(hrefs, UNSAFE_HREF.pattern, ignore_case=True)
        if pc.any(bad).as_py():
            yield pc.filter(hrefs, bad)[0].as_py()


# ---------------------------------------------------------------------------------------------
# Upload
# ---------------------------------------------------------------------------------------------


def _matches(head: dict[str, Any] | None, entry: ManifestEntry) -> bool:
    return (head is not None
            and int(head.get("ContentLength", -1)) == entry.size
            and head.get("Metadata", {}).get(SHA256_META) == entry.sha256
            and head.get("ContentType") == entry.media_type)


class _Publisher:
    def __init__(self, root: Path, store: S3Store, options: PublishOptions, report: PublishReport,
                 total: int, progress: ProgressFn | None, existing: dict[str, int]) -> None:
        self.root, self.store, self.options, self.report = root, store, options, report
        self.existing = existing
        self.total, self.progress = total, progress
        self.done = 0
        self.lock = threading.Lock()

    def one(self, entry: ManifestEntry) -> None:
        key = self.store.describe(entry.path)
        try:
            uploaded = self._one(entry)
        except PublishError:
            raise
        except Exception as exc:  # boto3 gave up after its retries, or a local read failed
            raise PublishError(key, f"upload failed ({exc})") from exc
        with self.lock:
            self.done += 1
            if uploaded:
                self.report.uploaded += 1
                self.report.bytes_uploaded += entry.size
            else:
                self.report.skipped += 1
            if self.progress is not None:
                self.progress(self.done, self.total)

    def _one(self, entry: ManifestEntry) -> bool:
        if entry.path in self.existing and _matches(self.store.head(entry.path), entry):
            log.debug("%s already published", entry.path)
            return False
        data = read_verified(self.root, entry)
        check_publishable(entry, data, self.root)
        self.store.write(entry.path, data, entry.media_type)
        head = self.store.head(entry.path)
        if not _matches(head, entry):
            got = "missing" if head is None else (f"{head.get('ContentLength')} bytes, "
                                                   f"sha256 {head.get('Metadata', {}).get(SHA256_META)}, "
                                                   f"type {head.get('ContentType')!r}")
            raise PublishError(self.store.describe(entry.path),
                               f"verification failed after upload: expected {entry.size} bytes, "
                               f"sha256 {entry.sha256}, type {entry.media_type!r}; found {got}")
        if self.options.verify == "get":
            back = self.store.read(entry.path)
            if back is None or hashlib.sha256(back).hexdigest() != entry.sha256:
                raise PublishError(self.store.describe(entry.path), "downloaded bytes differ from the local file")
        return True

    def stage(self, stage: int, entries: list[ManifestEntry], pool: ThreadPoolExecutor) -> None:
        log.info("stage %d (%s): %d objects", stage, STAGE_NAMES[stage], len(entries))
        futures: list[Future[None]] = [pool.submit(self.one, e) for e in entries]
        finished, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in finished if f.exception() is not None]
        if not failed:
            return
        for f in pending:
            f.cancel()
        wait(pending)  # let uploads already running finish (they are complete objects or nothing)
        failures = [exc for f in futures if not f.cancelled() and (exc := f.exception()) is not None]
        first = failures[0]
        more = f" ({len(failures) - 1} more objects failed)" if len(failures) > 1 else ""
        if isinstance(first, PublishError):
            raise PublishError(first.where, first.problem + more + "; the root catalog was not published") from first
        raise first


def publish(local_root: str | Path, dest: str, settings: StorageSettings | None = None,
            options: PublishOptions = PublishOptions(), progress: ProgressFn | None = None) -> PublishReport:
    """Publish the catalog built at ``local_root`` to ``dest`` (``s3://bucket/prefix``).

    Returns what was uploaded and skipped; raises :class:`PublishError` naming the key or local
    file at fault, in which case the root ``catalog.json`` has not been (re)published.
    """
    if options.workers < 1:
        raise ValueError(f"workers must be at least 1, not {options.workers}")
    root = Path(local_root).expanduser().resolve()
    if not root.is_dir():
        raise PublishError(str(root), "local catalog folder not found")
    settings = settings or StorageSettings.from_env()
    if settings.max_pool_connections < options.workers:
        settings = replace(settings, max_pool_connections=options.workers)
    store = S3Store(dest, settings)
    entries = load_manifest(root)
    check_local_sizes(root, entries)
    report = PublishReport(url=store.url, objects=len(entries))
    started = time.perf_counter()
    try:
        existing = store.list_sizes()
    except OSError as exc:
        raise PublishError(store.url, str(exc)) from exc
    publisher = _Publisher(root, store, options, report, len(entries), progress, existing)
    ordered = sorted(entries, key=lambda e: (e.stage, e.path))
    with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="publish") as pool:
        for stage, group in groupby(ordered, key=lambda e: e.stage):
            publisher.stage(stage, list(group), pool)
    report.seconds = time.perf_counter() - started
    log.info("%s", report.describe())
    return report


__all__ = ["PublishError", "PublishOptions", "PublishReport", "check_publishable", "load_manifest", "publish"]
