"""Indexes over real HTTP (a range-capable server process) and loopback S3 (moto): same answers
as local, a selective query reads only a fraction of the index (bytes counted client-side), and
what was read once is not read again (the local index cache)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from bigearth_devtools.synthetic_index import write_synthetic_catalog

from bigearth_stac import Catalog
from bigearth_stac._indexfs import counting_filesystem
from bigearth_stac.io import filesystem_for
from tests.http_range_server import serving

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
    with serving(big_catalog) as url:
        yield url


def _tile_bbox(cat: Catalog, tile: str) -> list[float]:
    t = cat.search(filter=f"tile = '{tile}'").to_arrow(["bbox"]).column("bbox").combine_chunks()
    return [min(t.field("xmin").to_pylist()), min(t.field("ymin").to_pylist()),
            max(t.field("xmax").to_pylist()), max(t.field("ymax").to_pylist())]


def _check_remote(local: Catalog, url: str, settings: object, cache_dir: Path) -> None:
    inner, _ = filesystem_for(url, settings)  # type: ignore[arg-type]

    def open_counted(cache: object) -> tuple[Catalog, object]:
        fs, stats = counting_filesystem(inner)
        return Catalog.open(url, settings=settings, filesystem=fs, cache=cache), stats  # type: ignore[arg-type]

    remote, stats = open_counted(cache_dir / "answers")
    for q in QUERIES:
        assert remote.search(**q).ids() == local.search(**q).ids(), q
    size = remote.index("s2").nbytes

    # Without a cache nothing is kept on disk: another catalog reads the same ranges again
    # (its footer once, at open).
    read = []
    for _ in range(2):
        uncached, stats = open_counted(False)
        _ = uncached.index("s2").dataset
        stats.reset()  # type: ignore[attr-defined]
        uncached.search(split="test").ids()
        read.append(stats.bytes)  # type: ignore[attr-defined]
    assert read[0] == read[1] > 0

    # One tile's bbox with a label, cold cache: few row groups, few columns.
    bbox = _tile_bbox(local, "33UUP")
    fresh, stats = open_counted(cache_dir / "selective")
    _ = fresh.index("s2").dataset
    stats.reset()
    hits = fresh.search(labels=["Coniferous forest"], bbox=bbox, split="train").ids()
    assert hits == local.search(labels=["Coniferous forest"], bbox=bbox, split="train").ids()
    assert 0 < stats.bytes < 0.10 * size, (stats.bytes, size)
    # The same query again reads nothing remote.
    stats.reset()
    assert fresh.search(labels=["Coniferous forest"], bbox=bbox, split="train").ids() == hits
    assert stats.bytes == 0

    # A label over every row group (20 here), cold cache: the search columns of all row groups
    # lie side by side at the start of the file, so a few requests fetch them, not one per row group.
    label, stats = open_counted(cache_dir / "label")
    _ = label.index("s2").dataset
    stats.reset()
    q = {"labels": ["Coniferous forest"], "exclude_clouds": True}
    assert label.search(**q).ids() == local.search(**q).ids()
    assert 0 < stats.reads <= 3, stats.reads  # type: ignore[attr-defined]
    assert stats.bytes < 0.25 * size  # type: ignore[attr-defined]

    # Sanity: reading everything reads (nearly) the whole index, once.
    whole, stats = open_counted(cache_dir / "whole")
    _ = whole.index("s2").dataset
    stats.reset()
    everything = whole.search().to_arrow()
    assert stats.bytes > 0.8 * size
    assert everything.equals(local.search().to_arrow())

    # The loader's input resolves hrefs against the remote index URL, never the cache.
    pairs = remote.search(modality="pair", labels=["Coniferous forest"], bbox=bbox).sample_table()
    hrefs = pairs.column("s1_assets").combine_chunks().flatten().to_pylist()
    assert hrefs and all(h.startswith(url.rsplit("/", 1)[0]) for h in hrefs)


def test_http_index(big_catalog: Path, http_root: str, tmp_path: Path) -> None:
    _check_remote(Catalog.open(str(big_catalog)), f"{http_root}/catalog.json", None, tmp_path)


def test_s3_index(big_catalog: Path, s3_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bucket = s3_server.create_bucket("search-remote")
    s3_server.upload_tree(big_catalog, bucket, "cat")
    _check_remote(Catalog.open(str(big_catalog)), f"s3://{bucket}/cat/catalog.json", s3_server.settings, tmp_path)


def test_missing_catalog_says_where(tmp_path: Path) -> None:
    from bigearth_stac.catalog import CatalogError

    with pytest.raises(CatalogError, match="not found"):
        Catalog.open(str(tmp_path))
    assert isinstance(filesystem_for(str(tmp_path))[0], pafs.LocalFileSystem)
