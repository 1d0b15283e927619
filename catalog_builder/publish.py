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
* **Safe to publish?** Before the first upload, every JSON document (items, collections, the
  root, the schema) and every Parquet index is read, checked against the manifest's sha256 and
  scanned *as parsed data*, so no JSON escape (``\\/home``, ``\\u002f``) hides a value: it is
  refused if any string in it names a local path (the local catalog's own path, an absolute
  path, ``~/``, ``file:``, ``C:\\``), if an href carries credentials (``user:pass@``, a presigned
  query), or if a relative href climbs out of the catalog (``../`` past the root, also
  percent-encoded). A refused publish uploads nothing; the error names the file and the value.
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
import logging
import posixpath
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bigearth_stac.contract import (
    CATALOG_FILE,
    GEOJSON_MEDIA_TYPE,
    INDEX_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    SCHEMA_MEDIA_TYPE,
    STAGE_NAMES,
)
from bigearth_stac.settings import StorageSettings
from catalog_builder.rawio import loads_bounded
from catalog_builder.s3store import SHA256_META, S3Store, check_relative
from catalog_builder.store import MANIFEST, STAGE_META, STAGE_ROOT, ManifestEntry, read_manifest

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""``(objects done, objects total)``, called after each object is skipped or verified."""

ROOT_CATALOG = CATALOG_FILE
JSON_TYPES = (JSON_MEDIA_TYPE, GEOJSON_MEDIA_TYPE, SCHEMA_MEDIA_TYPE)

#: An href that must never be published: an absolute local path, a file: URL, a Windows path,
#: a backslash, user:password@ in a URL, or a presigned / signed query string.
UNSAFE_HREF = re.compile(
    r"^(/|file:|[A-Za-z]:[\\/])|\\|^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@"
    r"|[?&](X-Amz-Credential|X-Amz-Signature|X-Amz-Security-Token|Signature|sig|token)=",
    re.IGNORECASE,
)

#: A string value anywhere in a document that names a local path: one that starts like an
#: absolute, home-relative or Windows path, or that holds ``file:/`` or an absolute path
#: of two or more segments after a space, quote, bracket or ``=`` (``built from /home/u/raw``).
LOCAL_PATH_VALUE = re.compile(
    r"^(?:/|~[/\\]|[A-Za-z]:[\\/]|\\\\)|file:/|(?:^|[\s\"'(\[{<=,;])/[^\s/]+/",
    re.IGNORECASE,
)

# A fast over-approximation of LOCAL_PATH_VALUE over many strings at once (a line each, after
# mapping every character that may precede an embedded path to a newline); LOCAL_PATH_VALUE
# itself runs only on the strings of a document the prefilter flags.
_BEFORE_PATH = str.maketrans(dict.fromkeys(
    [c for c in map(chr, range(0x3100)) if re.match(r"\s", c)] + list("\"'([{<=,;"), "\n"))
_DRIVE_LINE = re.compile(r"\n[A-Za-z]:[\\/]")


def _may_name_local_paths(strings: list[str], local_root: Path) -> bool:
    text = "\n" + "\n".join(strings)
    if str(local_root) in text or "file:/" in text.lower() or _DRIVE_LINE.search(text):
        return True
    lines = text.translate(_BEFORE_PATH)
    return "\n/" in lines or "\n~" in lines or "\n\\" in lines

#: A URL with a scheme (``https:``, ``s3:``); an href without one is relative to its document.
HAS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

MAX_JSON_BYTES = 64 * 2**20
"""A JSON document larger than this is refused unread (items are a few KB, collections < 1 MB)."""
MAX_JSON_DEPTH = 64
"""Nesting a JSON document may have (this builder writes at most about 8 levels)."""


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
                                     JSON_MEDIA_TYPE, STAGE_ROOT))
    entries.append(ManifestEntry(MANIFEST, len(data), hashlib.sha256(data).hexdigest(), INDEX_MEDIA_TYPE, STAGE_META))
    return entries


def check_local_sizes(root: Path, entries: list[ManifestEntry]) -> None:
    """Every object exists locally as a regular file of its manifest size (cheap: ``stat`` only).

    A FIFO or a device (``/dev/zero`` behind a symlink) is refused here, before anything is read.
    Symlinks to regular files are followed (a catalog may spread over disks); what they hold
    must still match the manifest's sha256 before it is uploaded.
    """
    for e in entries:
        local = root / e.path
        try:
            st = local.stat()
        except FileNotFoundError:
            raise PublishError(str(local), "listed in the manifest but missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise PublishError(str(local), "is not a regular file: refusing to publish it")
        if st.st_size != e.size:
            raise PublishError(str(local), f"is {st.st_size} bytes, the manifest says {e.size}: "
                                           "the local catalog changed after its build")


def read_verified(root: Path, entry: ManifestEntry) -> bytes:
    """The local object's bytes, checked against the manifest's size and sha256."""
    local = root / entry.path
    try:
        with local.open("rb") as fh:
            data = fh.read(entry.size + 1)  # never more than the manifest promises (plus one, to notice)
    except OSError as exc:
        raise PublishError(str(local), f"cannot be read ({exc.strerror or exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != entry.size or digest != entry.sha256:
        raise PublishError(str(local), f"does not match the manifest (size {len(data)} vs {entry.size}, "
                                       f"sha256 {digest[:12]}... vs {entry.sha256[:12]}...): corrupt or changed")
    return data


# ---------------------------------------------------------------------------------------------
# What may be published
# ---------------------------------------------------------------------------------------------


def _strings(doc: Any) -> tuple[list[str], list[str]]:
    """(every string of a parsed JSON document, keys included; the ``href`` values among them).

    Iterative: a document's depth is bounded by :data:`MAX_JSON_DEPTH`, but no recursion at all.
    """
    strings: list[str] = []
    hrefs: list[str] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                strings.append(k)
                if isinstance(v, str):
                    strings.append(v)
                    if k == "href":
                        hrefs.append(v)
                elif isinstance(v, (dict, list)):
                    stack.append(v)
        elif isinstance(node, list):
            for v in node:
                if isinstance(v, str):
                    strings.append(v)
                elif isinstance(v, (dict, list)):
                    stack.append(v)
    if isinstance(doc, str):
        strings.append(doc)
    return strings, hrefs


def escapes_root(href: str, doc_path: str) -> bool:
    """True when the relative ``href`` of the document at ``doc_path`` points above the catalog root.

    Checked as written and percent-decoded (a reader that unquotes ``%2e%2e`` gets ``..``).
    """
    if HAS_SCHEME.match(href):
        return False
    base = posixpath.dirname(doc_path)
    for path in {href, unquote(href)}:
        path = path.split("#", 1)[0].split("?", 1)[0].replace("\\", "/")
        target = posixpath.normpath(posixpath.join(base, path)) if path else base
        if target == ".." or target.startswith("../") or target.startswith("/"):
            return True
    return False


def unsafe_value(value: str, is_href: bool, doc_path: str, local_root: Path) -> str | None:
    """Why ``value`` (a string of the document at ``doc_path``) must not be published, or ``None``."""
    if str(local_root) in value:
        return f"names the local catalog path {local_root}"
    if LOCAL_PATH_VALUE.search(value):
        return "names a local path"
    return _unsafe_href(value, doc_path) if is_href else None


def _unsafe_href(href: str, doc_path: str) -> str | None:
    if UNSAFE_HREF.search(href):
        return "is a local path or carries credentials"
    if escapes_root(href, doc_path):
        return "leads outside the catalog root"
    return None


def _show(value: str, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def check_json_document(doc: Any, doc_path: str, where: str, local_root: Path) -> None:
    """Refuse a parsed JSON document in which any string :func:`unsafe_value` objects to."""
    strings, hrefs = _strings(doc)
    for href in hrefs:
        why = unsafe_value(href, True, doc_path, local_root)
        if why is not None:
            raise PublishError(where, f"href {_show(href)} {why}: refusing to publish it")
    # Every other string: a quick look at all at once; one by one only when it flags something.
    if _may_name_local_paths(strings, local_root):
        for value in strings:
            why = unsafe_value(value, False, doc_path, local_root)
            if why is not None:
                raise PublishError(where, f"value {_show(value)} {why}: refusing to publish it")


def check_publishable(entry: ManifestEntry, data: bytes, local_root: Path) -> None:
    """Refuse documents that name a local path, carry credentials or link out of the catalog.

    JSON is checked as parsed data (every string, keys included), so escapes cannot hide a
    value; a Parquet index by its hrefs and the collection JSON in its metadata. Raises
    :class:`PublishError` naming the local file (``local_root / entry.path``) and the value.
    """
    where = str(local_root / entry.path)
    if _is_json(entry):
        try:
            doc = loads_bounded(data, MAX_JSON_DEPTH)
        except ValueError as exc:
            raise PublishError(where, f"is not a JSON document that can be checked: {exc}") from None
        check_json_document(doc, entry.path, where, local_root)
    elif _is_index(entry):
        for href in _parquet_unsafe_hrefs(data, entry.path, where, local_root):
            raise PublishError(where, f"index href {_show(href)} is a local path, carries credentials "
                                      "or leads outside the catalog root: refusing to publish it")


def _is_json(entry: ManifestEntry) -> bool:
    return entry.media_type in JSON_TYPES or entry.path.endswith(".json")


def _is_index(entry: ManifestEntry) -> bool:
    return entry.path.endswith(".parquet") and entry.path != MANIFEST


def check_catalog(root: Path, entries: list[ManifestEntry]) -> None:
    """Read, verify and check every document of the catalog: the step before the first upload.

    Each JSON document and Parquet index is read once here, checked against the manifest's size
    and sha256 and scanned by :func:`check_publishable`; the upload reads it again and checks
    the same sha256, so what is uploaded is what was scanned.
    """
    documents = [e for e in entries if _is_json(e) or _is_index(e)]
    log.info("checking %d documents before the first upload", len(documents))
    for entry in documents:
        if _is_json(entry) and entry.size > MAX_JSON_BYTES:
            raise PublishError(str(root / entry.path), f"is {entry.size:,} bytes, more than the "
                                                       f"{MAX_JSON_BYTES:,} a STAC document may be")
        check_publishable(entry, read_verified(root, entry), root)


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


def _parquet_unsafe_hrefs(data: bytes, doc_path: str, where: str, local_root: Path) -> Iterator[str]:
    try:
        schema = pq.read_schema(pa.BufferReader(data))
        columns = [c for c in ("assets", "links") if c in schema.names]
        table = pq.read_table(pa.BufferReader(data), columns=columns)
    except pa.ArrowException as exc:
        raise PublishError(where, f"is not a readable Parquet file ({exc})") from None
    # The collections stac-geoparquet keeps in the file's metadata are JSON documents too.
    for key, value in (schema.metadata or {}).items():
        if key == b"stac-geoparquet":
            try:
                meta = loads_bounded(value, MAX_JSON_DEPTH)
            except ValueError as exc:
                raise PublishError(where, f"its stac-geoparquet metadata cannot be checked: {exc}") from None
            check_json_document(meta, doc_path, where, local_root)
    for hrefs in _href_arrays(table):
        bad = pc.or_(pc.match_substring_regex(hrefs, UNSAFE_HREF.pattern, ignore_case=True),
                     pc.match_substring(hrefs, str(local_root)))
        if pc.any(bad).as_py():
            yield pc.filter(hrefs, bad)[0].as_py()
        # Relative hrefs with a ".." segment or a "%": checked one by one (index hrefs start
        # with "../", so this is every asset href of an index: a few microseconds each).
        climbing = pc.filter(hrefs, pc.match_substring_regex(hrefs, r"(^|/)\.\.(/|$)|%"))
        for href in climbing.to_pylist():
            if href is not None and escapes_root(href, doc_path):
                yield href


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
        # Same sha256 as the bytes check_catalog scanned before the first upload.
        data = read_verified(self.root, entry)
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
    check_catalog(root, entries)  # nothing is uploaded unless every document may be published
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


__all__ = [
    "PublishError",
    "PublishOptions",
    "PublishReport",
    "check_catalog",
    "check_publishable",
    "escapes_root",
    "load_manifest",
    "publish",
    "unsafe_value",
]
