"""Streaming loader throughput: samples/s, bytes and requests per sample, peak RSS per worker.

Rows, on the same synthetic pairs (real format, ``catalog_builder.synthetic``), each run with 0
and 2 DataLoader workers, every run in a fresh subprocess (clean RSS figures):

  (a) torchgeo's ``BigEarthNet`` on the raw v1 layout (14 GDAL opens per pair; own venv)
  (b) ``BigEarthNetStream`` from local disk (stacked layout: 4 objects per pair)
  (c) the same from the loopback S3 server (moto, real HTTP)
  (d) the same server behind a loopback proxy adding 20 ms to every request
  (e) WebDataset-style tar shards of the same samples, local and from the S3 server

Peak RSS per worker at 600 and 6,000 samples: the 6,000-sample runs cycle the 600-pair table
(and shard list) ten times rather than building 6,000 pairs. Also the S3 server's own ceiling
(GET requests/s, measured alone), and a GPU mode (ResNet-18 from the loopback store) when CUDA
is present. Ratios come from one run on one machine: compare rows, not absolute figures.

    python -m benchmarks.bench_loader [--quick] [--workdir DIR] [--tgvenv /tmp/tgvenv]

Writes benchmarks/results/loader.json and loader.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.bench_loader")


# -- data --------------------------------------------------------------------------------------


def prepare(workdir: Path, n: int) -> dict[str, Path]:
    """Synthetic raw pairs, their stacked catalog, tar shards and torchgeo split files (cached)."""
    from catalog_builder.build import BuildOptions, build
    from catalog_builder.sources import open_source
    from catalog_builder.store import LocalStore
    from catalog_builder.synthetic import generate

    raw, cat = workdir / "raw", workdir / "catalog"
    done = workdir / "READY"
    if not done.exists():
        t0 = time.perf_counter()
        s2, s1 = generate(raw, n, seed=11)
        report = build(open_source(str(s2), str(s1)), LocalStore(cat), BuildOptions(layout="stacked", scheduler="synchronous"))
        if not report.ok:
            raise RuntimeError(report.describe())
        log.info("generated and built %d pairs in %.0f s", n, time.perf_counter() - t0)
    table = local_table(cat)
    if not done.exists():
        from benchmarks._tarstream import write_shards

        write_shards(table, workdir / "shards")
        # torchgeo reads split CSVs of "s2_name,s1_name" lines at the root.
        pairs = [(r["id"], Path(r["s1_assets"][0]).parent.name) for r in table.select(["id", "s1_assets"]).to_pylist()]
        for size in (n, 10 * n):
            lines = "\n".join(f"{a},{b}" for a, b in (pairs * 10)[:size])
            (raw / f"split-{size}.csv").write_text(lines + "\n")
        for name in ("val", "test"):
            (raw / f"bigearthnet-{name}.csv").write_text("\n".join(f"{a},{b}" for a, b in pairs[:1]) + "\n")
        done.write_text("ok")
    return {"raw": raw, "catalog": cat, "shards": workdir / "shards"}


def local_table(cat: Path, base: str | None = None) -> pa.Table:
    from bigearth_stac.samples import sample_table

    base = base or str(cat)
    s2, s1 = (pq.read_table(cat / "index" / f"bigearthnet-{m}.parquet") for m in ("s2", "s1"))
    return sample_table(s2, f"{base}/index/bigearthnet-s2.parquet", "pair", s1, f"{base}/index/bigearthnet-s1.parquet")


def cycle(table: pa.Table, size: int) -> pa.Table:
    """``table`` repeated to ``size`` rows, ids made unique (``<id>#<k>``)."""
    reps = -(-size // len(table))
    big = pa.concat_tables([table] * reps).slice(0, size)
    ids = [f"{i}#{k // len(table)}" for k, i in enumerate(big.column("id").to_pylist())]
    return big.set_column(0, "id", pa.array(ids, pa.string()))


def upload(settings: Any, bucket: str, cat: Path, shards: Path) -> None:
    """COGs and indexes of the catalog, and the tar shards, into the bucket (32 threads)."""
    from concurrent.futures import ThreadPoolExecutor

    client = settings.boto3_client()
    client.create_bucket(Bucket=bucket)
    files = [(p, f"catalog/{p.relative_to(cat).as_posix()}") for p in cat.rglob("*") if p.suffix in (".tif", ".parquet")]
    files += [(p, f"shards/{p.name}") for p in shards.glob("*.tar")]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda f: client.put_object(Bucket=bucket, Key=f[1], Body=f[0].read_bytes()), files))


# -- one measured run (in a subprocess) ----------------------------------------------------------


