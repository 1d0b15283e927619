"""Search results equal a brute-force filter over the same index rows (synthetic: 40 pairs, many zones)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import pickle
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bigearth_stac import Catalog, SearchResult
from bigearth_stac import search as search_module
from bigearth_stac._predicates import LabelQueryError, QueryError
from bigearth_stac.samples import SAMPLE_SCHEMA
from bigearth_stac.search import SEARCH_PARAMETERS, SearchQuery, search
from bigearth_stac.vocab import (
    COUNTRIES,
    LABELS_19,
    LABELS_43,
    SEASONS,
    SHARED_LABELS,
    SPLITS,
    UnknownLabelError,
)
from tests.search_oracle import brute

HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_everything_in_index_order(cat: Catalog, rows: list[dict]) -> None:
    result = cat.search()
    assert isinstance(result, SearchResult)
    assert len(result) == len(rows) == 40
    assert result.ids() == [r["id"] for r in rows]
    assert len({r["proj:epsg"] for r in rows}) > 3, "the synthetic catalog should span several UTM zones"


@HYP
@given(
    labels=st.lists(st.sampled_from(LABELS_19), min_size=1, max_size=3, unique=True),
    match=st.sampled_from(["any", "all"]),
    split=st.none() | st.lists(st.sampled_from(SPLITS), min_size=1, max_size=2, unique=True),
    snow=st.booleans(),
    clouds=st.booleans(),
)
def test_labels_split_flags(cat: Catalog, rows: list[dict], labels: list[str], match: str, split: list[str] | None,
                            snow: bool, clouds: bool) -> None:
    got = cat.search(labels=labels, match=match, split=split, exclude_snow=snow, exclude_clouds=clouds).ids()
    assert got == brute(rows, labels=labels, match=match, split=split, exclude_snow=snow, exclude_clouds=clouds)


@HYP
@given(labels=st.lists(st.sampled_from(LABELS_43), min_size=1, max_size=2, unique=True), match=st.sampled_from(["any", "all"]))
def test_43_class_labels(cat: Catalog, rows: list[dict], labels: list[str], match: str) -> None:
    got = cat.search(labels=labels, match=match, nomenclature="43").ids()
    assert got == brute(rows, labels=labels, match=match, nomenclature="43")


@HYP
@given(countries=st.lists(st.sampled_from(COUNTRIES), min_size=1, max_size=3, unique=True),
       seasons=st.none() | st.lists(st.sampled_from(SEASONS), min_size=1, max_size=2, unique=True))
def test_countries_seasons(cat: Catalog, rows: list[dict], countries: list[str], seasons: list[str] | None) -> None:
    assert cat.search(countries=countries, seasons=seasons).ids() == brute(rows, countries=countries, seasons=seasons)


@HYP
@given(data=st.data())
def test_bbox_random_around_items(cat: Catalog, rows: list[dict], data: st.DataObject) -> None:
    r = data.draw(st.sampled_from(rows))
    x0, y0, x1, y1 = r["_geom"].bounds
    dx = data.draw(st.floats(-0.05, 0.05))
    dy = data.draw(st.floats(-0.05, 0.05))
    w = data.draw(st.floats(0.0, 3.0))
    h = data.draw(st.floats(0.0, 3.0))
    bbox = (max(-180, x0 + dx - w), max(-90, y0 + dy - h), min(180, x0 + dx + w), min(90, y0 + dy + h))
    assert cat.search(bbox=bbox).ids() == brute(rows, bbox=bbox)


def test_bbox_edges(cat: Catalog, rows: list[dict]) -> None:
    r = rows[0]
    x0, y0, x1, y1 = r["_geom"].bounds
    # The item's own bbox, a box touching its east edge, and one just beyond it.
    for bbox in [(x0, y0, x1, y1), (x1, y0, x1 + 0.1, y1), (x1 + 1e-7, y0, x1 + 0.1, y1),
                 (x0 - 0.1, y1, x1, y1 + 0.1), (x0, y0, x0, y0)]:
        assert cat.search(bbox=bbox).ids() == brute(rows, bbox=bbox), bbox
    assert r["id"] in cat.search(bbox=(x1, y0, x1 + 0.1, y1)).ids()  # touching counts
    assert r["id"] not in cat.search(bbox=(x1 + 1e-7, y0, x1 + 0.1, y1)).ids()


def test_bbox_corner_outside_footprint_is_not_a_match(cat: Catalog, rows: list[dict]) -> None:
    # Footprints are UTM squares, slightly rotated in WGS84: their bbox corners lie outside them.
    for r in rows:
        x0, y0, x1, y1 = r["_geom"].bounds
        corner = (x0, y0, x0 + 1e-6, y0 + 1e-6)
        if not shapely.intersects(r["_geom"], shapely.box(*corner)):
            assert r["id"] not in cat.search(bbox=corner).ids()
            return
    pytest.skip("no rotated footprint")


def test_bbox_across_zones_and_antimeridian(cat: Catalog, rows: list[dict]) -> None:
    bbox = (-10.0, 35.0, 30.0, 70.0)
    got = cat.search(bbox=bbox)
    assert got.ids() == brute(rows, bbox=bbox)
    assert len({row["proj:epsg"] for row in rows if row["id"] in set(got.ids())}) > 2
    wrap = (20.0, 35.0, -5.0, 70.0)  # west > east: crosses the antimeridian
    assert cat.search(bbox=wrap).ids() == brute(rows, bbox=wrap)


def test_intersects_polygon(cat: Catalog, rows: list[dict]) -> None:
    a, b = rows[0]["_geom"], rows[-1]["_geom"]
    tri = shapely.Polygon([a.centroid.coords[0], b.centroid.coords[0], (a.centroid.x, b.centroid.y)])
    got = cat.search(intersects=shapely.geometry.mapping(tri)).ids()
    assert got == brute(rows, geometry=tri)
    assert cat.search(intersects=tri).ids() == got
    assert rows[0]["id"] in got and rows[-1]["id"] in got


def test_datetime_forms(cat: Catalog, rows: list[dict]) -> None:
    times = sorted(r["datetime"] for r in rows)
    mid = times[len(times) // 2]
    day = mid.date().isoformat()
    cases = {
        f"{day}/..": (datetime.fromisoformat(day).replace(tzinfo=timezone.utc), None),
        f"../{day}": (None, datetime.fromisoformat(day).replace(tzinfo=timezone.utc) + timedelta(days=1, microseconds=-1)),
        day: (datetime.fromisoformat(day).replace(tzinfo=timezone.utc),
              datetime.fromisoformat(day).replace(tzinfo=timezone.utc) + timedelta(days=1, microseconds=-1)),
        mid.strftime("%Y-%m-%dT%H:%M:%SZ"): (mid, mid),
    }
    for value, interval in cases.items():
        assert cat.search(datetime=value).ids() == brute(rows, interval=interval), value
    assert cat.search(datetime=(times[3], times[10])).ids() == brute(rows, interval=(times[3], times[10]))
    assert mid.isoformat() and len(cat.search(datetime=mid)) >= 1


def test_empty_results(cat: Catalog) -> None:
    result = cat.search(bbox=(170, -80, 171, -79))
    assert len(result) == 0 and result.ids() == [] and list(result) == []
    assert result.to_arrow().num_rows == 0 and list(result.pages(10)) == []
    assert result.sample_table().schema.equals(SAMPLE_SCHEMA)
    assert cat.search(datetime="1990-01-01").ids() == []


def test_limit_paging_and_iteration(cat: Catalog, rows: list[dict]) -> None:
    ids = [r["id"] for r in rows]
    assert cat.search(limit=7).ids() == ids[:7]
    assert [p.column("id").to_pylist() for p in cat.search().pages(15, columns=["id"])] == [ids[:15], ids[15:30], ids[30:]]
    assert cat.search().page(2, 15).column("id").to_pylist() == ids[30:]
    first = next(iter(cat.search(limit=1)))
    assert first["id"] == ids[0] and set(first["assets"]) == {"s2_10m", "s2_20m", "s2_60m"}
    assert first["assets"]["s2_10m"].endswith(f"{ids[0]}_s2_10m.tif") and Path(first["assets"]["s2_10m"]).exists()


def test_conversions(cat: Catalog, rows: list[dict]) -> None:
    result = cat.search(split="train")
    table = result.to_arrow()
    assert table.schema.field("bigearthnet:labels_19").type == pa.list_(pa.field("element", pa.string()))
    assert table.column("id").to_pylist() == brute(rows, split=["train"])
    gdf = result.to_geodataframe(["id", "bigearthnet:split"])
    assert list(gdf["id"]) == table.column("id").to_pylist() and gdf.crs.to_epsg() == 4326
    items = result.to_item_collection()
    assert [i.id for i in items] == table.column("id").to_pylist()
    assert Path(items.items[0].assets["s2_10m"].href).exists()
    assert len(pickle.loads(pickle.dumps(result))) == len(result)


def test_sample_table_pairs(cat: Catalog) -> None:
    pairs = cat.search(modality="pair", split="train").sample_table()
    assert pairs.schema.equals(SAMPLE_SCHEMA)
    for row in pairs.to_pylist():
        assert len(row["s2_assets"]) == 3 and len(row["s1_assets"]) == 1
        assert all(Path(p).exists() for p in row["s2_assets"] + row["s1_assets"])
    s1 = cat.search(modality="s1", split="train").sample_table()
    assert len(s1) == len(pairs) and all(r["s2_assets"] == [] for r in s1.to_pylist())


def test_errors_say_what_is_allowed(cat: Catalog) -> None:
    with pytest.raises(UnknownLabelError, match="Did you mean 'Coniferous forest'"):
        cat.search(labels="Coniferous forests")
    with pytest.raises(QueryError, match="four numbers"):
        cat.search(bbox=[1, 2, 3])
    with pytest.raises(QueryError, match="south <= north"):
        cat.search(bbox=[1, 50, 3, 40])
    with pytest.raises(QueryError, match="RFC 3339"):
        cat.search(datetime="yesterday")
    with pytest.raises(QueryError, match="ends before it starts"):
        cat.search(datetime="2018-01-01/2017-01-01")
    with pytest.raises(QueryError, match="allowed: train, validation, test"):
        cat.search(split="val")
    with pytest.raises(QueryError, match="allowed: s2, s1, pair"):
        cat.search(modality="s3")


# -- labels of either nomenclature ("the first hour") ----------------------------------------------


def _has(row: dict, name: str) -> bool:
    """Independent of which column a name is searched in: a shared name is in both or neither."""
    return name in row["bigearthnet:labels_19"] or name in row["bigearthnet:labels_43"]


def test_a_43_class_name_needs_no_nomenclature(cat: Catalog, rows: list[dict]) -> None:
    present = sorted({n for r in rows for n in r["bigearthnet:labels_43"]} - SHARED_LABELS)
    assert present, "the synthetic catalog should hold 43-only classes"
    for name in present[:5] + ["Olive groves", "Airports"]:  # were refused without nomenclature="43"
        assert cat.search(labels=[name]).ids() == brute(rows, labels=[name], nomenclature="43"), name
        assert cat.search(labels=name, nomenclature="19").ids() == cat.search(labels=name, nomenclature="43").ids()
    assert cat.search(labels="Permanent crops", nomenclature="43").ids() == brute(rows, labels=["Permanent crops"])


def test_shared_names_mean_the_same_patches_in_both(cat: Catalog, rows: list[dict]) -> None:
    for name in sorted(SHARED_LABELS):
        in_19 = brute(rows, labels=[name], nomenclature="19")
        assert in_19 == brute(rows, labels=[name], nomenclature="43"), name
        assert cat.search(labels=name).ids() == cat.search(labels=name, nomenclature="43").ids() == in_19


@HYP
@given(labels=st.lists(st.sampled_from(sorted(set(LABELS_19) | set(LABELS_43))), min_size=1, max_size=4, unique=True),
       match=st.sampled_from(["any", "all"]), nomenclature=st.sampled_from(["19", "43"]))
def test_mixed_nomenclatures(cat: Catalog, rows: list[dict], labels: list[str], match: str, nomenclature: str) -> None:
    test = any if match == "any" else all
    expected = brute(rows, where=lambda r: test(_has(r, n) for n in labels))
    assert cat.search(labels=labels, match=match, nomenclature=nomenclature).ids() == expected


def test_misspelt_names_suggest_from_both_nomenclatures(cat: Catalog) -> None:
    with pytest.raises(LabelQueryError, match=r"Did you mean 'Olive groves' \(43\)") as info:
        cat.search(labels=["Olive grove"])
    assert isinstance(info.value, QueryError) and isinstance(info.value, UnknownLabelError)
    assert "19 classes: Urban fabric" in str(info.value) and "43 classes: Continuous urban fabric" in str(info.value)
    with pytest.raises(UnknownLabelError, match=r"'Permanent crops' \(19\)"):
        cat.search(labels="Permanent crop")
    with pytest.raises(QueryError, match="no 19-class counterpart"):  # a named column stays strict
        cat.search(filter="a_contains(labels_19, ('Airports'))")


# -- the options object ------------------------------------------------------------------------------


def test_search_query_is_a_frozen_documented_dataclass(cat: Catalog, rows: list[dict]) -> None:
    q = SearchQuery(labels=["Pastures"], split="train", limit=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.limit = 6  # type: ignore[misc]
    expected = cat.search(labels=["Pastures"], split="train", limit=5).ids()
    assert search(cat, q).ids() == expected
    assert search(cat, q, split="test").ids() == cat.search(labels=["Pastures"], split="test", limit=5).ids()
    assert cat.search(**dataclasses.asdict(q)).ids() == expected
    assert SEARCH_PARAMETERS == tuple(f.name for f in dataclasses.fields(SearchQuery))
    assert "labels=['Pastures']" in q.describe() and "match" not in q.describe()
    # Every field has its docstring right under it (as in settings.py).
    body = ast.parse(inspect.getsource(SearchQuery)).body[0].body  # type: ignore[attr-defined]
    documented = {a.target.id for a, doc in zip(body, body[1:], strict=False)
                  if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)
                  and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)}
    assert documented == set(SEARCH_PARAMETERS)
    assert {"SearchQuery", "QueryError", "LabelQueryError"} <= set(search_module.__all__)


def test_label_masks_answer_like_the_label_arrays(synthetic_catalog: Path, tmp_path: Path) -> None:
    """Label queries use the int64 masks (DESIGN.md #15) and agree with the arrays they encode."""
    import shutil

    import pyarrow.parquet as pq

    from bigearth_stac.contract import LABEL_MASK_COLUMNS

    old = tmp_path / "no-masks"
    shutil.copytree(synthetic_catalog, old)
    for path in (old / "index").glob("*.parquet"):
        table = pq.read_table(path)
        meta = table.schema.metadata
        table = table.drop_columns([c for c in LABEL_MASK_COLUMNS.values() if c in table.column_names])
        pq.write_table(table.replace_schema_metadata(meta), path)
    masked, arrays = Catalog.open(str(synthetic_catalog)), Catalog.open(str(old))
    queries: list[dict[str, Any]] = [
        {"labels": ["Coniferous forest", "Mixed forest"]},
        {"labels": ["Coniferous forest", "Mixed forest"], "match": "all"},
        {"labels": ["Pastures", "Olive groves"], "match": "any"},
        {"filter": "a_containedBy(labels_19, ('Arable land', 'Pastures', 'Complex cultivation patterns'))"},
        {"filter": "a_equals(labels_43, ('Non-irrigated arable land'))"},
        {"filter": "a_contains(labels_43, ('Coniferous forest')) and not a_overlaps(labels_19, ('Urban fabric'))"},
    ]
    for q in queries:
        sql, _ = masked.search(**q).sql()
        assert "label_mask" in sql and "list_has" not in sql, sql
        assert "label_mask" not in arrays.search(**q).sql()[0]
        assert masked.search(**q).ids() == arrays.search(**q).ids(), q
