"""The local read-through cache of remote indexes: same answers, no second read, no stale bytes,
bounded, and hrefs still confined to the catalog (bytes counted client-side)."""

from __future__ import annotations

import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bigearth_devtools.synthetic_index import write_synthetic_catalog
from hypothesis import given
from hypothesis import strategies as st

from bigearth_stac import Catalog
from bigearth_stac._indexcache import CACHE_ENV, IndexCache, RemoteObject, covered, merge, subtract
from bigearth_stac._indexfs import ReadStats, counting_filesystem
from bigearth_stac.hrefs import HrefError
from bigearth_stac.io import filesystem_for
from tests.http_range_server import serving

QUERIES: list[dict[str, Any]] = [
    {"labels": ["Coniferous forest"]},
    {"labels": ["Pastures", "Arable land"], "match": "all", "split": "train", "exclude_snow": True},
    {"filter": "country = 'Austria' and a_overlaps(labels_43, ('Pastures', 'Mixed forest'))"},
    {"bbox": [9.0, 46.0, 17.0, 49.0], "labels": ["Mixed forest"]},
    {"intersects": {"type": "Polygon", "coordinates": [[[5, 45], [25, 45], [15, 60], [5, 45]]]}},
]


@pytest.fixture(autouse=True)
def _small_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    """These indexes are smaller than the tail a new entry fetches at once (1 MiB): fetch 32 KiB."""
    monkeypatch.setattr("bigearth_stac._indexcache.FOOTER_BYTES", 32 * 1024)


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 official pairs in row groups of 250 rows (12 row groups)."""
    return write_synthetic_catalog(tmp_path_factory.mktemp("cache-cat"), 3000, seed=5, row_group_size=250)


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP with Range support: (folder, base URL)."""
    folder = tmp_path_factory.mktemp("www")
    with serving(folder) as url:
        yield folder, url


def _serve(www: tuple[Path, str], catalog: Path, name: str) -> str:
    folder, base = www
    dest = folder / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(catalog, dest)
    return f"{base}/{name}/catalog.json"


def _open(url: str, cache: Any, settings: Any = None) -> tuple[Catalog, ReadStats]:
    inner, _ = filesystem_for(url, settings)
    fs, stats = counting_filesystem(inner)
    cat = Catalog.open(url, settings=settings, filesystem=fs, cache=cache)
    _ = cat.index("s2").dataset  # the identity check and the footer
    stats.reset()
    return cat, stats


# -- byte ranges -----------------------------------------------------------------------------------

_ranges = st.lists(st.tuples(st.integers(0, 500), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1])), max_size=12)


@given(wanted=_ranges, have=_ranges)
def test_range_arithmetic(wanted: list[tuple[int, int]], have: list[tuple[int, int]]) -> None:
    w, h = merge(wanted), merge(have)
    missing = subtract(w, h)
    bytes_w = {b for s, e in w for b in range(s, e)}
    bytes_h = {b for s, e in h for b in range(s, e)}
    assert {b for s, e in missing for b in range(s, e)} == bytes_w - bytes_h
    for s, e in w:
        assert covered(h, s, e) == all(b in bytes_h for b in range(s, e))