def _hwm() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def run_one(args: dict[str, Any]) -> dict[str, Any]:
    """Iterate one loader configuration; returns throughput, traffic and peak RSS per worker."""
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data._utils.collate import default_collate

    from bigearth_stac.settings import StorageSettings

    settings = StorageSettings(endpoint_url=args["endpoint"], max_pool_connections=64) if args.get("endpoint") else None

    def collate(batch: list) -> dict:
        out = default_collate(batch)
        info = torch.utils.data.get_worker_info()
        out["_rss"] = torch.tensor([info.id if info else -1, _hwm()])
        return out

    if args["kind"] == "tar":
        from benchmarks._tarstream import TarShardStream

        shards = (args["shards"] * 10)[: args["n_shards"]]
        ds: Any = TarShardStream(shards, settings=settings)
    else:
        from bigearth_stac.torch_dataset import BigEarthNetStream

        table = cycle(pa.ipc.open_file(args["table"]).read_all(), args["rows"])
        ds = BigEarthNetStream(table, settings=settings, max_in_flight=args.get("max_in_flight", 32), shuffle=True)
    loader = DataLoader(ds, batch_size=args["batch_size"], num_workers=args["workers"], collate_fn=collate)
    t0 = time.perf_counter()
    n, rss = 0, {}
    for batch in loader:
        n += len(batch["id"])
        wid, hwm = batch["_rss"].tolist()
        rss[wid] = max(rss.get(wid, 0), hwm)
        if args.get("limit") and n >= args["limit"]:
            break
    dt = time.perf_counter() - t0
    out = {"samples": n, "seconds": dt, "samples_per_s": n / dt, "peak_rss_per_worker": max(rss.values())}
    if args["kind"] != "tar":
        stats = ds.stats
        out.update(requests_per_sample=stats["requests"] / max(stats["yielded"], 1),
                   bytes_per_sample=stats["bytes"] / max(stats["yielded"], 1))
    return out


def subprocess_run(args: dict[str, Any], python: str = sys.executable, script: str | None = None) -> dict[str, Any]:
    cmd = [python, script, json.dumps(args)] if script else [python, "-m", "benchmarks.bench_loader", "--run-one", json.dumps(args)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- server ceiling, GPU -------------------------------------------------------------------------


def server_ceiling(settings: Any, bucket: str, key: str, seconds: float = 5.0, threads: int = 32) -> float:
    """GET requests/s the S3 server answers for one small object, 32 client threads."""
    client = settings.boto3_client()
    count = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def loop() -> None:
        while time.perf_counter() < stop:
            client.get_object(Bucket=bucket, Key=key)["Body"].read()
            with lock:
                count[0] += 1

    t0 = time.perf_counter()
    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return count[0] / (time.perf_counter() - t0)


def gpu_mode(table_path: str, endpoint: str | None, steps: int) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"status": "no GPU: skipped"}
    from torch import nn
    from torch.utils.data import DataLoader

    from bigearth_stac.settings import StorageSettings
    from bigearth_stac.torch_dataset import BigEarthNetStream

    def block(cin: int, cout: int, stride: int) -> nn.Module:
        class Basic(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
                                          nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
                self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                             if stride != 1 or cin != cout else nn.Identity())

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.relu(self.body(x) + self.skip(x))

        return Basic()

    layers = [nn.Conv2d(14, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(True), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [block(cin, cout, stride), block(cout, cout, 1)]
        cin = cout
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 19)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    settings = StorageSettings(endpoint_url=endpoint, max_pool_connections=64) if endpoint else None
    ds = BigEarthNetStream(cycle(pa.ipc.open_file(table_path).read_all(), 100_000), resample_to_10m=True, settings=settings)
    loader = DataLoader(ds, batch_size=64, num_workers=min(8, os.cpu_count() or 2), pin_memory=True, persistent_workers=True)
    import subprocess as sp

    utils: list[float] = []
    n = 0
    t0 = time.perf_counter()
    for step, batch in enumerate(loader):
        x = torch.cat([batch["s2"], batch["s1"]], 1).cuda(non_blocking=True)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), batch["label"].cuda(non_blocking=True))
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(batch["id"])
        if step % 10 == 5:
            q = sp.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"], capture_output=True, text=True)
            if q.returncode == 0:
                utils.append(float(q.stdout.split()[0]))
        if step >= steps:
            break
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"status": "ran", "device": torch.cuda.get_device_name(), "samples_per_s": n / dt,
            "gpu_utilisation_pct_mean": sum(utils) / len(utils) if utils else None}


