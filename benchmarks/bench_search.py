"""Search benchmark at archive scale: p50/p95 latency and bytes read, local disk and loopback S3.

    python -m benchmarks.bench_search            # 590,326 rows per collection (the whole archive)
    python -m benchmarks.bench_search --quick    # 50,000 rows, fewer repetitions

The index is built from the official ``s1_s2_name_country_season`` table (real names, countries,
seasons, splits and flags; synthesized labels and footprints in each tile's real UTM zone) with
the builder's own sorting and row-group writer (:mod:`bigearth_devtools.synthetic_index`). Each
query is timed end to end as a user runs it: ``catalog.search(...)`` then ``.ids()``, on a catalog
opened once (footer cached). Bytes are counted through a counting filesystem in a separate run.
The baseline is what a user without this project does: pystac walking item JSON, on a 10k-item
sample, extrapolated linearly to the archive. Results: ``benchmarks/results/search.{json,md}``.
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

import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from bigearth_stac._indexfs import counting_filesystem
from bigearth_stac.catalog import Catalog
from bigearth_devtools.synthetic_index import write_synthetic_catalog

log = logging.getLogger("benchmarks.bench_search")
RESULTS = Path(__file__).parent / "results"
FULL = 590_326
TILE = "33UUP"  # Austria; one of the large tiles of the archive


def queries(tile_bbox: list[float]) -> dict[str, dict[str, Any]]:
    """The fixed query set of issue 8."""
    w, s, e, n = tile_bbox
    cx, cy = (w + e) / 2, (s + n) / 2
    triangle = {"type": "Polygon", "coordinates": [[[w, s], [cx, n], [e, cy], [w, s]]]}
    return {
        "single label": {"labels": ["Coniferous forest"]},
        "two labels, any": {"labels": ["Coniferous forest", "Mixed forest"], "match": "any"},
        "two labels, all": {"labels": ["Coniferous forest", "Mixed forest"], "match": "all"},
        "label + bbox (one tile)": {"labels": ["Coniferous forest"], "bbox": tile_bbox},
        "label + bbox + split": {"labels": ["Coniferous forest"], "bbox": tile_bbox, "split": "train"},
        "label + split + no snow/cloud": {"labels": ["Pastures"], "split": "train", "exclude_snow": True,
                                          "exclude_clouds": True},
        "polygon intersects": {"intersects": triangle},
        "CQL2 text filter": {"filter": "a_contains(labels_19, ('Pastures')) and country = 'Ireland' "
                                       "and season = 'Summer' and t_intersects(datetime, INTERVAL('2017-06-01', '..'))"},
    }


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def time_queries(open_catalog: Callable[[], Catalog], counted: Callable[[], tuple[Catalog, Any]],
                 qs: dict[str, dict[str, Any]], repeats: int) -> dict[str, dict[str, float]]:
    cat = open_catalog()
    index_bytes = cat.index("s2").nbytes
    out: dict[str, dict[str, float]] = {}
    for name, params in qs.items():
        cat.search(**params).ids()  # warm: OS cache, connection pools
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            n = len(cat.search(**params).ids())
            times.append(time.perf_counter() - t0)
        ccat, stats = counted()
        _ = ccat.index("s2").dataset  # the footer is read once per catalog: count it separately
        footer = stats.bytes
        stats.reset()
        ccat.search(**params).ids()
        p50, p95 = _percentiles(times)
        out[name] = {"rows": n, "p50_ms": p50 * 1e3, "p95_ms": p95 * 1e3, "bytes_read": stats.bytes,
                     "reads": stats.reads, "share_of_index": stats.bytes / index_bytes, "footer_bytes": footer}
        log.info("%-32s %7d rows  p50 %7.1f ms  p95 %7.1f ms  %9d B (%.2f%%)", name, n, p50 * 1e3, p95 * 1e3,
                 stats.bytes, 100 * stats.bytes / index_bytes)
    return out


def local_runs(root: Path, qs: dict[str, dict[str, Any]], repeats: int) -> dict[str, Any]:
    def counted() -> tuple[Catalog, Any]:
        fs, stats = counting_filesystem(pafs.LocalFileSystem())
        return Catalog.open(str(root), filesystem=fs), stats

    t0 = time.perf_counter()
    cat = Catalog.open(str(root))
    _ = cat.index("s2").dataset
    open_s = time.perf_counter() - t0
    return {"open_s": open_s, "queries": time_queries(lambda: cat, counted, qs, repeats)}


def s3_runs(root: Path, qs: dict[str, dict[str, Any]], repeats: int) -> dict[str, Any]:
    from bigearth_devtools.s3server import CONFLICTING_ENV, DUMMY_CREDENTIALS, start_s3_server

    for k in CONFLICTING_ENV:
        os.environ.pop(k, None)
    os.environ.update(DUMMY_CREDENTIALS)
    with start_s3_server() as server:
        bucket = server.create_bucket("bench")
        client = server.client()
        for path in sorted(root.rglob("*")):
            if path.is_file():
                client.upload_file(str(path), bucket, f"cat/{path.relative_to(root).as_posix()}")
        settings = server.settings()
        url = f"s3://{bucket}/cat/catalog.json"

        def counted() -> tuple[Catalog, Any]:
            fs, stats = counting_filesystem(settings.pyarrow_filesystem())
            return Catalog.open(url, settings=settings, filesystem=fs), stats

        t0 = time.perf_counter()
        cat = Catalog.open(url, settings=settings)
        _ = cat.index("s2").dataset
        open_s = time.perf_counter() - t0
        return {"open_s": open_s, "endpoint": server.endpoint_url,
                "queries": time_queries(lambda: cat, counted, qs, repeats)}


def pystac_baseline(root: Path, sample: int, total: int, params: dict[str, Any]) -> dict[str, Any]:
    """Walk ``sample`` item JSONs with pystac, filtering like ``label + bbox + split``; extrapolate."""
    import pystac
    import shapely
    import stac_geoparquet.arrow as sga

    table = pq.read_table(root / "index" / "bigearthnet-s2.parquet").slice(0, sample)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        links = [{"rel": "root", "href": "./catalog.json"}, {"rel": "child", "href": "./c/collection.json"}]
        (base / "catalog.json").write_text(json.dumps({"type": "Catalog", "stac_version": "1.1.0", "id": "b",
                                                       "description": "b", "links": links}))
        (base / "c").mkdir()
        item_links = []
        for item in sga.stac_table_to_items(table):
            item["links"] = [{"rel": "root", "href": "../../catalog.json"}, {"rel": "parent", "href": "../collection.json"}]
            (base / "c" / item["id"]).mkdir()
            (base / "c" / item["id"] / f"{item['id']}.json").write_text(json.dumps(item, default=str))
            item_links.append({"rel": "item", "href": f"./{item['id']}/{item['id']}.json"})
        coll = json.loads((root / "bigearthnet-s2" / "collection.json").read_text())
        coll["assets"] = {}
        coll["links"] = [{"rel": "root", "href": "../catalog.json"}, {"rel": "parent", "href": "../catalog.json"}, *item_links]
        (base / "c" / "collection.json").write_text(json.dumps(coll))
        box = shapely.box(*params["bbox"])
        t0 = time.perf_counter()
        hits = 0
        for item in pystac.Catalog.from_file(str(base / "catalog.json")).get_items(recursive=True):
            p = item.properties
            if (set(params["labels"]) & set(p["bigearthnet:labels_19"]) and p["bigearthnet:split"] == params["split"]
                    and shapely.intersects(shapely.geometry.shape(item.geometry), box)):
                hits += 1
        elapsed = time.perf_counter() - t0
    return {"sample_items": sample, "sample_s": elapsed, "hits_in_sample": hits,
            "extrapolated_s": elapsed * total / sample}


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [
        f"# Search benchmark ({rows:,} rows per collection)",
        "",
        f"Machine: {result['machine']}. Index (S2): {result['index_bytes'] / 1e6:.1f} MB, "
        f"{result['row_groups']} row groups. Open (root + collections + footer): local "
        f"{result['local']['open_s'] * 1e3:.0f} ms" + (f", S3 {result['s3']['open_s'] * 1e3:.0f} ms" if "s3" in result else "") + ".",
        f"Latency: `catalog.search(...).ids()` end to end, catalog already open; p50/p95 over {result['repeats']} "
        f"runs locally and {result.get('s3_repeats', '-')} from S3 (moto, loopback). Bytes: read through the "
        "filesystem by that query (footer excluded; it is read once per open).",
        "",
        "| query | rows | local p50 ms | local p95 ms | local bytes (% of index) | S3 p50 ms | S3 p95 ms | S3 bytes (% of index) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, loc in result["local"]["queries"].items():
        s3 = result.get("s3", {}).get("queries", {}).get(name)
        s3_cells = (f"{s3['p50_ms']:.1f} | {s3['p95_ms']:.1f} | {s3['bytes_read'] / 1e6:.2f} MB ({100 * s3['share_of_index']:.2f}%)"
                    if s3 else "- | - | -")
        lines.append(f"| {name} | {loc['rows']:,} | {loc['p50_ms']:.1f} | {loc['p95_ms']:.1f} | "
                     f"{loc['bytes_read'] / 1e6:.2f} MB ({100 * loc['share_of_index']:.2f}%) | {s3_cells} |")
    b = result["pystac"]
    lines += ["", f"Baseline, pystac walking item JSON (label + bbox + split, local disk): {b['sample_items']:,} items "
              f"in {b['sample_s']:.1f} s, extrapolated to {rows:,} items: **{b['extrapolated_s']:.0f} s**.", ""]
    t = result["targets"]
    lines += [f"Targets: label + bbox + split p50 <= 50 ms local ({'met' if t['local_ok'] else 'NOT met'}), "
              f"<= 300 ms loopback S3 ({'met' if t['s3_ok'] else 'NOT met'}); one-tile bbox reads < 5% of the index "
              f"({'met' if t['bytes_ok'] else 'NOT met'}).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50,000 rows, 5 repetitions")
    parser.add_argument("--rows", type=int, help="rows per collection (default: all 590,326)")
    parser.add_argument("--repeats", type=int, help="timed runs per query, local (default 20; quick 5)")
    parser.add_argument("--s3-repeats", type=int, default=5, help="timed runs per query, loopback S3")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "bigearth-stac-bench"),
                        help="folder for the generated catalog (reused between runs)")
    parser.add_argument("--no-s3", action="store_true", help="skip the loopback S3 runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = args.rows or (50_000 if args.quick else FULL)
    repeats = args.repeats or (5 if args.quick else 20)
    root = Path(args.cache) / f"search-{rows}"
    if not (root / "catalog.json").exists():
        log.info("building a %d-row catalog at %s", rows, root)
        t0 = time.perf_counter()
        write_synthetic_catalog(root, None if rows == FULL else rows)
        log.info("built in %.0f s", time.perf_counter() - t0)
    index = root / "index" / "bigearthnet-s2.parquet"
    meta = pq.ParquetFile(index).metadata
    tiles = pq.read_table(index, columns=["bigearthnet:tile", "bbox"])
    mask = pc.equal(tiles.column("bigearthnet:tile"), TILE)
    bb = tiles.filter(mask).column("bbox").combine_chunks()
    tile_bbox = [pc.min(bb.field("xmin")).as_py(), pc.min(bb.field("ymin")).as_py(),
                 pc.max(bb.field("xmax")).as_py(), pc.max(bb.field("ymax")).as_py()]
    qs = queries(tile_bbox)
    result: dict[str, Any] = {
        "rows": meta.num_rows, "row_groups": meta.num_row_groups, "index_bytes": index.stat().st_size,
        "tile": TILE, "tile_bbox": tile_bbox, "repeats": repeats, "s3_repeats": args.s3_repeats,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}",
        "queries": qs,
    }
    result["local"] = local_runs(root, qs, repeats)
    if not args.no_s3:
        result["s3"] = s3_runs(root, qs, args.s3_repeats)
    target = result["local"]["queries"]["label + bbox + split"]
    s3_target = result.get("s3", {}).get("queries", {}).get("label + bbox + split")
    result["pystac"] = pystac_baseline(root, min(10_000, meta.num_rows), meta.num_rows, qs["label + bbox + split"])
    result["targets"] = {
        "local_ok": target["p50_ms"] <= 50,
        "s3_ok": bool(s3_target and s3_target["p50_ms"] <= 300),
        "bytes_ok": all(result[k]["queries"]["label + bbox (one tile)"]["share_of_index"] < 0.05
                        for k in ("local", "s3") if k in result),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (args.out / f"search{suffix}.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / f"search{suffix}.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
