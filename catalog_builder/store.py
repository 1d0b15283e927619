"""Where a catalog is written: a local folder (here) or s3:// (``catalog_builder.s3store``).

Every store writes whole objects by path relative to the catalog root, can read them back, and
knows each object's size. Local writes are atomic (temporary file + rename), so a killed build
never leaves a half-written file under its final name.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.parquet as pq

# Publish order (a reader that sees an object of stage N finds every object of stages < N) and
# the manifest's key are part of the catalog contract.
from bigearth_stac.contract import MANIFEST, STAGE_COG, STAGE_ITEM, STAGE_META, STAGE_ROOT  # noqa: F401
from bigearth_stac.hrefs import scheme_of


@dataclass(frozen=True)
class ManifestEntry:
    """One object of a catalog: where it is, what it must be, and when it may be published."""

    path: str
    size: int
    sha256: str
    media_type: str
    stage: int


@runtime_checkable
class OutputStore(Protocol):
    """A catalog's destination: whole objects by path relative to its root."""

    url: str
    """The root, as a user would name it (a folder or ``s3://bucket/prefix``)."""

    def write(self, path: str, data: bytes, media_type: str) -> None: ...

    def read(self, path: str) -> bytes | None:
        """The object's bytes, or ``None`` if it does not exist."""
        ...

    def size(self, path: str) -> int | None:
        """The object's size, or ``None`` if it does not exist."""
        ...


if TYPE_CHECKING:
    from bigearth_stac.settings import StorageSettings


class LocalStore:
    """An :class:`OutputStore` over a local folder.

    A write creates ``.<name>.<pid>-<n>.part`` beside its target (never following a symlink) and
    renames it into place. The folders it made or checked are remembered (the last
    :data:`FOLDER_CACHE` of them): a build writes four to six objects into each item's folder, and
    resolving and creating the folder for every one of them cost more than the write itself.
    """

    FOLDER_CACHE = 1024

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        self._folder = functools.lru_cache(maxsize=self.FOLDER_CACHE)(self._make_folder)
        self._seq = itertools.count()

    def _path(self, path: str) -> Path:
        full = (self.root / path).resolve()
        if self.root not in full.parents and full != self.root:
            raise ValueError(f"refusing to write outside the catalog root: {path!r}")
        return full

    def _make_folder(self, folder: str) -> str:
        """The real path of ``folder`` (relative to the root, normalised), created if missing
        (called through ``self._folder``, which remembers the answer).

        A folder is made inside its parent's real path (remembered too), so no path is resolved
        unless something already stands where a folder goes: that is resolved and must lie
        inside the root (a symlink out of the catalog is refused).
        """
        if not folder:
            self.root.mkdir(parents=True, exist_ok=True)
            return self.url
        parent, _, leaf = folder.rpartition("/")
        if leaf in ("", ".", ".."):
            raise ValueError(f"refusing to write outside the catalog root: {folder!r}")
        real = os.path.join(self._folder(parent), leaf)
        try:
            os.mkdir(real)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(real).st_mode):  # a symlink (or a file) where the folder goes
                real = str(self._path(folder))
        return real

    def write(self, path: str, data: bytes, media_type: str) -> None:
        folder, _, name = posixpath.normpath(path.lstrip("/")).rpartition("/")
        if name in ("", ".", "..") or "\x00" in path:
            raise ValueError(f"refusing to write {path!r}: not the name of a file under the catalog root")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        real = self._folder(folder)
        tmp = os.path.join(real, f".{name}.{os.getpid()}-{next(self._seq)}.part")
        try:
            fd = os.open(tmp, flags, 0o666)  # the umask applies, as for any file the user creates
        except FileNotFoundError:  # a folder was removed since it was remembered: forget them all
            self._folder.cache_clear()
            real = self._folder(folder)
            tmp = os.path.join(real, os.path.basename(tmp))
            fd = os.open(tmp, flags, 0o666)
        try:
            try:
                with memoryview(data) as rest:
                    while rest:
                        rest = rest[os.write(fd, rest):]
            finally:
                os.close(fd)
            os.replace(tmp, os.path.join(real, name))  # a symlink at the target is replaced, not followed
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def discard_partials(self) -> int:
        """Remove temporary files a killed writer left behind; returns how many."""
        count = 0
        for stale in self.root.rglob(".*.part"):
            stale.unlink(missing_ok=True)
            count += 1
        return count

    def read(self, path: str) -> bytes | None:
        try:
            return self._path(path).read_bytes()
        except FileNotFoundError:
            return None

    def size(self, path: str) -> int | None:
        try:
            return self._path(path).stat().st_size
        except FileNotFoundError:
            return None

    def __reduce__(self):
        return (LocalStore, (str(self.root),))


def open_store(location: str, settings: StorageSettings | None = None) -> OutputStore:
    """A store for a local folder or ``s3://bucket/prefix``."""
    scheme = scheme_of(location)
    if scheme == "s3":
        from catalog_builder.s3store import S3Store  # optional dependency: boto3

        return S3Store(location, settings=settings)
    if scheme != "file":
        raise ValueError(f"unsupported output location {location!r}: use a local folder or s3://")
    return LocalStore(location)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(store: OutputStore, path: str, data: bytes, media_type: str, stage: int) -> ManifestEntry:
    """Write an object and return its manifest entry."""
    store.write(path, data, media_type)
    return ManifestEntry(path, len(data), sha256_hex(data), media_type, stage)


def json_bytes(doc: Any, pretty: bool = False) -> bytes:
    """Deterministic JSON encoding (the same document always gives the same bytes)."""
    if pretty:
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


MANIFEST_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("sha256", pa.string()),
        ("media_type", pa.string()),
        ("stage", pa.int8()),
    ]
)


def manifest_bytes(entries: Iterable[ManifestEntry]) -> bytes:
    """The manifest as Parquet, sorted by (stage, path)."""
    rows = sorted(entries, key=lambda e: (e.stage, e.path))
    table = pa.table(
        {
            "path": [e.path for e in rows],
            "size": [e.size for e in rows],
            "sha256": [e.sha256 for e in rows],
            "media_type": [e.media_type for e in rows],
            "stage": [e.stage for e in rows],
        },
        schema=MANIFEST_SCHEMA,
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def read_manifest(data: bytes) -> list[ManifestEntry]:
    """Parse manifest bytes written by :func:`manifest_bytes`."""
    table = pq.read_table(pa.BufferReader(data))
    return [ManifestEntry(**row) for row in table.to_pylist()]
