"""Reading raw inputs: a tiny interface that hands out bytes by name, bounded.

The sources never open paths themselves; they ask a :class:`RawReader` for the names in a
folder and the bytes of a file. A local folder is one implementation; s3:// (and, later, members
of an archive) are others, so the release readers do not care where the raw data lives.

Raw data is input from elsewhere and is treated as hostile: every read carries a size cap that
the reader enforces *before* reading (``stat`` for a local file, the object size for S3), a
local reader never leaves its root (``..`` names and symlinks leading outside are refused) and
reads only regular files, and :func:`loads_bounded` parses JSON with a cap on its nesting depth.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bigearth_stac.hrefs import scheme_of

if TYPE_CHECKING:
    from bigearth_stac.settings import StorageSettings

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 2**20
"""Cap of a :meth:`RawReader.read` that names none (64 MiB). Callers pass the cap of what the
file can legitimately be (a band file: :func:`~catalog_builder.sources.base.band_byte_limit`)."""


class RawInputError(OSError):
    """A raw file that is not read: too large, not a regular file, or outside the reader's root.

    ``str()`` is the problem alone; the caller names the file (``RawReader.describe``).
    """

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem

    def __str__(self) -> str:
        return self.problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problem,))


class TooLargeError(RawInputError):
    """A raw file larger than the cap its reader was given; raised before its bytes are read."""


class OutsideRootError(RawInputError):
    """A name that leads outside the reader's root (a ``..`` segment, or a symlink pointing out)."""


@runtime_checkable
class RawReader(Protocol):
    """Bytes by name under one root; names are ``/``-separated and relative to the root."""

    root: str

    def listdir(self, name: str = "") -> list[str]:
        """Names of the entries directly under ``name`` (folders and files), sorted."""
        ...

    def read(self, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """The whole content of the file ``name``.

        ``FileNotFoundError`` if it is missing; :class:`TooLargeError` if it is larger than
        ``max_bytes`` (decided before its content is read); :class:`RawInputError` if it must
        not be read at all; another ``OSError`` if reading failed.
        """
        ...

    def describe(self, name: str) -> str:
        """A human-readable location of ``name`` for error messages."""
        ...


def check_name(name: str, root: str) -> str:
    """``name`` stripped of outer ``/``, or :class:`OutsideRootError` if it could leave ``root``."""
    clean = name.strip("/")
    if "\x00" in clean or any(seg in (".", "..") for seg in clean.split("/")):
        raise OutsideRootError(f"refusing name {name!r} under {root}: '.', '..' or NUL in it")
    return clean


def too_large(size: int, max_bytes: int) -> TooLargeError:
    """The error for a file of ``size`` bytes over a cap of ``max_bytes``."""
    return TooLargeError(f"is {size:,} bytes, more than the {max_bytes:,} bytes such a file can be; not read")


class LocalReader:
    """A :class:`RawReader` over a local folder; never reads outside it (symlinks included).

    The real path of a folder is resolved and checked once and remembered (the last
    :data:`FOLDER_CACHE` folders): a pair's dozen band files share one. The file itself is
    looked at with ``lstat`` and opened without following a symlink; a file that is a symlink is
    resolved and checked like a folder.
    """

    FOLDER_CACHE = 256

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"raw data folder not found: {path}")
        self.root = str(path.resolve())
        self._folder = functools.lru_cache(maxsize=self.FOLDER_CACHE)(self._confined_folder)

    def _path(self, name: str) -> Path:
        return Path(self.root, name) if name else Path(self.root)

    def _confined(self, name: str) -> str:
        """The real path of ``name``, checked to lie under the root after following symlinks."""
        real = os.path.realpath(self._path(check_name(name, self.root)))
        if os.path.commonpath([real, self.root]) != self.root:
            raise OutsideRootError(f"leads outside the raw root {self.root} (to {real}): "
                                   "a symlink out of the raw data is not read")
        return real

    def _confined_folder(self, folder: str) -> str:
        """:meth:`_confined` of a folder (called through ``self._folder``, which remembers it)."""
        return self._confined(folder) if folder else self.root

    def listdir(self, name: str = "") -> list[str]:
        return sorted(os.listdir(self._confined(name)))

    def read(self, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        folder, _, leaf = check_name(name, self.root).rpartition("/")
        path = os.path.join(self._folder(folder), leaf)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):  # followed only where it stays under the root
            path = self._confined(name)
            st = os.stat(path)
        else:
            flags |= getattr(os, "O_NOFOLLOW", 0)  # a symlink swapped in since the lstat: ELOOP
        # stat before open: a FIFO or a device is never opened (opening a FIFO blocks).
        if not stat.S_ISREG(st.st_mode):
            raise RawInputError("is not a regular file; not read")
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):  # replaced between the stat and the open
                raise RawInputError("is not a regular file; not read")
            if st.st_size > max_bytes:
                raise too_large(st.st_size, max_bytes)
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:  # grew after the fstat
            raise too_large(len(data), max_bytes)
        return data

    def describe(self, name: str) -> str:
        return str(self._path(name))

    def __reduce__(self) -> tuple[Any, ...]:  # picklable for Dask workers
        return (LocalReader, (self.root,))


