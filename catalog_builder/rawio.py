"""Reading raw inputs: a tiny interface that hands out bytes by name.

The sources never open paths themselves; they ask a :class:`RawReader` for the names in a
folder and the bytes of a file. A local folder is one implementation; s3:// (and, later, members
of an archive) are others, so the release readers do not care where the raw data lives.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from bigearth_stac.settings import StorageSettings

log = logging.getLogger(__name__)


@runtime_checkable
class RawReader(Protocol):
    """Bytes by name under one root; names are ``/``-separated and relative to the root."""

    root: str

    def listdir(self, name: str = "") -> list[str]:
        """Names of the entries directly under ``name`` (folders and files), sorted."""
        ...

    def read(self, name: str) -> bytes:
        """The whole content of the file ``name``; ``FileNotFoundError`` if it is missing."""
        ...

    def describe(self, name: str) -> str:
        """A human-readable location of ``name`` for error messages."""
        ...


class LocalReader:
    """A :class:`RawReader` over a local folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"raw data folder not found: {path}")
        self.root = str(path.resolve())

    def _path(self, name: str) -> Path:
        return Path(self.root, name) if name else Path(self.root)

    def listdir(self, name: str = "") -> list[str]:
        return sorted(os.listdir(self._path(name)))

    def read(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def describe(self, name: str) -> str:
        return str(self._path(name))

    def __reduce__(self):  # picklable for Dask workers
        return (LocalReader, (self.root,))


def open_reader(location: str, settings: StorageSettings | None = None) -> RawReader:
    """A reader for a local folder or an ``s3://bucket/prefix`` URL."""
    if location.startswith("s3://"):
        from catalog_builder.s3raw import S3Reader  # optional dependency: boto3

        return S3Reader(location, settings=settings)
    if "://" in location:
        raise ValueError(f"unsupported raw data location {location!r}: use a local path or s3://")
    return LocalReader(location)
