"""Reading a published catalog: bytes by URL, safe href resolution, COGs through GDAL.

Three kinds of location are understood everywhere: a local path (or ``file://``), ``http(s)://``
and ``s3://bucket/key``. How to reach S3 (endpoint, credentials, retries, GDAL options) comes
from the :class:`~bigearth_stac.settings.StorageSettings` passed in; nothing here keeps a
process-wide default.

Security: a catalog is untrusted input. :func:`resolve_href` refuses any href that leaves the
catalog root (``../../etc/passwd``, another bucket or host, an absolute local path), and
:func:`open_raster` lets GDAL use its GTiff driver only, so a crafted asset (a VRT pointing at
local files, or any other format GDAL would otherwise sniff) is not opened.
"""

from __future__ import annotations

import logging
import posixpath
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

from bigearth_stac.settings import StorageSettings

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

log = logging.getLogger(__name__)

REMOTE_SCHEMES = ("s3", "http", "https")
HTTP_RETRY_STATUS = (429, 500, 502, 503, 504)


class S3Location(NamedTuple):
    bucket: str
    key: str
    """Key or prefix, without a leading ``/`` (may be empty)."""


def parse_s3_url(url: str) -> S3Location:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``; ``ValueError`` if malformed."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://bucket/key URL: {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"an s3:// URL takes no query or fragment: {url!r}")
    return S3Location(parts.netloc, parts.path.lstrip("/"))


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    # A Windows drive letter ("C:\\...") parses as a one-letter scheme: it is a local path.
    return "" if len(scheme) <= 1 else scheme


def _local_path(url: str) -> Path:
    if _scheme(url) == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file:// URL on another host: {url!r}")
        return Path(unquote(parts.path))
    return Path(url)


# ---------------------------------------------------------------------------------------------
# Bytes
# ---------------------------------------------------------------------------------------------


def open_url(url: str, settings: StorageSettings | None = None, timeout: float | None = None) -> bytes:
    """The whole content of a local file, an ``http(s)://`` URL or an ``s3://`` object.

    Missing objects raise ``FileNotFoundError`` naming the URL. HTTP requests are retried on
    429/5xx and connection errors up to ``settings.max_attempts``; S3 requests use boto3's
    retry configuration from the settings.
    """
    settings = settings or StorageSettings.from_env()
    scheme = _scheme(url)
    if scheme == "s3":
        return _read_s3(url, settings)
    if scheme in ("http", "https"):
        return _read_http(url, settings, timeout or settings.read_timeout)
    if scheme in ("", "file"):
        path = _local_path(url)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{url}: no such file") from None
    raise ValueError(f"unsupported URL scheme {scheme!r} in {url!r}: use a local path, http(s):// or s3://")


def _read_s3(url: str, settings: StorageSettings) -> bytes:
    loc = parse_s3_url(url)
    client = settings.shared_client()
    try:
        resp = client.get_object(Bucket=loc.bucket, Key=loc.key)
    except client.exceptions.NoSuchKey:
        raise FileNotFoundError(f"{url}: no such object") from None
    except client.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise FileNotFoundError(f"{url}: no such object") from None
        raise OSError(f"{url}: S3 error {code or ''} ({exc})") from exc
    return resp["Body"].read()


def _read_http(url: str, settings: StorageSettings, timeout: float) -> bytes:
    attempts = max(settings.max_attempts, 1)
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - scheme checked
                return resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise FileNotFoundError(f"{url}: HTTP 404") from None
            if exc.code not in HTTP_RETRY_STATUS or attempt == attempts:
                raise OSError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            if attempt == attempts:
                raise OSError(f"{url}: {exc}") from None
        time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# hrefs
# ---------------------------------------------------------------------------------------------


def catalog_root(root_url: str) -> str:
    """The root folder of a catalog given its root ``catalog.json`` (or the folder itself)."""
    scheme = _scheme(root_url)
    if scheme in REMOTE_SCHEMES:
        parts = urlsplit(root_url)
        path = parts.path
        if path.endswith(".json"):
            path = posixpath.dirname(path)
        return urlunsplit((parts.scheme, parts.netloc, path.rstrip("/") + "/", "", ""))
    local = _local_path(root_url).expanduser()
    if local.suffix == ".json":
        local = local.parent
    return str(local.resolve())


def resolve_href(base_url: str, href: str, root_url: str) -> str:
    """Resolve ``href`` against the document at ``base_url``; refuse it if it leaves the catalog.

    ``root_url`` is the catalog's root ``catalog.json`` or its folder. The result must be on the
    same scheme and host/bucket as the root and under its folder; ``..`` segments (also
    percent-encoded ones), absolute local paths, ``file://`` URLs in a remote catalog and
    backslashes are refused with a ``ValueError`` naming the href.
    """
    if not isinstance(href, str) or not href:
        raise ValueError(f"empty or non-string href {href!r} in {base_url}")
    if "\\" in href or "\x00" in href:
        raise ValueError(f"refusing href {href!r} in {base_url}: backslash or NUL in a path")
    root = catalog_root(root_url)
    scheme = _scheme(root)
    if scheme in REMOTE_SCHEMES:
        resolved = _resolve_remote(base_url, href)
        _check_remote(resolved, root, href, base_url)
        return resolved
    return _resolve_local(base_url, href, root)


