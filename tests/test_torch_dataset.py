"""The streaming PyTorch dataset: pixels, labels, sharding, determinism, resume, errors, S3."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bigearth_stac.samples import sample_table
from bigearth_stac.sharding import per_rank
from bigearth_stac.torch_dataset import BigEarthNetStream, SampleError
from bigearth_stac.vocab import BAND_STATS, CLASS_ORDERS, S2_BAND_NAMES, to_19

IDX = "index/bigearthnet-{}.parquet"


def pairs_table(root: Path | str, base: str | None = None) -> pa.Table:
    """Sample table of a catalog's pairs; hrefs resolved against ``base`` (e.g. an s3:// URL)."""
    base = base or str(root)
    s2, s1 = (pq.read_table(Path(root) / IDX.format(m)) for m in ("s2", "s1"))
    return sample_table(s2, f"{base}/{IDX.format('s2')}", "pair", s1, f"{base}/{IDX.format('s1')}")


def ids_of(loader: object) -> list[str]:
    return [i for batch in loader for i in batch["id"]]  # type: ignore[attr-defined]


def raw_band(raw: tuple[Path, Path], folder: str, band: str, s1: bool = False) -> np.ndarray:
    with rasterio.open(raw[1 if s1 else 0] / folder / f"{folder}_{band}.tif") as src:
        return src.read(1)


def s1_name(table: pa.Table, sample_id: str) -> str:
    row = table.filter(pa.compute.equal(table.column("id"), sample_id))
    return Path(row.column("s1_assets")[0].as_py()[0]).parent.name


# -- pixels and labels -----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["stacked", "per-band"])
def test_pixels_and_labels_match_raw_files(
    layout: str, real_catalog: Path, real_catalog_per_band: Path, real_raw: tuple[Path, Path]
) -> None:
    table = pairs_table(real_catalog if layout == "stacked" else real_catalog_per_band)
    ds = BigEarthNetStream(table, normalize=False, shuffle=False)
    samples = list(ds)
    assert [s["id"] for s in samples] == table.column("id").to_pylist()
    for s in samples:
        sid = s["id"]
        assert set(s["s2"]) == {"10m", "20m", "60m"}
        for res, names in ds.bands_by_resolution.items():
            for i, band in enumerate(names):
                got = s["s2"][res][i]
                assert got.dtype == torch.float32
                assert torch.equal(got, torch.from_numpy(raw_band(real_raw, sid, band).astype(np.float32))), (sid, band)
        for i, band in enumerate(("VV", "VH")):
            assert torch.equal(s["s1"][i], torch.from_numpy(raw_band(real_raw, s1_name(table, sid), band, s1=True)))
        meta = json.loads((real_raw[0] / sid / f"{sid}_labels_metadata.json").read_text())
        expected = [float(c in to_19(meta["labels"])) for c in CLASS_ORDERS["original"]["19"]]
        assert s["label"].tolist() == expected


def test_band_selection_resampling_and_normalisation(real_catalog: Path, real_raw: tuple[Path, Path]) -> None:
    table = pairs_table(real_catalog)
    bands = ["B04", "B03", "B02", "B05", "B01", "VV"]
    sid = table.column("id")[0].as_py()
    for method in ("nearest", "bilinear"):
        ds = BigEarthNetStream(table, bands=bands, resample_to_10m=True, resampling=method, shuffle=False)
        s = next(iter(ds))
        assert s["id"] == sid and s["s2"].shape == (5, 120, 120) and s["s1"].shape == (1, 120, 120)
        for i, band in enumerate(bands[:5]):
            mean, std = BAND_STATS[band]
            x = (torch.from_numpy(raw_band(real_raw, sid, band).astype(np.float32)) - mean) / std
            if x.shape[-1] != 120:
                x = F.interpolate(x[None, None], size=(120, 120), mode=method, **({"align_corners": False} if method == "bilinear" else {}))[0, 0]
            torch.testing.assert_close(s["s2"][i], x, rtol=0, atol=1e-5)
    # Only the objects holding the selected bands are fetched: RGB is one object when stacked.
    rgb = BigEarthNetStream(table, modalities=("s2",), bands=["B04", "B03", "B02"], max_in_flight=1, prefetch=1)
    assert len(list(rgb)) == 6 and rgb.stats["requests"] == 6


def test_43_classes_in_lex_order(real_catalog: Path, real_raw: tuple[Path, Path]) -> None:
    ds = BigEarthNetStream(pairs_table(real_catalog), modalities=("s1",), nomenclature="43", class_order="lex", shuffle=False)
    assert ds.classes == tuple(sorted(ds.classes)) and len(ds.classes) == 43
    for s in ds:
        meta = json.loads((real_raw[0] / s["id"] / f"{s['id']}_labels_metadata.json").read_text())
        assert [ds.classes[i] for i in torch.nonzero(s["label"]).flatten().tolist()] == sorted(meta["labels"])