# -- orchestration -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer pairs; 6,000-row runs iterate 600 samples")
    parser.add_argument("--workdir", default="/tmp/bigearth-bench-loader")
    parser.add_argument("--tgvenv", default="/tmp/tgvenv", help="venv with torchgeo (row a)")
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--gpu-steps", type=int, default=200)
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.run_one:
        print(json.dumps(run_one(json.loads(ns.run_one))))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from bigearth_devtools.faultproxy import FaultPlan, start_fault_proxy
    from bigearth_devtools.s3server import CONFLICTING_ENV, DUMMY_CREDENTIALS, start_s3_server

    n = ns.pairs
    workdir = Path(ns.workdir) / f"pairs-{n}"
    paths = prepare(workdir, n)
    for name in CONFLICTING_ENV:
        os.environ.pop(name, None)
    os.environ.update(DUMMY_CREDENTIALS)  # inherited by the measured subprocesses
    table = local_table(paths["catalog"])
    table_file = workdir / "table-local.arrow"
    with pa.ipc.new_file(table_file, table.schema) as w:
        w.write_table(table)
    s3_table_file = workdir / "table-s3.arrow"
    s3_table = local_table(paths["catalog"], base="s3://bench/catalog")
    with pa.ipc.new_file(s3_table_file, s3_table.schema) as w:
        w.write_table(s3_table)
    shards = sorted(str(p) for p in paths["shards"].glob("*.tar"))
    per_shard = -(-n // len(shards))

    server = start_s3_server("127.0.0.1")
    proxy = start_fault_proxy(server.endpoint_url, FaultPlan(latency=0.020))
    results: dict[str, Any] = {"rows": [], "pairs": n, "quick": ns.quick}
    try:
        settings = server.settings()
        t0 = time.perf_counter()
        upload(settings, "bench", paths["catalog"], paths["shards"])
        log.info("uploaded in %.0f s", time.perf_counter() - t0)
        key = "catalog/" + s3_table.column("s1_assets")[0].as_py()[0].split("/catalog/", 1)[1]
        results["server_ceiling_rps"] = server_ceiling(settings, "bench", key)
        log.info("moto ceiling %.0f GET/s", results["server_ceiling_rps"])
        s3_shards = [f"s3://bench/shards/{Path(s).name}" for s in shards]
        rows = [
            ("(b) stream, local disk", {"kind": "stream", "table": str(table_file)}),
            ("(c) stream, loopback S3", {"kind": "stream", "table": str(s3_table_file), "endpoint": server.endpoint_url}),
            ("(d) stream, S3 + 20 ms/request", {"kind": "stream", "table": str(s3_table_file), "endpoint": proxy.endpoint_url}),
            ("(e) tar shards, local disk", {"kind": "tar", "shards": shards}),
            ("(e) tar shards, loopback S3", {"kind": "tar", "shards": s3_shards, "endpoint": server.endpoint_url}),
        ]
        for label, base in rows:
            entry: dict[str, Any] = {"row": label}
            for workers in (0, 2):
                args = {**base, "workers": workers, "batch_size": 32, "rows": n, "n_shards": len(shards)}
                log.info("%s, %d workers", label, workers)
                r = subprocess_run(args)
                entry[f"samples_per_s_w{workers}"] = r["samples_per_s"]
                entry[f"rss_600_w{workers}"] = r["peak_rss_per_worker"]
                entry.setdefault("requests_per_sample", r.get("requests_per_sample"))
                entry.setdefault("bytes_per_sample", r.get("bytes_per_sample"))
            if base["kind"] == "tar":
                total = sum(Path(s).stat().st_size for s in shards)
                entry["requests_per_sample"] = 1 / per_shard
                entry["bytes_per_sample"] = total / n
            big = {**base, "workers": 2, "batch_size": 32, "rows": 10 * n, "n_shards": 10 * len(shards)}
            if ns.quick:
                big["limit"] = n
            log.info("%s, 2 workers, %d rows", label, 10 * n)
            r = subprocess_run(big)
            entry["rss_6000_w2"] = r["peak_rss_per_worker"]
            entry["samples_6000_run"] = r["samples"]
            results["rows"].append(entry)
        results["rows"].insert(0, torchgeo_row(ns, paths["raw"], n))
        results["gpu"] = gpu_mode(str(s3_table_file), server.endpoint_url, ns.gpu_steps)
    finally:
        proxy.stop()
        server.stop()
    results["environment"] = environment(ns.tgvenv)
    write(results)


def torchgeo_row(ns: argparse.Namespace, raw: Path, n: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"row": "(a) torchgeo BigEarthNet, raw v1"}
    python = Path(ns.tgvenv) / "bin" / "python"
    if not python.exists():
        entry["unavailable"] = f"no torchgeo venv at {ns.tgvenv}"
        return entry
    script = str(Path(__file__).with_name("_torchgeo_row.py"))
    split = raw / "bigearthnet-train.csv"
    try:
        for workers, size in ((0, n), (2, n), (2, 10 * n)):
            split.write_text((raw / f"split-{size}.csv").read_text())
            args = {"root": str(raw), "workers": workers, "batch_size": 32, "limit": n if ns.quick else None}
            log.info("(a) torchgeo, %d workers, %d rows", workers, size)
            r = subprocess_run(args, python=str(python), script=script)
            if size == n:
                entry[f"samples_per_s_w{workers}"] = r["samples_per_s"]
                entry[f"rss_600_w{workers}"] = r["peak_rss_per_worker"]
            else:
                entry["rss_6000_w2"] = r["peak_rss_per_worker"]
                entry["samples_6000_run"] = r["samples"]
            entry["versions"] = f"torchgeo {r['torchgeo']}, torch {r['torch']}"
    except Exception as exc:  # report the row as unavailable, with the reason
        entry["unavailable"] = str(exc)[-500:]
    files = list(raw.glob("BigEarthNet-v1.0/*/*.tif"))[:14 * 20] + list(raw.glob("BigEarthNet-S1-v1.0/*/*.tif"))[:2 * 20]
    entry["requests_per_sample"] = 14
    entry["bytes_per_sample"] = sum(f.stat().st_size for f in files) / 20
    return entry


def environment(tgvenv: str) -> dict[str, Any]:
    import imagecodecs
    import tifffile
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
            "tifffile": tifffile.__version__, "imagecodecs": imagecodecs.__version__}


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**20:.0f}"


