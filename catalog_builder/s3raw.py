"""A :class:`~catalog_builder.rawio.RawReader` over raw BigEarthNet folders under ``s3://``.

Folders are key prefixes: ``listdir`` is ``ListObjectsV2`` with ``Delimiter='/'`` (one request
per 1,000 entries), ``read`` is one ``GetObject``. Pickles as its URL and settings; each process
makes its own boto3 client.
"""

from __future__ import annotations

import logging
from typing import Any

from bigearth_stac.settings import StorageSettings
from catalog_builder.s3store import S3Location, is_not_found

log = logging.getLogger(__name__)


class S3Reader(S3Location):
    """Bytes by name under ``s3://bucket/prefix``."""

    def __init__(self, url: str, settings: StorageSettings | None = None) -> None:
        super().__init__(url, settings)
        self.root = self.url

    def _key(self, name: str) -> str:
        name = name.strip("/")
        if any(seg in (".", "..") for seg in name.split("/")):
            raise ValueError(f"refusing name {name!r} under {self.root}: '.' or '..' segment")
        return "/".join(p for p in (self.prefix, name) if p)

    def listdir(self, name: str = "") -> list[str]:
        base = self._key(name)
        prefix = f"{base}/" if base else ""
        names: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    names.add(common["Prefix"][len(prefix):].rstrip("/"))
                for obj in page.get("Contents", []):
                    rest = obj["Key"][len(prefix):]
                    if rest:  # skip a "folder marker" object named exactly like the prefix
                        names.add(rest)
        except Exception as exc:
            if is_not_found(exc) or "NoSuchBucket" in str(exc):
                raise FileNotFoundError(f"raw data folder not found: {self.describe(name)} ({exc})") from None
            raise OSError(f"{self.describe(name)}: cannot list ({exc})") from exc
        if not names:
            raise FileNotFoundError(f"raw data folder not found or empty: {self.describe(name)}")
        return sorted(names)

    def read(self, name: str) -> bytes:
        key = self._key(name)
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if is_not_found(exc):
                raise FileNotFoundError(f"{self.describe(name)}: no such object") from None
            raise OSError(f"{self.describe(name)}: cannot read ({exc})") from exc
        return resp["Body"].read()

    def describe(self, name: str) -> str:
        key = "/".join(p for p in (self.prefix, name.strip("/")) if p)
        return f"s3://{self.bucket}/{key}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable for Dask workers
        return (S3Reader, (self.root, self.settings))

    def __repr__(self) -> str:
        return f"S3Reader({self.root!r})"


__all__ = ["S3Reader"]
