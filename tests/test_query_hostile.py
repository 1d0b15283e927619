"""Hostile but fair search input: every bad value is a QueryError naming it, never a crash.

Filters nested or chained thousands deep used to overflow ``cql2``'s parser stack (a segfault),
nested ``NOT`` to take gigabytes in its validator, and JSON nested 300 deep to raise
RecursionError; operands of the wrong kind, out-of-range integers and NaN coordinates reached
the user as raw DuckDB, shapely or Python exceptions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bigearth_stac import Catalog
from bigearth_stac._predicates import Predicate, QueryError
from bigearth_stac.cql2sql import (
    MAX_CHAINED_OPERATORS,
    MAX_FILTER_BYTES,
    MAX_FILTER_CONNECTIVES,
    MAX_FILTER_NESTING,
)
from bigearth_stac.search import Query, SearchQuery, SearchResult
from tests.search_oracle import brute

ROOT = Path(__file__).resolve().parents[1]

# Runs in a child process: a regression that segfaults or exhausts memory must not take pytest
# with it. Address space is capped a few GB above what the imports take, so a regression fails
# with MemoryError / abort instead of eating the machine; the child reports what each case
# raised and how much its peak memory grew.
CHILD = textwrap.dedent("""
    import json, resource, sys

    def vm_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1])

    from bigearth_stac import Catalog
    cat = Catalog.open(sys.argv[1])
    cat.search(filter="id = 'warm-up'").ids()
    cap = (vm_kb() << 10) + (3 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    def nested_not(n):
        d = {"op": "=", "args": [{"property": "id"}, "x"]}
        for _ in range(n):
            d = {"op": "not", "args": [d]}
        return d

    def nested_collection(n):
        g = {"type": "Point", "coordinates": [10, 50]}
        for _ in range(n):
            g = {"type": "GeometryCollection", "geometries": [g]}
        return g

    looped = {"op": "and", "args": []}
    looped["args"].append(looped)
    cases = {
        "parentheses 2000 deep": dict(filter="(" * 2000 + "id = 'x'" + ")" * 2000),
        "NOT ( 400 deep": dict(filter="NOT (" * 400 + "id = 'x'" + ")" * 400),
        "NOT 400 times": dict(filter="NOT " * 400 + "id = 'x'"),
        "or of 20000 terms": dict(filter=" or ".join(f"id = 'x{i}'" for i in range(20000))),
        "= chained 20000 times": dict(filter="gsd" + " = gsd" * 20000),
        "unary minus 20000 times": dict(filter="gsd = " + "- " * 20000 + "1"),
        "JSON not 300 deep": dict(filter=nested_not(300)),
        "JSON text not 300 deep": dict(filter=json.dumps(nested_not(300))),
        "JSON text lists 100000 deep": dict(
            filter='{"op": "in", "args": [{"property": "id"}, ' + "[" * 100000 + "]" * 100000 + "]}"),
        "JSON that contains itself": dict(filter=looped),
        "GeometryCollection 100000 deep": dict(intersects=nested_collection(100000)),
    }
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name, kwargs in cases.items():
        try:
            cat.search(**kwargs).ids()
            outcome = ["accepted", ""]
        except Exception as exc:
            outcome = [type(exc).__name__, str(exc)[:300]]
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) >> 10
        print(json.dumps([name, *outcome, grown]), flush=True)
