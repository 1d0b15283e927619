"""Loader benchmark: every loader row of issue 15 in one run, configurations alternated.

All rows read the same synthetic pairs (real format, ``catalog_builder.synthetic``) and produce
the same output (float32 normalised tensors per resolution group + float32 multi-hot):

- decode floor: one thread reading and decoding the same COG files with
  ``bigearth_stac.decode`` (DEFLATE and ZSTD COGs);
- ours, local: ``BigEarthNetStream(batch_size=32)`` with ``DataLoader(batch_size=None)``, 0 and
  2 workers, DEFLATE and ZSTD COGs; and single samples collated by ``DataLoader(batch_size=32)``;
- torchgeo 0.8.x ``BigEarthNet`` on the raw v1 layout (its own venv; skipped with a note
  when absent);
- LitData ``optimize`` of the raw arrays (raw and zstd chunks) read by ``StreamingDataset``,
  0 workers: a full epoch, and a searched subset (the rows of one label, about 5 %), against
  ours on the same subset; locally and from the loopback S3 server with 20 ms added per request;
- ours from s3rver (a fast loopback S3 server in Node; moto stays the test server), 0 and 2
  workers, directly and through the fault proxy adding 20 ms per request;
- the server's raw GET ceiling: boto3 and obstore, 32 GETs in flight, of the same objects,
  directly and through the proxy.

Every configuration runs in a fresh subprocess (imports are not timed; building the dataset
and its first read are), and the configurations are alternated over ``--rounds`` rounds (A B C
... A B C ...), so a slow spell of a shared machine hits every row alike. Reported: the median
over rounds and the spread (min-max), with a warning where the spread exceeds 25 % of the
median, and the CPU the run used (process and its DataLoader workers, % of one core).

    python -m benchmarks.bench_loader [--quick] [--pairs 600] [--rounds 3] [--workdir DIR]
                                      [--tgvenv /tmp/tgvenv]

Writes benchmarks/results/loader.json and loader.md. Needs ``litdata`` and ``zstd`` (bench
extra), Node.js with ``npm install --prefix benchmarks/.s3rver s3rver@3.7.1`` (the s3rver rows are
skipped with a note otherwise), and for the torchgeo row a venv with torch, torchvision and
torchgeo 0.8.x (``python -m venv /tmp/tgvenv && /tmp/tgvenv/bin/pip install torch==2.14.1
torchvision==0.29.1 'torchgeo==0.8.*'``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._rounds import over_rounds

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
S3RVER_DIR = Path(__file__).parent / ".s3rver"
BUCKET = "bench"
WIDE = 0.25
"""A spread (max - min) above this share of the median is flagged."""
log = logging.getLogger("benchmarks.bench_loader")


# -- data --------------------------------------------------------------------------------------


def prepare(workdir: Path, n: int, chunk_bytes: str) -> dict[str, Path]:
    """Synthetic raw pairs, their DEFLATE and ZSTD catalogs, LitData chunks and torchgeo's split
    files (cached in ``workdir``)."""
    from benchmarks._litdata_row import optimize_pairs
    from catalog_builder.build import BuildOptions, build
    from catalog_builder.cog import CogOptions
    from catalog_builder.sources import open_source
    from catalog_builder.store import LocalStore
    from catalog_builder.synthetic import generate

    raw = workdir / "raw"
    paths = {"raw": raw, "DEFLATE": workdir / "catalog-deflate", "ZSTD": workdir / "catalog-zstd",
             "litdata-raw": workdir / f"litdata-raw-{chunk_bytes}", "litdata-zstd": workdir / f"litdata-zstd-{chunk_bytes}"}
    done = workdir / "READY"
    if not done.exists():
        t0 = time.perf_counter()
        s2, s1 = generate(raw, n, seed=11)
        for codec in ("DEFLATE", "ZSTD"):
            options = BuildOptions(layout="stacked", scheduler="synchronous", cog=CogOptions(compress=codec))
            report = build(open_source(str(s2), str(s1)), LocalStore(paths[codec]), options)
            if not report.ok:
                raise RuntimeError(report.describe())
        table = local_table(paths["DEFLATE"])
        # torchgeo reads split CSVs of "s2_name,s1_name" lines at the root.
        pairs = [(r["id"], Path(r["s1_assets"][0]).parent.name) for r in table.select(["id", "s1_assets"]).to_pylist()]
        (raw / "bigearthnet-train.csv").write_text("\n".join(f"{a},{b}" for a, b in pairs) + "\n")
        for name in ("val", "test"):
            (raw / f"bigearthnet-{name}.csv").write_text("\n".join(f"{a},{b}" for a, b in pairs[:1]) + "\n")
        done.write_text("ok")
        log.info("generated %d pairs and built both catalogs in %.0f s", n, time.perf_counter() - t0)
    table = local_table(paths["DEFLATE"])
    for key, compression in (("litdata-raw", None), ("litdata-zstd", "zstd")):
        if not (paths[key] / "index.json").exists():
            shutil.rmtree(paths[key], ignore_errors=True)
            optimize_pairs(table, paths[key], compression, chunk_bytes)
    return paths


def local_table(cat: Path, base: str | None = None) -> pa.Table:
    from bigearth_stac.samples import sample_table

    base = base or str(cat)
    s2, s1 = (pq.read_table(cat / "index" / f"bigearthnet-{m}.parquet") for m in ("s2", "s1"))
    return sample_table(s2, f"{base}/index/bigearthnet-s2.parquet", "pair", s1, f"{base}/index/bigearthnet-s1.parquet")


def searched_subset(table: pa.Table, share: float) -> tuple[list[int], str]:
    """Rows of the 19-class label whose share of the table is closest to ``share`` (what a
    search by label returns), and how they were chosen."""
    counts: Counter[str] = Counter(c for labels in table.column("labels_19").to_pylist() for c in set(labels or ()))
    label = min(counts, key=lambda c: abs(counts[c] / len(table) - share))
    rows = [i for i, labels in enumerate(table.column("labels_19").to_pylist()) if label in (labels or ())]
    return rows, f"labels=[{label!r}]: {len(rows)} of {len(table)} pairs ({len(rows) / len(table):.1%})"


def write_table(table: pa.Table, path: Path) -> str:
    with pa.ipc.new_file(path, table.schema) as w:
        w.write_table(table)
    return str(path)


# -- the loopback S3 server (s3rver) -----------------------------------------------------------


class S3rver:
    """``s3rver`` (Node) on 127.0.0.1, a fast S3 server for throughput rows; stopped by its PID."""

    def __init__(self, data: Path) -> None:
        script = S3RVER_DIR / "node_modules" / "s3rver" / "bin" / "s3rver.js"
        node = shutil.which("node")
        if node is None or not script.exists():
            raise FileNotFoundError(f"s3rver is not installed: npm install --prefix {S3RVER_DIR} s3rver@3.7.1")
        data.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # Any well-formed signature is accepted: the clients sign with dummy credentials.
        self.process = subprocess.Popen([node, str(script), "-d", str(data), "-a", "127.0.0.1", "-p", str(port),
                                         "--silent", "--allow-mismatched-signatures", "--no-vhost-buckets"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.endpoint_url, timeout=1)
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("s3rver exited at start") from None
                time.sleep(0.2)
        self.stop()
        raise TimeoutError("s3rver did not answer within 30 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def upload(settings: Any, paths: dict[str, Path]) -> None:
    """The DEFLATE catalog's COGs and indexes and both LitData folders into the bucket."""
    from concurrent.futures import ThreadPoolExecutor

    client = settings.boto3_client()
    client.create_bucket(Bucket=BUCKET)
    cat = paths["DEFLATE"]
    files = [(p, f"catalog/{p.relative_to(cat).as_posix()}") for p in cat.rglob("*") if p.suffix in (".tif", ".parquet")]
    for key in ("litdata-raw", "litdata-zstd"):
        files += [(p, f"{key}/{p.name}") for p in paths[key].iterdir() if p.is_file()]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda f: client.put_object(Bucket=BUCKET, Key=f[1], Body=f[0].read_bytes()), files))


