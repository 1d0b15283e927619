"""An :class:`~catalog_builder.store.OutputStore` over ``s3://bucket/prefix`` (boto3).

Each write is one ``PutObject`` with the object's media type, a ``Content-MD5`` header (the
server rejects a body that arrives damaged) and the sha256 of the bytes in the object's metadata
(``x-amz-meta-sha256``), so the object can later be verified with a ``HEAD`` alone. The store
pickles as its URL and settings; each process creates its own boto3 client on first use (boto3
clients cannot cross processes), so Dask workers can write to it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import posixpath
from typing import Any

from bigearth_stac.io import parse_s3_url
from bigearth_stac.settings import StorageSettings

log = logging.getLogger(__name__)

SHA256_META = "sha256"
"""Object metadata key holding the hex sha256 of the object (``x-amz-meta-sha256``)."""


def check_relative(path: str, where: str) -> str:
    """``path`` if it is a clean relative ``/``-separated path, else ``ValueError`` naming it."""
    if (not path or path.startswith("/") or "\\" in path or "\x00" in path
            or any(seg in ("", ".", "..") for seg in path.split("/"))):
        raise ValueError(f"refusing path {path!r} under {where}: not a plain relative path")
    return path


def is_not_found(exc: BaseException) -> bool:
    """True for a botocore ``ClientError`` that means the object (or key) does not exist."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class S3Location:
    """``s3://bucket/prefix`` with the settings to reach it (shared by the store and the reader)."""

    def __init__(self, url: str, settings: StorageSettings | None = None) -> None:
        loc = parse_s3_url(url.rstrip("/"))
        if settings is not None and not isinstance(settings, StorageSettings):
            raise TypeError(f"settings must be a StorageSettings, not {type(settings).__name__}")
        self.bucket = loc.bucket
        self.prefix = loc.key.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.settings = settings or StorageSettings.from_env()

    @property
    def client(self) -> Any:
        """This process's boto3 client (created on first use, shared by threads)."""
        return self.settings.shared_client()


class S3Store(S3Location):
    """Whole objects under ``s3://bucket/prefix``, by path relative to the prefix."""

    def key(self, path: str) -> str:
        """The object key of ``path`` (relative to the catalog root)."""
        check_relative(path, self.url)
        return posixpath.join(self.prefix, path) if self.prefix else path

    def write(self, path: str, data: bytes, media_type: str) -> None:
        key = self.key(path)
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType=media_type,
            ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode("ascii"),
            Metadata={SHA256_META: hashlib.sha256(data).hexdigest()},
        )
        log.debug("wrote s3://%s/%s (%d bytes)", self.bucket, key, len(data))

    def read(self, path: str) -> bytes | None:
        key = self.key(path)
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise OSError(f"s3://{self.bucket}/{key}: cannot read ({exc})") from exc
        return resp["Body"].read()

    def head(self, path: str) -> dict[str, Any] | None:
        """The object's ``HeadObject`` answer, or ``None`` if it does not exist."""
        key = self.key(path)
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise OSError(f"s3://{self.bucket}/{key}: cannot HEAD ({exc})") from exc

    def size(self, path: str) -> int | None:
        head = self.head(path)
        return None if head is None else int(head["ContentLength"])

    def list_sizes(self) -> dict[str, int]:
        """Path (relative to the root) -> size of every object under the root (1 request per 1,000)."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        out: dict[str, int] = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    out[obj["Key"][len(prefix):]] = int(obj["Size"])
        except Exception as exc:
            raise OSError(f"{self.url}: cannot list ({exc})") from exc
        return out

    def describe(self, path: str) -> str:
        return f"s3://{self.bucket}/{self.key(path)}"

    def __reduce__(self) -> tuple[Any, ...]:  # the settings travel, the client does not
        return (S3Store, (self.url, self.settings))

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"


__all__ = ["SHA256_META", "S3Store", "check_relative", "is_not_found"]
