"""Shared fixtures: the six real pairs, synthetic pairs, catalogs built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bigearth_stac import Catalog
from catalog_builder.build import BuildOptions, build
from catalog_builder.examples import unpack_examples
from catalog_builder.sources import open_source
from catalog_builder.store import LocalStore
from catalog_builder.synthetic import generate
from tests.search_oracle import index_rows

# S3 server (moto, real HTTP on 127.0.0.1) fixtures live in their own module.
pytest_plugins = ["tests.s3fixtures"]

SHARED = Path(__file__).resolve().parents[2] / "shared"
STAC_SCHEMAS = SHARED / "stac-schemas"


@pytest.fixture(scope="session")
def real_raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The six real v1 pairs, unpacked in the raw layout: (S2 root, S1 root)."""
    return unpack_examples(tmp_path_factory.mktemp("real-raw"))


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """40 synthetic pairs in the raw v1 layout: (S2 root, S1 root)."""
    return generate(tmp_path_factory.mktemp("synthetic-raw"), 40, seed=7)


def _build(raw: tuple[Path, Path], out: Path, layout: str) -> Path:
    report = build(open_source(str(raw[0]), str(raw[1])), LocalStore(out),
                   BuildOptions(layout=layout, scheduler="synchronous"))  # type: ignore[arg-type]
    assert report.ok, report.describe()
    return out


@pytest.fixture(scope="session")
def real_catalog(real_raw: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six real pairs built in the stacked layout; returns the catalog root."""
    return _build(real_raw, tmp_path_factory.mktemp("real-catalog"), "stacked")


@pytest.fixture(scope="session")
def real_catalog_per_band(real_raw: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six real pairs built in the per-band layout; returns the catalog root."""
    return _build(real_raw, tmp_path_factory.mktemp("real-catalog-per-band"), "per-band")


@pytest.fixture(scope="session")
def synthetic_catalog(synthetic_raw: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic pairs built in the stacked layout; returns the catalog root."""
    return _build(synthetic_raw, tmp_path_factory.mktemp("synthetic-catalog"), "stacked")


@pytest.fixture(scope="module")
def cat(synthetic_catalog: Path) -> Catalog:
    """The synthetic catalog opened for search (search and CQL2 tests)."""
    return Catalog.open(str(synthetic_catalog))


@pytest.fixture(scope="module")
def rows(synthetic_catalog: Path) -> list[dict]:
    """Its index rows as plain dicts, for the brute-force oracle."""
    return index_rows(synthetic_catalog)
