"""URLs and hrefs: parse, join, and confine to a catalog (DESIGN.md #13). No I/O here.

Three kinds of location are understood everywhere: a local path (or ``file://`` URL),
``http(s)://host/path`` and ``s3://bucket/key``. This module is the only place that parses them
and joins an href to the document that holds it; :mod:`bigearth_stac.io` is the only place that
turns the result into bytes.

A catalog is untrusted input. A :class:`Scope` holds the roots a reader may touch (the catalog's
own folder, plus an explicit allow-list the user passes) and :meth:`Scope.resolve` refuses every
href that leaves them, with an :class:`HrefError` naming the href and the document it came from:

- another scheme, bucket or host than the root (``s3://other-bucket/x``, ``http://169.254.169.254/``,
  ``file:///etc/passwd`` or ``/abs/path`` inside a remote catalog, ``s3://...`` inside a local one);
- a path that climbs out of the root after normalisation (``../../outside.tif``, also
  percent-encoded as ``%2e%2e``);
- backslashes, NUL bytes, control characters, and GDAL virtual paths (``/vsicurl/...``).

Local roots are compared after resolving symlinks of the root itself; :meth:`Scope.check_local`
resolves a target's symlinks at read time, so a link inside a catalog cannot lead out either.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

__all__ = [
    "HrefError",
    "Location",
    "S3Location",
    "Scope",
    "catalog_root",
    "is_remote",
    "join",
    "parse",
    "parse_s3_url",
    "resolve_href",
    "resolve_many",
    "scheme_of",
]

REMOTE_SCHEMES = ("s3", "http", "https")
#: Link relations that point people at web pages (licence, DOI, docs); never followed by a reader.
INFORMATIONAL_RELS = frozenset({"license", "cite-as", "about", "describedby", "help", "via", "preview",
                                "handbook", "documentation"})
SCHEMES = ("file", *REMOTE_SCHEMES)
#: Backslashes and control characters (NUL included), refused anywhere in a location.
_FORBIDDEN_RE = re.compile(r"[\x00-\x1f\\]")


class HrefError(ValueError):
    """An href or URL a reader refuses; names the href, the document holding it and why."""

    def __init__(self, href: object, reason: str, base: str | None = None) -> None:
        self.href = href
        self.base = base
        self.reason = reason
        where = f" in {base}" if base else ""
        super().__init__(f"refusing href {href!r}{where}: {reason}")


class S3Location(NamedTuple):
    bucket: str
    key: str
    """Key or prefix, without a leading ``/`` (may be empty)."""


def scheme_of(url: str) -> str:
    """``s3``, ``http``, ``https``, ``file`` (also for plain paths), or another scheme's name."""
    head, sep, _ = url.partition("://")
    if sep and len(head) > 1 and head.replace("+", "").replace("-", "").replace(".", "").isalnum():
        return head.lower()
    return "file"  # a plain path (also "file:/x", which parse() reads as a file URL)


def is_remote(url: str) -> bool:
    """Whether ``url`` is an ``s3://`` or ``http(s)://`` URL."""
    return scheme_of(url) in REMOTE_SCHEMES


def parse_s3_url(url: str) -> S3Location:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``; ``ValueError`` if malformed."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://bucket/key URL: {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"an s3:// URL takes no query or fragment: {url!r}")
    return S3Location(parts.netloc, parts.path.lstrip("/"))


@dataclass(frozen=True)
class Location:
    """A parsed location: scheme, authority (bucket or host[:port], empty for local) and path.

    ``path`` is absolute and ``/``-separated; for s3 it is ``/`` + the key. ``query`` is kept
    for http(s) only (pre-signed URLs).
    """

    scheme: str
    authority: str
    path: str
    query: str = ""

    @property
    def url(self) -> str:
        """The location as a string: a local path for ``file``, a URL otherwise."""
        if self.scheme == "file":
            return self.path
        q = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.authority}{self.path}{q}"

    def under(self, root: Location) -> bool:
        """Whether this location is ``root`` itself or inside it (same scheme and authority)."""
        if (self.scheme, self.authority.lower()) != (root.scheme, root.authority.lower()):
            return False
        base = root.path if root.path.endswith("/") else root.path + "/"
        return self.path == root.path.rstrip("/") or self.path.startswith(base)


def _check_chars(text: str, base: str | None) -> None:
    if not isinstance(text, str) or not text:
        raise HrefError(text, "empty or not a string", base)
    if _FORBIDDEN_RE.search(text):
        raise HrefError(text, "backslash, NUL or control character", base)


def _normalise(path: str, href: str, base: str | None) -> str:
    """``path`` (absolute, ``/``-separated) without ``.``/``..``; refuse climbing above ``/``.

    Percent-encoded dot segments (``%2e%2e``) are refused: a server may decode them after our
    check. Other escapes are kept as written.
    """
    out: list[str] = []
    for seg in path.split("/"):
        if "%" in seg and unquote(seg) in (".", "..", "") or "/" in unquote(seg) or "\\" in unquote(seg):
            raise HrefError(href, "a percent-encoded '.', '..' or separator in a path", base)
        if seg == "..":
            if not out:
                raise HrefError(href, "'..' climbs above the top of its location", base)
            out.pop()
        elif seg not in ("", "."):
            out.append(seg)
    norm = "/" + "/".join(out)
    if path.endswith("/") and out:
        norm += "/"
    return norm


