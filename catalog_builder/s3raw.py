"""A :class:`~catalog_builder.rawio.RawReader` over raw BigEarthNet folders under ``s3://``.

Folders are key prefixes: ``listdir`` is ``ListObjectsV2`` with ``Delimiter='/'`` (one request
per 1,000 entries), ``read`` is one ranged ``GetObject`` for the first ``max_bytes + 1`` bytes:
the object's total size (``Content-Range``) is checked before the body is read, and the server
never sends more than the cap however large the object is. Pickles as its URL and settings;
each process makes its own boto3 client.
"""

from __future__ import annotations

import logging
from typing import Any

from bigearth_stac.settings import StorageSettings
from catalog_builder.rawio import DEFAULT_MAX_BYTES, check_name, too_large
from catalog_builder.s3store import S3Location, is_not_found

log = logging.getLogger(__name__)


class S3Reader(S3Location):
    """Bytes by name under ``s3://bucket/prefix``."""

    def __init__(self, url: str, settings: StorageSettings | None = None) -> None:
        super().__init__(url, settings)
        self.root = self.url

    def _key(self, name: str) -> str:
        return "/".join(p for p in (self.prefix, check_name(name, self.root)) if p)

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

    def read(self, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        key = self._key(name)
        try:
            # A range GET: the server sends at most max_bytes + 1 bytes and says the total size.
            resp = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{max_bytes}")
        except Exception as exc:
            if is_not_found(exc):
                raise FileNotFoundError(f"{self.describe(name)}: no such object") from None
            if _error_code(exc) == "InvalidRange":  # the range starts past the end: an empty object
                return b""
            raise OSError(f"{self.describe(name)}: cannot read ({exc})") from exc
        body = resp["Body"]
        try:
            size = _total_size(resp)
            if size is not None and size > max_bytes:
                raise too_large(size, max_bytes)
            data = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:  # a store that ignored the range and gave no size
            raise too_large(len(data), max_bytes)
        return data

    def describe(self, name: str) -> str:
        key = "/".join(p for p in (self.prefix, name.strip("/")) if p)
        return f"s3://{self.bucket}/{key}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable for Dask workers
        return (S3Reader, (self.root, self.settings))

    def __repr__(self) -> str:
        return f"S3Reader({self.root!r})"


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _total_size(resp: dict[str, Any]) -> int | None:
    """The object's total size from a (ranged) ``GetObject`` answer, if the store said it."""
    content_range = str(resp.get("ContentRange") or "")  # "bytes 0-1023/5368709120"
    total = content_range.rpartition("/")[2]
    if total.isdigit():
        return int(total)
    if not content_range and resp.get("ContentLength") is not None:  # whole object, range ignored
        return int(resp["ContentLength"])
    return None


__all__ = ["S3Reader"]
