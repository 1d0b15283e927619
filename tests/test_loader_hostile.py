"""The loader against hostile but well-formed input (issue 12), and its one-line path.

A valid COG with the wrong bands, size or dtype in place of an asset, a malformed sample table,
labels outside the nomenclature: each is a named error (or a counted skip), never a bare
exception and never silently resampled pixels. ``Catalog.open(root).search().to_torch()`` streams
what the search holds.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from torch.utils.data import DataLoader

from bigearth_stac import Catalog
from bigearth_stac.decode import DecodeError, Expected, ShapeMismatchError, decode, decode_gdal
from bigearth_stac.fetch import FetchError
from bigearth_stac.patch import read_patch
from bigearth_stac.samples import sample_table
from bigearth_stac.torch_dataset import BigEarthNetStream, SampleError, StreamOptions
from catalog_builder.cog import CogOptions, encode_cog

IDX = "index/bigearthnet-{}.parquet"


def _table(root: Path, modality: str = "pair") -> pa.Table:
    s2, s1 = (pq.read_table(root / IDX.format(m)) for m in ("s2", "s1"))
    if modality == "s1":
        return sample_table(s1, str(root / IDX.format("s1")), "s1")
    return sample_table(s2, str(root / IDX.format("s2")), modality, s1, str(root / IDX.format("s1")))  # type: ignore[arg-type]


def _cog(bands: int, size: int, dtype: str = "uint16") -> bytes:
    """A valid COG (the builder's encoder) of ``bands`` bands of ``size`` x ``size`` ``dtype``."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 3000, (size, size)).astype(dtype) for _ in range(bands)]
    names = [f"b{i}" for i in range(bands)]
    return encode_cog(arrays, 32633, (500_000.0, 5_000_000.0), 1200 / size, names, CogOptions()).data


def _replace_asset(root: Path, tmp: Path, row: int, modality: str, asset: int, data: bytes) -> tuple[Path, str, str]:
    """A copy of the catalog at ``root`` in which one asset file holds ``data`` instead.

    Returns (the copy's root, the sample id, the replaced file's href): the index is untouched,
    as when an object in the bucket was overwritten.
    """
    copy = Path(shutil.copytree(root, tmp / "catalog"))
    table = _table(copy)
    href = table.column(f"{modality}_assets")[row].as_py()[asset]
    Path(href).write_bytes(data)
    return copy, table.column("id")[row].as_py(), href


def _edit(table: pa.Table, row: int, **columns: object) -> pa.Table:
    """``table`` with some columns of ``row`` replaced (schema and metadata kept)."""
    rows = table.to_pylist()
    rows[row].update(columns)
    return pa.Table.from_pylist(rows, schema=table.schema)


# -- decoded pixels are checked against the band plan ----------------------------------------

# (layout, modality, asset position, bands, size, dtype, options, what the message says)
CASES = [
    pytest.param("stacked", "s2", 0, 3, 120, "uint16", {}, "4 bands of 120 x 120 uint16", id="3-band-10m"),
    pytest.param("stacked", "s2", 0, 4, 60, "uint16", {"resample_to_10m": True}, "found 4 bands of 60 x 60",
                 id="60px-10m-resampled"),
    pytest.param("stacked", "s2", 0, 4, 120, "float32", {}, "found 4 bands of 120 x 120 float32", id="float-10m"),
    pytest.param("stacked", "s2", 2, 2, 120, "uint16", {"resample_to_10m": True}, "2 bands of 20 x 20",
                 id="120px-60m-resampled"),
    pytest.param("stacked", "s1", 0, 2, 120, "uint16", {}, "2 bands of 120 x 120 float32", id="uint16-s1"),
    pytest.param("stacked", "s1", 0, 1, 120, "float32", {}, "found 1 band of 120 x 120", id="1-band-s1"),
    pytest.param("per-band", "s2", 1, 3, 120, "uint16", {}, "1 band of 120 x 120 uint16", id="per-band-3-band-B02"),
    pytest.param("per-band", "s2", 0, 1, 120, "uint16", {"resample_to_10m": True}, "found 1 band of 120 x 120",
                 id="per-band-10m-as-B01"),
    pytest.param("per-band", "s1", 1, 1, 60, "float32", {}, "found 1 band of 60 x 60", id="per-band-60px-VH"),
]  # fmt: skip


@pytest.mark.parametrize(("layout", "modality", "asset", "bands", "size", "dtype", "options", "says"), CASES)
def test_wrong_pixels_are_a_sample_error_and_skippable(
    layout: str, modality: str, asset: int, bands: int, size: int, dtype: str, options: dict, says: str,
    real_catalog: Path, real_catalog_per_band: Path, tmp_path: Path,
) -> None:  # fmt: skip
    root = real_catalog if layout == "stacked" else real_catalog_per_band
    copy, bad_id, href = _replace_asset(root, tmp_path, 2, modality, asset, _cog(bands, size, dtype))
    table = _table(copy)
    with pytest.raises(SampleError) as info:
        list(BigEarthNetStream(table, modalities=(modality,), shuffle=False, **options))
    assert info.value.sample_id == bad_id and info.value.href == href
    message = str(info.value)
    assert bad_id in message and href in message and "expected" in message and says in message
    ds = BigEarthNetStream(table, modalities=(modality,), shuffle=False, on_error="skip", **options)
    ids = [s["id"] for s in ds]
    assert bad_id not in ids and len(ids) == 5
    assert ds.stats["skipped"] == 1 and ds.skipped_ids == [bad_id]


def test_the_check_happens_before_any_pixel_is_decoded() -> None:
    """A header that disagrees is refused before the tile is inflated, on both decoders."""
    data = _cog(3, 120)
    expect = Expected(4, 120, 120, np.dtype("uint16"), "s2_10m")
    with pytest.raises(ShapeMismatchError, match=r"s2_10m: expected 4 bands of 120 x 120 uint16, found 3 bands"):
        decode(data, expect)
    with pytest.raises(ShapeMismatchError, match="found 3 bands"):
        decode_gdal(data, expect)
    assert decode(data, Expected(3, 120, 120, np.dtype("uint16"))).shape == (3, 120, 120)
    assert issubclass(ShapeMismatchError, DecodeError)


def test_read_patch_checks_pixels_and_names_the_sample(real_catalog: Path, tmp_path: Path) -> None:
    copy, bad_id, href = _replace_asset(real_catalog, tmp_path, 1, "s2", 0, _cog(3, 120))
    rows = _table(copy).to_pylist()
    with pytest.raises(FetchError) as info:
        read_patch(rows[1])
    assert info.value.sample_id == bad_id and info.value.href == href and "expected 4 bands" in str(info.value)
    assert set(read_patch(rows[0]).bands) >= {"B02", "B12", "VV", "VH"}  # the others still read


# -- a malformed sample table is refused when the stream is built --------------------------------


def test_wrong_number_of_assets_or_null_hrefs_are_refused_up_front(real_catalog: Path) -> None:
    table = _table(real_catalog)
    ids = table.column("id").to_pylist()
    short = _edit(table, 3, s2_assets=table.column("s2_assets")[3].as_py()[:2])
    with pytest.raises(ValueError, match=rf"1 of 6 samples do not have the 3 s2 assets of the stacked layout.*{ids[3]}"):
        BigEarthNetStream(short)
    with pytest.raises(ValueError, match=rf"null s1 href.*{ids[4]}"):
        BigEarthNetStream(_edit(table, 4, s1_assets=[None]))
    assert len(BigEarthNetStream(short, modalities=("s1",))) == 6  # S2 assets are not read: not checked


def test_unknown_or_missing_labels_are_sample_errors(real_catalog: Path) -> None:
    table = _table(real_catalog)
    ids = table.column("id").to_pylist()
    table = _edit(_edit(table, 1, labels_19=["Not a class"]), 3, labels_19=None)
    opts = {"modalities": ("s2",), "bands": ["B01"], "shuffle": False}
    with pytest.raises(SampleError, match=rf"{ids[1]}.*unknown 19-class label 'Not a class'"):
        list(BigEarthNetStream(table, **opts))
    ds = BigEarthNetStream(table, on_error="skip", **opts)
    assert [s["id"] for s in ds] == [sid for i, sid in enumerate(ids) if i not in (1, 3)]
    assert ds.skipped_ids == [ids[1], ids[3]] and ds.stats["skipped"] == 2
    assert len(list(BigEarthNetStream(table, nomenclature="43", **opts))) == 6  # the 43-class labels are fine


# -- skips made in DataLoader workers are visible in the main process ------------------------------


# "spawn" (what CUDA users pick) starts fresh interpreters: the shared counters travel pickled.
@pytest.mark.parametrize("context", [None, pytest.param("spawn", marks=pytest.mark.slow)])
def test_skipped_ids_from_workers_reach_the_main_process(real_catalog: Path, context: str | None) -> None:
    table = _table(real_catalog)
    bad = [table.column("id")[row].as_py() for row in (1, 4)]
    for row in (1, 4):  # objects gone from the catalog
        table = _edit(table, row, s2_assets=[str(real_catalog / f"gone-{row}.tif")] + table.column("s2_assets")[row].as_py()[1:])
    ds = BigEarthNetStream(table, modalities=("s2",), on_error="skip", shuffle=False)
    loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context=context)
    got = [i for batch in loader for i in batch["id"]]
    assert len(got) == 4 and not set(bad) & set(got)
    assert sorted(ds.skipped_ids) == sorted(bad)  # one skipped in each worker
    assert ds.stats["skipped"] == 2 and ds.stats["yielded"] == 4