def test_fetches_are_coalesced_and_concurrent(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096 * 4  # 4 MiB
    lock = threading.Lock()
    state = {"now": 0, "most": 0, "calls": 0}

    def read(start: int, end: int) -> bytes:
        with lock:
            state["now"] += 1
            state["calls"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return data[start:end]

    entry = IndexCache(tmp_path).open(RemoteObject("s3://b/k", len(data), "v1", None, read))
    far = [(i * 400_000, i * 400_000 + 1000) for i in range(8)]  # 8 ranges, far apart
    near = [(3_900_000, 3_900_010), (3_900_020, 3_900_030)]  # 10 bytes apart: one request
    assert entry.ensure([*far, *near]) > 0
    assert state["calls"] == 9
    assert state["most"] > 1
    assert all(entry.read(s, e) == data[s:e] for s, e in [*far, *near])
    assert state["calls"] == 9  # served from disk
    assert entry.ensure(far) == 0


def test_identity_is_url_size_version_checksum() -> None:
    def key(**kw: object) -> str:
        base: dict[str, object] = {"url": "s3://b/i.parquet", "size": 10, "version": "etag:a", "checksum": None}
        base.update(kw)
        return RemoteObject(read=lambda s, e: b"", **base).key  # type: ignore[arg-type]

    assert len({key(), key(size=11), key(version="etag:b"), key(checksum="1220ab"), key(url="s3://b/j.parquet")}) == 5


# -- through a real HTTP server ----------------------------------------------------------------


def test_cached_equals_uncached_and_second_query_reads_nothing(small_catalog: Path, www: tuple[Path, str],
                                                               tmp_path: Path) -> None:
    url = _serve(www, small_catalog, "same")
    local = Catalog.open(str(small_catalog))
    uncached, _ = _open(url, False)
    cached, stats = _open(url, tmp_path / "cache")
    for q in QUERIES:
        expected = local.search(**q).ids()
        assert uncached.search(**q).ids() == expected, q
        assert cached.search(**q).ids() == expected, q
    assert stats.bytes > 0
    stats.reset()
    for q in QUERIES:
        assert cached.search(**q).ids() == local.search(**q).ids(), q
    assert stats.bytes == 0
    # A column the first queries did not read: fetched once, then local too.
    assets = cached.search(**QUERIES[0]).to_arrow(["id", "assets"])
    assert stats.bytes > 0
    stats.reset()
    assert cached.search(**QUERIES[0]).to_arrow(["id", "assets"]).equals(assets)
    assert stats.bytes == 0
    for q in QUERIES:
        assert cached.search(**q).to_arrow().equals(uncached.search(**q).to_arrow()), q


def test_a_new_process_reads_no_range(small_catalog: Path, www: tuple[Path, str], tmp_path: Path) -> None:
    url = _serve(www, small_catalog, "process")
    cache = tmp_path / "cache"
    first, _ = _open(url, cache)
    expected = [first.search(**q).ids() for q in QUERIES]
    script = f"""
import json
from bigearth_stac import Catalog
from bigearth_stac._indexfs import ReadStats, counting_filesystem
from bigearth_stac.io import filesystem_for
url = {url!r}
fs, stats = counting_filesystem(filesystem_for(url)[0])
cat = Catalog.open(url, filesystem=fs, cache={str(cache)!r})
ids = [cat.search(**q).ids() for q in {QUERIES!r}]
print(json.dumps({{"bytes": stats.bytes, "reads": stats.reads, "ids": ids}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ids"] == expected
    assert result["bytes"] == 0 and result["reads"] == 0  # the footer and every chunk from the cache


def test_a_changed_index_is_not_served_stale(small_catalog: Path, www: tuple[Path, str], tmp_path: Path) -> None:
    url = _serve(www, small_catalog, "changing")
    cache = tmp_path / "cache"
    q = QUERIES[0]
    before, _ = _open(url, cache)
    old = before.search(**q).ids()
    assert old == Catalog.open(str(small_catalog)).search(**q).ids()
    # The publisher replaces the index (other labels, another size).
    other = write_synthetic_catalog(tmp_path / "other", 2000, seed=9, row_group_size=250)
    folder = www[0] / "changing"
    for name in ("index/bigearthnet-s2.parquet", "index/bigearthnet-s1.parquet"):
        (folder / name).write_bytes((other / name).read_bytes())
    after, stats = _open(url, cache)
    new = after.search(**q).ids()
    assert new == Catalog.open(str(other)).search(**q).ids() != old
    assert stats.bytes > 0
    assert len(list((cache / "v1").glob("*.data"))) >= 2  # a new entry; the old one is not reused


def test_the_cache_stays_within_its_bound(small_catalog: Path, www: tuple[Path, str], tmp_path: Path) -> None:
    url_a = _serve(www, small_catalog, "bound-a")
    url_b = _serve(www, small_catalog, "bound-b")
    local = Catalog.open(str(small_catalog))
    size = (small_catalog / "index" / "bigearthnet-s2.parquet").stat().st_size
    bound = size // 3  # less than some queries read
    cache = IndexCache(tmp_path / "cache", max_bytes=bound)
    a, _ = _open(url_a, cache)
    for q in QUERIES:
        assert a.search(**q).ids() == local.search(**q).ids(), q
        assert a.search(modality="s1", **q).ids() == local.search(modality="s1", **q).ids(), q
        assert cache.usage() <= bound
    assert a.search().to_arrow().equals(local.search().to_arrow())  # more than the bound, served all the same
    assert cache.usage() <= bound
    disk = sum(p.stat().st_blocks * 512 for p in (tmp_path / "cache" / "v1").glob("*.data"))
    assert disk <= bound + 64 * 4096  # sparse files: what is not cached takes no disk (but whole blocks)
    # An entry nobody has open makes room for a new one.
    del a
    gc.collect()
    b, _ = _open(url_b, cache)
    assert b.search(**QUERIES[0]).ids() == local.search(**QUERIES[0]).ids()
    assert cache.usage() <= bound
    metas = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "v1").glob("*.json")]
    assert any(m["url"].startswith(url_b.rsplit("/", 1)[0]) and m["ranges"] for m in metas)


def test_hrefs_stay_confined(small_catalog: Path, www: tuple[Path, str], tmp_path: Path) -> None:
    url = _serve(www, small_catalog, "confined")
    cache = tmp_path / "cache"
    cat, _ = _open(url, cache)
    rows = cat.search(**QUERIES[0]).sample_table()
    root = url.rsplit("/", 1)[0] + "/"
    hrefs = rows.column("s2_assets").combine_chunks().flatten().to_pylist()
    assert hrefs and all(h.startswith(root) for h in hrefs)
    assert not any(str(cache) in h for h in hrefs)
    assert all(cat.index(m).url.startswith(root) for m in ("s2", "s1"))
    # An index href that leaves the catalog is refused before anything is read or cached.
    folder = www[0] / "confined"
    coll = folder / "bigearthnet-s2" / "collection.json"
    doc = json.loads(coll.read_text())
    doc["assets"]["geoparquet-items"]["href"] = "../../elsewhere/bigearthnet-s2.parquet"
    coll.write_text(json.dumps(doc))
    fresh = tmp_path / "fresh"
    with pytest.raises(HrefError):
        Catalog.open(url, cache=fresh)
    assert not list(fresh.glob("v1/*.data"))


def test_default_cache_folder_and_fallbacks(small_catalog: Path, www: tuple[Path, str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url = _serve(www, small_catalog, "defaults")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env-cache"))
    cat = Catalog.open(url)
    assert cat.search(**QUERIES[0]).ids()
    assert list((tmp_path / "env-cache" / "v1").glob("*.data"))
    # Local catalogs never make a cache.
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "unused"))
    Catalog.open(str(small_catalog)).search(**QUERIES[0]).ids()
    assert not (tmp_path / "unused").exists()
    # A default folder that cannot be made: searches still work, uncached.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    assert Catalog.open(url).search(**QUERIES[0]).ids() == cat.search(**QUERIES[0]).ids()
    # A catalog (and a result) pickles for DataLoader workers, cache settings included.
    clone = pickle.loads(pickle.dumps(cat))
    assert clone.search(**QUERIES[0]).ids() == cat.search(**QUERIES[0]).ids()
    assert os.environ[CACHE_ENV]  # monkeypatch restores it


def test_s3_changed_object_and_no_second_read(small_catalog: Path, s3_server, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket("index-cache")
    s3_server.upload_tree(small_catalog, bucket, "cat")
    url = f"s3://{bucket}/cat/catalog.json"
    cache = tmp_path / "cache"
    local = Catalog.open(str(small_catalog))
    cat, stats = _open(url, cache, s3_server.settings)
    q = QUERIES[1]
    assert cat.search(**q).ids() == local.search(**q).ids()
    stats.reset()
    assert cat.search(**q).ids() == local.search(**q).ids()
    assert stats.bytes == 0
    other = write_synthetic_catalog(tmp_path / "other", 2000, seed=9, row_group_size=250)
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="cat/index/bigearthnet-s2.parquet",
                      Body=(other / "index" / "bigearthnet-s2.parquet").read_bytes())
    again, stats = _open(url, cache, s3_server.settings)
    assert again.search(**q).ids() == Catalog.open(str(other)).search(**q).ids()
    assert stats.bytes > 0


def test_in_memory_columns_answer_like_a_scan(small_catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeated searches read columns kept in memory (whole columns added query by query, or
    decoded row groups); every answer equals the plain scan's, rows in index order."""
    import bigearth_stac.search as search_module

    remembered = Catalog.open(str(small_catalog))
    answers = []
    for _ in range(2):  # the first pass loads, the second reads memory
        for q in [*QUERIES, {"split": "test"}, {"countries": "Austria", "datetime": "2017-06-01/2017-09-30"}]:
            r = remembered.search(**q)
            answers.append((q, r.ids(), len(r), r.to_arrow(["id", "bbox", "bigearthnet:split"])))
    assert search_module._HotTable.of(remembered.index("s2")).columns  # whole columns were loaded
    monkeypatch.setattr(search_module, "HOT_MIN_SHARE", 2.0)  # never load whole columns
    monkeypatch.setattr(search_module, "WARM_MAX_BYTES", -1)  # never keep decoded row groups
    scanned = Catalog.open(str(small_catalog))
    for q, ids, n, table in answers:
        r = scanned.search(**q)
        assert not search_module._HotTable.of(scanned.index("s2")).columns
        assert r.ids() == ids and len(r) == n, q
        assert r.to_arrow(["id", "bbox", "bigearthnet:split"]).equals(table), q


def test_complete_needs_the_footer_on_disk(small_catalog: Path, tmp_path: Path) -> None:
    """DuckDB reads a cached index from the entry's data file, footer included: an entry whose
    footer was served from memory (the cache was full) is not complete, whatever its chunks."""
    data = (small_catalog / "index" / "bigearthnet-s2.parquet").read_bytes()
    footer = (len(data) - 8 - int.from_bytes(data[-8:-4], "little"), len(data))
    chunks = [(4, 1000)]

    def read(start: int, end: int) -> bytes:
        return data[start:end]

    full = IndexCache(tmp_path / "full", max_bytes=996 + 8)  # the chunks and the last 8 bytes only
    entry = full.open(RemoteObject("s3://b/k", len(data), "v1", None, read))
    entry.ensure(chunks)
    entry.ensure([(len(data) - 8, len(data))])
    assert entry.read(*footer) == data[footer[0]:footer[1]]  # served, from memory
    assert not entry.missing(chunks) and not entry.complete(chunks)
    roomy = IndexCache(tmp_path / "roomy").open(RemoteObject("s3://b/k", len(data), "v1", None, read))
    roomy.ensure(chunks)
    assert not roomy.complete(chunks)
    roomy.ensure([footer])
    assert roomy.complete(chunks)