# -- one measured run (in a fresh subprocess) --------------------------------------------------


def _cpu() -> float:
    """CPU seconds of this process and its terminated children (DataLoader workers)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _settings(endpoint: str | None, reader: str = "auto") -> Any:
    from bigearth_stac.settings import StorageSettings

    if not endpoint:
        return None
    return StorageSettings(endpoint_url=endpoint, region="us-east-1", max_pool_connections=64, reader=reader)  # type: ignore[arg-type]


def run_floor(args: dict[str, Any]) -> dict[str, Any]:
    """One thread reading and decoding every COG of the table (bigearth_stac.decode)."""
    from bigearth_stac.bandplan import asset_expectations
    from bigearth_stac.decode import decode

    table = pa.ipc.open_file(args["table"]).read_all()
    expect = list(asset_expectations("s2", "stacked").values()) + list(asset_expectations("s1", "stacked").values())
    rows = [r["s2_assets"] + r["s1_assets"] for r in table.select(["s2_assets", "s1_assets"]).to_pylist()]
    t0, c0 = time.perf_counter(), _cpu()
    nbytes = 0
    for hrefs in rows:
        for href, e in zip(hrefs, expect, strict=True):
            with open(href, "rb") as fh:
                data = fh.read()
            nbytes += len(data)
            decode(data, e)
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"samples": len(rows), "seconds": seconds, "cpu": cpu, "bytes": nbytes, "requests": 4 * len(rows)}


def run_ours(args: dict[str, Any]) -> dict[str, Any]:
    """``BigEarthNetStream`` through a DataLoader: whole batches, or single samples collated."""
    from torch.utils.data import DataLoader

    from bigearth_stac.torch_dataset import BigEarthNetStream

    table = pa.ipc.open_file(args["table"]).read_all()
    if args.get("rows") is not None:
        table = table.take(pa.array(args["rows"], pa.int64()))
    batched = args.get("batched", True)
    t0, c0 = time.perf_counter(), _cpu()
    ds = BigEarthNetStream(table, settings=_settings(args.get("endpoint")), shuffle=args.get("shuffle", True),
                           batch_size=args["batch_size"] if batched else None)
    loader = DataLoader(ds, batch_size=None if batched else args["batch_size"], num_workers=args["workers"])
    n = sum(len(batch["id"]) for batch in loader)
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    stats = ds.stats
    return {"samples": n, "seconds": seconds, "cpu": cpu, "bytes": stats["bytes"], "requests": stats["requests"],
            "retries": stats["retries"]}


def run_ceiling(args: dict[str, Any]) -> dict[str, Any]:
    """GETs per second of the same objects, ``in_flight`` at a time, through the ObjectReader."""
    import threading

    from bigearth_stac.io import ObjectReader

    keys = json.loads(Path(args["keys"]).read_text())
    reader = ObjectReader(_settings(args["endpoint"], args["client"]), pool_size=args["in_flight"])
    lock = threading.Lock()
    position = [0]
    stop = time.perf_counter() + args["seconds"]

    def loop() -> None:
        while time.perf_counter() < stop:
            with lock:
                key = keys[position[0] % len(keys)]
                position[0] += 1
            reader.get(f"s3://{BUCKET}/{key}")

    reader.get(f"s3://{BUCKET}/{keys[0]}")  # the client exists before the clock starts
    t0, c0 = time.perf_counter(), _cpu()
    threads = [threading.Thread(target=loop) for _ in range(args["in_flight"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"samples": reader.requests - 1, "seconds": seconds, "cpu": cpu, "bytes": reader.bytes, "requests": reader.requests - 1,
            "client": reader.s3_client_kind}


def run_one(args: dict[str, Any]) -> dict[str, Any]:
    # Imported before any clock starts: imports are not what is measured (pyarrow imports
    # pandas on first use of some compute functions, ~0.4 s).
    import pandas  # noqa: F401
    import torch  # noqa: F401

    import bigearth_stac.torch_dataset  # noqa: F401

    if args.get("endpoint"):
        # The S3 clients too: the first S3 read of a process imports boto3 (obstore signs with
        # boto3's credential chain) and obstore, ~0.3 s here, once per process.
        import boto3  # noqa: F401
        import obstore  # noqa: F401
        import obstore.store  # noqa: F401

    kind = args["kind"]
    if kind == "floor":
        out = run_floor(args)
    elif kind == "ours":
        out = run_ours(args)
    elif kind == "ceiling":
        out = run_ceiling(args)
    elif kind == "litdata":
        from benchmarks._litdata_row import run

        out = run(args)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    out["samples_per_s"] = out["samples"] / out["seconds"]
    out["cpu_percent"] = 100 * out.pop("cpu") / out["seconds"]
    out["peak_rss"] = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                          resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024
    return out


def subprocess_run(args: dict[str, Any], python: str = sys.executable, script: str | None = None,
                   timeout: float = 900) -> dict[str, Any]:
    cmd = [python, script, json.dumps(args)] if script else [python, "-m", "benchmarks.bench_loader", "--run-one", json.dumps(args)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{args.get('kind', 'torchgeo')} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the rows ------------------------------------------------------------------------------------


def configurations(ns: argparse.Namespace, files: dict[str, Any], endpoints: dict[str, str]) -> list[dict[str, Any]]:
    """Every measured configuration: ``id``, ``group``, ``label`` and the run's arguments."""
    b = ns.batch_size
    rows: list[dict[str, Any]] = [
        {"id": "floor-deflate", "group": "local", "label": "decode floor: one thread, bigearth_stac.decode, DEFLATE COGs",
         "run": {"kind": "floor", "table": files["DEFLATE"]}},
        {"id": "floor-zstd", "group": "local", "label": "decode floor, ZSTD COGs",
         "run": {"kind": "floor", "table": files["ZSTD"]}},
    ]
    for codec in ("DEFLATE", "ZSTD"):
        for w in (0, 2):
            rows.append({"id": f"ours-{codec.lower()}-w{w}", "group": "local",
                         "label": f"ours, local {codec} COGs, batch_size={b}, {w} workers",
                         "run": {"kind": "ours", "table": files[codec], "workers": w, "batch_size": b}})
    for w in (0, 2):
        rows.append({"id": f"ours-single-w{w}", "group": "local",
                     "label": f"ours, local DEFLATE, single samples + DataLoader collate, {w} workers",
                     "run": {"kind": "ours", "table": files["DEFLATE"], "workers": w, "batch_size": b, "batched": False}})
    if files.get("torchgeo"):
        for w in (0, 2):
            rows.append({"id": f"torchgeo-w{w}", "group": "local", "label": f"{files['torchgeo_version']} BigEarthNet, raw v1, {w} workers",
                         "run": {"kind": "torchgeo", "root": files["torchgeo"], "workers": w, "batch_size": b}})
    subset = files["subset"]
    for where, endpoint in (("local", None), ("s3+20ms", endpoints.get("proxy"))):
        if where != "local" and endpoint is None:
            continue
        table = files["DEFLATE"] if endpoint is None else files["s3"]
        for what, sel in (("full epoch", None), ("subset", subset)):
            if sel is not None:  # ours over a full epoch: the rows ours-deflate-w0 and s3-lat-w0
                rows.append({"id": f"peer-ours-subset-{where}", "group": f"peer {what}, {where}",
                             "label": f"ours ({what}, {where})",
                             "run": {"kind": "ours", "table": table, "workers": 0, "batch_size": b, "endpoint": endpoint,
                                     "rows": sel, "shuffle": False}})
            for chunks in ("raw", "zstd"):
                rows.append({"id": f"peer-litdata-{chunks}-{what.split()[0]}-{where}", "group": f"peer {what}, {where}",
                             "label": f"LitData {chunks} chunks ({what}, {where})",
                             "run": {"kind": "litdata", "workers": 0, "batch_size": b, "endpoint": endpoint,
                                     "local_dir": files[f"litdata-{chunks}"], "subset": sel, "shuffle": sel is None,
                                     "input_dir": files[f"litdata-{chunks}"] if endpoint is None else f"s3://{BUCKET}/litdata-{chunks}"}})
    for server, endpoint in (("s3rver", endpoints.get("s3rver")), ("s3rver + 20 ms/request", endpoints.get("proxy"))):
        if endpoint is None:
            continue
        for w in (0, 2):
            rows.append({"id": f"s3-{'lat' if '20' in server else 'direct'}-w{w}", "group": "s3", "server": server,
                         "label": f"ours from {server}, batch_size={b}, {w} workers",
                         "run": {"kind": "ours", "table": files["s3"], "workers": w, "batch_size": b, "endpoint": endpoint}})
        for client in ("boto3", "obstore"):
            rows.append({"id": f"ceiling-{client}-{'lat' if '20' in server else 'direct'}", "group": "ceiling", "server": server,
                         "label": f"raw GETs, {client}, 32 in flight, {server}",
                         "run": {"kind": "ceiling", "client": client, "endpoint": endpoint, "keys": files["keys"],
                                 "in_flight": 32, "seconds": ns.ceiling_seconds}})
    return rows