def test_accepts_a_search_result(real_catalog: Path) -> None:
    class Result:
        def sample_table(self) -> pa.Table:
            return pairs_table(real_catalog)

    assert len(list(BigEarthNetStream(Result(), modalities=("s1",)))) == 6


# -- sharding ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_table(synthetic_catalog: Path) -> pa.Table:
    return pairs_table(synthetic_catalog)


def _light(table: pa.Table, **kw: object) -> BigEarthNetStream:
    """One small object per sample (B01/B09 at 60 m), so sharding tests stay fast."""
    return BigEarthNetStream(table, modalities=("s2",), bands=["B01"], max_in_flight=4, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("world", "workers", "uneven"), [
    (1, 0, "pad"), (1, 2, "pad"), (2, 0, "pad"), (2, 2, "pad"), (3, 2, "pad"), (3, 0, "drop"), (3, 2, "drop"),
])  # fmt: skip
def test_exact_once_across_ranks_and_workers(synthetic_table: pa.Table, world: int, workers: int, uneven: str) -> None:
    n = len(synthetic_table)
    assert n == 40
    per_rank_ids, batches = [], []
    for rank in range(world):
        ds = _light(synthetic_table, rank=rank, world_size=world, uneven=uneven, seed=3)
        loader = DataLoader(ds, batch_size=4, num_workers=workers)
        got = [list(b["id"]) for b in loader]
        batches.append(len(got))
        per_rank_ids.append([i for b in got for i in b])
        assert len(per_rank_ids[-1]) == len(ds) == per_rank(n, world, uneven)  # type: ignore[arg-type]
    assert len(set(batches)) == 1, f"ranks yield different batch counts {batches}: DDP would hang"
    counts = Counter(i for ids in per_rank_ids for i in ids)
    everything = set(synthetic_table.column("id").to_pylist())
    if uneven == "pad":
        assert set(counts) == everything  # every sample read at least once ...
        assert sum(counts.values()) - n == (-n) % world  # ... and only the padding twice
    else:
        assert set(counts) <= everything and all(c == 1 for c in counts.values())
        assert len(counts) == n - n % world


