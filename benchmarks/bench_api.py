"""STAC API benchmark: pgstac load time, and search latency through three backends, with and without
the label GIN index.

    python -m benchmarks.bench_api --rows 2000 --repeats 3   # small, a few minutes on 2 cores
    python -m benchmarks.bench_api                           # 590,326 rows per collection (the archive)

The catalog is the search benchmark's synthetic archive (:mod:`bigearth_devtools.synthetic_index`:
real names, countries, seasons, splits and flags, synthesized labels and footprints; no COGs) and
the queries are the search benchmark's (:func:`benchmarks.bench_search.queries`). It starts a
private PostgreSQL + PostGIS cluster and the API on loopback (:mod:`bigearth_devtools.postgres`),
times ``load_pgstac`` (both collections, from the index), then, for each query, times the ids of
every match end to end:

- **embedded**: ``Catalog.open(root).search(**q).ids()`` (DuckDB over the geoparquet index);
- **pgstac SQL**: the same search as CQL2 JSON through ``pgstac.search()`` from psycopg, paging
  with pgstac's tokens (``fields``: ids only), what a service next to the database would do;
- **API**: :class:`bigearth_stac.api.ApiCatalog` (pystac-client over HTTP to stac-fastapi-pgstac),

each with and without the GIN indexes on the two label arrays (pgstac and API only; the embedded
search has none). Every backend must return the same id set, else the run stops. Results:
``benchmarks/results/api{-<rows>}.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow.compute as pc
import pyarrow.parquet as pq
from bigearth_devtools.postgres import start_api, start_postgres
from bigearth_devtools.synthetic_index import write_synthetic_catalog

from benchmarks.bench_search import FULL, TILE, queries
from bigearth_stac.api import ApiCatalog, as_search_query, index_columns, search_body
from bigearth_stac.catalog import Catalog
from bigearth_stac.contract import INDEX_LAYOUT_VERSION
from bigearth_stac.serve import connect
from catalog_builder.pgstac_load import create_reader_role, load_pgstac, set_label_index

log = logging.getLogger("benchmarks.bench_api")
RESULTS = Path(__file__).parent / "results"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def stats(samples: list[float]) -> dict[str, float]:
    """p50 / p95 / min / max in ms."""
    p50, p95 = _percentiles(samples)
    return {"p50_ms": p50 * 1e3, "p95_ms": p95 * 1e3, "min_ms": min(samples) * 1e3, "max_ms": max(samples) * 1e3,
            "n": len(samples)}


def alternating(fns: dict[str, Callable[[], list[str]]], repeats: int) -> dict[str, dict[str, float]]:
    """Time each of ``fns`` once per round, the backends alternating (A B C A B C ...).

    The caller has run each once (the check that they agree is the warm-up).
    """
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[key].append(time.perf_counter() - t0)
    return {k: stats(v) for k, v in samples.items()}


def search_ids(catalog: Catalog | ApiCatalog, params: dict[str, Any]) -> Callable[[], list[str]]:
    """Every matching id through ``catalog.search(**params).ids()``."""
    return lambda: catalog.search(**params).ids()


def sql_ids(con: Any, params: dict[str, Any], page_size: int) -> Callable[[], list[str]]:
    """Every matching id through ``pgstac.search()`` on an open connection, paging with its tokens."""
    from psycopg.types.json import Jsonb

    query = as_search_query(None, params)
    collections, cql = search_body(query, index_columns())
    body: dict[str, Any] = {"collections": collections, "limit": page_size,
                            "fields": {"include": ["id"], "exclude": []}}
    if isinstance(cql, dict):
        body.update({"filter": cql, "filter-lang": "cql2-json"})

    def run() -> list[str]:
        if cql is False:
            return []
        ids: list[str] = []
        token = None
        while True:
            page = con.execute("SELECT search(%s)", (Jsonb({**body, **({"token": token} if token else {})}),)
                               ).fetchone()[0]
            ids += [f["id"] for f in page.get("features", [])]
            nxt = next((link for link in page.get("links", []) if link.get("rel") == "next"), None)
            if nxt is None or not page.get("features"):
                return ids
            token = parse_qs(urlsplit(nxt["href"]).query)["token"][0]
    return run


def label_indexes(cluster: Any) -> int:
    """GIN indexes on the label arrays across the item partitions."""
    return int(cluster.execute(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'pgstac' AND tablename LIKE '\\_items\\_%' "
        "AND indexdef LIKE '%USING gin%bigearthnet:labels_%'", dbname="bench")[0][0])


def markdown(result: dict[str, Any]) -> str:
    load = result["load"]
    lines = [
        f"# STAC API benchmark ({result['rows']:,} items per collection)",
        "",
        f"Machine: {result['machine']}; PostgreSQL {result['postgres']}, pgstac {load['pgstac']}. Load "
        f"(`load_pgstac`, both collections, {load['items']:,} items, chunks of {load['chunk_size']:,}, label "
        f"GIN indexes built after the items): **{load['seconds']:.1f} s** ({load['items'] / load['seconds']:,.0f} "
        f"items/s); database {load['db_bytes'] / 1e6:.0f} MB.",
        f"Latency: every matching id end to end, p50/p95 ms over {result['repeats']} rounds after a warm-up, the "
        f"three backends alternating within each round (embedded, SQL, API); pages "
        f"of {result['page_size']:,} for pgstac SQL (one open connection, as the read-only user) and the API. "
        f"GIN: the label arrays' indexes present ({result['label_gin_indexes']['gin']}) / dropped "
        f"({result['label_gin_indexes']['no_gin']}).",
        "",
        "| query | rows | embedded p50 | p95 | pgstac SQL p50 (GIN) | p95 | SQL p50 (no GIN) | p95 "
        "| API p50 (GIN) | p95 | API p50 (no GIN) | p95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, q in result["queries"].items():
        cells = [q["embedded"]["gin"]]
        for backend in ("sql", "api"):
            cells += [q[backend]["gin"], q[backend]["no_gin"]]
        lines.append(f"| {name} | {q['rows']:,} | " + " | ".join(
            f"{c['p50_ms']:.0f} | {c['p95_ms']:.0f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=FULL, help="items per collection (default: all 590,326)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per query and backend")
    parser.add_argument("--page-size", type=int, default=10_000, help="items per page (SQL and API)")
    parser.add_argument("--chunk-size", type=int, default=10_000, help="items per committed load transaction")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "bigearth-stac-bench"),
                        help="folder for the generated catalog (shared with bench_search, reused)")
    parser.add_argument("--only", action="append", help="run only these queries (by name; repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = min(args.rows, FULL)
    root = Path(args.cache) / f"search-{rows}-layout{INDEX_LAYOUT_VERSION}"  # bench_search's catalog
    if not (root / "catalog.json").exists():
        log.info("building a %d-row catalog at %s", rows, root)
        write_synthetic_catalog(root, None if rows == FULL else rows)
    index = root / "index" / "bigearthnet-s2.parquet"
    tiles = pq.read_table(index, columns=["bigearthnet:tile", "bbox"])
    bb = tiles.filter(pc.equal(tiles.column("bigearthnet:tile"), TILE)).column("bbox").combine_chunks()
    if not len(bb):  # a small archive may miss the tile: use the first row's tile
        first = tiles.column("bigearthnet:tile")[0].as_py()
        bb = tiles.filter(pc.equal(tiles.column("bigearthnet:tile"), first)).column("bbox").combine_chunks()
    tile_bbox = [pc.min(bb.field("xmin")).as_py(), pc.min(bb.field("ymin")).as_py(),
                 pc.max(bb.field("xmax")).as_py(), pc.max(bb.field("ymax")).as_py()]
    qs = {k: v for k, v in queries(tile_bbox).items() if not args.only or k in args.only}

    result: dict[str, Any] = {
        "rows": pq.ParquetFile(index).metadata.num_rows, "repeats": args.repeats, "page_size": args.page_size,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                   f"{platform.system()}",
        "query_params": qs, "queries": {},
    }
    with start_postgres(settings={"shared_buffers": "512MB", "work_mem": "64MB",
                                  "maintenance_work_mem": "512MB"}) as cluster:
        result["postgres"] = cluster.execute("SHOW server_version")[0][0]
        dsn = cluster.create_database("bench")
        log.info("loading %s into pgstac", root)
        report = load_pgstac(str(root), dsn, chunk_size=args.chunk_size)
        db_bytes = cluster.execute("SELECT pg_database_size('bench')")[0][0]
        result["load"] = {"seconds": report.seconds, "items": sum(report.in_database.values()),
                          "chunk_size": args.chunk_size, "db_bytes": db_bytes, "pgstac": report.pgstac_version,
                          "row_wise": report.row_wise}
        log.info("%s", report.describe())
        reader = create_reader_role(dsn, "bench_reader", "bench-reader")
        embedded = Catalog.open(str(root))
        with start_api(reader) as server, connect(reader) as con:
            con.execute("SET search_path TO pgstac, public")
            api = ApiCatalog.open(server.url, page_size=args.page_size)
            for name in qs:
                result["queries"][name] = {"sql": {}, "api": {}, "embedded": {}}
            for state, enabled in (("gin", True), ("no_gin", False)):
                set_label_index(dsn, enabled)
                cluster.execute("ANALYZE pgstac.items", dbname="bench")
                result.setdefault("label_gin_indexes", {})[state] = label_indexes(cluster)
                for name, params in qs.items():
                    want = embedded.search(**params).ids()
                    for backend, got in (("pgstac SQL", sql_ids(con, params, args.page_size)()),
                                         ("API", search_ids(api, params)())):
                        if set(got) != set(want) or len(got) != len(want):
                            raise SystemExit(f"{name}: {backend} returned {len(got)} ids, the embedded index "
                                             f"{len(want)}: the backends disagree")
                    timings = alternating({"embedded": search_ids(embedded, params),
                                           "sql": sql_ids(con, params, args.page_size),
                                           "api": search_ids(api, params)}, args.repeats)
                    q = result["queries"][name]
                    q["rows"] = len(want)
                    for backend in ("embedded", "sql", "api"):
                        q[backend][state] = timings[backend]
                    log.info("  %-32s %-6s rows %7d  embedded p50 %6.0f ms  SQL p50 %7.0f ms  API p50 %7.0f ms", name,
                             state, len(want), timings["embedded"]["p50_ms"], timings["sql"]["p50_ms"],
                             timings["api"]["p50_ms"])
            set_label_index(dsn, True)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if rows == FULL else f"-{rows}"
    (args.out / f"api{suffix}.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / f"api{suffix}.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
