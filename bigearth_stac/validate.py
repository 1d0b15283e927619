"""Validate a catalog's STAC documents against their JSON Schemas, offline.

Validators (pystac, stac-validator) fetch each extension's JSON Schema from the URL listed in
``stac_extensions``, which fails without internet (an air-gapped cluster, CI here). This package
ships what validating its own catalogs needs, so nothing is ever fetched:

- the STAC 1.1.0 core schemas, as bundled with pystac;
- the published schemas of the extensions the builder writes (``schema/stac-extensions/``,
  copied from the ``gh-pages`` branches of the stac-extensions repositories, Apache-2.0, laid
  out as their URLs: ``https://stac-extensions.github.io/<ext>/<version>/schema.json``);
- the ``bigearthnet:`` extension's schema (``schema/schema.json``).

The ``bigearthnet:`` extension's URL. A catalog published at URL ``X`` serves the schema at
``X/schema/v1.0.0/schema.json`` (:func:`schema_url_for`), and a build told ``X``
(``catalog-builder build --base-url X``) lists that URL in ``stac_extensions`` and writes it as
the schema's ``$id``, so any validator resolves it from the catalog itself. A build without a
base URL lists the extension's canonical identifier :data:`~bigearth_stac.vocab.SCHEMA_URI`
(the schema's ``$id`` in the package): the only absolute URL that does not depend on where the
catalog ends up, and one :func:`validate_catalog` maps to the shipped copy.
:func:`validate_catalog` accepts both: the canonical identifier and the ``$id`` of the schema
the catalog publishes.

No process-wide validator is set: :func:`make_validator` returns a pystac validator to pass
explicitly (or to ``pystac.validation.set_validator`` in code that owns the process).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pystac.validation as pv
from pystac import STACObjectType
from pystac.validation.local_validator import get_local_schema_cache
from pystac.validation.schema_uri_map import DefaultSchemaUriMap
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from bigearth_stac.contract import SCHEMA_PATH
from bigearth_stac.vocab import SCHEMA_URI

if TYPE_CHECKING:
    from bigearth_stac.settings import StorageSettings

log = logging.getLogger(__name__)

EXTENSIONS_BASE = "https://stac-extensions.github.io/"
_SHIPPED_EXTENSIONS = "schema/stac-extensions"
_CRAWLED_RELS = ("child", "item")
_TYPES = {"Catalog": STACObjectType.CATALOG, "Collection": STACObjectType.COLLECTION,
          "Feature": STACObjectType.ITEM}


def schema_url_for(base_url: str) -> str:
    """URL of the ``bigearthnet:`` schema of a catalog published at ``base_url``.

    ``base_url`` is the catalog's root folder (``https://host/bigearthnet``) or its root
    ``catalog.json``; the result is ``<root>/schema/v1.0.0/schema.json``.
    """
    base = base_url.strip()
    if base.endswith("/catalog.json"):
        base = base[: -len("catalog.json")]
    if "://" not in base:
        raise ValueError(f"a base URL must be absolute (https://..., s3://...), got {base_url!r}")
    return f"{base.rstrip('/')}/{SCHEMA_PATH}"


def _package_schema_text() -> str:
    return files("bigearth_stac").joinpath("schema/schema.json").read_text(encoding="utf-8")


def own_schema(url: str = SCHEMA_URI) -> dict[str, Any]:
    """The JSON Schema of the ``bigearthnet:`` extension, as shipped, with ``$id`` set to ``url``."""
    schema: dict[str, Any] = json.loads(_package_schema_text())
    schema["$id"] = url
    return schema


def own_schema_bytes(url: str = SCHEMA_URI) -> bytes:
    """The schema file a catalog publishes: the shipped bytes, with ``$id`` set to ``url``."""
    text = _package_schema_text()
    if url != SCHEMA_URI:
        old = f'"$id": {json.dumps(SCHEMA_URI)}'
        if old not in text:
            raise RuntimeError(f"the shipped schema has no {old}")
        text = text.replace(old, f'"$id": {json.dumps(url)}', 1)
    return text.encode("utf-8")


def shipped_schemas() -> dict[str, dict[str, Any]]:
    """The stac-extensions schemas this package ships, by their published URL."""
    root = files("bigearth_stac").joinpath(_SHIPPED_EXTENSIONS)
    out: dict[str, dict[str, Any]] = {}
    for ext in sorted(root.iterdir(), key=lambda p: p.name):
        if not ext.is_dir():
            continue
        for version in sorted(ext.iterdir(), key=lambda p: p.name):
            schema = version.joinpath("schema.json")
            if schema.is_file():
                out[f"{EXTENSIONS_BASE}{ext.name}/{version.name}/schema.json"] = json.loads(schema.read_text(encoding="utf-8"))
    return out


def _mirror(schema_dir: str | Path | None) -> dict[str, dict[str, Any]]:
    """Schemas of a local folder laid out like ``https://stac-extensions.github.io/``."""
    if schema_dir is None:
        return {}
    root = Path(schema_dir)
    return {EXTENSIONS_BASE + p.relative_to(root).as_posix(): json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(root.glob("*/*/schema.json"))}


