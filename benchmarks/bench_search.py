"""Search benchmark at archive scale: latency, bytes and requests, local and from a loopback S3
server behind a proxy that adds 20 ms to every request.

    python -m benchmarks.bench_search            # 590,326 rows per collection (the whole archive)
    python -m benchmarks.bench_search --quick    # 50,000 rows, 2 rounds: a smoke test

The index is built from the official ``s1_s2_name_country_season`` table (real names, countries,
seasons, splits and flags; synthesized labels, label masks and footprints in each tile's real UTM
zone) with the builder's own sorting and row-group writer (:mod:`bigearth_devtools.synthetic_index`).
It is generated once into ``--workdir`` as ``search-<rows>-layout<INDEX_LAYOUT_VERSION>``: a change
of the index layout (:data:`bigearth_stac.contract.INDEX_LAYOUT_VERSION`) generates it anew.
Each query is timed end to end as a user runs it: ``catalog.search(...)`` then ``.ids()``.

Configurations, alternated query by query in every round (A B C D E, A B C D E, ...), so that a
busy moment of the machine hits all of them alike; medians and spreads (min-max, IQR) over all
rounds, with a warning where the spread is wide:

- ``local``        catalog opened once (footer read, in-memory columns loaded): a repeated query;
- ``local first``  a fresh ``Catalog.open`` and its first query (what a one-off CLI search costs);
- ``S3 cold``      a fresh catalog with an empty index cache: its column chunks fetched (the open,
                   root + collections + HEAD + footer, is timed apart);
- ``S3 reopen``    a fresh catalog on a warm cache (as in a new process): nothing fetched; the
                   open (root + collections + the identity check) is timed apart;
- ``S3 repeat``    the same query again on an open catalog (a session).

The S3 server is ``s3rver`` (Node; fast enough not to be the bottleneck) when found (``--s3rver
PATH``, ``$S3RVER``, ``node_modules/.bin/s3rver``), else moto, whose cost per range request grows
with the object's size: its figures are the server's, not the client's. The server's own ceiling
(range GETs/s, 16 threads, without the proxy) is reported beside the S3 rows. The baseline is
what a user without this project does: pystac walking item JSON, on a sample, extrapolated
linearly to the archive. Results: ``benchmarks/results/search.{json,md}`` (``-quick`` suffix in
quick mode).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
from bigearth_devtools.faultproxy import FaultPlan, start_fault_proxy
from bigearth_devtools.synthetic_index import write_synthetic_catalog

from bigearth_stac._indexcache import IndexCache
from bigearth_stac._indexfs import counting_filesystem
from bigearth_stac.catalog import Catalog
from bigearth_stac.contract import INDEX_LAYOUT_VERSION
from bigearth_stac.settings import StorageSettings

log = logging.getLogger("benchmarks.bench_search")
RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
FULL = 590_326
TILE = "33UUP"  # Austria; one of the large tiles of the archive
LATENCY = 0.020
CONFIGS = ("local", "local first", "S3 cold", "S3 reopen", "S3 repeat")
WIDE = 0.5
"""A configuration's spread is flagged when (max - min) / median exceeds this."""
TARGETS_MS = {
    ("local", "single label"): 30, ("local", "label + split + no snow/cloud"): 30,
    ("local", "label + bbox + split"): 15,
    **{("S3 cold", q): 300 for q in ("single label", "label + bbox + split", "polygon intersects", "CQL2 text filter")},
}
"""Targets of issue 15 (p50, ms)."""


def queries(tile_bbox: list[float]) -> dict[str, dict[str, Any]]:
    """The fixed query set (issue 8); the README's remote examples are the bbox, label and CQL2 rows."""
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


def summary(samples: list[float]) -> dict[str, float]:
    """Median, min, max, quartiles (ms) and whether the spread is wide."""
    ms = sorted(x * 1e3 for x in samples)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    med = statistics.median(ms)
    return {"n": len(ms), "p50_ms": med, "min_ms": ms[0], "max_ms": ms[-1], "q1_ms": q[0], "q3_ms": q[2],
            "wide": bool(med > 0 and (ms[-1] - ms[0]) / med > WIDE)}


