"""One settings object for object storage: endpoint, credentials, retries, GDAL options.

Passed down explicitly (never a process-wide default) and picklable, so it travels to Dask and
DataLoader workers. Nothing here is ever written into an href or into catalog metadata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Literal


@dataclass(frozen=True)
class StorageSettings:
    """How to reach S3-compatible object storage (and how GDAL should read from it)."""

    endpoint_url: str | None = None
    """S3 endpoint (``http://127.0.0.1:9000`` for a local server); ``None``: AWS."""
    region: str | None = None
    """Region name; ``None``: from the environment / profile, else ``us-east-1``."""
    profile: str | None = None
    """A named AWS profile; ``None``: the default credential chain (environment, files, IMDS)."""
    anonymous: bool = False
    """Unsigned requests for public buckets (GDAL: ``AWS_NO_SIGN_REQUEST=YES``)."""
    requester_pays: bool = False
    """Send ``x-amz-request-payer: requester`` (GDAL: ``AWS_REQUEST_PAYER=requester``)."""
    max_attempts: int = 5
    """Attempts per request, first included (botocore ``standard`` retry mode, GDAL_HTTP_MAX_RETRY)."""
    retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"
    """botocore retry mode; ``standard`` retries throttling and 5xx with exponential backoff."""
    checksums: Literal["when_required", "when_supported"] = "when_required"
    """boto3 request/response checksum calculation. ``when_supported`` sends CRC checksums on
    every upload (AWS); ``when_required`` keeps uploads acceptable to stores that do not know the
    newer checksum headers (MinIO, Ceph, moto). The builder verifies sha256 itself either way."""
    max_pool_connections: int = 32
    """Connections per boto3 client (parallel uploads and fetches)."""
    gdal_options: dict[str, str] = field(default_factory=dict)
    """Extra GDAL configuration options, added to (and overriding) :meth:`gdal_env`'s."""

    @classmethod
    def from_env(cls, **overrides: Any) -> StorageSettings:
        """Settings from ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_PROFILE``, ``AWS_NO_SIGN_REQUEST``."""
        env = os.environ
        base = cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            profile=env.get("AWS_PROFILE"),
            anonymous=env.get("AWS_NO_SIGN_REQUEST", "").upper() in ("YES", "TRUE", "1"),
        )
        return replace(base, **overrides)

    def gdal_env(self) -> dict[str, str]:
        """GDAL configuration options for reading COGs from this store (``rasterio.Env(**...)``)."""
        opts = {
            # A COG is self-describing: never list the "directory" for sidecar files (.aux.xml, .ovr),
            # which costs a LIST request per open on S3.
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            # Only .tif objects are ours to open; do not probe other extensions.
            "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
            # Retry transient HTTP errors (429, 5xx) like boto3 does.
            "GDAL_HTTP_MAX_RETRY": str(max(self.max_attempts - 1, 0)),
            "GDAL_HTTP_RETRY_DELAY": "0.5",
            # Our COGs are one tile of a few hundred KB: merge reads of neighbouring blocks.
            "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
            # HTTP/2 multiplexing when the server offers it.
            "GDAL_HTTP_MULTIPLEX": "YES",
            # Reuse connections across opens.
            "GDAL_HTTP_VERSION": "2",
            "CPL_VSIL_CURL_USE_HEAD": "NO",
        }
        if self.endpoint_url:
            scheme, _, host = self.endpoint_url.partition("://")
            opts["AWS_S3_ENDPOINT"] = host.rstrip("/")
            opts["AWS_HTTPS"] = "YES" if scheme == "https" else "NO"
            # Local / non-AWS servers address buckets by path, not by virtual host.
            opts["AWS_VIRTUAL_HOSTING"] = "FALSE"
        if self.region:
            opts["AWS_REGION"] = self.region
        if self.profile:
            opts["AWS_PROFILE"] = self.profile
        if self.anonymous:
            opts["AWS_NO_SIGN_REQUEST"] = "YES"
        if self.requester_pays:
            opts["AWS_REQUEST_PAYER"] = "requester"
        opts.update(self.gdal_options)
        return opts
