"""One settings object for object storage: endpoint, credentials, retries, GDAL options.

Passed down explicitly (never a process-wide default) and picklable, so it travels to Dask and
DataLoader workers. Nothing here is ever written into an href or into catalog metadata.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # optional dependencies, imported where used
    import pyarrow.fs
    import rasterio

#: boto3 clients per (process, settings): clients are thread-safe but not fork-safe, and creating
#: one is slow (tens of ms), so each process builds its own once per distinct settings.
_CLIENTS: dict[tuple[int, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()


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
    connect_timeout: float = 10.0
    """Seconds to wait for a TCP connection (boto3, pyarrow, GDAL)."""
    read_timeout: float = 60.0
    """Seconds to wait for a response on an open connection (boto3, pyarrow, GDAL); obstore
    applies it to a whole request (our objects are small)."""
    reader: Literal["auto", "obstore", "boto3"] = "auto"
    """Which client reads ``s3://`` objects (:class:`~bigearth_stac.io.ObjectReader`: the loader,
    the xarray view, documents): ``"auto"`` takes obstore (Rust, about a third of boto3's client
    CPU per GET) when it is installed, else boto3; ``"obstore"`` requires it. boto3 stays the
    publisher's client either way. Both are retried under the one policy of ``max_attempts``."""

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
            # The same time limits as boto3 (seconds): a stalled connection fails and is retried.
            "GDAL_HTTP_CONNECTTIMEOUT": str(int(self.connect_timeout)),
            "GDAL_HTTP_TIMEOUT": str(int(self.read_timeout)),
            # Our COGs are one tile of a few hundred KB: merge reads of neighbouring blocks.
            "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
            # HTTP/2 multiplexing when the server offers it.
            "GDAL_HTTP_MULTIPLEX": "YES",
            # Ask for HTTP/2 (curl falls back to HTTP/1.1 where the server does not offer it).
            "GDAL_HTTP_VERSION": "2",
            # Learn an object's size from the first ranged GET instead of a separate HEAD:
            # one request fewer per open.
            "CPL_VSIL_CURL_USE_HEAD": "NO",
        }
        if self.endpoint_url:
            scheme, _, host = self.endpoint_url.partition("://")
            # /vsis3/ talks to this host:port instead of s3.amazonaws.com ...
            opts["AWS_S3_ENDPOINT"] = host.rstrip("/")
            # ... over plain HTTP when the endpoint says so (a loopback test server).
            opts["AWS_HTTPS"] = "YES" if scheme == "https" else "NO"
            # Local / non-AWS servers address buckets by path, not by virtual host.
            opts["AWS_VIRTUAL_HOSTING"] = "FALSE"
        if self.region:
            # Region used in the request signature.
            opts["AWS_REGION"] = self.region
        if self.profile:
            # Credentials from this profile of ~/.aws/credentials (GDAL reads the files itself).
            opts["AWS_PROFILE"] = self.profile
        if self.anonymous:
            # Public buckets: unsigned requests, no credential lookup.
            opts["AWS_NO_SIGN_REQUEST"] = "YES"
        if self.requester_pays:
            # Requester-pays buckets refuse requests without this header.
            opts["AWS_REQUEST_PAYER"] = "requester"
        # The caller's own options win.
        opts.update(self.gdal_options)
        return opts

    # -- clients ---------------------------------------------------------------------------

    def botocore_config(self) -> Any:
        """The ``botocore.config.Config`` every S3 client of the project is built with."""
        from botocore import UNSIGNED
        from botocore.config import Config

        kwargs: dict[str, Any] = {
            # Retries with exponential backoff and jitter on throttling, 5xx and dropped
            # connections; ``total_max_attempts`` counts the first attempt (``max_attempts`` in
            # this dict would count retries only).
            "retries": {"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
            # Flexible (CRC) checksums on uploads and their validation on downloads: on for AWS
            # (``when_supported``), only where an operation requires them (``when_required``) for
            # stores that reject or ignore the newer headers. Integrity of our uploads does not
            # depend on this: S3Store sends Content-MD5 and the publisher verifies sha256.
            "request_checksum_calculation": self.checksums,
            "response_checksum_validation": self.checksums,
            # Connections kept per client: one per concurrent upload/fetch thread.
            "max_pool_connections": self.max_pool_connections,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
        }
        if self.region:
            kwargs["region_name"] = self.region
        if self.anonymous:
            # Public buckets: send unsigned requests, never look for credentials.
            kwargs["signature_version"] = UNSIGNED
        if self.endpoint_url:
            # Non-AWS / local endpoints: bucket in the path, not in the host name.
            kwargs["s3"] = {"addressing_style": "path"}
        return Config(**kwargs)

    def boto3_client(self) -> Any:
        """A new boto3 S3 client (thread-safe; share it between threads, not between processes)."""
        import boto3

        session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
        client = session.client("s3", endpoint_url=self.endpoint_url, config=self.botocore_config())
        if self.requester_pays:
            # Requester-pays buckets: every request carries ``x-amz-request-payer`` (set before
            # signing, so it is part of the signature).
            client.meta.events.register("before-sign.s3", _add_request_payer)
        return client

    def shared_client(self) -> Any:
        """This process's boto3 client for these settings, created on first use."""
        key = (os.getpid(), repr(self))
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                client = _CLIENTS[key] = self.boto3_client()
            return client

    def pyarrow_filesystem(self) -> pyarrow.fs.S3FileSystem:
        """A ``pyarrow.fs.S3FileSystem`` for these settings (range reads of Parquet indexes).

        pyarrow's S3 client is in its wheel (no download at run time) and reads only the byte
        ranges Parquet asks for; DuckDB can query a ``pyarrow.dataset`` opened over it.
        """
        from pyarrow import fs

        kwargs: dict[str, Any] = {
            # Unsigned requests for public buckets; otherwise the AWS SDK's credential chain
            # (environment, config files, instance metadata), or the profile's keys below.
            "anonymous": self.anonymous,
            # The AWS SDK otherwise guesses the region from the environment or instance metadata.
            "region": self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            # The same attempt budget as boto3 and GDAL (standard AWS retry strategy: 5xx,
            # throttling and network errors, with backoff).
            "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
            "connect_timeout": self.connect_timeout,
            "request_timeout": self.read_timeout,
        }
        if self.endpoint_url:
            scheme, _, host = self.endpoint_url.partition("://")
            # A non-AWS endpoint is ``host:port`` plus a scheme; addressing stays path-style
            # (``force_virtual_addressing`` is off by default).
            kwargs["endpoint_override"] = host.rstrip("/")
            kwargs["scheme"] = scheme or "https"
        if self.profile and not self.anonymous:
            # pyarrow cannot name a profile: resolve its (possibly temporary) keys through boto3.
            import boto3

            creds = boto3.session.Session(profile_name=self.profile).get_credentials()
            if creds is None:
                raise ValueError(f"AWS profile {self.profile!r} has no credentials")
            frozen = creds.get_frozen_credentials()
            kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key,
                          session_token=frozen.token)
        # Note: pyarrow has no requester-pays option; read such indexes through boto3 (open_url).
        return fs.S3FileSystem(**kwargs)

    def obstore_s3_store(self, bucket: str) -> Any:
        """An ``obstore.store.S3Store`` for ``bucket`` with these settings (whole-object reads).

        Its own retries are off: :class:`~bigearth_stac.io.ObjectReader` retries under the one
        policy of ``max_attempts`` and counts every retry. Credentials come from boto3's chain
        (environment, config and credential files with ``profile``, SSO, instance metadata)
        when boto3 is installed, so both clients sign with the same keys; otherwise obstore
        reads the standard ``AWS_*`` environment variables itself.
        """
        from datetime import timedelta

        from obstore.store import S3Store

        scheme = self.endpoint_url.partition("://")[0] if self.endpoint_url else "https"
        kwargs: dict[str, Any] = {
            # No retries inside obstore: ObjectReader retries transient failures and counts them.
            "retry_config": {"max_retries": 0},
            "client_options": {
                # A loopback or private endpoint may speak plain HTTP; AWS never does.
                "allow_http": scheme == "http",
                "connect_timeout": timedelta(seconds=self.connect_timeout),
                "timeout": timedelta(seconds=self.read_timeout),
                # One kept-alive connection per concurrent GET of the fetch threads.
                "pool_max_idle_per_host": str(max(self.max_pool_connections, 1)),
            },
        }
        region = self.region
        if self.endpoint_url:
            kwargs["endpoint"] = self.endpoint_url.rstrip("/")
            # Non-AWS / local endpoints: bucket in the path, not in the host name (as boto3).
            kwargs["virtual_hosted_style_request"] = False
        if self.requester_pays:
            # Requester-pays buckets refuse requests without ``x-amz-request-payer``.
            kwargs["request_payer"] = True
        if self.anonymous:
            # Public buckets: unsigned requests, no credential lookup.
            kwargs["skip_signature"] = True
        else:
            provider = _boto3_credentials(self)
            if provider is not None:
                kwargs["credential_provider"] = provider
                region = region or provider.config.get("region")
        kwargs["region"] = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return S3Store(bucket, **kwargs)

    def rasterio_env(self, **extra: Any) -> rasterio.Env:
        """A ``rasterio.Env`` with :meth:`gdal_env` (plus ``extra`` options) for reading COGs."""
        import rasterio

        return rasterio.Env(**{**self.gdal_env(), **extra})


def _boto3_credentials(settings: StorageSettings) -> Any:
    """obstore's credential provider over boto3's chain for ``settings.profile``; ``None`` without
    boto3 (obstore then reads the environment). No credentials at all is a ``PermissionError``."""
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        return None
    session = boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
    try:
        return Boto3CredentialProvider(session)
    except ValueError as exc:  # boto3 found no credentials anywhere
        where = f"profile {settings.profile!r}" if settings.profile else "the environment, config files or instance metadata"
        raise PermissionError(f"no AWS credentials in {where}; use anonymous=True for public buckets") from exc


def _add_request_payer(request: Any, **_: Any) -> None:
    request.headers["x-amz-request-payer"] = "requester"