def write(results: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "loader.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = results["rows"]
    n = results["pairs"]
    base = next((r for r in rows if r["row"].startswith("(a)") and "samples_per_s_w0" in r), None)
    local = next(r for r in rows if r["row"].startswith("(b)"))
    s3 = next(r for r in rows if r["row"].startswith("(c)"))
    lat = next(r for r in rows if r["row"].startswith("(d)"))
    lines = [
        "# Streaming loader benchmark", "",
        f"{results['pairs']} synthetic pairs (real format){' - quick mode' if results['quick'] else ''}; "
        f"moto S3 server ceiling measured alone: **{results['server_ceiling_rps']:.0f} GET/s** (32 client threads, one small object).",
        "", f"| row | samples/s, 0 workers | samples/s, 2 workers | requests/sample | KB/sample | peak RSS/worker MiB, {n:,} (w0 / w2) | peak RSS/worker MiB, {10 * n:,} (w2) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "unavailable" in r and "samples_per_s_w0" not in r:
            lines.append(f"| {r['row']} | unavailable: {r['unavailable'][:120]} | | | | | |")
            continue
        lines.append(
            f"| {r['row']} | {r['samples_per_s_w0']:.0f} | {r['samples_per_s_w2']:.0f} | {r['requests_per_sample']:.3g} | "
            f"{r['bytes_per_sample'] / 1000:.0f} | {_mib(r.get('rss_600_w0'))} / {_mib(r.get('rss_600_w2'))} | {_mib(r.get('rss_6000_w2'))} |"
        )
    lines += ["", "Targets:"]
    if base:
        lines.append(f"- (b) / (a) per process (0 workers): **{local['samples_per_s_w0'] / base['samples_per_s_w0']:.1f}x** (target >= 5x); "
                     f"2 workers: {local['samples_per_s_w2'] / base['samples_per_s_w2']:.1f}x")
    lines.append(f"- (d) / (c): **{lat['samples_per_s_w0'] / s3['samples_per_s_w0']:.2f}x** with 0 workers, "
                 f"**{lat['samples_per_s_w2'] / s3['samples_per_s_w2']:.2f}x** with 2 (target >= 0.9x)")
    lines.append(f"- requests per sample (b): {local['requests_per_sample']:.2f} (target <= 4)")
    lines.append(f"- peak RSS per worker (b), 2 workers: {_mib(local['rss_600_w2'])} MiB at {n:,} rows, "
                 f"{_mib(local['rss_6000_w2'])} MiB at {10 * n:,} rows (target < 1,024 MiB and flat)")
    gpu = results.get("gpu", {})
    lines += ["", f"GPU mode: {gpu.get('status')}" + (f" on {gpu['device']}: {gpu['samples_per_s']:.0f} samples/s, mean GPU utilisation "
                                                        f"{gpu['gpu_utilisation_pct_mean']}%" if gpu.get("status") == "ran" else "")]
    env = results["environment"]
    lines += ["", f"Environment: Python {env['python']}, torch {env['torch']}, tifffile {env['tifffile']}, imagecodecs {env['imagecodecs']}, "
              f"{env['cpus']} CPUs ({env['platform']}).",
              "Peak RSS is VmHWM of each DataLoader worker (of the process with 0 workers), so it includes torch itself. "
              "The 6,000-sample runs cycle the 600-pair table (and the shard list) ten times rather than building 6,000 pairs"
              + ("; in quick mode they iterate only the first 600 samples of the 6,000-row table." if results["quick"] else "."),
              "Every configuration runs in a fresh subprocess; the machine is shared, so figures are noisy: compare rows of one run."]
    (RESULTS / "loader.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
