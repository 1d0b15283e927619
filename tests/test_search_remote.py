"""Indexes over real HTTP (a range-capable server process) and loopback S3 (moto): same answers
as local, and a selective query reads only a fraction of the index (bytes counted client-side)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from bigearth_stac import Catalog
from bigearth_stac._indexfs import counting_filesystem
from bigearth_stac.io import filesystem_for
from bigearth_devtools.synthetic_index import write_synthetic_catalog

QUERIES = [
    {"labels": ["Coniferous forest"], "split": "train"},
    {"labels": ["Pastures", "Arable land"], "match": "all", "exclude_snow": True},
    {"filter": "country = 'Austria' and a_overlaps(labels_43, ('Pastures', 'Mixed forest'))"},
    {"datetime": "2017-07-01/2017-08-31", "seasons": ["Summer"]},
    # Exact footprint tests run in DuckDB's threads (a shared prepared geometry once crashed GEOS).
    {"intersects": {"type": "Polygon", "coordinates": [[[5, 45], [25, 45], [15, 60], [5, 45]]]}},
]


@pytest.fixture(scope="module")
def big_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 official pairs (synthetic labels / footprints) in row groups of 1,000 rows."""
    return write_synthetic_catalog(tmp_path_factory.mktemp("search-remote"), 20_000, seed=3, row_group_size=1000)


@pytest.fixture(scope="module")
def http_root(big_catalog: Path) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.http_range_server", str(big_catalog)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{line.split()[1]}"
    finally:
        proc.terminate()
        proc.wait(10)


def _tile_bbox(cat: Catalog, tile: str) -> list[float]:
    t = cat.search(filter=f"tile = '{tile}'").to_arrow(["bbox"]).column("bbox").combine_chunks()
    return [min(t.field("xmin").to_pylist()), min(t.field("ymin").to_pylist()),
            max(t.field("xmax").to_pylist()), max(t.field("ymax").to_pylist())]


def _check_remote(local: Catalog, url: str, settings: object = None) -> None:
    inner, _ = filesystem_for(url, settings)  # type: ignore[arg-type]
    fs, stats = counting_filesystem(inner)
    remote = Catalog.open(url, settings=settings, filesystem=fs)  # type: ignore[arg-type]
    for q in QUERIES:
        assert remote.search(**q).ids() == local.search(**q).ids(), q
    size = remote.index("s2").nbytes

    # The footer is read once per catalog, not once per query.
    stats.reset()
    remote.search(split="test").ids()
    first = stats.bytes
    stats.reset()
    remote.search(split="test").ids()
    assert stats.bytes == first

    # One tile's bbox with a label: few row groups, few columns.
    bbox = _tile_bbox(local, "33UUP")
    stats.reset()
    hits = remote.search(labels=["Coniferous forest"], bbox=bbox, split="train").ids()
    assert hits == local.search(labels=["Coniferous forest"], bbox=bbox, split="train").ids()
    assert 0 < stats.bytes < 0.10 * size, (stats.bytes, size)

    # Sanity: reading everything reads (nearly) the whole index.
    stats.reset()
    remote.search().to_arrow()
    assert stats.bytes > 0.8 * size

    # The loader's input resolves hrefs against the remote index URL.
    pairs = remote.search(modality="pair", labels=["Coniferous forest"], bbox=bbox).sample_table()
    assert all(h.startswith(url.rsplit("/", 1)[0]) for h in pairs.column("s1_assets").combine_chunks().flatten().to_pylist())


def test_http_index(big_catalog: Path, http_root: str) -> None:
    _check_remote(Catalog.open(str(big_catalog)), f"{http_root}/catalog.json")


def test_s3_index(big_catalog: Path, s3_server) -> None:  # type: ignore[no-untyped-def]
    bucket = s3_server.create_bucket("search-remote")
    s3_server.upload_tree(big_catalog, bucket, "cat")
    _check_remote(Catalog.open(str(big_catalog)), f"s3://{bucket}/cat/catalog.json", s3_server.settings)


def test_missing_catalog_says_where(tmp_path: Path) -> None:
    from bigearth_stac.catalog import CatalogError

    with pytest.raises(CatalogError, match="not found"):
        Catalog.open(str(tmp_path))
    assert isinstance(filesystem_for(str(tmp_path))[0], pafs.LocalFileSystem)