def parse(url: str, base: str | None = None) -> Location:
    """Parse an absolute location (local path, ``file://``, ``http(s)://``, ``s3://``), normalised.

    Raises :class:`HrefError` for other schemes, GDAL virtual paths and malformed URLs.
    """
    _check_chars(url, base)
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        raise HrefError(url, f"unsupported scheme {scheme!r} (use a local path, file://, http(s):// or s3://)", base)
    if scheme == "file":
        if url[:5].lower() == "file:":
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                raise HrefError(url, "a file:// URL on another host", base)
            raw = unquote(parts.path)
        else:
            raw = url
        if raw.startswith("/vsi") or raw.startswith("vsi"):
            raise HrefError(url, "a GDAL virtual path", base)
        path = os.path.abspath(os.path.expanduser(raw))
        return Location("file", "", path.replace(os.sep, "/"))
    parts = urlsplit(url)
    if not parts.netloc:
        raise HrefError(url, f"a {scheme}:// URL without a {'bucket' if scheme == 's3' else 'host'}", base)
    if parts.fragment or (parts.query and scheme == "s3"):
        raise HrefError(url, "unexpected query or fragment", base)
    if parts.username or parts.password:
        raise HrefError(url, "credentials in a URL", base)
    return Location(scheme, parts.netloc, _normalise(parts.path or "/", url, base), parts.query)


def join(base: str, href: str) -> str:
    """Resolve ``href`` against the document at ``base`` (RFC 3986 style), not confined.

    An absolute ``href`` (a URL or an absolute path) is returned as parsed; a relative one is
    joined to ``base``'s folder and normalised. ``..`` that climbs above the top of the base's
    scheme/bucket/host raises :class:`HrefError`.
    """
    _check_chars(href, base)
    if "://" in href or href[:5].lower() == "file:":
        return parse(href, base).url
    b = parse(base)
    ref = urlsplit(href)
    if ref.fragment or (ref.query and b.scheme != "http" and b.scheme != "https"):
        raise HrefError(href, "unexpected query or fragment", base)
    if href.startswith("//"):
        raise HrefError(href, "a scheme-relative URL", base)
    if b.scheme == "file" and href.startswith("/"):
        return parse(href, base).url
    joined = ref.path if ref.path.startswith("/") else posixpath.dirname(b.path) + "/" + ref.path
    return Location(b.scheme, b.authority, _normalise(joined, href, base), ref.query).url


def catalog_root(root_url: str) -> str:
    """The root folder of a catalog given its root ``catalog.json`` (or the folder itself).

    Local roots are returned with symlinks resolved; remote roots end with ``/``.
    """
    loc = parse(root_url)
    path = loc.path
    if path.endswith(".json"):
        path = posixpath.dirname(path)
    if loc.scheme == "file":
        return str(Path(path).resolve())
    return Location(loc.scheme, loc.authority, path.rstrip("/") + "/").url


class Scope:
    """The roots a reader of one catalog may touch: the catalog's folder plus an allow-list.

    ``Scope.of_catalog("s3://bucket/bigearthnet/catalog.json")`` lets readers touch
    ``s3://bucket/bigearthnet/...`` only; ``allow=["s3://mirror/bigearthnet/"]`` adds another
    root the user trusts (e.g. a catalog whose assets live in a second bucket).
    """

    def __init__(self, roots: Sequence[str]) -> None:
        if not roots:
            raise ValueError("a scope needs at least one root")
        self.roots: tuple[str, ...] = tuple(dict.fromkeys(catalog_root(str(r)) for r in roots))
        self._locs = tuple(parse(r) for r in self.roots)

    @classmethod
    def of_catalog(cls, root_url: str, allow: Iterable[str] = ()) -> Scope:
        """The scope of the catalog whose root ``catalog.json`` (or folder) is ``root_url``."""
        return cls([catalog_root(root_url), *[str(a) for a in allow]])

    def __repr__(self) -> str:
        return f"Scope({list(self.roots)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scope) and other.roots == self.roots

    def __hash__(self) -> int:
        return hash(self.roots)

    def __reduce__(self) -> tuple[type[Scope], tuple[tuple[str, ...]]]:
        return (Scope, (self.roots,))

    @property
    def root(self) -> str:
        """The catalog's own root (the first one)."""
        return self.roots[0]

    def contains(self, url: str) -> bool:
        """Whether the (absolute, normalised) ``url`` lies under one of the roots."""
        try:
            loc = parse(url)
        except HrefError:
            return False
        return any(loc.under(r) for r in self._locs)

    def check(self, url: str, base: str | None = None, href: str | None = None) -> str:
        """``url`` if it lies under one of the roots, else :class:`HrefError`."""
        loc = parse(url, base)
        if not any(loc.under(r) for r in self._locs):
            raise HrefError(href if href is not None else url,
                            f"it resolves to {loc.url}, outside the catalog root {self.root}"
                            + (f" and the allowed roots {list(self.roots[1:])}" if len(self.roots) > 1 else ""),
                            base)
        return loc.url

    def resolve(self, base: str, href: str) -> str:
        """Join ``href`` to the document at ``base`` and check it stays inside the scope."""
        try:
            joined = join(base, href)
        except HrefError:
            raise
        except ValueError as exc:  # malformed URLs (urllib: bad ports, brackets)
            raise HrefError(href, str(exc), base) from None
        return self.check(joined, base, href)

    def resolve_link(self, base: str, link: dict[str, Any]) -> str:
        """A link's href, resolved and confined; informational links to the web stay as written.

        ``license``, ``cite-as``, ``about`` and the like point at web pages for people, which no
        reader of ours follows; every structural link (root, parent, child, item, collection,
        related, self, ...) must stay inside the scope.
        """
        href = link.get("href")
        if link.get("rel") in INFORMATIONAL_RELS and isinstance(href, str) and scheme_of(href) in ("http", "https"):
            return parse(href, base).url
        return self.resolve(base, href)  # type: ignore[arg-type]

    def check_local(self, path: str) -> str:
        """A local ``path`` with its symlinks resolved, if that still lies inside the scope."""
        real = os.path.realpath(path)
        if not any(Location("file", "", real.replace(os.sep, "/")).under(r) for r in self._locs):
            raise HrefError(path, f"it is a symlink leading to {real}, outside the catalog root {self.root}")
        return real