def offline_schemas(schema_dir: str | Path | None = None, own_urls: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Every schema available without a network: core, shipped extensions, a mirror, our own.

    ``own_urls``: URLs under which the ``bigearthnet:`` schema is listed besides
    :data:`~bigearth_stac.vocab.SCHEMA_URI` (e.g. :func:`schema_url_for` of a publication).
    """
    schemas = dict(get_local_schema_cache())
    schemas.update(shipped_schemas())
    schemas.update(_mirror(schema_dir))
    for url in dict.fromkeys([SCHEMA_URI, *own_urls]):
        schemas[url] = own_schema(url)
    return schemas


def make_validator(schema_dir: str | Path | None = None, own_urls: Iterable[str] = ()) -> pv.JsonSchemaSTACValidator:
    """A pystac validator preloaded with :func:`offline_schemas`.

    For pystac's own API (``item.validate(validator)``, ``set_validator`` before
    ``catalog.validate_all()``). pystac still fetches a schema missing from its cache;
    :class:`OfflineValidator` never does.
    """
    validator = pv.JsonSchemaSTACValidator()
    validator.schema_cache.update(offline_schemas(schema_dir, own_urls))
    return validator


class SchemaUnavailable(LookupError):
    """A schema that is neither shipped nor in the given mirror (offline validation cannot fetch it)."""


class OfflineValidator:
    """Validates STAC dicts (core + every declared extension) with local schemas only."""

    def __init__(self, schema_dir: str | Path | None = None, own_urls: Iterable[str] = ()) -> None:
        self._schemas = offline_schemas(schema_dir, own_urls)
        self._registry: Registry[Any] = Registry().with_resources(
            (url, Resource.from_contents(s, default_specification=DRAFT7)) for url, s in self._schemas.items()
        )
        self._validators: dict[str, Any] = {}
        self._uri_map = DefaultSchemaUriMap()

    def add_own_url(self, url: str) -> None:
        """Accept ``url`` as a name of the ``bigearthnet:`` schema (the shipped copy is used)."""
        if url in self._schemas:
            return
        self._schemas[url] = own_schema(url)
        self._registry = self._registry.with_resource(url, Resource.from_contents(self._schemas[url], default_specification=DRAFT7))

    def _validator(self, url: str) -> Any:
        if url not in self._validators:
            if url not in self._schemas:
                raise SchemaUnavailable(url)
            schema = self._schemas[url]
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
            self._validators[url] = cls(schema, registry=self._registry)
        return self._validators[url]

    def schema_urls(self, doc: dict[str, Any]) -> list[str]:
        """The schemas a document must satisfy: its core schema, then each declared extension."""
        kind = _TYPES.get(str(doc.get("type")))
        if kind is None:
            raise ValueError(f"not a STAC Catalog, Collection or Item (type {doc.get('type')!r})")
        core = self._uri_map.get_object_schema_uri(kind, str(doc.get("stac_version")))
        extensions = doc.get("stac_extensions") or []
        if not isinstance(extensions, list) or not all(isinstance(e, str) for e in extensions):
            raise ValueError("stac_extensions must be a list of URLs")
        return [*([core] if core else []), *extensions]

    def errors(self, doc: dict[str, Any]) -> list[str]:
        """One message per schema the document fails (empty when it is valid)."""
        try:
            urls = self.schema_urls(doc)
        except ValueError as exc:
            return [str(exc)]
        messages = []
        for url in urls:
            try:
                found = list(self._validator(url).iter_errors(doc))
            except SchemaUnavailable:
                messages.append(f"schema {url} is not available offline (not shipped, not in the mirror)")
                continue
            except Exception as exc:  # noqa: BLE001 - an unresolvable $ref or a broken schema
                messages.append(f"schema {url}: {type(exc).__name__}: {exc}")
                continue
            if found:
                best = jsonschema.exceptions.best_match(found)
                where = best.json_path if best is not None else "$"
                text = best.message if best is not None else "invalid"
                messages.append(f"{where}: {_shorten(text)} (schema {url})")
        return messages


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class ValidationProblem:
    """An invalid or unreachable document: its path (relative to the root when inside it) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def validate_document(doc: dict[str, Any], validator: pv.STACValidator, href: str | None = None) -> None:
    """Validate one STAC dict with a pystac validator; raises on the first error."""
    pv.validate_dict(doc, href=href, validator=validator)


