"""The build's fast paths give what the plain ones gave (issue 15).

- COGs: ``encode_cog`` copies from a reused in-memory dataset with GDAL options that skip work;
  the bytes must be those of a fresh ``MemoryFile(driver="COG")`` write, whatever came before
  on the same thread or runs beside it on another, and GDAL's settings must be left as found.
- Workers of the build's own LocalCluster: no statistical profiler, no ``MALLOC_TRIM_THRESHOLD_``
  from Dask, started from a preloaded forkserver unless the environment changed since.
- Messages still name the raw file when its location is described only on failure.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from rasterio.env import get_gdal_config
from rasterio.io import MemoryFile
from rasterio.transform import from_origin

import catalog_builder.build as build_module
import catalog_builder.cog as cog_module
from catalog_builder.build import BuildOptions
from catalog_builder.cog import CogOptions, band_unit, encode_cog
from catalog_builder.records import SourceError
from catalog_builder.sources import open_source


def reference_cog(arrays: Sequence[np.ndarray], epsg: int, origin: tuple[float, float], resolution: float,
                  band_names: Sequence[str], options: CogOptions = CogOptions(), nodata: float | None = None) -> bytes:
    """The COG as the builder wrote it before its fast path: a fresh MemoryFile per file."""
    stack = np.stack(arrays)
    count, height, width = stack.shape
    profile = {"driver": "COG", "width": width, "height": height, "count": count, "dtype": stack.dtype.name,
               "crs": f"EPSG:{epsg}", "transform": from_origin(origin[0], origin[1], resolution, resolution),
               "compress": options.compress, "predictor": 3 if stack.dtype.kind == "f" else 2, "level": options.level,
               "blocksize": max(16, -(-max(width, height) // 16) * 16), "overviews": "NONE"}
    if nodata is not None:
        profile["nodata"] = nodata
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(stack)
            dst.descriptions = tuple(band_names)
            units = [band_unit(n) or "" for n in band_names]
            if any(units):
                dst.units = tuple(units)
        return mem.read()


def _cases() -> list[tuple]:
    rng = np.random.default_rng(15)

    def u16(n: int, size: int) -> list[np.ndarray]:
        return [rng.integers(0, 12_000, (size, size)).astype("uint16") for _ in range(n)]

    def f32(n: int, size: int) -> list[np.ndarray]:
        return [rng.normal(-15, 4, (size, size)).astype("float32") for _ in range(n)]

    return [
        (u16(4, 120), 32633, (500_000.0, 5_000_000.0), 10.0, ["B02", "B03", "B04", "B08"], CogOptions(), None),
        (u16(6, 60), 32633, (500_000.0, 5_000_000.0), 20.0, ["B05", "B06", "B07", "B8A", "B11", "B12"], CogOptions(), None),
        (u16(2, 20), 32633, (500_000.0, 5_000_000.0), 60.0, ["B01", "B09"], CogOptions(), None),
        (f32(2, 120), 32633, (500_000.0, 5_000_000.0), 10.0, ["VV", "VH"], CogOptions(), None),
        # same shape and dtype as the first case, another zone, origin and names: another canvas
        (u16(4, 120), 32735, (300_000.0, 7_000_000.0), 10.0, ["B02", "B03", "B04", "B08"], CogOptions(), None),
        # same canvas as the first, other names (the per-band layout): names and units change
        (u16(1, 120), 32633, (612_000.0, 5_100_000.0), 10.0, ["B04"], CogOptions(), None),
        (f32(1, 120), 32633, (612_000.0, 5_100_000.0), 10.0, ["VH"], CogOptions(), None),
        (u16(1, 120), 32633, (612_000.0, 5_100_000.0), 10.0, ["B08"], CogOptions(), None),
        # a v2 reference map: nodata 0
        ([rng.choice(np.array([0, 111, 312, 523], dtype="uint16"), (120, 120))], 32633, (500_000.0, 5_000_000.0), 10.0,
         ["clc_code"], CogOptions(), 0),
        (u16(4, 120), 32633, (500_000.0, 5_000_000.0), 10.0, ["B02", "B03", "B04", "B08"], CogOptions(compress="ZSTD", level=9), None),
        (f32(2, 120), 32601, (166_000.0, 9_000_000.0), 10.0, ["VV", "VH"], CogOptions(level=1), None),
    ]


def test_encode_cog_gives_the_bytes_of_a_fresh_memoryfile() -> None:
    cases = _cases()
    expected = [reference_cog(*case) for case in cases]
    with rasterio.Env():
        for _ in range(2):  # the second pass reuses every canvas
            for case, want in zip(cases, expected, strict=True):
                got = encode_cog(*case)
                assert got.data == want
                assert got.sha256 == hashlib.sha256(want).hexdigest()
    # without an Env (rasterio then makes one per call), too
    assert encode_cog(*cases[3]).data == expected[3]


def test_encode_cog_from_threads() -> None:
    """Each thread has its own canvases: concurrent encodes do not mix pixels or names."""
    cases = _cases()
    expected = [reference_cog(*case) for case in cases]
    errors: list[str] = []

    def work(offset: int) -> None:
        with rasterio.Env():
            for i in range(3 * len(cases)):
                k = (i + offset) % len(cases)
                if encode_cog(*cases[k]).data != expected[k]:
                    errors.append(f"case {k} in thread {offset}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_encode_cog_leaves_gdal_settings_as_found() -> None:
    case = _cases()[0]
    with rasterio.Env(GTIFF_SRS_SOURCE="EPSG"):
        encode_cog(*case)
        assert get_gdal_config("GTIFF_SRS_SOURCE", normalize=False) == "EPSG"
        assert get_gdal_config("GDAL_VALIDATE_CREATION_OPTIONS") is None
    with rasterio.Env():
        encode_cog(*case)
        assert get_gdal_config("GTIFF_SRS_SOURCE") is None


def test_canvases_per_thread_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cog_module, "_CANVASES_PER_THREAD", 3)
    rng = np.random.default_rng(2)
    band = rng.integers(0, 100, (20, 20)).astype("uint16")
    with rasterio.Env():
        for epsg in (32631, 32632, 32633, 32634, 32635):
            origin = (400_000.0, 5_000_000.0)
            assert encode_cog([band], epsg, origin, 60.0, ["B01"]).data == reference_cog([band], epsg, origin, 60.0, ["B01"])
    canvases = cog_module._local.canvases
    assert len(canvases) <= 3 and list(canvases)[-1][4] == 32635


def test_encode_cog_checks_names() -> None:
    with pytest.raises(ValueError, match="2 bands but 1 names"):
        encode_cog([np.zeros((20, 20), "uint16")] * 2, 32633, (0.0, 0.0), 60.0, ["B01"])


# -- the LocalCluster -----------------------------------------------------------------------------


def _worker_view() -> dict[str, object]:
    import dask

    return {"trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"), "profile": dask.config.get("distributed.worker.profile.enabled")}


def test_local_cluster_workers_without_profiler_or_trimming() -> None:
    with build_module._executor(BuildOptions(n_workers=1)) as client:
        views = client.run(_worker_view)
    assert list(views.values()) == [{"trim": None, "profile": False}]


def test_forkserver_only_while_the_environment_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    import dask

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no forkserver on this platform")
    monkeypatch.setattr(build_module, "_forkserver_env", dict(os.environ))
    assert build_module._start_method() == "forkserver"
    monkeypatch.setenv("BIGEARTH_TEST_CHANGED", "1")  # e.g. credentials set after the first build
    assert build_module._start_method() == "spawn"
    with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
        assert build_module._start_method() == "fork"  # a method the user chose is kept


# -- file locations described only on failure ------------------------------------------------------


def test_bad_band_is_named(synthetic_raw: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    s2 = tmp_path / "s2"
    s1 = tmp_path / "s1"
    shutil.copytree(synthetic_raw[0], s2)
    shutil.copytree(synthetic_raw[1], s1)
    source = open_source(str(s2), str(s1))
    pair = source.read_pair(source.units()[0])
    band = s2 / pair.s2.band_files["B03"]
    band.write_bytes(b"II*\x00" + b"\x00" * 64)
    with pytest.raises(SourceError) as info:
        source.read_pixels(pair)
    assert info.value.record.file == str(band)
    assert "not a readable GeoTIFF" in info.value.record.problem


# -- index rows without stac-geoparquet's deep copy ----------------------------------------------

def _catalog_items(root: Path) -> list[dict]:
    import json

    return [json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))
            if p.parent.name.startswith(("S2", "S1")) and p.stem == p.parent.name]


@pytest.mark.parametrize("fixture", ["synthetic_catalog", "v2_catalog"])
def test_index_rows_are_stac_geoparquets(fixture: str, request: pytest.FixtureRequest) -> None:
    """``items_to_table``'s own conversion gives the table of the public stac-geoparquet function."""
    import stac_geoparquet.arrow as sga

    from catalog_builder.index import _items_to_batch, _relative_to_index

    items = _catalog_items(request.getfixturevalue(fixture))
    assert len(items) >= 20
    ours = pa.Table.from_batches([_items_to_batch([_relative_to_index(i) for i in items])])
    theirs = sga.parse_stac_items_to_arrow([_relative_to_index(i) for i in items]).read_all()
    assert ours.schema == theirs.schema
    assert ours.equals(theirs)


