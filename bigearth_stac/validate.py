"""Validate a catalog's STAC documents against their JSON Schemas, offline if need be.

pystac fetches extension schemas from their URLs, which fails without internet (an air-gapped
cluster, CI here). Point :func:`make_validator` at a folder laid out like the URLs
(``<ext>/<version>/schema.json``) and the project's own schema is always added from the package.
No process-wide validator is set: the validator is passed explicitly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pystac.validation as pv

from bigearth_stac.vocab import SCHEMA_URI

log = logging.getLogger(__name__)
EXTENSIONS_BASE = "https://stac-extensions.github.io/"


def own_schema() -> dict[str, Any]:
    """The JSON Schema of the ``bigearthnet:`` extension, as shipped in the package."""
    return json.loads(files("bigearth_stac").joinpath("schema/schema.json").read_text())


def make_validator(schema_dir: str | Path | None = None) -> pv.JsonSchemaSTACValidator:
    """A pystac validator with the project's schema and, optionally, a local mirror of extensions."""
    validator = pv.JsonSchemaSTACValidator()
    validator.schema_cache[SCHEMA_URI] = own_schema()
    if schema_dir is not None:
        root = Path(schema_dir)
        for path in root.glob("*/*/schema.json"):
            uri = EXTENSIONS_BASE + path.relative_to(root).as_posix()
            validator.schema_cache[uri] = json.loads(path.read_text())
    return validator


@dataclass(frozen=True)
class ValidationProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def validate_document(doc: dict[str, Any], validator: pv.STACValidator, href: str | None = None) -> None:
    """Validate one STAC dict (core + every extension it declares); raises on the first error."""
    pv.validate_dict(doc, href=href, validator=validator)


def _documents(root: Path) -> Iterator[Path]:
    yield root / "catalog.json"
    yield from sorted(root.glob("*/collection.json"))
    yield from sorted(root.glob("*/*/*/*.json"))


def validate_catalog(root: str | Path, schema_dir: str | Path | None = None) -> tuple[int, list[ValidationProblem]]:
    """Validate the root catalog, collections and every item of a local catalog.

    Returns the number of documents checked and the problems found (empty when all are valid).
    """
    validator = make_validator(schema_dir)
    base = Path(root)
    problems: list[ValidationProblem] = []
    count = 0
    for path in _documents(base):
        count += 1
        try:
            validate_document(json.loads(path.read_text()), validator, href=str(path))
        except Exception as exc:  # noqa: BLE001 - every failure is reported with its file
            problems.append(ValidationProblem(str(path.relative_to(base)), str(exc).splitlines()[0]))
    log.info("validated %d documents under %s: %d problems", count, base, len(problems))
    return count, problems