# -----------------------------------------------------------------------------------------------
# Servers
# -----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_s3rver(explicit: str | None) -> str | None:
    for candidate in (explicit, os.environ.get("S3RVER"), str(ROOT / "node_modules" / ".bin" / "s3rver"),
                      shutil.which("s3rver")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


class Server:
    """A loopback S3 server (s3rver or moto) with one bucket; stop() ends exactly its process."""

    def __init__(self, s3rver: str | None, workdir: Path) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.moto: Any = None
        if s3rver:
            port = _free_port()
            data = workdir / "s3rver"
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(parents=True)
            self.proc = subprocess.Popen([s3rver, "-d", str(data), "-a", "127.0.0.1", "-p", str(port), "--silent",
                                          "--configure-bucket", "bench"], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.endpoint = f"http://127.0.0.1:{port}"
            version = subprocess.run([s3rver, "--version"], capture_output=True, text=True).stdout.strip()
            self.name = f"s3rver {version}"
            # s3rver checks signatures against its own default key pair.
            os.environ.update(AWS_ACCESS_KEY_ID="S3RVER", AWS_SECRET_ACCESS_KEY="S3RVER", AWS_REGION="us-east-1",
                              AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
            os.environ.pop("AWS_SESSION_TOKEN", None)
            deadline = time.monotonic() + 30
            while not self._answers():
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"s3rver did not start on {self.endpoint}")
                time.sleep(0.1)
        else:
            from bigearth_devtools.s3server import (
                CONFLICTING_ENV,
                DUMMY_CREDENTIALS,
                start_s3_server,
            )

            for k in CONFLICTING_ENV:
                os.environ.pop(k, None)
            os.environ.update(DUMMY_CREDENTIALS)
            self.moto = start_s3_server()
            self.moto.create_bucket("bench")
            self.endpoint = self.moto.endpoint_url
            self.name = "moto (its cost per range GET grows with the object's size)"
        self.bucket = "bench"

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def settings(self, endpoint: str | None = None) -> StorageSettings:
        return StorageSettings(endpoint_url=endpoint or self.endpoint, region="us-east-1", checksums="when_required")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.moto is not None:
            self.moto.stop()


def upload(server: Server, root: Path) -> None:
    client = server.settings().boto3_client()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), server.bucket, f"cat/{path.relative_to(root).as_posix()}")


def ceiling(settings: StorageSettings, path: str, size: int, seconds: float = 2.0, threads: int = 16) -> float:
    """Range GETs (64 KiB) per second the server answers, ``threads`` in flight, no proxy."""
    fs = settings.pyarrow_filesystem()
    handle = fs.open_input_file(path)
    stop = time.monotonic() + seconds
    done = [0] * threads

    def loop(i: int) -> None:
        rng = random.Random(i)
        while time.monotonic() < stop:
            handle.read_at(65536, rng.randrange(0, max(1, size - 65536)))
            done[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.monotonic() - t0)


# -----------------------------------------------------------------------------------------------
# Runs
# -----------------------------------------------------------------------------------------------


