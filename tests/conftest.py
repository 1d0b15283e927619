"""Shared fixtures: the six real pairs, synthetic pairs, catalogs built from them (v1 and v2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bigearth_stac import Catalog
from catalog_builder.build import BuildOptions, BuildReport, build
from catalog_builder.examples import unpack_examples
from catalog_builder.sources import open_source
from catalog_builder.store import LocalStore
from catalog_builder.synthetic import generate
from catalog_builder.synthetic_v2 import V2Tree, generate_v2
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


# -- BigEarthNet v2.0 (reBEN) -------------------------------------------------------------------

RICO_V2 = Path(__file__).resolve().parent / "data" / "rico-hdl-v2"
"""Real v2 files (one S2 patch, one S1 patch, one reference map; see its README)."""


def open_v2_source(tree: V2Tree, **kwargs: object) -> object:
    """The v2 source of a generated tree (its tables, its reference maps)."""
    return open_source(str(tree.s2), str(tree.s1), release="v2", metadata=[str(m) for m in tree.metadata],
                       **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def v2_raw(tmp_path_factory: pytest.TempPathFactory) -> V2Tree:
    """30 synthetic pairs in the raw v2 layout, 2 with labels their reference map contradicts."""
    return generate_v2(tmp_path_factory.mktemp("v2-raw"), 30, seed=11, disagree=2)


@pytest.fixture(scope="session")
def v2_build(v2_raw: V2Tree, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildReport]:
    """The v2 tree built in the stacked layout: (catalog root, build report)."""
    out = tmp_path_factory.mktemp("v2-catalog")
    report = build(open_v2_source(v2_raw), LocalStore(out), BuildOptions(scheduler="synchronous"))  # type: ignore[arg-type]
    assert report.ok, report.describe()
    return out, report


@pytest.fixture(scope="session")
def v2_catalog(v2_build: tuple[Path, BuildReport]) -> Path:
    """The root of the v2 catalog of ``v2_raw``."""
    return v2_build[0]