def open_reader(location: str, settings: StorageSettings | None = None) -> RawReader:
    """A reader for a local folder or an ``s3://bucket/prefix`` URL."""
    scheme = scheme_of(location)
    if scheme == "s3":
        from catalog_builder.s3raw import S3Reader  # optional dependency: boto3

        return S3Reader(location, settings=settings)
    if scheme != "file":
        raise ValueError(f"unsupported raw data location {location!r}: use a local path or s3://")
    return LocalReader(location)


# ---------------------------------------------------------------------------------------------
# JSON from untrusted bytes
# ---------------------------------------------------------------------------------------------

_ESCAPE = re.compile(r"\\.", re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def json_depth_exceeds(text: str, max_depth: int) -> bool:
    """True when the arrays and objects of ``text`` nest deeper than ``max_depth``.

    Escapes and strings are dropped (a split on ``"``), then everything but brackets, then
    innermost ``[]`` / ``{}`` pairs level by level: at most ``max_depth`` passes of a regex over
    the brackets, all linear, so a hostile document costs milliseconds where the parser would
    recurse once per level.
    """
    if "\\" in text:
        text = _ESCAPE.sub("", text)  # no escaped quote is left to end a string early
    outside = "".join(text.split('"')[::2])  # an unterminated string is dropped: the parser says so
    brackets = _NOT_BRACKET.sub("", outside)
    for _ in range(max_depth):
        inner = _INNERMOST.sub("", brackets)
        if inner == brackets:
            # Balanced: nothing left. Unbalanced: the parser fails at the first stray closer,
            # nested as deep as the openers left before it (plus levels already removed).
            openers = re.match(r"[\[{]*", brackets)
            return openers is not None and openers.end() > max_depth
        brackets = inner
    return _INNERMOST.search(brackets) is not None


def loads_bounded(data: bytes, max_depth: int = 32) -> Any:
    """``json.loads`` for untrusted bytes: ``ValueError`` with a short reason, whatever is wrong.

    Refuses documents nested deeper than ``max_depth`` before parsing them, and turns every
    failure of the parser (syntax, encoding, integers over Python's digit limit, recursion) into
    ``ValueError``. Size is the caller's to cap: pass bytes already read with a cap.
    """
    try:
        text = data.decode(json.detect_encoding(data))
    except (UnicodeDecodeError, LookupError) as exc:
        raise ValueError(f"JSON is not UTF-8/16/32 text ({exc})") from None
    too_deep = f"JSON nested deeper than {max_depth} levels; not parsed"
    if json_depth_exceeds(text, max_depth):
        raise ValueError(too_deep)
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(too_deep) from None
    except ValueError as exc:  # JSONDecodeError, and "Exceeds the limit ... for integer string conversion"
        raise ValueError(f"malformed JSON ({exc})") from None


__all__ = [
    "DEFAULT_MAX_BYTES",
    "LocalReader",
    "OutsideRootError",
    "RawInputError",
    "RawReader",
    "TooLargeError",
    "check_name",
    "json_depth_exceeds",
    "loads_bounded",
    "open_reader",
]