# -- the one-line path: a search streams what it holds -------------------------------------------


def test_one_line_path_streams_what_the_search_holds(real_catalog: Path) -> None:
    cat = Catalog.open(str(real_catalog))
    s2 = cat.search().to_torch()
    assert s2.modalities == ("s2",)
    sample = next(iter(s2))
    assert set(sample) == {"s2", "label", "id"} and sample["s2"]["10m"].shape == (4, 120, 120)
    s1 = cat.search(modality="s1").to_torch()
    assert s1.modalities == ("s1",) and next(iter(s1))["s1"].shape == (2, 120, 120)
    pairs = cat.search(modality="pair").to_torch(resample_to_10m=True)
    assert pairs.modalities == ("s2", "s1")
    sample = next(iter(pairs))
    assert sample["s2"].shape == (12, 120, 120) and sample["s1"].shape == (2, 120, 120)
    assert len(list(cat.search(modality="pair").to_torch(modalities=("s1",)))) == 6


def test_asking_for_a_modality_the_result_lacks_names_it(real_catalog: Path) -> None:
    cat = Catalog.open(str(real_catalog))
    with pytest.raises(ValueError, match=r"modality 's1'.*no s1 assets.*modality='pair'"):
        cat.search().to_torch(modalities=("s2", "s1"))
    with pytest.raises(ValueError, match=r"modality 's2'.*no s2 assets"):
        cat.search(modality="s1").to_torch(bands=["B04"])
    table = _table(real_catalog)
    partial = _edit(table, 2, s1_assets=[])
    with pytest.raises(ValueError, match=rf"1 of 6 samples have no s1 assets.*{table.column('id')[2].as_py()}"):
        BigEarthNetStream(partial, modalities=("s2", "s1"))
    assert BigEarthNetStream(partial).modalities == ("s2",)  # inferred: what every sample has


