"""BigEarthNet v2.0 (reBEN) on the client side: opening catalogs of one release or both, searching
by label of either nomenclature and by pixel fraction (against the generator's truth), streaming
images and reference-map masks (against rasterio reads of the raw files), locally and from S3."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import rasterio
import torch
from click.testing import CliRunner

from bigearth_stac import Catalog
from bigearth_stac._predicates import LabelQueryError, QueryError
from bigearth_stac.bandplan import mask_plan
from bigearth_stac.catalog import CatalogError
from bigearth_stac.cli import main as cli
from bigearth_stac.contract import S1_V2_COLLECTION, S2_V2_COLLECTION
from bigearth_stac.torch_dataset import BigEarthNetStream, SampleError
from bigearth_stac.vocab import (
    BAND_STATS_V2,
    CLASS_ORDERS,
    CLC_CODES,
    CODE_OF_43,
    LABELS_19,
    LABELS_43,
    MAP_43_TO_19,
    S1_BAND_NAMES,
    S2_BAND_NAMES,
)
from catalog_builder.build import BuildOptions, build
from catalog_builder.store import LocalStore
from catalog_builder.synthetic_v2 import V2Patch, V2Tree
from tests.conftest import open_v2_source

V1_CONIFERS = ["S2B_MSIL2A_20170924T93020_69_24", "S2B_MSIL2A_20180204T94161_57_38"]


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _raw_s2(tree: V2Tree, p: V2Patch, band: str) -> np.ndarray:
    return _read(tree.s2 / p.product / p.patch_id / f"{p.patch_id}_{band}.tif")


def _raw_s1(tree: V2Tree, p: V2Patch, band: str) -> np.ndarray:
    return _read(tree.s1 / p.s1_product / p.s1_name / f"{p.s1_name}_{band}.tif")


def _raw_map(tree: V2Tree, p: V2Patch) -> np.ndarray:
    return _read(tree.maps / p.product / p.patch_id / f"{p.patch_id}_reference_map.tif")


def _expected_mask(codes: np.ndarray, nomenclature: str, order: str = "original", ignore: int = 255) -> np.ndarray:
    """The mask written out by hand from the official table (not through the loader's table)."""
    classes = CLASS_ORDERS[order][nomenclature]
    out = np.full(codes.shape, ignore, dtype=np.int64)
    for code in np.unique(codes):
        if int(code) == 0:
            continue
        name = CLC_CODES[int(code)]
        target = name if nomenclature == "43" else MAP_43_TO_19[name]
        if target is not None:
            out[codes == code] = classes.index(target)
    return out


@pytest.fixture(scope="module")
def v2(v2_catalog: Path) -> Catalog:
    return Catalog.open(str(v2_catalog))


@pytest.fixture(scope="module")
def mixed(real_catalog: Path, v2_raw: V2Tree, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six real v1 pairs and 8 generated v2 pairs under one root."""
    root = shutil.copytree(real_catalog, tmp_path_factory.mktemp("mixed") / "catalog")
    report = build(open_v2_source(v2_raw), LocalStore(root), BuildOptions(scheduler="synchronous", limit=8))
    assert report.ok and report.built == 8
    return root


# ---------------------------------------------------------------------------------------------
# opening: one release, both, either chosen
# ---------------------------------------------------------------------------------------------


def test_a_v2_only_catalog_opens(v2: Catalog) -> None:
    assert v2.releases == ("v2.0",) and v2.release == "v2.0"
    assert {k: i.collection_id for k, i in v2.all_indexes.items()} == {
        ("v2.0", "s2"): S2_V2_COLLECTION, ("v2.0", "s1"): S1_V2_COLLECTION}
    assert {m: i.collection_id for m, i in v2.indexes.items()} == {"s2": S2_V2_COLLECTION, "s1": S1_V2_COLLECTION}
    assert v2.index("s2").data_release == "v2.0" and len(v2.search()) == 30
    with pytest.raises(CatalogError, match="holds no BigEarthNet v1.0 collections; it holds v2.0"):
        Catalog.open(v2.url, release="v1.0")
    with pytest.raises(CatalogError, match="unknown release 'v3'"):
        Catalog.open(v2.url, release="v3")


def test_a_mixed_root_defaults_to_v2_and_searches_either(mixed: Path, v2_raw: V2Tree) -> None:
    cat = Catalog.open(str(mixed))
    assert cat.releases == ("v1.0", "v2.0") and cat.release == "v2.0"
    assert len(cat.all_indexes) == 4 and cat.index("s2").collection_id == S2_V2_COLLECTION
    v2_ids = set(cat.search().ids())
    assert len(v2_ids) == 8 and v2_ids <= set(v2_raw.by_id())
    assert sorted(cat.search(release="v1.0", labels=["Coniferous forest"]).ids()) == V1_CONIFERS
    assert sorted(cat.search(release="v1", labels="Coniferous forest").ids()) == V1_CONIFERS
    assert cat.index("s2", "v1.0").collection_id == "bigearthnet-s2"
    v1 = Catalog.open(str(mixed), release="v1")
    assert v1.release == "v1.0" and sorted(v1.search(labels=["Coniferous forest"]).ids()) == V1_CONIFERS
    assert set(v1.search(release="v2.0").ids()) == v2_ids
    # a pair search pairs within one release
    for release, n in (("v1.0", 6), ("v2.0", 8)):
        table = cat.search(modality="pair", release=release).sample_table()
        assert table.num_rows == n and all(len(a) == 1 for a in table.column("s1_assets").to_pylist())
        folder = "bigearthnet-s1/" if release == "v1.0" else f"{S1_V2_COLLECTION}/"
        assert all(folder in a[0] for a in table.column("s1_assets").to_pylist())
    with pytest.raises(QueryError, match="unknown release 'v9'"):
        cat.search(release="v9")


def test_v1_catalog_refuses_v2_only_requests(real_catalog: Path) -> None:
    cat = Catalog.open(str(real_catalog))
    assert cat.releases == ("v1.0",) and cat.release == "v1.0"
    with pytest.raises(QueryError, match="v1.0 has no reference maps"):
        cat.search(min_fractions={"Coniferous forest": 0.3})
    with pytest.raises(QueryError, match="v1.0 has no reference maps"):
        cat.search(filter="clc_fractions.312 > 0.1")
    with pytest.raises(QueryError, match="holds no BigEarthNet v2.0"):
        cat.search(release="v2.0")
    with pytest.raises(ValueError, match="needs the reference maps of BigEarthNet v2.0.*v1.0"):
        cat.search().to_torch(mask="19")


# ---------------------------------------------------------------------------------------------
# search against the generator's truth
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("match", ["any", "all"])
def test_labels_of_both_nomenclatures_equal_the_truth(v2: Catalog, v2_raw: V2Tree, match: str) -> None:
    present_19 = sorted({n for p in v2_raw.patches for n in p.labels_19}, key=LABELS_19.index)
    present_43 = sorted({n for p in v2_raw.patches for n in p.labels_43}, key=LABELS_43.index)
    queries = [("19", [n]) for n in present_19] + [("43", [n]) for n in present_43]
    queries += [("19", present_19[:2]), ("43", present_43[1:3]), ("19", present_19[-3:]), ("43", present_43[-2:])]
    test = any if match == "any" else all
    for nomenclature, names in queries:
        want = sorted(p.patch_id for p in v2_raw.patches
                      if test(n in (p.labels_19 if nomenclature == "19" else p.labels_43) for n in names))
        got = v2.search(labels=names, match=match, nomenclature=nomenclature).ids()
        assert sorted(got) == want, (nomenclature, names)
        op = "a_overlaps" if match == "any" else "a_contains"
        cql = {"op": op, "args": [{"property": f"bigearthnet:labels_{nomenclature}"}, names]}
        assert sorted(v2.search(filter=cql).ids()) == want, (nomenclature, names)
        # the S1 items carry the same labels
        s1 = v2.search(labels=names, match=match, nomenclature=nomenclature, modality="s1")
        assert sorted(r["s2_id"] for r in s1) == want
    # 19-class searches use the official labels, even where the map says otherwise
    wrong = next(p for p in v2_raw.patches if p.disagrees)
    extra = next(n for n in wrong.labels_19 if n not in {MAP_43_TO_19[c] for c in wrong.labels_43})
    assert wrong.patch_id in v2.search(labels=[extra]).ids()


def _over(patches: tuple[V2Patch, ...], thresholds: dict[int, float]) -> list[str]:
    return sorted(p.patch_id for p in patches if all(p.fractions.get(c, 0.0) >= t for c, t in thresholds.items()))


def test_min_fractions_equal_the_truth(v2: Catalog, v2_raw: V2Tree) -> None:
    codes = sorted({c for p in v2_raw.patches for c in p.fractions})
    checked = 0
    for code in codes:
        name = CLC_CODES[code]
        exact = sorted({p.fractions[code] for p in v2_raw.patches if code in p.fractions})
        for threshold in (0.0001, 0.05, 0.2, 0.3, 0.5, 1.0, *exact[:2]):  # a stored value itself: float32 both sides
            want = _over(v2_raw.patches, {code: threshold})
            assert sorted(v2.search(min_fractions={name: threshold}).ids()) == want, (name, threshold)
            assert sorted(v2.search(min_fractions={code: threshold}).ids()) == want
            assert sorted(v2.search(min_fractions={str(code): threshold}).ids()) == want
            assert sorted(v2.search(filter=f"clc_fractions.{code} >= {threshold}").ids()) == want
            checked += len(want)
    assert checked > 30
    # several classes at once (all must hold), with other criteria, and as CQL2 on either spelling
    a, b = (c for c, _ in sorted(((c, sum(c in p.fractions for p in v2_raw.patches)) for c in codes),
                                  key=lambda x: -x[1])[:2])
    both = {a: 0.01, b: 0.01}
    assert sorted(v2.search(min_fractions=both).ids()) == _over(v2_raw.patches, both)
    train = sorted(p for p in _over(v2_raw.patches, {a: 0.1}) if v2_raw.by_id()[p].split == "train")
    assert sorted(v2.search(min_fractions={a: 0.1}, split="train").ids()) == train
    name_a = CLC_CODES[a]
    for text in (f'"bigearthnet:clc_fractions.{a}" >= 0.1', f'"clc_fractions.{name_a}" >= 0.1',
                 f"clc_fractions.{a} BETWEEN 0.1 AND 1"):
        assert sorted(v2.search(filter=text).ids()) == _over(v2_raw.patches, {a: 0.1}), text
    below = sorted(p.patch_id for p in v2_raw.patches if p.fractions.get(a, 0.0) < 0.1)
    assert sorted(v2.search(filter=f"clc_fractions.{a} < 0.1").ids()) == below
    assert sorted(v2.search(filter={"op": ">", "args": [0.1, {"property": f"clc_fractions.{a}"}]}).ids()) == below
    assert v2.search(min_fractions={}).count() == 30


def test_bad_fraction_parameters_are_named(v2: Catalog) -> None:
    cases = [
        ({"Coniferous forrest": 0.3}, LabelQueryError, "Did you mean 'Coniferous forest'"),
        ({"Arable land": 0.3}, LabelQueryError, "19-class name.*'Non-irrigated arable land' \\(211\\)"),
        ({999: 0.3}, LabelQueryError, "CLC code 999"),
        ({"312": 1.5}, QueryError, "'312' must be a number from 0 to 1, got 1.5"),
        ({312: -0.1}, QueryError, "from 0 to 1"),
        ({312: float("nan")}, QueryError, "from 0 to 1"),
        ({312: "0.3"}, QueryError, "got '0.3'"),
        ({312: True}, QueryError, "got True"),
        ({(3, 1, 2): 0.3}, QueryError, "pixel fraction of \\(3, 1, 2\\)"),
        ([("Coniferous forest", 0.3)], QueryError, "min_fractions must be a mapping"),
        ("Coniferous forest", QueryError, "min_fractions must be a mapping"),
    ]
    for value, error, message in cases:
        with pytest.raises(error, match=message):
            v2.search(min_fractions=value)
    for text, message in (("clc_fractions.999 > 0.1", "CLC code 999"), ("clc_fractions.Forest > 0.1", "unknown class"),
                          ("clc_fractions.312 > 'a'", "is not a number"), ("clc_fractions.312 LIKE 'a'", "not a string"),
                          ("clc_fraction.312 > 0.1", "unknown property")):
        with pytest.raises(QueryError, match=message):
            v2.search(filter=text)


def test_an_index_without_maps_still_searches(v2_raw: V2Tree, tmp_path: Path) -> None:
    out = tmp_path / "no-maps"
    assert build(open_v2_source(v2_raw, reference_maps=""), LocalStore(out),
                 BuildOptions(scheduler="synchronous", limit=5)).built == 5
    cat = Catalog.open(str(out))
    truth = v2_raw.by_id()
    ids = cat.search().ids()
    label = truth[ids[0]].labels_19[0]
    assert sorted(cat.search(labels=[label]).ids()) == sorted(i for i in ids if label in truth[i].labels_19)
    assert cat.search(labels=["Coniferous forest"], nomenclature="43").ids() == []  # no 43-class labels: null
    assert cat.search(filter="a_overlaps(labels_43, ('Pastures', 'Coniferous forest'))").ids() == []
    assert cat.search(min_fractions={"Pastures": 0.0}).ids() == []  # no map, no fractions
    table = cat.search().sample_table()
    assert table.column("release").to_pylist() == ["v2.0"] * 5 and "reference_map" not in table.column_names
    with pytest.raises(ValueError, match="no sample of this source has a reference map"):
        cat.search().to_torch(mask="43")
    sample = next(iter(cat.search().to_torch(shuffle=False, bands=["B02"])))
    assert sample["label"].shape == (19,) and "mask" not in sample


def test_cli_searches_v2(v2_catalog: Path, v2_raw: V2Tree, mixed: Path) -> None:
    runner = CliRunner()
    code = sorted({c for p in v2_raw.patches for c in p.fractions})[0]
    res = runner.invoke(cli, ["search", str(v2_catalog), "--min-fraction", f"{CLC_CODES[code]}=0.1"])
    assert res.exit_code == 0, res.output
    assert sorted(res.output.split()) == _over(v2_raw.patches, {code: 0.1})
    res = runner.invoke(cli, ["search", str(mixed), "--release", "v1", "--label", "Coniferous forest"])
    assert res.exit_code == 0 and sorted(res.output.split()) == V1_CONIFERS
    res = runner.invoke(cli, ["search", str(v2_catalog), "--min-fraction", "Coniferous forest"])
    assert res.exit_code == 1 and "write CLASS=FRACTION" in res.output
    res = runner.invoke(cli, ["search", str(v2_catalog), "--min-fraction", "Coniferous forest=2"])
    assert res.exit_code == 1 and "from 0 to 1" in res.output


# ---------------------------------------------------------------------------------------------
# the loader: images and masks equal the raw files
# ---------------------------------------------------------------------------------------------


def test_images_and_masks_equal_the_raw_files(v2: Catalog, v2_raw: V2Tree) -> None:
    truth = v2_raw.by_id()
    result = v2.search(modality="pair")
    ds = result.to_torch(normalize=False, shuffle=False, mask="19")
    assert ds.release == "v2.0" and ds.mask_classes == LABELS_19 and ds.options.mask == "19"
    samples = list(ds)
    assert sorted(s["id"] for s in samples) == sorted(truth)
    for s in samples:
        p = truth[s["id"]]
        for res, bands in ds.bands_by_resolution.items():
            got = s["s2"][res].numpy()
            for k, band in enumerate(bands):
                assert np.array_equal(got[k], _raw_s2(v2_raw, p, band).astype(np.float32)), (p.patch_id, band)
        for k, band in enumerate(S1_BAND_NAMES):
            assert np.array_equal(s["s1"][k].numpy(), _raw_s1(v2_raw, p, band), equal_nan=True)
        assert s["mask"].dtype == torch.int64 and s["mask"].shape == (120, 120)
        assert np.array_equal(s["mask"].numpy(), _expected_mask(_raw_map(v2_raw, p), "19"))
        hot = {LABELS_19[i] for i in np.flatnonzero(s["label"].numpy())}
        assert hot == set(p.labels_19)  # the official labels
    # a class without a 19-class counterpart is ignored in the 19-class mask, kept in the 43-class one
    codes_without = {c for c in CLC_CODES if MAP_43_TO_19[CLC_CODES[c]] is None}
    assert any(codes_without & set(p.fractions) for p in v2_raw.patches)


@pytest.mark.parametrize(("nomenclature", "order", "ignore"), [("43", "original", 255), ("43", "lex", -100),
                                                                ("19", "lex", 19)])
def test_masks_of_either_nomenclature_and_order(v2: Catalog, v2_raw: V2Tree, nomenclature: str, order: str,
                                                ignore: int) -> None:
    truth = v2_raw.by_id()
    ds = v2.search().to_torch(bands=["B04"], mask=nomenclature, class_order=order, ignore_index=ignore,
                              shuffle=False, nomenclature="43")
    assert ds.mask_classes == CLASS_ORDERS[order][nomenclature]
    for s in ds:
        expected = _expected_mask(_raw_map(v2_raw, truth[s["id"]]), nomenclature, order, ignore)
        assert np.array_equal(s["mask"].numpy(), expected)
        # pixel fractions and 43-class labels agree with the mask
        if nomenclature == "43":
            present = {ds.mask_classes[i] for i in np.unique(s["mask"].numpy())}
            assert present == set(truth[s["id"]].labels_43)


def test_batches_and_workers_carry_the_masks(v2: Catalog) -> None:
    single = {s["id"]: s for s in v2.search().to_torch(mask="43", shuffle=False)}
    ds = v2.search().to_torch(mask="43", shuffle=False, batch_size=4)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    seen = 0
    for batch in loader:
        assert batch["mask"].dtype == torch.int64 and batch["mask"].shape[1:] == (120, 120)
        for i, sid in enumerate(batch["id"]):
            assert torch.equal(batch["mask"][i], single[sid]["mask"])
            assert torch.equal(batch["s2"]["10m"][i], single[sid]["s2"]["10m"])
            seen += 1
    assert seen == 30
    collated = torch.utils.data.DataLoader(v2.search().to_torch(mask="19", shuffle=False), batch_size=8)
    first = next(iter(collated))
    assert first["mask"].shape == (8, 120, 120)


def test_v2_samples_use_v2_statistics(v2: Catalog, v2_raw: V2Tree) -> None:
    truth = v2_raw.by_id()
    ds = v2.search().to_torch(bands=["B02", "B11"], shuffle=False, resample_to_10m=False)
    s = next(iter(ds))
    p = truth[s["id"]]
    for res, band in (("10m", "B02"), ("20m", "B11")):
        mean, std = BAND_STATS_V2[band]
        expected = (_raw_s2(v2_raw, p, band).astype(np.float32) - np.float32(mean)) / np.float32(std)
        assert np.allclose(s["s2"][res][0].numpy(), expected, atol=1e-5)


def test_xarray_mask_equals_the_raw_maps(v2: Catalog, v2_raw: V2Tree) -> None:
    truth = v2_raw.by_id()
    view = v2.search(limit=7).to_xarray(bands=["B02"], mask="codes", chunk_patches=3)
    indices = v2.search(limit=7).to_xarray(bands=["B02"], mask="43")
    assert view["mask"].dims == ("patch", "y", "x") and view["mask"].dtype == np.uint16
    assert indices["mask"].attrs["classes"] == list(LABELS_43)
    for k, sid in enumerate(view["patch"].values):
        raw = _raw_map(v2_raw, truth[str(sid)])
        assert np.array_equal(view["mask"][k].values, raw)
        assert np.array_equal(indices["mask"][k].values, _expected_mask(raw, "43"))
    with pytest.raises(ValueError, match="resolution=10"):
        v2.search().to_xarray(mask="19", resolution=20)


def _rewrite_map(catalog: Path, pixels: np.ndarray) -> str:
    """Replace one reference-map COG of a catalog copy with ``pixels`` (same grid); its item id."""
    cog = sorted(catalog.glob(f"{S2_V2_COLLECTION}/*/*/*_reference_map.tif"))[0]
    with rasterio.open(cog) as src:
        profile = src.profile
    profile.update(dtype=pixels.dtype.name, height=pixels.shape[0], width=pixels.shape[1], tiled=False)
    for key in ("blockxsize", "blockysize"):
        profile.pop(key, None)
    with rasterio.open(cog, "w", **profile) as dst:
        dst.write(pixels, 1)
    return cog.parent.name


def test_nodata_is_ignored_and_bad_maps_are_named(v2_catalog: Path, v2_raw: V2Tree, tmp_path: Path) -> None:
    copy = shutil.copytree(v2_catalog, tmp_path / "copy")
    raw = _raw_map(v2_raw, v2_raw.by_id()[sorted(copy.glob(f"{S2_V2_COLLECTION}/*/*/*_reference_map.tif"))[0].parent.name])
    holed = raw.copy()
    holed[:30, :50] = 0  # nodata
    sid = _rewrite_map(copy, holed)
    cat = Catalog.open(str(copy))
    ds = cat.search(filter=f"id = '{sid}'").to_torch(mask="43", bands=["B02"], ignore_index=-1)
    mask = next(iter(ds))["mask"].numpy()
    assert (mask[:30, :50] == -1).all() and np.array_equal(mask, _expected_mask(holed, "43", ignore=-1))
    for pixels, message in ((np.where(raw == raw.flat[0], 999, raw).astype(np.uint16), r"values \[999\]"),
                            (raw[:60, :60].copy(), "expected 1 band of 120 x 120 uint16, found 1 band of 60 x 60"),
                            (raw.astype(np.int32), "found 1 band of 120 x 120 int32")):
        _rewrite_map(copy, pixels)
        ds = Catalog.open(str(copy)).search(filter=f"id = '{sid}'").to_torch(mask="19", bands=["B02"])
        with pytest.raises(SampleError, match=f"{sid}.*reference_map.tif.*{message}"):
            next(iter(ds))
        skipping = Catalog.open(str(copy)).search().to_torch(mask="19", bands=["B02"], on_error="skip")
        assert len(list(skipping)) == 29 and skipping.skipped_ids == [sid]


def test_bad_loader_parameters_are_named(v2: Catalog, mixed: Path) -> None:
    result = v2.search()
    for kwargs, message in (({"mask": "20"}, "mask must be None, '19' or '43', got '20'"),
                            ({"mask": True}, "mask must be None"),
                            ({"mask": "19", "ignore_index": 3}, "ignore_index 3 is the index of class 'Permanent crops'"),
                            ({"mask": "43", "ignore_index": 42}, "'Sea and ocean' of the 43-class mask"),
                            ({"mask": "43", "ignore_index": 2.5}, "ignore_index must be an integer"),
                            ({"ignore_index": "x"}, "ignore_index must be an integer")):
        with pytest.raises(ValueError, match=message):
            result.to_torch(**kwargs)
    with pytest.raises(ValueError, match="no sample of this source has a reference map.*modality='s2' or 'pair'"):
        v2.search(modality="s1").to_torch(mask="19")
    assert result.to_torch(mask=43).options.mask == "43"  # an int is the nomenclature too
    # a hand-made table mixing releases streams only unnormalised
    cat = Catalog.open(str(mixed))
    v1 = cat.search(release="v1.0").sample_table()
    v2_rows = cat.search().sample_table().select(v1.column_names)
    both = pa.concat_tables([v1.append_column("release", pa.array(["v1.0"] * len(v1))),
                             v2_rows.append_column("release", pa.array(["v2.0"] * len(v2_rows)))])
    both = both.replace_schema_metadata(v1.schema.metadata)
    with pytest.raises(ValueError, match=r"mix releases \['v1.0', 'v2.0'\]"):
        BigEarthNetStream(both)
    assert BigEarthNetStream(both, normalize=False).release is None


def test_mask_table_is_the_official_mapping() -> None:
    plan = mask_plan("19")
    for code, name in CLC_CODES.items():
        target = MAP_43_TO_19[name]
        assert plan.lut[code] == (255 if target is None else LABELS_19.index(target))
        assert mask_plan("43", "lex").lut[code] == sorted(LABELS_43).index(name)
    assert plan.lut[0] == 255 and plan.known[0] and not plan.known[999]
    assert CODE_OF_43["Coniferous forest"] == 312 and plan.lut[312] == LABELS_19.index("Coniferous forest")


# ---------------------------------------------------------------------------------------------
# over S3
# ---------------------------------------------------------------------------------------------


def test_v2_streams_from_s3(v2_catalog: Path, v2_raw: V2Tree, s3_server: object, s3_bucket: str) -> None:
    server = s3_server
    server.upload_tree(v2_catalog, s3_bucket, "cat")  # type: ignore[attr-defined]
    settings = server.settings  # type: ignore[attr-defined]
    remote = Catalog.open(f"s3://{s3_bucket}/cat", settings=settings)
    local = Catalog.open(str(v2_catalog))
    assert remote.releases == ("v2.0",)
    code = sorted({c for p in v2_raw.patches for c in p.fractions})[1]
    for kwargs in ({"min_fractions": {code: 0.05}}, {"labels": [CLC_CODES[code]], "nomenclature": "43"},
                   {"filter": f"clc_fractions.{code} >= 0.05 AND bigearthnet:split = 'train'"}):
        assert sorted(remote.search(**kwargs).ids()) == sorted(local.search(**kwargs).ids()), kwargs
    result = remote.search(modality="pair", min_fractions={code: 0.01})
    assert len(result) == len(_over(v2_raw.patches, {code: 0.01})) > 0
    table = result.sample_table()
    assert all(u.startswith(f"s3://{s3_bucket}/cat/{S2_V2_COLLECTION}/") for u in table.column("reference_map").to_pylist())
    ds = result.to_torch(mask="43", settings=settings, shuffle=False, normalize=False)
    truth = v2_raw.by_id()
    n = 0
    for s in ds:
        p = truth[s["id"]]
        assert np.array_equal(s["mask"].numpy(), _expected_mask(_raw_map(v2_raw, p), "43"))
        assert np.array_equal(s["s2"]["10m"][0].numpy(), _raw_s2(v2_raw, p, S2_BAND_NAMES[1]).astype(np.float32))
        n += 1
    assert n == len(result) and ds.stats["requests"] == n * 5  # 3 S2 COGs, 1 S1 COG, 1 reference map