def measure(config: dict[str, Any], tgvenv: Path) -> dict[str, Any]:
    run = config["run"]
    if run["kind"] == "torchgeo":
        return subprocess_run(run, python=str(tgvenv / "bin" / "python"), script=str(Path(__file__).with_name("_torchgeo_row.py")))
    return subprocess_run(run)


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread of each figure over the rounds."""
    out = over_rounds(results, ("samples_per_s", "cpu_percent", "bytes", "requests", "samples", "peak_rss",
                                "bytes_downloaded", "chunks_read"), ranged=("samples_per_s", "cpu_percent"))
    if "error" in out:
        return out
    ok = [r for r in results if "error" not in r]
    rate = out["samples_per_s"]
    out["wide"] = len(ok) > 1 and (out["samples_per_s_max"] - out["samples_per_s_min"]) > WIDE * rate
    for key in ("client", "chunks"):
        if key in ok[0]:
            out[key] = ok[0][key]
    return out


# -- orchestration -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="48 pairs, 2 rounds: a smoke test (figures mean nothing)")
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--subset", type=float, default=0.05, help="share of the pairs the searched label should hold")
    parser.add_argument("--latency", type=float, default=0.020, help="seconds the proxy adds to every request")
    parser.add_argument("--ceiling-seconds", type=float, default=3.0)
    parser.add_argument("--litdata-chunk-bytes", default="64MB", help="LitData's chunk_bytes")
    parser.add_argument("--workdir", default="/tmp/bigearth-bench-loader")
    parser.add_argument("--tgvenv", default="/tmp/tgvenv", help="venv with torchgeo 0.8.x")
    parser.add_argument("--rows", default=None,
                        help="only the rows whose id matches this regular expression (e.g. 'subset' for the "
                             "searched-subset rows at a larger --pairs)")
    parser.add_argument("--name", default="loader", help="results file name (benchmarks/results/NAME.json and .md)")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.run_one:
        print(json.dumps(run_one(json.loads(ns.run_one))))
        return
    if ns.quick:
        ns.pairs, ns.rounds, ns.ceiling_seconds = min(ns.pairs, 48), min(ns.rounds, 2), 1.0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("bigearth_devtools").setLevel(logging.WARNING)
    from bigearth_devtools.faultproxy import FaultPlan, start_fault_proxy
    from bigearth_devtools.s3server import CONFLICTING_ENV, DUMMY_CREDENTIALS

    started = time.perf_counter()
    n = ns.pairs
    workdir = Path(ns.workdir) / f"pairs-{n}"
    paths = prepare(workdir, n, ns.litdata_chunk_bytes)
    for name in CONFLICTING_ENV:
        os.environ.pop(name, None)
    os.environ.update(DUMMY_CREDENTIALS)  # inherited by the measured subprocesses
    # s3rver knows one key pair, S3RVER / S3RVER, and no session tokens.
    os.environ.update(AWS_ACCESS_KEY_ID="S3RVER", AWS_SECRET_ACCESS_KEY="S3RVER")
    os.environ.pop("AWS_SESSION_TOKEN", None)
    table = local_table(paths["DEFLATE"])
    rows, subset_note = searched_subset(table, ns.subset)
    s3_table = local_table(paths["DEFLATE"], base=f"s3://{BUCKET}/catalog")
    keys = [h.split(f"s3://{BUCKET}/", 1)[1] for r in s3_table.select(["s2_assets", "s1_assets"]).to_pylist()
            for h in r["s2_assets"] + r["s1_assets"]]
    files: dict[str, Any] = {
        "DEFLATE": write_table(table, workdir / "table-deflate.arrow"),
        "ZSTD": write_table(local_table(paths["ZSTD"]), workdir / "table-zstd.arrow"),
        "s3": write_table(s3_table, workdir / "table-s3.arrow"),
        "litdata-raw": str(paths["litdata-raw"]), "litdata-zstd": str(paths["litdata-zstd"]),
        "subset": rows,
    }
    (workdir / "keys.json").write_text(json.dumps(keys))
    files["keys"] = str(workdir / "keys.json")
    tg = torchgeo_version(Path(ns.tgvenv))
    if tg is not None:
        files["torchgeo"], files["torchgeo_version"] = str(paths["raw"]), f"torchgeo {tg}"
    notes: list[str] = [f"searched subset: {subset_note}"]
    if tg is None:
        notes.append(f"torchgeo rows skipped: no torchgeo in {ns.tgvenv} "
                     f"(python -m venv {ns.tgvenv} && {ns.tgvenv}/bin/pip install torch==2.14.1 torchvision==0.29.1 'torchgeo==0.8.*')")

    endpoints: dict[str, str] = {}
    server = proxy = None
    s3data = Path(tempfile.mkdtemp(prefix="s3rver-", dir=workdir))
    try:
        try:
            server = S3rver(s3data)
        except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
            notes.append(f"S3 rows skipped: {exc}")
        if server is not None:
            from bigearth_stac.settings import StorageSettings

            t0 = time.perf_counter()
            upload(StorageSettings(endpoint_url=server.endpoint_url, region="us-east-1"), paths)
            log.info("uploaded to s3rver in %.0f s", time.perf_counter() - t0)
            proxy = start_fault_proxy(server.endpoint_url, FaultPlan(latency=ns.latency))
            endpoints = {"s3rver": server.endpoint_url, "proxy": proxy.endpoint_url}
        configs = configurations(ns, files, endpoints)
        if ns.rows:
            configs = [c for c in configs if re.search(ns.rows, c["id"])]
            notes.append(f"rows matching {ns.rows!r} only")
        raw: dict[str, list[dict[str, Any]]] = {c["id"]: [] for c in configs}
        for rnd in range(ns.rounds):
            for config in configs:  # alternated: A B C ... per round
                log.info("round %d/%d: %s", rnd + 1, ns.rounds, config["label"])
                try:
                    raw[config["id"]].append(measure(config, Path(ns.tgvenv)))
                except Exception as exc:  # a row that fails is reported, not fatal
                    log.warning("%s failed: %s", config["id"], str(exc)[-800:])
                    raw[config["id"]].append({"error": str(exc)[-800:]})
    finally:
        if proxy is not None:
            proxy.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(s3data, ignore_errors=True)
    results = {
        "pairs": n, "rounds": ns.rounds, "quick": ns.quick, "batch_size": ns.batch_size, "latency_s": ns.latency,
        "litdata_chunk_bytes": ns.litdata_chunk_bytes, "subset_rows": len(rows), "notes": notes,
        "rows": [{k: c[k] for k in ("id", "group", "label", "server") if k in c} | summarise(raw[c["id"]]) | {"runs": raw[c["id"]]}
                 for c in configs],
        "environment": environment(), "duration_s": time.perf_counter() - started,
    }
    write(results, ns.name)


def torchgeo_version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    proc = subprocess.run([str(python), "-c", "import torchgeo; print(torchgeo.__version__)"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def environment() -> dict[str, Any]:
    import imagecodecs
    import tifffile
    import torch

    env = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
           "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
           "tifffile": tifffile.__version__, "imagecodecs": imagecodecs.__version__,
           "load_average_at_end": os.getloadavg()}
    for name in ("obstore", "litdata", "boto3"):
        try:
            env[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            env[name] = None
    return env


# -- report --------------------------------------------------------------------------------------


def _rate(r: dict[str, Any]) -> str:
    if "samples_per_s" not in r:
        return f"failed: {str(r.get('error', ''))[:100]}"
    spread = f"{r['samples_per_s_min']:,.0f}-{r['samples_per_s_max']:,.0f}"
    return f"**{r['samples_per_s']:,.0f}** | {spread}{' (wide)' if r.get('wide') else ''}"


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v / 1e6:,.1f}"


def write(results: dict[str, Any], name: str = "loader") -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = {r["id"]: r for r in results["rows"]}
    lines = ["# Streaming loader benchmark", "",
             f"{results['pairs']} synthetic pairs (real format){' - quick mode: a smoke test, figures mean nothing' if results['quick'] else ''}; "
             f"{results['rounds']} rounds, configurations alternated, each run in a fresh process; median and min-max over the rounds "
             f"(**wide** where the spread exceeds {WIDE:.0%} of the median). CPU: the run's process and its DataLoader workers, % of one core.",
             ""]
    lines += ["## Local files", "", "| row | samples/s | min-max | CPU % | KB read/sample |", "|---|---|---|---|---|"]
    for r in results["rows"]:
        if r["group"] == "local":
            per = r["bytes"] / max(r.get("samples", 1), 1) / 1e3 if r.get("bytes") else None
            lines.append(f"| {r['label']} | {_rate(r)} | {r.get('cpu_percent', 0):.0f} | {'-' if per is None else f'{per:.0f}'} |")
    lines += ["", f"## Peers: full epoch and a searched subset ({results['subset_rows']} pairs), 0 workers", "",
              "| row | samples/s | min-max | MB read | requests |", "|---|---|---|---|---|"]
    same = {"peer full epoch, local": "ours-deflate-w0", "peer full epoch, s3+20ms": "s3-lat-w0"}
    shown: set[str] = set()
    for r in results["rows"]:
        if r["group"] in same and r["group"] not in shown and same[r["group"]] in rows:
            shown.add(r["group"])
            o = rows[same[r["group"]]]
            lines.append(f"| ours ({r['group'].removeprefix('peer ')}; = {o['label']}) | {_rate(o)} | {_mb(o.get('bytes'))} | {o.get('requests', 0):,.0f} |")
        if r["group"].startswith("peer"):
            nbytes = r["bytes_downloaded"] if r.get("bytes_downloaded") is not None else r.get("bytes")
            requests = f"{r['requests']:,.0f}" if r.get("requests") is not None else f"{r.get('chunks_read', 0):.0f} of {r.get('chunks', '?')} chunks"
            lines.append(f"| {r['label']} | {_rate(r)} | {_mb(nbytes)} | {requests} |")
    lines += ["", "## From the loopback S3 server (s3rver), beside the server's raw GET ceiling", "",
              "| row | samples/s (or GET/s) | min-max | CPU % | requests/sample |", "|---|---|---|---|---|"]
    for r in results["rows"]:
        if r["group"] in ("s3", "ceiling"):
            per = r["requests"] / max(r["samples"], 1) if r.get("requests") and r["group"] == "s3" else None
            lines.append(f"| {r['label']} | {_rate(r)} | {r.get('cpu_percent', 0):.0f} | {'-' if per is None else f'{per:.2f}'} |")
    lines += ["", "## Against the targets of issue 15", ""] + targets(rows)
    wide = [r["label"] for r in results["rows"] if r.get("wide")]
    if wide:
        lines += ["", f"**Warning: wide spread** (max - min > {WIDE:.0%} of the median) in {len(wide)} rows: "
                  + "; ".join(wide) + ". The machine was not quiet: rerun before quoting these."]
    env = results["environment"]
    lines += ["", "Notes: " + " ".join(f"{n}." for n in results["notes"]),
              f"LitData chunks of {results['litdata_chunk_bytes']}; its bytes read are, locally, the chunks holding the samples, "
              "from S3 what its downloader transferred (whole chunks, or single items by byte range from uncompressed chunks). LitData's subset reads items by index in chunk order (its best case) "
              "and is not collated; ours yields collated batches.",
              "", f"Environment: Python {env['python']}, torch {env['torch']}, obstore {env.get('obstore')}, litdata {env.get('litdata')}, "
              f"tifffile {env['tifffile']}, imagecodecs {env['imagecodecs']}, {env['cpus']} CPUs ({env['platform']}); "
              f"load average at the end {', '.join(f'{x:.2f}' for x in env['load_average_at_end'])}; "
              f"the run took {results['duration_s'] / 60:.1f} min."]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def targets(rows: dict[str, dict[str, Any]]) -> list[str]:
    def rate(key: str) -> float | None:
        return rows.get(key, {}).get("samples_per_s")

    def ratio(a: str, b: str) -> float | None:
        x, y = rate(a), rate(b)
        return x / y if x and y else None

    def line(text: str, value: float | None, target: float, unit: str = "x") -> str:
        if value is None:
            return f"- {text}: not measured"
        return f"- {text}: **{value:.2f}{unit}** (target >= {target}{unit}: {'met' if value >= target else 'missed'})"

    out = [line("ours, 0 workers / torchgeo, 0 workers", ratio("ours-deflate-w0", "torchgeo-w0"), 8),
           line("ours, 0 workers / decode floor", ratio("ours-deflate-w0", "floor-deflate"), 0.8),
           line("ours, 2 workers / ours, 0 workers", ratio("ours-deflate-w2", "ours-deflate-w0"), 1.8),
           line("ZSTD / DEFLATE decode floor", ratio("floor-zstd", "floor-deflate"), 1.0),
           line("ours full epoch / LitData zstd, local", ratio("ours-deflate-w0", "peer-litdata-zstd-full-local"), 1.0),
           line("ours full epoch / LitData zstd, S3 + 20 ms", ratio("s3-lat-w0", "peer-litdata-zstd-full-s3+20ms"), 1.0)]
    for where in ("local", "s3+20ms"):
        for chunks in ("raw", "zstd"):
            ours, peer = rows.get(f"peer-ours-subset-{where}", {}), rows.get(f"peer-litdata-{chunks}-subset-{where}", {})
            speed = ratio(f"peer-ours-subset-{where}", f"peer-litdata-{chunks}-subset-{where}")
            ours_bytes = ours.get("bytes")
            peer_bytes = peer["bytes_downloaded"] if peer.get("bytes_downloaded") is not None else peer.get("bytes")
            out.append(line(f"subset {where}: ours / LitData {chunks}, samples/s", speed, 5))
            out.append(line(f"subset {where}: LitData {chunks} / ours, bytes read",
                            peer_bytes / ours_bytes if peer_bytes and ours_bytes else None, 5))
    for w in (0, 2):
        value = rate(f"s3-direct-w{w}")
        out.append(f"- ours from s3rver, {w} workers: " + ("not measured" if value is None else
                   f"**{value:,.0f} samples/s** (target >= 300: {'met' if value >= 300 else 'missed'})"))
    return out


if __name__ == "__main__":
    main()