def test_index_rows_convert_every_projection_geometry() -> None:
    import stac_geoparquet.arrow as sga

    from catalog_builder.index import _items_to_batch

    square = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    items = [{"type": "Feature", "stac_version": "1.1.0", "id": f"x{i}", "geometry": square, "bbox": [0, 0, 1, 1],
              "properties": {"datetime": "2017-06-01T00:00:00Z", "proj:geometry": square},
              "assets": {"a": {"href": "a.tif", "proj:geometry": square}, "b": {"href": "b.tif"}}, "links": []}
             for i in range(3)]
    before = repr(items)
    ours = pa.Table.from_batches([_items_to_batch(items)])
    assert ours.equals(sga.parse_stac_items_to_arrow(items).read_all())
    assert repr(items) == before, "the caller's items were changed"


# -- LocalStore and LocalReader: folders remembered, symlinks not followed out -------------------

def test_local_store_writes_through_remembered_folders(tmp_path: Path) -> None:
    from catalog_builder.store import LocalStore

    store = LocalStore(tmp_path / "cat")
    store.write("a/b/one.json", b"1", "application/json")
    store.write("a/b/two.json", b"2", "application/json")
    assert (tmp_path / "cat/a/b/one.json").read_bytes() == b"1"
    assert not list((tmp_path / "cat").rglob("*.part"))
    mode = (tmp_path / "cat/a/b/two.json").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    # A remembered folder removed behind the store's back is made again.
    import shutil

    shutil.rmtree(tmp_path / "cat/a")
    store.write("a/b/three.json", b"3", "application/json")
    assert (tmp_path / "cat/a/b/three.json").read_bytes() == b"3"