def resolve_href(base: str, href: str, root: str, allow: Iterable[str] = ()) -> str:
    """``href`` in the document at ``base``, resolved and confined to the catalog at ``root``.

    A local result also has its symlinks resolved and checked: it is safe to open.
    """
    scope = Scope.of_catalog(root, allow)
    url = scope.resolve(base, href)
    return scope.check_local(url) if scheme_of(url) == "file" else url


#: Relative hrefs of the plain shape the builder writes (``../bigearthnet-s2/<tile>/<id>/<file>``):
#: optional leading ``../`` or ``./``, then segments of ordinary characters not starting with a dot.
_PLAIN_RELATIVE = r"^(\./)?(\.\./)*([A-Za-z0-9_\-][A-Za-z0-9_.\-]*/)*[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$"


def resolve_many(scope: Scope, base: str, hrefs: Any) -> Any:
    """:meth:`Scope.resolve` over a ``pyarrow`` string array of hrefs in the document at ``base``.

    The plain relative hrefs of a built index are joined and checked column-wise (a full-archive
    sample table has 2.4 million); any other href takes :meth:`Scope.resolve` one by one, so the
    rules are the same. Raises :class:`HrefError` naming the first refused href.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    hrefs = hrefs.combine_chunks() if isinstance(hrefs, pa.ChunkedArray) else hrefs
    if hrefs.null_count:
        raise HrefError(None, "a missing (null) href", base)
    b = parse(base)
    folder = posixpath.dirname(b.path)
    plain = pc.match_substring_regex(hrefs, _PLAIN_RELATIVE)
    stripped = pc.replace_substring_regex(hrefs, r"^(\./)?", "")
    ups = pc.divide(pc.subtract(pc.utf8_length(stripped),
                                pc.utf8_length(pc.replace_substring_regex(stripped, r"^(\.\./)*", ""))), 3)
    out: list[Any] = [None] * len(hrefs)
    result = pa.array(out, pa.string())
    plain_np = plain.to_numpy(zero_copy_only=False)
    ups_np = ups.to_numpy(zero_copy_only=False)
    for k in sorted(set(ups_np[plain_np].tolist())):
        parts = [p for p in folder.split("/") if p]
        if k > len(parts):
            first = hrefs.filter(pc.and_(plain, pc.equal(ups, k)))[0].as_py()
            raise HrefError(first, "'..' climbs above the top of its location", base)
        prefix = Location(b.scheme, b.authority, "/" + "/".join(parts[: len(parts) - k])).url.rstrip("/") + "/"
        sel = pc.and_(plain, pc.equal(ups, k))
        rest = pc.utf8_slice_codeunits(stripped.filter(sel), 3 * k)
        joined = pc.binary_join_element_wise(pa.scalar(prefix), rest, "")
        if len(joined):
            scope.check(joined[0].as_py(), base, hrefs.filter(sel)[0].as_py())
            if not scope.contains(prefix + "x"):
                raise HrefError(hrefs.filter(sel)[0].as_py(), f"it resolves outside the catalog root {scope.root}", base)
        result = pc.replace_with_mask(result, sel, joined)
    odd = pc.invert(plain)
    if pc.any(odd).as_py():
        idx = pc.indices_nonzero(odd).to_numpy()
        fixed = [scope.resolve(base, hrefs[int(i)].as_py()) for i in idx]
        result = pc.replace_with_mask(result, odd, pa.array(fixed, pa.string()))
    return result