class Bench:
    """The configurations, each a function ``(query name, params) -> seconds`` (plus facts)."""

    def __init__(self, root: Path, workdir: Path, server: Server | None, proxy_endpoint: str | None,
                 proxy: Any, reps: int) -> None:
        self.root = root
        self.workdir = workdir
        self.server = server
        self.proxy = proxy
        self.reps = reps
        self.local = Catalog.open(str(root))
        self.facts: dict[str, dict[str, dict[str, float]]] = {}
        if server is not None:
            self.url = f"s3://{server.bucket}/cat/catalog.json"
            self.settings = server.settings(proxy_endpoint)
            self.session_cache = IndexCache(workdir / "cache-session")
            self.session = Catalog.open(self.url, settings=self.settings, cache=self.session_cache)

    def fact(self, config: str, name: str, **values: float) -> None:
        self.facts.setdefault(config, {}).setdefault(name, {}).update(values)

    def run(self, config: str, name: str, params: dict[str, Any]) -> list[float]:
        return getattr(self, "_" + config.lower().replace(" ", "_"))(name, params)

    def _timed(self, fn: Callable[[], Any], n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    def _local(self, name: str, params: dict[str, Any]) -> list[float]:
        rows = len(self.local.search(**params).ids())  # warm-up: loads what the query keeps in memory
        self.fact("local", name, rows=rows)
        return self._timed(lambda: self.local.search(**params).ids(), self.reps)

    def _local_first(self, name: str, params: dict[str, Any]) -> list[float]:
        def first() -> None:
            Catalog.open(str(self.root)).search(**params).ids()
        return self._timed(first, 1)

    def _s3_cold(self, name: str, params: dict[str, Any]) -> list[float]:
        cache = self.workdir / "cache-cold"
        shutil.rmtree(cache, ignore_errors=True)
        inner = self.settings.pyarrow_filesystem()
        fs, stats = counting_filesystem(inner)
        t0 = time.perf_counter()
        cat = Catalog.open(self.url, settings=self.settings, filesystem=fs, cache=cache)
        _ = cat.index("s2").dataset  # identity check (HEAD) and footer (one request for the tail)
        opened = time.perf_counter()
        footer = stats.bytes
        self.proxy.reset_log()
        stats.reset()
        t1 = time.perf_counter()
        cat.search(**params).ids()
        elapsed = time.perf_counter() - t1
        self.fact("S3 cold", name, open_ms=(opened - t0) * 1e3, bytes=stats.bytes, range_requests=stats.reads,
                  requests=self.proxy.count(), footer_bytes=footer, index_bytes=cat.index("s2").nbytes)
        return [elapsed]

    def _s3_reopen(self, name: str, params: dict[str, Any]) -> list[float]:
        cache = self.workdir / "cache-cold"  # warmed by this query's cold run just before
        self.proxy.reset_log()
        t0 = time.perf_counter()
        cat = Catalog.open(self.url, settings=self.settings, cache=cache)
        _ = cat.index("s2").dataset  # the identity check (HEAD); the footer comes from the cache
        t1 = time.perf_counter()
        cat.search(**params).ids()
        elapsed = time.perf_counter() - t1
        self.fact("S3 reopen", name, requests=self.proxy.count(), open_ms=(t1 - t0) * 1e3)
        return [elapsed]

    def _s3_repeat(self, name: str, params: dict[str, Any]) -> list[float]:
        for _ in range(2):  # the first fetches into the cache, the second may load columns into memory
            self.session.search(**params).ids()
        self.proxy.reset_log()
        out = self._timed(lambda: self.session.search(**params).ids(), self.reps)
        self.fact("S3 repeat", name, requests=self.proxy.count() / self.reps)
        return out


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
        for stac_item in pystac.Catalog.from_file(str(base / "catalog.json")).get_items(recursive=True):
            p = stac_item.properties
            if (set(params["labels"]) & set(p["bigearthnet:labels_19"]) and p["bigearthnet:split"] == params["split"]
                    and shapely.intersects(shapely.geometry.shape(stac_item.geometry), box)):
                hits += 1
        elapsed = time.perf_counter() - t0
    return {"sample_items": sample, "sample_s": elapsed, "hits_in_sample": hits,
            "extrapolated_s": elapsed * total / sample}


# -----------------------------------------------------------------------------------------------
# Report
# -----------------------------------------------------------------------------------------------


def _cell(s: dict[str, float] | None) -> str:
    if not s:
        return "-"
    flag = " (!)" if s["wide"] else ""
    return f"{s['p50_ms']:.1f} [{s['min_ms']:.1f}-{s['max_ms']:.1f}]{flag}"


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    s3 = result.get("s3")
    lines = [
        f"# Search benchmark ({rows:,} rows per collection)",
        "",
        f"Machine: {result['machine']}. Index (S2): {result['index_bytes'] / 1e6:.1f} MB, "
        f"{result['row_groups']} row groups, index layout {result.get('index_layout', 1)} (`INDEX_LAYOUT_VERSION`). "
        f"{result['rounds']} rounds, configurations alternated query by "
        f"query; {result['reps']} timed runs per round for `local` and `S3 repeat`, one for the others.",
        "Latency: `catalog.search(...).ids()` end to end, in ms: median [min-max] over all rounds; (!) marks a "
        f"spread (max - min) over {WIDE:.0%} of the median.",
    ]
    if s3:
        lines.append(f"S3: {s3['server']} on loopback behind a proxy adding {s3['latency_ms']:.0f} ms to every "
                     f"request; the server alone answers {s3['ceiling_gets']:.0f} range GETs/s (64 KiB, 16 in flight). "
                     f"Open (root + collections + HEAD + footer): {s3['open_ms']:.0f} ms on a cold cache, "
                     f"{s3['reopen_ms']:.0f} ms on a warm one (footer from the cache).")
    lines += ["", "| query | rows | " + " | ".join(CONFIGS) + " | S3 cold: bytes (% of index), requests |",
              "|---|---:|" + "---:|" * len(CONFIGS) + "---:|"]
    for name, per in result["latency"].items():
        facts = result["facts"]
        cold = facts.get("S3 cold", {}).get(name)
        cold_cell = (f"{cold['bytes'] / 1e6:.2f} MB ({100 * cold['bytes'] / cold['index_bytes']:.2f}%), "
                     f"{cold['requests']:.0f}" if cold else "-")
        lines.append(f"| {name} | {facts['local'][name]['rows']:,.0f} | "
                     + " | ".join(_cell(per.get(c)) for c in CONFIGS) + f" | {cold_cell} |")
    if s3:
        # Requests seen by the proxy during the open and the query (the documents included).
        reopen = [f["requests"] for f in result["facts"].get("S3 reopen", {}).values()]
        repeat = [f["requests"] for f in result["facts"].get("S3 repeat", {}).values()]
        lines += ["", f"Requests to the store: S3 reopen {min(reopen):.0f}-{max(reopen):.0f} per open + query (the root "
                  "catalog, two collections and one HEAD, the identity check: no range request); S3 repeat "
                  f"{max(repeat):.0f} per query."]
    b = result.get("pystac")
    if b:
        lines += ["", f"Baseline, pystac walking item JSON (label + bbox + split, local disk): {b['sample_items']:,} items "
                  f"in {b['sample_s']:.1f} s, extrapolated to {rows:,} items: **{b['extrapolated_s']:.0f} s**."]
    lines += ["", "Targets (issue 15, p50):"]
    for (config, name), target in TARGETS_MS.items():
        s = result["latency"].get(name, {}).get(config)
        if s:
            verdict = "met" if s["p50_ms"] <= target else "NOT met"
            lines.append(f"- {config}, {name}: <= {target} ms: {s['p50_ms']:.1f} ms, {verdict}")
    if result["warnings"]:
        lines += ["", "Warnings:"] + [f"- {w}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50,000 rows, 2 rounds, 2 runs per round (a smoke test)")
    parser.add_argument("--rows", type=int, help="rows per collection (default: all 590,326)")
    parser.add_argument("--rounds", type=int, help="rounds over all configurations (default 5; quick 2)")
    parser.add_argument("--reps", type=int, help="timed runs per round of `local` and `S3 repeat` (default 5; quick 2)")
    parser.add_argument("--pystac-sample", type=int, help="items of the pystac baseline (default 10,000; quick 300)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "bigearth-stac-bench"),
                        help="folder for the generated catalog (reused between runs) and the caches")
    parser.add_argument("--s3rver", help="path of the s3rver executable (default: $S3RVER, node_modules/.bin, PATH)")
    parser.add_argument("--no-s3", action="store_true", help="local configurations only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("BIGEARTH_STAC_CACHE_DIR", "off")  # no stray default cache: every config names its own
    rows = args.rows or (50_000 if args.quick else FULL)
    rounds = args.rounds or (2 if args.quick else 5)
    reps = args.reps or (2 if args.quick else 5)
    workdir = Path(args.workdir)
    # Keyed by the index layout too: a catalog generated by an older layout is not reused.
    root = workdir / f"search-{rows}-layout{INDEX_LAYOUT_VERSION}"
    if not (root / "catalog.json").exists():
        log.info("building a %d-row catalog at %s", rows, root)
        t0 = time.perf_counter()
        write_synthetic_catalog(root, None if rows == FULL else rows)
        log.info("built in %.0f s", time.perf_counter() - t0)
    index = root / "index" / "bigearthnet-s2.parquet"
    meta = pq.ParquetFile(index).metadata
    tiles = pq.read_table(index, columns=["bigearthnet:tile", "bbox"])
    bb = tiles.filter(pc.equal(tiles.column("bigearthnet:tile"), TILE)).column("bbox").combine_chunks()
    tile_bbox = [pc.min(bb.field("xmin")).as_py(), pc.min(bb.field("ymin")).as_py(),
                 pc.max(bb.field("xmax")).as_py(), pc.max(bb.field("ymax")).as_py()]
    qs = queries(tile_bbox)
    result: dict[str, Any] = {
        "rows": meta.num_rows, "row_groups": meta.num_row_groups, "index_bytes": index.stat().st_size,
        "index_layout": INDEX_LAYOUT_VERSION,
        "tile": TILE, "tile_bbox": tile_bbox, "rounds": rounds, "reps": reps, "queries": qs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}",
        "warnings": [],
    }
    configs = ["local", "local first"] if args.no_s3 else list(CONFIGS)
    server = proxy = None
    try:
        if not args.no_s3:
            s3rver = find_s3rver(args.s3rver)
            if s3rver is None:
                result["warnings"].append("s3rver not found (npm install s3rver; --s3rver PATH): S3 rows use moto, "
                                          "whose cost per range GET grows with the object's size")
            server = Server(s3rver, workdir)
            upload(server, root)
            result["s3"] = {"server": server.name, "latency_ms": LATENCY * 1e3,
                            "ceiling_gets": ceiling(server.settings(), f"{server.bucket}/cat/index/bigearthnet-s2.parquet",
                                                    result["index_bytes"])}
            proxy = start_fault_proxy(server.endpoint, FaultPlan(latency=LATENCY))
        bench = Bench(root, workdir, server, proxy.endpoint_url if proxy else None, proxy, reps)
        samples: dict[str, dict[str, list[float]]] = {name: {c: [] for c in configs} for name in qs}
        for r in range(rounds):
            log.info("round %d of %d", r + 1, rounds)
            for name, params in qs.items():
                for config in configs:
                    samples[name][config] += bench.run(config, name, params)
        result["latency"] = {name: {c: summary(v) for c, v in per.items() if v} for name, per in samples.items()}
        result["facts"] = bench.facts
        if server is not None:
            result["s3"]["open_ms"] = statistics.median(f["open_ms"] for f in bench.facts["S3 cold"].values())
            result["s3"]["reopen_ms"] = statistics.median(f["open_ms"] for f in bench.facts["S3 reopen"].values())
    finally:
        if proxy is not None:
            proxy.stop()
        if server is not None:
            server.stop()
    for name, per in result["latency"].items():
        for config, s in per.items():
            if s["wide"]:
                result["warnings"].append(f"{config}, {name}: wide spread {s['min_ms']:.1f}-{s['max_ms']:.1f} ms "
                                          f"around {s['p50_ms']:.1f} (a busy machine?)")
    sample = args.pystac_sample or (300 if args.quick else 10_000)
    if sample > 0:
        result["pystac"] = pystac_baseline(root, min(sample, meta.num_rows), meta.num_rows, qs["label + bbox + split"])
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (args.out / f"search{suffix}.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / f"search{suffix}.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