def test_rank_from_environment(synthetic_table: pa.Table, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    ds = _light(synthetic_table)
    assert len(ds) == 10
    assert ids_of(DataLoader(ds, batch_size=5)) == ids_of(DataLoader(_light(synthetic_table, rank=1, world_size=4), batch_size=5))


def test_determinism_and_set_epoch(synthetic_table: pa.Table) -> None:
    def order(epoch: int, seed: int = 0, workers: int = 0) -> list[str]:
        ds = _light(synthetic_table, seed=seed)
        ds.set_epoch(epoch)
        return ids_of(DataLoader(ds, batch_size=8, num_workers=workers))

    first = order(0)
    assert first == order(0)  # same seed, same epoch: same order, run after run
    assert sorted(first) == sorted(synthetic_table.column("id").to_pylist())
    assert first != order(1) and order(1) == order(1)  # a new epoch reshuffles, deterministically
    assert first != order(0, seed=1)
    assert order(2, workers=2) == order(2, workers=2)
    unshuffled = _light(synthetic_table, shuffle=False)
    assert [s["id"] for s in unshuffled] == synthetic_table.column("id").to_pylist()


def test_set_epoch_reaches_persistent_workers(synthetic_table: pa.Table) -> None:
    ds = _light(synthetic_table)
    loader = DataLoader(ds, batch_size=8, num_workers=2, persistent_workers=True)
    seen = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen.append(ids_of(loader))
    fresh = _light(synthetic_table)
    fresh.set_epoch(1)
    assert seen[1] == ids_of(DataLoader(fresh, batch_size=8, num_workers=2))
    assert seen[0] != seen[1]
    assert ds.stats["yielded"] == 80  # counted across the workers


# -- whole batches --------------------------------------------------------------------------------


def _same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert list(x["id"]) == list(y["id"])
        assert set(x) == set(y)
        for key in x:
            if key == "id":
                continue
            xs, ys = (x[key], y[key]) if isinstance(x[key], dict) else ({"": x[key]}, {"": y[key]})
            assert set(xs) == set(ys)
            for k in xs:
                assert xs[k].dtype == ys[k].dtype and torch.equal(xs[k], ys[k]), (key, k)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("options", [{}, {"resample_to_10m": True, "bands": ["B04", "B05", "B01", "VV"]},
                                     {"modalities": ("s1",), "normalize": False}])
def test_batches_are_what_a_dataloader_collates(synthetic_table: pa.Table, workers: int, options: dict) -> None:
    """``batch_size=B`` with ``DataLoader(batch_size=None)``: the batches of ``DataLoader(batch_size=B)``."""
    def loader(**kw: object) -> list[dict]:
        ds = BigEarthNetStream(synthetic_table, seed=5, max_in_flight=4, **options, **kw)  # type: ignore[arg-type]
        return list(DataLoader(ds, batch_size=None if "batch_size" in kw else 6, num_workers=workers))

    singles, batches = loader(), loader(batch_size=6)
    _same_batches(singles, batches)
    assert sum(len(b["id"]) for b in batches) == 40  # a shorter last batch per worker, nothing lost


def test_batches_skip_like_single_samples(synthetic_catalog: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(synthetic_catalog, tmp_path / "catalog"))
    table = pairs_table(root)
    for row in (3, 4, 17):  # a hole inside a batch, two in a row, one in a later batch
        Path(table.column("s2_assets")[row].as_py()[1]).write_bytes(b"II*\x00 not a COG")
    for workers in (0, 2):
        ds = BigEarthNetStream(table, on_error="skip", shuffle=False, max_in_flight=4)
        singles = list(DataLoader(ds, batch_size=8, num_workers=workers))
        batched = BigEarthNetStream(table, on_error="skip", shuffle=False, max_in_flight=4, batch_size=8)
        _same_batches(singles, list(DataLoader(batched, batch_size=None, num_workers=workers)))
        assert batched.stats["skipped"] == 3 and batched.stats["yielded"] == 37
        assert sorted(batched.skipped_ids) == sorted(table.column("id")[r].as_py() for r in (3, 4, 17))


def test_decoding_on_the_loop_thread_gives_the_same_samples(synthetic_table: pa.Table) -> None:
    def ids_and_pixels(**kw: object) -> list[tuple[str, torch.Tensor]]:
        ds = BigEarthNetStream(synthetic_table, seed=2, max_in_flight=3, **kw)  # type: ignore[arg-type]
        return [(s["id"], s["s2"]["20m"]) for s in ds]

    threaded, inline = ids_and_pixels(decode_threads=2), ids_and_pixels(decode_threads=0)
    assert [i for i, _ in threaded] == [i for i, _ in inline]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(threaded, inline, strict=True))


# -- resume ------------------------------------------------------------------------------------


def test_resume_plain_protocol(synthetic_table: pa.Table) -> None:
    ds = _light(synthetic_table, rank=1, world_size=2)
    ds.set_epoch(5)
    it = iter(ds)
    head = [next(it)["id"] for _ in range(7)]
    state = ds.state_dict()
    tail = [s["id"] for s in it]
    resumed = _light(synthetic_table, rank=1, world_size=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(5)  # the usual loop calls it again: the restored position survives
    assert [s["id"] for s in resumed] == tail and len(head) + len(tail) == 20
    assert [s["id"] for s in resumed] == head + tail  # the next pass is a whole epoch again


# torchdata 0.11 calls torch.set_vital, which torch 2.13 deprecates with a warning.
@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_with_stateful_dataloader(synthetic_table: pa.Table, workers: int) -> None:
    sdl = pytest.importorskip("torchdata.stateful_dataloader")

    def loader(ds: BigEarthNetStream) -> object:
        return sdl.StatefulDataLoader(ds, batch_size=3, num_workers=workers)

    full = ids_of(loader(_light(synthetic_table, seed=9)))
    first = loader(_light(synthetic_table, seed=9))
    it = iter(first)
    head = [i for _ in range(4) for i in next(it)["id"]]
    state = first.state_dict()
    del it
    second = loader(_light(synthetic_table, seed=9))
    second.load_state_dict(state)
    tail = ids_of(second)
    assert head + tail == full
    assert sorted(full) == sorted(synthetic_table.column("id").to_pylist())


def test_resume_refuses_another_shape(synthetic_table: pa.Table) -> None:
    ds = _light(synthetic_table, rank=0, world_size=2)
    it = iter(ds)
    next(it)
    state = ds.state_dict()
    other = _light(synthetic_table, rank=0, world_size=4)
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="resume with the same world size"):
        next(iter(other))


# -- errors ------------------------------------------------------------------------------------


def _break_one(table: pa.Table, href: str) -> tuple[pa.Table, str]:
    rows = table.to_pylist()
    rows[2]["s2_assets"] = [href] + rows[2]["s2_assets"][1:]
    return pa.Table.from_pylist(rows, schema=table.schema), rows[2]["id"]