""")


def test_deep_and_long_filters_are_refused_in_bounded_memory(synthetic_catalog: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(synthetic_catalog)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("[")]
    assert proc.returncode == 0, f"child died with {proc.returncode} after {results}: {proc.stderr[-2000:]}"
    assert len(results) == 11
    for name, kind, message, grown_mb in results:
        assert kind in ("QueryError", "UnsupportedOperator"), (name, kind, message)
        assert "limit" in message, (name, message)
        assert grown_mb < 400, f"{name}: peak memory grew {grown_mb} MB"


# -- the limits themselves: just inside is answered, just outside refused ---------------------------


def test_nesting_at_the_limit_is_answered(cat: Catalog, rows: list[dict]) -> None:
    inside = "(" * MAX_FILTER_NESTING + "split = 'train'" + ")" * MAX_FILTER_NESTING
    assert cat.search(filter=inside).ids() == brute(rows, split=["train"])
    nots = "NOT " * (MAX_FILTER_NESTING // 2 * 2) + "split = 'train'"  # an even number: the same rows
    assert cat.search(filter=nots).ids() == brute(rows, split=["train"])
    with pytest.raises(QueryError, match=f"more than {MAX_FILTER_NESTING} deep"):
        cat.search(filter="(" + inside + ")")
    with pytest.raises(QueryError, match=f"more than {MAX_FILTER_NESTING} deep"):
        cat.search(filter="NOT " * (MAX_FILTER_NESTING + 1) + "split = 'train'")


def test_long_alternatives_at_the_limit_and_as_one_in(cat: Catalog, rows: list[dict]) -> None:
    ids = [r["id"] for r in rows]
    wanted = ids[::3]
    many = " or ".join(f"id = '{i}'" for i in wanted + [f"none-{k}" for k in range(MAX_FILTER_CONNECTIVES + 1 - len(wanted))])
    assert cat.search(filter=many).ids() == wanted
    with pytest.raises(QueryError, match=f"more than {MAX_FILTER_CONNECTIVES} terms"):
        cat.search(filter=many + " or id = 'one-more'")
    listed = "id in (" + ", ".join(f"'{i}'" for i in wanted + [f"none-{k}" for k in range(20_000)]) + ")"
    assert cat.search(filter=listed).ids() == wanted
    as_json = {"op": "or", "args": [{"op": "=", "args": [{"property": "id"}, f"x{k}"]}
                                    for k in range(MAX_FILTER_CONNECTIVES + 2)]}
    with pytest.raises(QueryError, match=f"more than {MAX_FILTER_CONNECTIVES} terms"):
        cat.search(filter=as_json)


def test_size_and_chains(cat: Catalog) -> None:
    huge = "id in (" + ", ".join(f"'{k:040d}'" for k in range(MAX_FILTER_BYTES // 40)) + ")"
    with pytest.raises(QueryError, match=f"the limit is {MAX_FILTER_BYTES:,}"):
        cat.search(filter=huge)
    with pytest.raises(QueryError, match=f"more than {MAX_CHAINED_OPERATORS} operators"):
        cat.search(filter="gsd" + " = gsd" * (MAX_CHAINED_OPERATORS + 1))
    # Signs of coordinates and of numbers are not chains.
    poly = ", ".join(f"{-5 - k % 7} {-(k % 9) - 1}" for k in range(300))
    assert cat.search(filter=f"s_intersects(geometry, POLYGON(({poly}, -5 -1))) or gsd = -1e-5").ids() == []


# -- wrong kinds, bad values: QueryError naming the value -------------------------------------------

BAD_FILTERS = [
    ("id = labels_19", "labels_19"),  # was a ConversionException
    ("gsd < id", "cannot compare gsd"),  # was a BinderException
    ("labels_19 = labels_43", "labels_19"),
    ("id = geometry", "geometry"),
    ("split = seasonal_snow", "cannot compare bigearthnet:split"),
    ("id like 'S2\\'", "'S2\\\\'"),  # a pattern ending in the escape character: was a SyntaxException
    ("a_contains(labels_19, (1, 2))", "1.0 is not a string"),  # was an AttributeError
    ("a_contains(label_codes_43, ('x'))", "'x' is not a number"),  # was a BinderException
    ("a_overlaps(\"proj:bbox\", ('x'))", "'x' is not a number"),
    ("a_contains(instruments, (true))", "True is not a string"),
    ("a_contains(id, ('x'))", "id is a string, not an array"),
    ("s_intersects(geometry, POINT(1 2)) and t_intersects(id, TIMESTAMP('2017-01-01T00:00:00Z'))", "not a timestamp"),
    ({"op": "=", "args": [{"property": "gsd"}, 2**70]}, str(2**70)),  # beyond int64: was an Arrow overflow
    ({"op": "=", "args": [{"property": 5}, 1]}, '{"property": 5}'),
    ({"op": ["="], "args": []}, '["="]'),
    ({"op": "in", "args": [{"property": "id"}, "abc"]}, '"abc"'),
    ('{"op": "=", "args": [{"property": "gsd"}, NaN]}', "NaN"),
    (5, "got 5 (int)"),
    (["id = 'x'"], "got [\"id = 'x'\"]"),
]


@pytest.mark.parametrize(("value", "named"), BAD_FILTERS, ids=[str(v)[:40] for v, _ in BAD_FILTERS])
def test_bad_filters_are_query_errors_naming_the_value(cat: Catalog, value: Any, named: str) -> None:
    with pytest.raises(QueryError) as info:
        cat.search(filter=value).ids()
    assert named in str(info.value), str(info.value)


def test_even_backslashes_end_a_like_pattern(cat: Catalog) -> None:
    assert cat.search(filter="id like 'S2%\\\\'").ids() == []  # a literal backslash at the end


def test_boolean_filters_are_valid_cql2(cat: Catalog, rows: list[dict]) -> None:
    every = [r["id"] for r in rows]
    assert cat.search(filter=True).ids() == every
    assert cat.search(filter="true").ids() == every
    assert cat.search(filter=False).ids() == []  # was an AttributeError
    assert cat.search(filter="false").ids() == []
    assert cat.search(filter=True, split="test").ids() == brute(rows, split=["test"])


def test_empty_and_numeric_arrays(cat: Catalog, rows: list[dict]) -> None:
    empty = {"op": "a_contains", "args": [{"property": "labels_19"}, []]}
    assert cat.search(filter=empty).ids() == [r["id"] for r in rows]
    code = rows[0]["bigearthnet:label_codes_43"][0]
    assert cat.search(filter=f"a_contains(label_codes_43, ({code}))").ids() == brute(
        rows, where=lambda r: code in r["bigearthnet:label_codes_43"])


def test_cql2_bbox_across_the_antimeridian_matches_the_bbox_parameter(cat: Catalog) -> None:
    assert (cat.search(filter="s_intersects(geometry, BBOX(20, 35, -5, 70))").ids()
            == cat.search(bbox=(20, 35, -5, 70)).ids())


BAD_PARAMETERS = [
    ({"labels": [5]}, "got 5"),  # was an AttributeError
    ({"labels": {"Pastures": 1}}, "{'Pastures': 1}"),
    ({"split": 5}, "got 5"),  # was a TypeError
    ({"countries": ["Austria", None]}, "None"),
    ({"limit": 2**63}, "9,223,372,036,854,775,808"),  # was a DuckDB ConversionException
    ({"limit": -1}, "got -1"),
    ({"limit": 2.5}, "got 2.5"),
    ({"limit": True}, "got True"),
    ({"exclude_snow": "no"}, "'no'"),
    ({"nomenclature": 19.0}, "19.0"),
    ({"match": ["any"]}, "['any']"),
    ({"intersects": {"type": "Point", "coordinates": [float("nan"), 50.0]}}, "nan"),  # was a GEOSException
    ({"intersects": {"type": "Point", "coordinates": [float("inf"), 50.0]}}, "inf"),
    ({"intersects": {"type": "Polygon", "coordinates": [[[0, 0], [1, float("nan")], [1, 1], [0, 0]]]}}, "nan"),
    ({"intersects": "POINT (1 2)"}, "'POINT (1 2)'"),
    ({"intersects": {"type": "Point", "coordinates": "ab"}}, "'ab'"),
    ({"bbox": [0, 0, float("nan"), 1]}, "nan"),
    ({"modality": ["s2"]}, "['s2']"),
    ({"label": "Pastures"}, "unknown search parameter 'label'. Did you mean 'labels'"),
]


@pytest.mark.parametrize(("kwargs", "named"), BAD_PARAMETERS, ids=[str(k)[:40] for k, _ in BAD_PARAMETERS])
def test_bad_parameters_are_query_errors_naming_the_value(cat: Catalog, kwargs: dict, named: str) -> None:
    with pytest.raises(QueryError) as info:
        cat.search(**kwargs).ids()
    assert named in str(info.value), str(info.value)


@pytest.mark.parametrize(("call", "named"), [
    (lambda r: r.page(10**18, 10), "1,000,000,000,000,000,000"),  # was a DuckDB ConversionException
    (lambda r: r.page(-1), "got -1"),
    (lambda r: r.page(1.5, 10), "got 1.5"),
    (lambda r: r.page(0, 0), "got 0"),
    (lambda r: list(r.batches(batch_size=0)), "got 0"),  # was a RuntimeError
    (lambda r: list(r.batches(batch_size=2**40)), "1,099,511,627,776"),
    (lambda r: list(r.pages(0)), "got 0"),
    (lambda r: list(r.pages(2**70)), "1,180,591,620,717,411,303,424"),  # was a TypeError
], ids=["page-huge", "page-negative", "page-float", "page-size-0", "batch-0", "batch-huge", "pages-0", "pages-huge"])
def test_bad_paging_is_a_query_error(cat: Catalog, call: Any, named: str) -> None:
    with pytest.raises(QueryError) as info:
        call(cat.search())
    assert named in str(info.value), str(info.value)


def test_large_but_valid_paging(cat: Catalog, rows: list[dict]) -> None:
    result = cat.search()
    assert result.page(2**40, 10).num_rows == 0
    assert [t.num_rows for t in result.pages(2**40)] == [len(rows)]
    assert cat.search(limit=2**63 - 1).ids() == [r["id"] for r in rows]


def test_duckdb_errors_become_query_errors_naming_the_filter(cat: Catalog) -> None:
    # The last line of defence, for SQL the translator let through but DuckDB cannot run.
    query = Query("s2", Predicate("(CAST(id AS INTEGER) = 1)"), options=SearchQuery(filter="the-filter"))
    result = SearchResult(cat, query)
    for call in (result.ids, result.to_arrow, lambda: len(result), lambda: list(result),
                 lambda: list(result.batches()), lambda: result.page(0, 5)):
        with pytest.raises(QueryError, match="filter='the-filter'"):
            call()