def test_default_modalities_follow_the_bands(real_catalog: Path) -> None:
    both = BigEarthNetStream(_table(real_catalog), bands=["B04", "VV"])
    assert both.modalities == ("s2", "s1")
    assert BigEarthNetStream(_table(real_catalog), bands=["VH"]).modalities == ("s1",)


# -- options: one frozen, documented object -------------------------------------------------------


def test_keyword_arguments_build_the_options(real_catalog: Path) -> None:
    table = _table(real_catalog)
    opts = StreamOptions(modalities=("s2",), bands=("B04",), shuffle=False, on_error="skip")
    a = BigEarthNetStream(table, opts)
    b = BigEarthNetStream(table, modalities=["s2"], bands=["B04"], shuffle=False, on_error="skip")
    c = BigEarthNetStream(table, StreamOptions(modalities=("s2",)), bands=["B04"], shuffle=False, on_error="skip")
    assert a.options == b.options == c.options
    assert a.options.modalities == ("s2",) and a.options.bands == ("B04",)
    assert [s["id"] for s in a] == [s["id"] for s in b] == table.column("id").to_pylist()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match=r"unknown option.*'shufle'"):
        BigEarthNetStream(table, shufle=False)
    with pytest.raises(TypeError, match="StreamOptions"):
        BigEarthNetStream(table, ("s2",))  # the old positional ``modalities``
    with pytest.raises(ValueError, match="transform"):
        StreamOptions(batch_size=4, transform=lambda s: s)  # a per-sample transform has no samples to see
    for bad in ({"on_error": "ignore"}, {"resampling": "cubic"}, {"nomenclature": "20"}, {"uneven": "wrap"},
                {"class_order": "random"}, {"max_in_flight": 0}, {"prefetch": 0}, {"modalities": ("s3",)},
                {"batch_size": 0}, {"decode_threads": -1}):  # fmt: skip
        with pytest.raises(ValueError):
            StreamOptions(**bad)  # type: ignore[arg-type]


def test_every_option_is_documented() -> None:
    import ast
    import inspect

    import bigearth_stac.torch_dataset as mod

    tree = ast.parse(inspect.getsource(mod))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "StreamOptions")
    documented = {
        a.target.id  # type: ignore[union-attr]
        for a, doc in zip(cls.body, cls.body[1:], strict=False)
        if isinstance(a, ast.AnnAssign) and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
    }
    assert documented == {f.name for f in dataclasses.fields(StreamOptions)}