def test_on_error_raise_names_id_and_href(real_catalog: Path) -> None:
    missing = str(real_catalog / "gone_s2_10m.tif")  # inside the catalog, but not there
    table, bad_id = _break_one(pairs_table(real_catalog), missing)
    with pytest.raises(SampleError) as info:
        list(BigEarthNetStream(table, shuffle=False))
    assert info.value.sample_id == bad_id and info.value.href == missing
    assert bad_id in str(info.value) and missing in str(info.value)
    # Through DataLoader workers the error reaches the training loop too.
    with pytest.raises(SampleError, match=bad_id):
        list(DataLoader(BigEarthNetStream(table, shuffle=False), batch_size=2, num_workers=2))


def test_on_error_skip_counts_and_never_fills(real_catalog: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(real_catalog, tmp_path / "catalog"))
    table = pairs_table(root)
    bad_id = table.column("id")[2].as_py()
    Path(table.column("s2_assets")[2].as_py()[0]).write_bytes(b"II*\x00 this is not a COG")
    ds = BigEarthNetStream(table, on_error="skip", shuffle=False)
    ids = [s["id"] for s in ds]
    assert bad_id not in ids and len(ids) == 5
    assert ds.stats["skipped"] == 1 and ds.skipped_ids == [bad_id]
    workers = BigEarthNetStream(table, on_error="skip", shuffle=False)
    assert len(ids_of(DataLoader(workers, batch_size=2, num_workers=2))) == 5
    # counted and named in the workers, visible here
    assert workers.stats["skipped"] == 1 and workers.stats["yielded"] == 5 and workers.skipped_ids == [bad_id]


# -- object storage ----------------------------------------------------------------------------


@pytest.fixture
def s3_catalog(real_catalog: Path, s3_server: object, s3_bucket: str) -> str:
    s3_server.upload_tree(real_catalog, s3_bucket, "cat")  # type: ignore[attr-defined]
    return f"s3://{s3_bucket}/cat"


def test_s3_matches_local_bit_for_bit(real_catalog: Path, s3_catalog: str, s3_server: object) -> None:
    local = list(BigEarthNetStream(pairs_table(real_catalog), shuffle=False, normalize=False))
    remote_table = pairs_table(real_catalog, base=s3_catalog)
    assert remote_table.column("s2_assets")[0].as_py()[0].startswith("s3://")
    settings = s3_server.settings  # type: ignore[attr-defined]
    remote = BigEarthNetStream(remote_table, shuffle=False, normalize=False, settings=settings)
    got = list(remote)
    assert [s["id"] for s in got] == [s["id"] for s in local]
    for a, b in zip(local, got, strict=True):
        for res in a["s2"]:
            assert torch.equal(a["s2"][res], b["s2"][res])
        assert torch.equal(a["s1"], b["s1"]) and torch.equal(a["label"], b["label"])
    assert remote.stats["requests"] == 6 * 4  # 4 whole-object GETs per pair, no HEAD, no ranges
    loader = DataLoader(BigEarthNetStream(remote_table, settings=settings, modalities=("s1",)), batch_size=2, num_workers=2)
    assert sorted(ids_of(loader)) == sorted(s["id"] for s in local)


def test_s3_transient_errors_are_retried_and_persistent_ones_named(
    real_catalog: Path, s3_catalog: str, s3_server: object, fault_proxy: object
) -> None:
    from bigearth_devtools.faultproxy import FaultPlan

    table = pairs_table(real_catalog, base=s3_catalog)
    proxied = s3_server.settings_for(fault_proxy.endpoint_url, max_attempts=3)  # type: ignore[attr-defined]
    fault_proxy.configure(FaultPlan(fail_first_share=1.0, methods=frozenset({"GET"})))  # type: ignore[attr-defined]
    got = list(BigEarthNetStream(table, settings=proxied, modalities=("s1",), shuffle=False))
    assert len(got) == 6
    assert fault_proxy.count("GET", 503) == 6  # type: ignore[attr-defined]  # every first GET failed, then succeeded
    bad = table.column("s1_assets")[1].as_py()[0]
    fault_proxy.configure(FaultPlan(always_fail=frozenset({"/" + bad.removeprefix("s3://")})))  # type: ignore[attr-defined]
    with pytest.raises(SampleError) as info:
        list(BigEarthNetStream(table, settings=proxied, modalities=("s1",), shuffle=False))
    assert info.value.href == bad and info.value.sample_id == table.column("id")[1].as_py()


def test_all_bands_default_order(real_catalog: Path) -> None:
    ds = BigEarthNetStream(pairs_table(real_catalog), resample_to_10m=True)
    assert ds.bands["s2"] == S2_BAND_NAMES and next(iter(ds))["s2"].shape == (12, 120, 120)