def _read_json(url: str, scope: Any, settings: StorageSettings | None) -> Any:
    from bigearth_stac.io import open_url

    return json.loads(open_url(url, settings, scope=scope))


def _crawl(root_url: str, scope: Any, settings: StorageSettings | None, problems: list[ValidationProblem],
           rel: Any, max_items: int | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Documents reachable from the root by ``child`` and ``item`` links, breadth-first; at most
    ``max_items`` item links followed per document."""
    queue = deque([root_url])
    seen = {root_url}
    while queue:
        url = queue.popleft()
        try:
            doc = _read_json(url, scope, settings)
        except Exception as exc:  # noqa: BLE001 - a missing or unreadable document is a problem
            problems.append(ValidationProblem(rel(url), f"cannot read: {type(exc).__name__}: {_shorten(str(exc))}"))
            continue
        if not isinstance(doc, dict):
            problems.append(ValidationProblem(rel(url), "not a JSON object"))
            continue
        yield url, doc
        items = 0
        for link in doc.get("links") or []:
            if not isinstance(link, dict) or link.get("rel") not in _CRAWLED_RELS:
                continue
            if link["rel"] == "item":
                items += 1
                if max_items is not None and items > max_items:
                    continue
            try:
                target = scope.resolve(url, str(link.get("href")))
            except ValueError as exc:
                problems.append(ValidationProblem(rel(url), str(exc)))
                continue
            if target not in seen:
                seen.add(target)
                queue.append(target)


def validate_catalog(root: str | Path, schema_dir: str | Path | None = None, *,
                     settings: StorageSettings | None = None,
                     max_items: int | None = None) -> tuple[int, list[ValidationProblem]]:
    """Validate every document of a catalog, offline: the root, then by ``child``/``item`` links.

    ``root`` is a local folder or the URL of a catalog (``https://...``, ``s3://...``; its folder
    or its ``catalog.json``), read through :func:`bigearth_stac.io.open_url` with ``settings``
    and every link confined to the catalog (DESIGN.md #13). Schemas come from the package
    (:func:`offline_schemas`) and ``schema_dir``, a local mirror of stac-extensions for other
    extensions; none is fetched. The catalog's published ``schema/v1.0.0/schema.json`` must be
    there and equal the shipped one except for its ``$id``, which is accepted as a name of the
    ``bigearthnet:`` schema.

    Validating an item costs 5-20 ms of one core (most of it in the STAC core item schema), so
    the 1.2 million items of the full catalog take hours: ``max_items`` validates at most that
    many items of each tile catalog (every catalog and collection is still validated).

    Returns the number of documents validated and the problems found (empty when all are valid):
    a document that fails a schema, declares a schema not available offline, cannot be read,
    or links outside the catalog.
    """
    from bigearth_stac.hrefs import Scope, catalog_root, join

    base = catalog_root(str(root))
    scope = Scope.of_catalog(base)
    prefix = base.rstrip("/") + "/"
    root_url = prefix + "catalog.json"

    def rel(url: str) -> str:
        return url[len(prefix):] if url.startswith(prefix) else url

    validator = OfflineValidator(schema_dir)
    problems: list[ValidationProblem] = []
    schema_url = join(root_url, SCHEMA_PATH)
    try:
        published = _read_json(schema_url, scope, settings)
    except Exception as exc:  # noqa: BLE001 - reported, validation goes on
        problems.append(ValidationProblem(SCHEMA_PATH, f"cannot read: {type(exc).__name__}: {_shorten(str(exc))}"))
    else:
        own_id = published.get("$id") if isinstance(published, dict) else None
        if not isinstance(own_id, str) or {**published, "$id": SCHEMA_URI} != own_schema():
            problems.append(ValidationProblem(SCHEMA_PATH, "differs from the bigearthnet: schema this package ships"))
        else:
            validator.add_own_url(own_id)

    count = 0
    for url, doc in _crawl(root_url, scope, settings, problems, rel, max_items):
        count += 1
        problems.extend(ValidationProblem(rel(url), m) for m in validator.errors(doc))
    log.info("validated %d documents under %s: %d problems", count, base, len(problems))
    return count, problems