def _resolve_remote(base_url: str, href: str) -> str:
    ref = urlsplit(href)
    if _scheme(href):
        return href  # absolute URL: checked against the root below
    base = urlsplit(base_url)
    if ref.netloc:  # scheme-relative //host/path
        return urlunsplit((base.scheme, ref.netloc, ref.path, ref.query, ""))
    if ref.path.startswith("/"):
        path = ref.path
    else:
        path = posixpath.join(posixpath.dirname(base.path), ref.path)
    # Normalise on the decoded path (a server may decode %2e%2e to ".."), keep the original text.
    decoded = unquote(path)
    if _escapes(decoded):
        return urlunsplit((base.scheme, base.netloc, decoded, "", ""))  # refused by the check
    norm = posixpath.normpath(path)
    if path.endswith("/") and not norm.endswith("/"):
        norm += "/"
    return urlunsplit((base.scheme, base.netloc, norm, ref.query, ""))


def _escapes(path: str) -> bool:
    """True if ``..`` segments climb above the start of ``path``."""
    depth = 0
    for seg in path.split("/"):
        if seg == "..":
            depth -= 1
            if depth < 0:
                return True
        elif seg not in ("", "."):
            depth += 1
    return False


def _check_remote(resolved: str, root: str, href: str, base_url: str) -> None:
    r, t = urlsplit(resolved), urlsplit(root)
    if r.scheme.lower() != t.scheme.lower() or r.netloc.lower() != t.netloc.lower():
        raise ValueError(f"refusing href {href!r} in {base_url}: it points outside the catalog "
                         f"root {root} (another {'bucket' if t.scheme == 's3' else 'host'})")
    decoded = unquote(r.path)
    norm = posixpath.normpath(decoded) if decoded else "/"
    if _escapes(decoded) or not (norm + "/").startswith(t.path):
        raise ValueError(f"refusing href {href!r} in {base_url}: it resolves to {resolved}, "
                         f"outside the catalog root {root}")


def _resolve_local(base_url: str, href: str, root: str) -> str:
    scheme = _scheme(href)
    if scheme in REMOTE_SCHEMES:
        raise ValueError(f"refusing href {href!r} in {base_url}: a remote URL in a local catalog")
    if scheme == "file":
        target = _local_path(href)
    elif scheme:
        raise ValueError(f"refusing href {href!r} in {base_url}: unsupported scheme {scheme!r}")
    else:
        href_path = unquote(urlsplit(href).path)
        target = Path(href_path) if href_path.startswith("/") else _local_path(base_url).parent / href_path
    resolved = target.resolve()  # follows symlinks: a link inside the catalog cannot lead out
    root_path = Path(root)
    if resolved != root_path and root_path not in resolved.parents:
        raise ValueError(f"refusing href {href!r} in {base_url}: it resolves to {resolved}, "
                         f"outside the catalog root {root_path}")
    return str(resolved)


# ---------------------------------------------------------------------------------------------
# Rasters
# ---------------------------------------------------------------------------------------------


def gdal_path(url: str) -> str:
    """The GDAL path of a COG URL: ``s3://b/k`` -> ``/vsis3/b/k``, ``http(s)://`` -> ``/vsicurl/``."""
    scheme = _scheme(url)
    if scheme == "s3":
        loc = parse_s3_url(url)
        return f"/vsis3/{loc.bucket}/{loc.key}"
    if scheme in ("http", "https"):
        return f"/vsicurl/{url}"
    if scheme in ("", "file"):
        path = str(_local_path(url))
        if path.startswith("/vsi"):
            raise ValueError(f"refusing GDAL virtual path {url!r}: pass a local path, http(s):// or s3:// URL")
        return path
    raise ValueError(f"unsupported URL scheme {scheme!r} in {url!r}: use a local path, http(s):// or s3://")


@contextmanager
def open_raster(url: str, settings: StorageSettings | None = None) -> Iterator[DatasetReader]:
    """Open a COG with rasterio, allowing only GDAL's GTiff driver, under the settings' GDAL env.

    The dataset is valid inside the ``with`` block (the GDAL options must be active while it is
    read). A file in any other format (a VRT, a PNG, ...) raises ``rasterio.errors.RasterioIOError``
    even if it is named ``.tif``.
    """
    import rasterio

    settings = settings or StorageSettings.from_env()
    path = gdal_path(url)
    with settings.rasterio_env(), rasterio.open(path, driver="GTiff") as ds:
        yield ds


__all__ = ["S3Location", "catalog_root", "gdal_path", "open_raster", "open_url", "parse_s3_url", "resolve_href"]
