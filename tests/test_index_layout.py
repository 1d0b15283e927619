"""The index file's layout: the search columns of every row group gathered at the start of the
file (catalog_builder.parquet_layout). Every reader reads the same table as from pyarrow's own
chunk order, and a cold remote label query needs one range request whatever the row groups."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import stac_geoparquet.arrow as sga
from bigearth_devtools.synthetic_index import write_synthetic_catalog

from bigearth_stac import Catalog
from bigearth_stac._indexfs import counting_filesystem
from bigearth_stac.contract import INDEX_COLUMN_GROUPS, LABEL_MASK_COLUMNS, SEARCH_COLUMNS
from bigearth_stac.io import filesystem_for
from catalog_builder.index import dictionary_columns, search_columns_first, table_to_parquet_bytes
from catalog_builder.parquet_layout import (
    LayoutError,
    column_runs,
    decode_footer,
    encode_footer,
    gather_columns,
)
from tests.http_range_server import serving

INDEX = "index/bigearthnet-s2.parquet"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 official pairs in row groups of 250 rows (12 row groups), written by the builder."""
    return write_synthetic_catalog(tmp_path_factory.mktemp("layout-cat"), 3000, seed=11, row_group_size=250)


def _write_plain(table: pa.Table, path: Path, rows: int) -> bytes:
    """``table`` as stac-geoparquet / pyarrow write it (row group after row group)."""
    sga.to_parquet(pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=rows)), path,
                   compression="zstd", write_statistics=True)
    return path.read_bytes()