def test_local_store_never_writes_outside(tmp_path: Path) -> None:
    from catalog_builder.store import LocalStore

    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat/link").symlink_to(outside)
    store = LocalStore(tmp_path / "cat")
    for bad in ("../x.json", "a/../../x.json", "link/x.json", "", "a/..", "nul\x00.json"):
        with pytest.raises(ValueError, match="refusing to write"):
            store.write(bad, b"x", "application/json")
    # A symlink where the object goes is replaced by the object, its target left alone.
    victim = outside / "victim.json"
    victim.write_bytes(b"keep")
    (tmp_path / "cat/obj.json").symlink_to(victim)
    store.write("obj.json", b"new", "application/json")
    assert victim.read_bytes() == b"keep"
    assert not (tmp_path / "cat/obj.json").is_symlink()
    assert (tmp_path / "cat/obj.json").read_bytes() == b"new"
    assert list(outside.iterdir()) == [victim]


def test_local_reader_follows_only_symlinks_that_stay_inside(tmp_path: Path) -> None:
    from catalog_builder.rawio import LocalReader, OutsideRootError, RawInputError

    root, outside = tmp_path / "raw", tmp_path / "outside"
    (root / "p").mkdir(parents=True)
    outside.mkdir()
    (root / "p/band.tif").write_bytes(b"inside")
    (outside / "secret.tif").write_bytes(b"secret")
    (root / "p/alias.tif").symlink_to(root / "p/band.tif")
    (root / "p/escape.tif").symlink_to(outside / "secret.tif")
    (root / "q").symlink_to(outside)
    os.mkfifo(root / "p/fifo.tif")
    reader = LocalReader(root)
    assert reader.read("p/band.tif") == b"inside"
    assert reader.read("p/alias.tif") == b"inside"  # the same folder, remembered, and a link inside
    with pytest.raises(OutsideRootError):
        reader.read("p/escape.tif")
    with pytest.raises(OutsideRootError):
        reader.read("q/secret.tif")
    with pytest.raises(RawInputError, match="not a regular file"):
        reader.read("p/fifo.tif")
    with pytest.raises(FileNotFoundError):
        reader.read("p/missing.tif")
