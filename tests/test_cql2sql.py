"""CQL2 text and JSON -> DuckDB SQL: every supported operator against brute force; clear errors."""

from __future__ import annotations

from datetime import datetime, timezone

import cql2
import pytest
import shapely

from bigearth_stac import Catalog
from bigearth_stac._predicates import QueryError
from bigearth_stac.cql2sql import SUPPORTED, UnsupportedOperator, parse
from tests.search_oracle import brute

L19 = "bigearthnet:labels_19"
L43 = "bigearthnet:labels_43"
UTC = timezone.utc


CASES = [
    ("a_contains(\"bigearthnet:labels_19\", ('Coniferous forest'))",
     lambda r: "Coniferous forest" in r[L19]),
    ("a_overlaps(labels_43, ('Pastures', 'Peatbogs', 'Port areas'))",
     lambda r: bool({"Pastures", "Peatbogs", "Port areas"} & set(r[L43]))),
    ("a_containedBy(labels_19, ('Pastures', 'Arable land', 'Mixed forest', 'Coniferous forest', 'Urban fabric'))",
     lambda r: set(r[L19]) <= {"Pastures", "Arable land", "Mixed forest", "Coniferous forest", "Urban fabric"}),
    ("a_equals(labels_19, ('Pastures'))", lambda r: set(r[L19]) == {"Pastures"}),
    ("\"bigearthnet:split\" = 'train'", lambda r: r["bigearthnet:split"] == "train"),
    ("split <> 'train'", lambda r: r["bigearthnet:split"] is not None and r["bigearthnet:split"] != "train"),
    ("\"proj:epsg\" < 32633", lambda r: r["proj:epsg"] < 32633),
    ("\"proj:epsg\" <= 32633", lambda r: r["proj:epsg"] <= 32633),
    ("\"proj:epsg\" > 32633", lambda r: r["proj:epsg"] > 32633),
    ("32633 >= \"proj:epsg\"", lambda r: r["proj:epsg"] <= 32633),
    ("country in ('Austria', 'Finland', 'Portugal')", lambda r: r["bigearthnet:country"] in ("Austria", "Finland", "Portugal")),
    ("\"proj:epsg\" between 32630 and 32634", lambda r: 32630 <= r["proj:epsg"] <= 32634),
    ("id like 'S2A%'", lambda r: r["id"].startswith("S2A")),
    ("id like 'S2_\\_MSIL2A%'", lambda r: r["id"][:2] == "S2" and r["id"][3:10] == "_MSIL2A"),
    ("split is null", lambda r: r["bigearthnet:split"] is None),
    ("not (season = 'Summer' or season = 'Winter')", lambda r: r["bigearthnet:season"] not in ("Summer", "Winter")),
    ("seasonal_snow = false and cloud_or_shadow = false",
     lambda r: not r["bigearthnet:seasonal_snow"] and not r["bigearthnet:cloud_or_shadow"]),
    ("t_intersects(datetime, INTERVAL('2017-06-01T00:00:00Z', '2017-12-31T23:59:59Z'))",
     lambda r: datetime(2017, 6, 1, tzinfo=UTC) <= r["datetime"] <= datetime(2017, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("t_intersects(datetime, INTERVAL('2018-01-01', '..'))", lambda r: r["datetime"] >= datetime(2018, 1, 1, tzinfo=UTC)),
    ("datetime >= TIMESTAMP('2017-09-01T00:00:00Z')", lambda r: r["datetime"] >= datetime(2017, 9, 1, tzinfo=UTC)),
    ("s_intersects(geometry, BBOX(-10, 35, 10, 55))",
     lambda r: shapely.intersects(r["_geom"], shapely.box(-10, 35, 10, 55))),
    ("s_intersects(geometry, POLYGON((0 40, 30 40, 30 70, 0 40)))",
     lambda r: shapely.intersects(r["_geom"], shapely.Polygon([(0, 40), (30, 40), (30, 70)]))),
    ("not s_intersects(geometry, BBOX(-10, 35, 10, 55)) or split = 'test'",
     lambda r: not shapely.intersects(r["_geom"], shapely.box(-10, 35, 10, 55)) or r["bigearthnet:split"] == "test"),
    # two properties of the same kind; numbers in a numeric array
    ("s2_id = id", lambda r: r["bigearthnet:s2_id"] == r["id"]),
    ("\"proj:epsg\" > gsd", lambda r: r["proj:epsg"] > r["gsd"]),
    ("a_overlaps(label_codes_43, (312, 211, 231))", lambda r: bool({312, 211, 231} & set(r["bigearthnet:label_codes_43"]))),
]


@pytest.mark.parametrize(("text", "oracle"), CASES, ids=[c[0][:50] for c in CASES])
def test_text_and_json_equal_brute_force(cat: Catalog, rows: list[dict], text: str, oracle) -> None:
    expected = brute(rows, where=oracle)
    assert cat.search(filter=text).ids() == expected
    as_json = cql2.Expr(text).to_json()
    assert cat.search(filter=as_json).ids() == expected


def test_every_case_is_exercised() -> None:
    ops: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "op" in node:
                ops.add(node["op"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for text, _ in CASES:
        walk(parse(text))
    assert set(SUPPORTED) <= ops, set(SUPPORTED) - ops


def test_filter_combines_with_parameters(cat: Catalog, rows: list[dict]) -> None:
    got = cat.search(labels=["Pastures", "Arable land"], split="train", filter="season = 'Summer'").ids()
    assert got == brute(rows, labels=["Pastures", "Arable land"], split=["train"],
                        where=lambda r: r["bigearthnet:season"] == "Summer")


def test_json_string_is_accepted(cat: Catalog, rows: list[dict]) -> None:
    text = '{"op": "=", "args": [{"property": "bigearthnet:season"}, "Summer"]}'
    assert cat.search(filter=text).ids() == brute(rows, seasons=["Summer"])


@pytest.mark.parametrize(("text", "message"), [
    ("s_within(geometry, BBOX(0, 0, 1, 1))", "unsupported CQL2 operator 's_within'"),
    ("t_before(datetime, TIMESTAMP('2017-01-01T00:00:00Z'))", "unsupported CQL2 operator 't_before'"),
    ("casei(country) = casei('austria')", "unsupported CQL2 operator 'casei'"),
])
def test_unsupported_operator_is_named(cat: Catalog, text: str, message: str) -> None:
    with pytest.raises(UnsupportedOperator, match=message) as info:
        cat.search(filter=text)
    assert "a_contains" in str(info.value)  # and it lists what is supported


@pytest.mark.parametrize(("text", "message"), [
    ("countri = 'Austria'", "unknown property 'countri'.*Did you mean"),
    ("split = 3", "is a string column"),
    ("\"proj:epsg\" = 'x'", "is a number column"),
    ("a_contains(labels_19, ('Port areas'))", "no 19-class counterpart"),
    ("a_contains(labels_43, ('Conifers'))", "Did you mean 'Coniferous forest'"),
    ("labels_19 = 'Pastures'", "a_contains"),
    ("this is not cql2", "invalid CQL2"),
    ("gsd < id", "cannot compare gsd \\(a number\\) with id \\(a string\\)"),
    ("a_contains(labels_43, (1))", "1.0 is not a string"),
])
def test_bad_filters_explain(cat: Catalog, text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        cat.search(filter=text)


def test_parameters_are_bound_not_spliced(cat: Catalog) -> None:
    evil = "x'; DROP TABLE items; --"
    assert cat.search(filter=f"id = '{evil.replace(chr(39), chr(39) * 2)}'").ids() == []


def test_boolean_literals_parse() -> None:
    assert parse(True) is True and parse(False) is False
    assert parse("true") is True and parse("FALSE") is False