@pytest.fixture(scope="module")
def plain_bytes(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The same table as pyarrow writes it (row group after row group, columns in schema order)."""
    table = search_columns_first(pq.read_table(catalog / INDEX))
    return _write_plain(table, tmp_path_factory.mktemp("plain") / "index.parquet", 250)


def _read(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


def test_every_reader_reads_the_same_table(catalog: Path, plain_bytes: bytes, tmp_path: Path) -> None:
    gathered = gather_columns(plain_bytes, INDEX_COLUMN_GROUPS)
    assert gathered != plain_bytes and abs(len(gathered) - len(plain_bytes)) < 0.001 * len(plain_bytes)  # offsets only
    expected = _read(plain_bytes)
    assert _read(gathered).equals(expected)
    assert _read(gathered).schema.metadata == expected.schema.metadata
    # Row group by row group (what a pruned scan reads), and one column alone.
    for r in (0, 5, 11):
        assert pq.ParquetFile(pa.BufferReader(gathered)).read_row_group(r).equals(
            pq.ParquetFile(pa.BufferReader(plain_bytes)).read_row_group(r))
    assert pq.read_table(pa.BufferReader(gathered), columns=["id"]).equals(
        pq.read_table(pa.BufferReader(plain_bytes), columns=["id"]))
    # DuckDB's own Parquet reader (the in-memory columns of a search load through it).
    paths = {"plain": tmp_path / "plain.parquet", "gathered": tmp_path / "gathered.parquet"}
    paths["plain"].write_bytes(plain_bytes)
    paths["gathered"].write_bytes(gathered)
    con = duckdb.connect()
    tables = {k: con.sql(f"SELECT * FROM read_parquet('{p}')").to_arrow_table() for k, p in paths.items()}
    assert tables["gathered"].equals(tables["plain"])
    mask = LABEL_MASK_COLUMNS["19"]
    counts = {k: con.sql(f"""SELECT count(*), sum("{mask}") FROM read_parquet('{p}')
                             WHERE "bigearthnet:split" = 'train'""").fetchall() for k, p in paths.items()}
    assert counts["gathered"] == counts["plain"]
    # stac-geoparquet's items: identical.
    assert list(sga.stac_table_to_items(_read(gathered))) == list(sga.stac_table_to_items(expected))
    # The builder's index is the gathered file of the same table.
    assert _read((catalog / INDEX).read_bytes()).equals(expected)


def test_rustac_reads_the_gathered_index(catalog: Path, plain_bytes: bytes, tmp_path: Path) -> None:
    rustac = pytest.importorskip("rustac")
    plain, gathered = tmp_path / "plain.parquet", tmp_path / "gathered.parquet"
    data = _write_plain(_read(plain_bytes).slice(0, 600), plain, 200)
    gathered.write_bytes(gather_columns(data, INDEX_COLUMN_GROUPS))
    assert rustac.read_sync(str(gathered))["features"] == rustac.read_sync(str(plain))["features"]


def test_groups_are_contiguous_runs_at_the_start(catalog: Path) -> None:
    runs = column_runs((catalog / INDEX).read_bytes())
    assert runs[0][0] == 4  # right after the magic
    for (_, end, *_), (start, *_) in zip(runs, runs[1:], strict=False):
        assert end == start  # nothing between chunks
    rank = {c: g for g, group in enumerate(INDEX_COLUMN_GROUPS) for c in group}
    order = [(rank.get(col, len(INDEX_COLUMN_GROUPS)), rg) for _, _, col, rg in runs]
    assert order == sorted(order)  # group by group, row group by row group; then the rest by row group
    groups = {rank.get(col, len(INDEX_COLUMN_GROUPS)) for _, _, col, _ in runs}
    assert groups == set(range(len(INDEX_COLUMN_GROUPS) + 1))
    # The schema order is the contract's, whatever the chunks' order (items' property order).
    names = pq.read_schema(catalog / INDEX).names
    order = [c for c in dict.fromkeys(SEARCH_COLUMNS) if c in names]
    assert names[:len(order)] == order
    first = {col for _, _, col, _ in runs[:len(INDEX_COLUMN_GROUPS[0])]}
    assert first == set(INDEX_COLUMN_GROUPS[0]) & set(names)  # row group 0 of the first group leads


def test_footer_round_trips_and_unsafe_files_are_refused(plain_bytes: bytes) -> None:
    length = int.from_bytes(plain_bytes[-8:-4], "little")
    footer = plain_bytes[-8 - length:-8]
    assert encode_footer(decode_footer(footer)) == footer
    with pytest.raises(LayoutError, match="two groups"):
        gather_columns(plain_bytes, [["id"], ["id", "bbox"]])
    with pytest.raises(LayoutError):
        gather_columns(b"not parquet at all", INDEX_COLUMN_GROUPS)
    # A page index holds offsets of its own: refused, not rewritten wrongly.
    out = io.BytesIO()
    pq.write_table(pa.table({"id": ["a", "b"], "x": [1, 2]}), out, write_page_index=True)
    with pytest.raises(LayoutError, match="page index"):
        gather_columns(out.getvalue(), [["x"]])
    # Unknown names are ignored; no groups keeps the file's order.
    assert _read(gather_columns(plain_bytes, [["no such column"]])).equals(_read(plain_bytes))


def test_unique_strings_are_stored_plain(catalog: Path) -> None:
    table = pq.read_table(catalog / INDEX)
    chosen = set(dictionary_columns(table, 250))
    assert "id" not in chosen and "bigearthnet:split" in chosen and "bigearthnet:labels_19.list.element" in chosen
    meta = pq.ParquetFile(catalog / INDEX).metadata
    encodings = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).encodings
                 for i in range(meta.num_columns)}
    assert "RLE_DICTIONARY" not in encodings["id"] and "RLE_DICTIONARY" in encodings["bigearthnet:split"]
    # Encoding is not content: the builder's bytes hold the table it was given.
    again = table_to_parquet_bytes(table, None, 250)
    assert _read(again).equals(table)


@pytest.fixture(scope="module")
def http_root(catalog: Path) -> Iterator[str]:
    with serving(catalog) as url:
        yield url


def test_cold_remote_label_query_is_one_request(catalog: Path, http_root: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bigearth_stac._indexcache.FOOTER_BYTES", 16 * 1024)  # the footer only, not the data
    local = Catalog.open(str(catalog))
    url = f"{http_root}/catalog.json"
    queries = [
        ({"labels": ["Coniferous forest"]}, 1),  # every row group: the first group's run, one request
        ({"labels": ["Pastures"], "split": "train", "exclude_snow": True, "exclude_clouds": True}, 1),
        ({"labels": ["Airports", "Pastures"], "nomenclature": "43"}, 2),  # + the 43-class masks' run
        ({"labels": ["Coniferous forest"], "bbox": [9.0, 46.0, 17.0, 49.0]}, 2),  # + the footprints
    ]
    for i, (q, most) in enumerate(queries):
        fs, stats = counting_filesystem(filesystem_for(url)[0])
        cat = Catalog.open(url, filesystem=fs, cache=tmp_path / f"cache-{i}")
        assert cat.index("s2").num_row_groups == 12
        stats.reset()
        assert cat.search(**q).ids() == local.search(**q).ids(), q
        assert 0 < stats.reads <= most, (q, stats.reads)


def test_one_statistics_pass_prunes_like_one_per_row_group(catalog: Path) -> None:
    """Row groups are pruned by one ``subset`` of the whole file; the same ones survive as when each
    row group's fragment is tested alone, for every kind of prefilter a query makes."""
    import pyarrow.compute as pc

    from bigearth_stac.search import _pruned

    cat = Catalog.open(str(catalog))
    index = cat.index("s2")
    queries = [
        {"bbox": [9.0, 46.0, 17.0, 49.0]},
        {"bbox": [-30.0, 30.0, 40.0, 72.0]},  # every row group
        {"bbox": [100.0, -10.0, 101.0, -9.0]},  # none
        {"labels": ["Pastures"], "split": "train", "bbox": [9.0, 46.0, 17.0, 49.0]},
        {"datetime": "2017-06-01/2017-08-31"},
        {"datetime": "2018-05-01/..", "bbox": [-10.0, 50.0, 0.0, 60.0]},
        {"intersects": {"type": "Polygon", "coordinates": [[[12, 47], [14, 47], [13, 48.5], [12, 47]]]}},
    ]
    seen = set()
    for q in queries:
        pre = cat.search(**q).query.predicate.prefilter
        assert pre is not None, q
        fast = _pruned(index.dataset, pre, index.whole)
        slow = _pruned(index.dataset, pre)
        assert fast[1] == slow[1], q
        assert fast[0].to_table(columns=["id"]).equals(slow[0].to_table(columns=["id"])), q
        seen.add(len(fast[1]))
    assert {0, 12} <= seen and len(seen) >= 3  # none, all, and some row groups among the cases
    # The partner table of a pair search is pruned by tile the same way.
    tiles = pc.field("bigearthnet:tile").isin(["T33UUP"])
    assert _pruned(index.dataset, tiles, index.whole)[1] == _pruned(index.dataset, tiles)[1]
