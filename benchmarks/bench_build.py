"""Build benchmark: the build rows of issue 15, configurations alternated.

The same N synthetic raw pairs (``catalog_builder.synthetic``: the exact v1 layout, real names
and tables; with ``--release v2`` also ``catalog_builder.synthetic_v2``) are generated once, then
built into a fresh output folder by ``catalog_builder.build.build`` (what ``catalog-builder build``
runs) with:

- ``sync``: ``--scheduler synchronous``, the build in the calling process (the cost per core);
- ``cluster``: the default LocalCluster with ``--workers`` workers, end to end: starting the
  cluster and its workers (their imports), the pairs, the indexes and closing the cluster;
- ``warm``: the same workers started (and their modules imported) before the clock, the build
  given the cluster's address: the throughput a long build sees once started, which is what the
  full archive on 16 cores depends on;
- ``twin``: two independent synchronous builds of half the pairs each, in two processes that start
  building at the same moment (no Dask): what two processes can get from this machine, the
  reference for the cluster rows.

Every measurement runs in a fresh subprocess (imports and opening the source, which loads the
official tables, are not timed; starting the cluster of ``cluster`` is) and the configurations
alternate over ``--rounds`` rounds (A B C, C B A, ...), so a slow spell of a shared machine hits
every row alike. Reported: median over rounds and spread (min-max), flagged where it exceeds
25 % of the median; CPU of the process and every process it started (workers, a forkserver),
as % of one core; pairs per CPU-second; the ratios of the cluster rows to ``sync``.

Also, from one more subprocess: a cProfile of one synchronous build grouped by stage (raw
metadata, raw read, raw decode, COG encode, STAC item, item JSON, index rows, writes, the final
indexes/catalogs), its top cumulative functions, and the DEFLATE floor: the same pairs' COG
encode through GDAL against libdeflate (the library GDAL's DEFLATE uses) alone on the same
predictor-differenced bands.

    python -m benchmarks.bench_build [--pairs 600] [--rounds 3] [--workers 2] [--release v1|v2|both]
                                     [--quick] [--no-profile] [--baseline-src DIR] [--workdir DIR]

``--baseline-src DIR`` measures every row a second time with ``DIR`` (a checkout of another
commit, e.g. ``git worktree add /tmp/base HEAD~1``) first on ``PYTHONPATH``, in the same
alternation, and reports new / baseline ratios. ``--quick``: 48 pairs, one round (a smoke test;
the figures mean nothing). Writes benchmarks/results/build.json and build.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
WIDE = 0.25
"""A spread (max - min) above this share of the median is flagged."""
ROWS = {
    "sync": "--scheduler synchronous (one process)",
    "cluster": "default LocalCluster, end to end (cluster start and close included)",
    "warm": "the same LocalCluster started before the clock (steady state)",
    "twin": "two independent synchronous builds of half the pairs each, at the same time (no Dask: what two "
            "processes get from this machine)",
}


# -- data --------------------------------------------------------------------------------------


def prepare(workdir: Path, n: int, seed: int, releases: list[str]) -> dict[str, dict[str, Any]]:
    """Raw trees of ``n`` pairs per release (cached in ``workdir``)."""
    raw: dict[str, dict[str, Any]] = {}
    for release in releases:
        folder = workdir / f"raw-{release}-{n}-{seed}"
        stamp = folder / "READY.json"
        if not stamp.exists():
            shutil.rmtree(folder, ignore_errors=True)
            t0 = time.perf_counter()
            if release == "v1":
                from catalog_builder.synthetic import generate

                s2, s1 = generate(folder, n, seed=seed)
                paths: dict[str, Any] = {"s2": str(s2), "s1": str(s1)}
            else:
                from catalog_builder.synthetic_v2 import generate_v2

                tree = generate_v2(folder, n, seed=seed, disagree=0)
                paths = {"s2": str(tree.s2), "s1": str(tree.s1), "metadata": [str(m) for m in tree.metadata]}
            stamp.write_text(json.dumps(paths))
            print(f"generated {n} {release} pairs in {time.perf_counter() - t0:.0f} s", flush=True)
        raw[release] = json.loads(stamp.read_text())
    return raw


def open_release(raw: dict[str, Any]) -> Any:
    from catalog_builder.sources import open_source

    if "metadata" in raw:
        source = open_source(raw["s2"], raw["s1"], release="v2", metadata=raw["metadata"])
    else:
        source = open_source(raw["s2"], raw["s1"], release="v1")
        _ = source.tables  # type: ignore[attr-defined]  # the official tables (loaded lazily by the build otherwise)
    return source


# -- CPU of a process tree -----------------------------------------------------------------------


def tree_cpu() -> tuple[float, float]:
    """(user, system) CPU seconds of this process, its reaped children, and every live descendant
    (with what they reaped: a forkserver's workers), so a delta over a run counts every process
    it used."""
    import psutil

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = a.ru_utime + b.ru_utime, a.ru_stime + b.ru_stime
    for proc in psutil.Process().children(recursive=True):
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        user += t.user + getattr(t, "children_user", 0.0)
        system += t.system + getattr(t, "children_system", 0.0)
    return user, system


# -- one measurement (in a fresh subprocess) -----------------------------------------------------


def _warm_import(_: Any = None) -> int:
    import importlib

    importlib.import_module("catalog_builder.pair")
    return os.getpid()


def run_one(args: dict[str, Any]) -> dict[str, Any]:
    import distributed  # noqa: F401 - imports are not what is measured

    import catalog_builder.build as builder
    from catalog_builder.store import LocalStore

    kind, workers = args["kind"], args["workers"]
    t0 = time.perf_counter()
    source = open_release(args["raw"])
    setup_s = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix=f"bench-build-{kind}-", dir=args.get("tmp")))
    marks: dict[str, float] = {}

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        marks.setdefault("first", now)
        marks["last"] = now

    try:
        if kind == "warm":
            with builder._executor(builder.BuildOptions(n_workers=workers)) as client:
                client.gather(client.map(_warm_import, range(workers), pure=False))
                client.run(_warm_import)
                options = builder.BuildOptions(scheduler=client.scheduler.address, batch_size=args["batch_size"])
                c0, t1 = tree_cpu(), time.perf_counter()
                report = builder.build(source, LocalStore(out / "catalog"), options, progress=progress)
                seconds, c1 = time.perf_counter() - t1, tree_cpu()
        else:
            scheduler = "synchronous" if kind == "sync" else None
            options = builder.BuildOptions(scheduler=scheduler, n_workers=workers if kind == "cluster" else None,
                                           batch_size=args["batch_size"], limit=args.get("limit"))
            if args.get("start_at"):  # a twin: both start at the same moment, imports done
                time.sleep(max(0.0, args["start_at"] - time.time()))
            c0, t1 = tree_cpu(), time.perf_counter()
            report = builder.build(source, LocalStore(out / "catalog"), options, progress=progress)
            seconds, c1 = time.perf_counter() - t1, tree_cpu()
        if not report.ok or report.built != args.get("limit", args["pairs"]):
            raise SystemExit(f"build failed: {report.describe()[:2000]}")
        size = sum(p.stat().st_size for p in (out / "catalog").rglob("*") if p.is_file())
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    # The output stays until the whole run ends (main removes it): ext4 does not reuse an inode
    # freed in the last minutes, and its allocator scans past every such inode, so deleting a
    # build's 3,700 files just before the next build charged that build up to 1.5 ms of kernel
    # time per file it created (perf: recently_deleted / find_inode_bit).
    user, system = c1[0] - c0[0], c1[1] - c0[1]
    cpu = user + system
    return {"pairs": report.built, "seconds": seconds, "pairs_per_s": report.built / seconds, "cpu_s": cpu,
            "system_percent": 100 * system / cpu, "pairs_per_user_cpu_s": report.built / user,
            "cpu_percent": 100 * cpu / seconds, "pairs_per_cpu_s": report.built / cpu, "setup_s": setup_s,
            "end": time.time(), "first_batch_s": marks.get("first", t1) - t1, "tail_s": t1 + seconds - marks.get("last", t1 + seconds),
            "bytes_per_pair": size / max(report.built, 1)}


# -- the profile (in a fresh subprocess) ---------------------------------------------------------

def run_profile(args: dict[str, Any]) -> dict[str, Any]:
    import cProfile
    import io
    import pstats

    import distributed  # noqa: F401

    import catalog_builder.build as builder
    from catalog_builder.store import LocalStore

    source = open_release(args["raw"])
    out = Path(tempfile.mkdtemp(prefix="bench-build-profile-", dir=args.get("tmp")))
    try:
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.enable()
        report = builder.build(source, LocalStore(out / "catalog"), builder.BuildOptions(scheduler="synchronous",
                                                                                          batch_size=args["batch_size"]))
        profiler.disable()
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    top_n = args.get("top", 30)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top_n)
    top = [line for line in text.getvalue().splitlines() if line.strip()][-top_n:]
    return {"pairs": report.built, "seconds": seconds, **stages(pstats.Stats(profiler)), "top": top,
            "floor": encode_floor(source, min(report.built, 100))}


def stages(stats: Any) -> dict[str, Any]:
    """Cumulative seconds per stage of a build, from a profile (call sites told apart by caller)."""
    table = stats.stats  # (file, line, function) -> (calls, primitive calls, tottime, cumtime, callers)

    def cum(func: str, module: str, caller: tuple[str, str] | None = None) -> float:
        total = 0.0
        for (filename, _, name), (_, _, _, ct, callers) in table.items():
            if name != func or not filename.endswith(module):
                continue
            if caller is None:
                total += ct
            else:
                total += sum(c[3] for (f, _, n), c in callers.items() if n == caller[0] and f.endswith(caller[1]))
        return total

    pair, v1, v2 = "catalog_builder/pair.py", "catalog_builder/sources/v1.py", "catalog_builder/sources/v2.py"
    store = "catalog_builder/store.py"
    rows = [
        ("raw metadata (JSON, tables) and resume check",
         cum("read_pair", v1) + cum("read_pair", v2) + cum("resume_state", pair) + cum("predecessor_links", pair)),
        ("raw read (band files)", cum("read_capped", v1, ("read_pixels", v1)) + cum("read_capped", v1, ("read_pixels", v2))),
        ("raw decode (rawtiff)", cum("decode_band", "catalog_builder/sources/base.py")),
        ("COG encode (GDAL)", cum("encode_pair", pair)),
        ("STAC item", cum("build_item", "catalog_builder/stac.py")),
        ("item JSON", cum("json_bytes", store, ("build_pair", pair))),
        ("writes of COGs and items (store.write, hashing)", cum("write", store, ("build_pair", pair)) + cum("put", store, ("build_pair", pair))),
        ("index rows (items_to_table)", cum("items_to_table", "catalog_builder/index.py")),
    ]
    build_s = cum("build", "catalog_builder/build.py")
    rows.append(("final indexes, tile catalogs, collections, manifest, root", build_s - cum("_outcomes", "catalog_builder/build.py")))
    rows.append(("other (per-batch Env, outcomes, extents, ...)", max(build_s - sum(v for _, v in rows), 0.0)))
    return {"profiled_build_s": build_s, "stages": [{"stage": k, "seconds": v} for k, v in rows]}


def _predicted(stack: Any) -> Any:
    """The bytes GDAL's DEFLATE compresses: horizontal differencing (predictor 2) for integers,
    the floating-point predictor (3: bytes of each row regrouped by significance, differenced)."""
    import numpy as np

    if stack.dtype.kind == "f":
        count, height, width = stack.shape
        planes = stack.astype(stack.dtype.newbyteorder(">")).view(np.uint8).reshape(count, height, width, -1)
        rows = np.ascontiguousarray(planes.transpose(0, 1, 3, 2)).reshape(count, height, -1)
        return np.diff(rows, axis=-1, prepend=np.uint8(0))
    return np.diff(stack, axis=-1, prepend=stack.dtype.type(0))


def encode_floor(source: Any, n: int) -> dict[str, Any]:
    """ms of CPU per pair: COG encode through GDAL (encode_pair) against libdeflate / zlib alone
    at the same level on the same predictor-differenced bands (best of 3 passes)."""
    import zlib

    import numpy as np
    import rasterio
    from rasterio.session import DummySession

    from bigearth_stac.vocab import band_groups
    from catalog_builder.cog import CogOptions
    from catalog_builder.pair import encode_pair

    units = source.units()[:n]
    pairs = [source.read_pair(u) for u in units]
    pixels = [source.read_pixels(p) for p in pairs]
    level = CogOptions().level
    groups = [bands for modality in ("s2", "s1") for bands in band_groups(modality, "stacked").values()]
    predicted = [[_predicted(np.stack([px[b] for b in bands])).tobytes() for bands in groups] for px in pixels]

    def best(fn: Any) -> float:
        times = []
        for _ in range(3):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        return 1000 * min(times) / len(pairs)

    out: dict[str, Any] = {"pairs": len(pairs), "level": level}
    with rasterio.Env(session=DummySession()):
        out["gdal_cog_ms"] = best(lambda: [encode_pair(p, px, "stacked") for p, px in zip(pairs, pixels, strict=True)])
    out["predictor_ms"] = best(lambda: [[_predicted(np.stack([px[b] for b in bands])) for bands in groups] for px in pixels])
    out["zlib_ms"] = best(lambda: [[zlib.compress(d, level) for d in per] for per in predicted])
    try:
        import imagecodecs

        out["libdeflate_ms"] = best(lambda: [[imagecodecs.deflate_encode(d, level=level) for d in per] for per in predicted])
    except (ImportError, AttributeError):
        out["libdeflate_ms"] = None
    return out


def _child(args: dict[str, Any], src: str | None) -> tuple[list[str], dict[str, str]]:
    """The command and environment of one measured run (``src`` first on the path)."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    return [sys.executable, str(Path(__file__).resolve()), "--run-one", json.dumps(args)], env


def subprocess_run(args: dict[str, Any], src: str | None, timeout: float = 1800) -> dict[str, Any]:
    cmd, env = _child(args, src)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args['kind']} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def twin_run(args: dict[str, Any], src: str | None, timeout: float = 1800) -> dict[str, Any]:
    """Two synchronous builds of half the pairs each (each into its own folder) in two processes
    that start building at the same moment: the pairs/s two processes get from this machine."""
    start_at = time.time() + 12.0  # after both have imported and opened the source
    cmd, env = _child({**args, "kind": "sync", "limit": args["pairs"] // 2, "start_at": start_at}, src)
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [proc.communicate(timeout=timeout) for proc in procs]
    if any(proc.returncode for proc in procs):
        raise RuntimeError(f"twin run failed:\n{outs[0][1][-1500:]}\n{outs[1][1][-1500:]}")
    runs = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    pairs = sum(r["pairs"] for r in runs)
    seconds = max(r["end"] for r in runs) - start_at
    cpu = sum(r["cpu_s"] for r in runs)
    system = sum(r["cpu_s"] * r["system_percent"] / 100 for r in runs)
    return {"pairs": pairs, "seconds": seconds, "pairs_per_s": pairs / seconds, "cpu_s": cpu,
            "system_percent": 100 * system / cpu, "pairs_per_user_cpu_s": pairs / (cpu - system),
            "cpu_percent": 100 * cpu / seconds, "pairs_per_cpu_s": pairs / cpu,
            "setup_s": max(r["setup_s"] for r in runs), "first_batch_s": min(r["first_batch_s"] for r in runs),
            "tail_s": 0.0, "bytes_per_pair": statistics.mean(r["bytes_per_pair"] for r in runs)}


# -- the run -------------------------------------------------------------------------------------


FIGURES = ("pairs_per_s", "seconds", "cpu_percent", "pairs_per_cpu_s", "system_percent", "pairs_per_user_cpu_s",
           "first_batch_s", "tail_s", "setup_s", "bytes_per_pair")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    # Imported here: the measured runs execute this file as a script (with another checkout
    # first on the path), where the ``benchmarks`` package is not importable.
    from benchmarks._rounds import over_rounds

    out = over_rounds(runs, FIGURES, ranged=FIGURES)
    if "error" in out:
        return out
    rate = out["pairs_per_s"]
    out["spread"] = (out["pairs_per_s_max"] - out["pairs_per_s_min"]) / rate if rate else 0.0
    out["wide"] = out["rounds"] > 1 and out["spread"] > WIDE
    return out


def environment() -> dict[str, Any]:
    import dask
    import distributed
    import numpy
    import rasterio

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "gdal": rasterio.__gdal_version__, "rasterio": rasterio.__version__, "numpy": numpy.__version__,
            "dask": dask.__version__, "distributed": distributed.__version__,
            "start_method": dask.config.get("distributed.worker.multiprocessing-method")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per Dask task (the CLI's default)")
    parser.add_argument("--release", choices=["v1", "v2", "both"], default="v1")
    parser.add_argument("--rows", default="sync,twin,cluster,warm", help="comma-separated subset of sync,twin,cluster,warm")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="48 pairs, one round: a smoke test (figures mean nothing)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile and encode-floor run")
    parser.add_argument("--baseline-src", default=None,
                        help="a checkout of another commit: every row is measured with it too, alternated")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bigearth-bench-build")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.run_one:
        args = json.loads(ns.run_one)
        print(json.dumps(run_profile(args) if args["kind"] == "profile" else run_one(args)))
        return
    if ns.quick:
        ns.pairs, ns.rounds = min(ns.pairs, 48), 1
    started = time.perf_counter()
    releases = ["v1", "v2"] if ns.release == "both" else [ns.release]
    raw = prepare(ns.workdir, ns.pairs, ns.seed, releases)
    tmp = ns.workdir / "out"
    tmp.mkdir(parents=True, exist_ok=True)
    kinds = [k.strip() for k in ns.rows.split(",") if k.strip()]
    unknown = set(kinds) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; choose from {sorted(ROWS)}")
    sources = {"new": None} | ({"baseline": ns.baseline_src} if ns.baseline_src else {})
    configs = [{"id": f"{kind}-{release}" + ("" if code == "new" else "-baseline"), "kind": kind, "release": release,
                "code": code, "src": src}
               for release in releases for kind in kinds for code, src in sources.items()]
    runs: dict[str, list[dict[str, Any]]] = {c["id"]: [] for c in configs}
    load_start = os.getloadavg()
    for rnd in range(ns.rounds):
        order = configs if rnd % 2 == 0 else configs[::-1]
        for config in order:
            args = {"kind": config["kind"], "raw": raw[config["release"]], "workers": ns.workers,
                    "batch_size": ns.batch_size, "pairs": ns.pairs, "tmp": str(tmp)}
            try:
                result = twin_run(args, config["src"]) if config["kind"] == "twin" else subprocess_run(args, config["src"])
            except Exception as exc:  # a row that fails is reported, not fatal
                result = {"error": str(exc)[-800:]}
            runs[config["id"]].append(result)
            shown = f"{result['pairs_per_s']:.1f} pairs/s, CPU {result['cpu_percent']:.0f} %" if "error" not in result else result["error"][:200]
            print(f"round {rnd + 1}/{ns.rounds} {config['id']}: {shown}", flush=True)
    profile = None
    if not ns.no_profile:
        try:
            profile = subprocess_run({"kind": "profile", "raw": raw[releases[0]], "batch_size": ns.batch_size,
                                      "tmp": str(tmp)}, None)
        except Exception as exc:
            profile = {"error": str(exc)[-800:]}
    results: dict[str, Any] = {
        "params": {"pairs": ns.pairs, "rounds": ns.rounds, "workers": ns.workers, "batch_size": ns.batch_size,
                   "releases": releases, "quick": ns.quick, "baseline_src": ns.baseline_src, "seed": ns.seed},
        "rows": [c | {"what": ROWS[c["kind"]]} | summarise(runs[c["id"]]) | {"runs": runs[c["id"]]} for c in configs],
        "profile": profile,
        "environment": environment() | {"load_average_start": load_start, "load_average_end": os.getloadavg()},
        "duration_s": time.perf_counter() - started,
    }
    results["ratios"] = ratios(results["rows"])
    shutil.rmtree(tmp, ignore_errors=True)
    write(results, ns.out)


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    rate: dict[str, float] = {r["id"]: r["pairs_per_s"] for r in rows if r.get("pairs_per_s")}
    out = {}
    for r in rows:
        if r["id"] not in rate:
            continue
        sync = r["id"].replace(r["kind"], "sync", 1)
        if r["kind"] != "sync" and sync in rate:
            out[f"{r['id']} / {sync}"] = rate[r["id"]] / rate[sync]
        if r["code"] == "new" and f"{r['id']}-baseline" in rate:
            out[f"{r['id']} / {r['id']}-baseline"] = rate[r["id"]] / rate[f"{r['id']}-baseline"]
    return out


# -- report --------------------------------------------------------------------------------------


def _cell(r: dict[str, Any], key: str, fmt: str = "{:.1f}") -> str:
    if key not in r:
        return "-"
    return f"{fmt.format(r[key])} ({fmt.format(r[key + '_min'])}-{fmt.format(r[key + '_max'])})"


def markdown(results: dict[str, Any]) -> str:
    p = results["params"]
    lines = ["# Build benchmark", "",
             f"{p['pairs']} synthetic pairs (real raw format) per release, {p['rounds']} round{'s' if p['rounds'] != 1 else ''}, rows alternated, each "
             f"measurement in a fresh process{' - quick mode: a smoke test, the figures mean nothing' if p['quick'] else ''}. "
             f"Median (min-max) over the rounds; **wide** where the spread of pairs/s exceeds {WIDE:.0%} of the median. "
             f"CPU: the build's process and every process it started (workers, forkserver), % of one core. "
             f"{p['workers']} workers, {p['batch_size']} pairs per task.", "",
             "Outputs are kept until the run ends: deleting a build's files just before the next build made ext4 charge "
             "the next build for them (its inode allocator scans inodes freed in the last minutes).", "",
             "| row | code | what | pairs/s | seconds | CPU % | of which kernel % | pairs per CPU-second | pairs per user CPU-second | first batch after (s) | after the last batch (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if "pairs_per_s" not in r:
            lines.append(f"| {r['kind']} {r['release']} | {r['code']} | {r['what']} | failed: {str(r.get('error', ''))[:120]} | | | | | | | |")
            continue
        flag = " **wide**" if r["wide"] else ""
        lines.append(f"| {r['kind']} {r['release']} | {r['code']} | {r['what']} | **{r['pairs_per_s']:.1f}** "
                     f"({r['pairs_per_s_min']:.1f}-{r['pairs_per_s_max']:.1f}){flag} | {_cell(r, 'seconds')} | "
                     f"{_cell(r, 'cpu_percent', '{:.0f}')} | {_cell(r, 'system_percent', '{:.0f}')} | {_cell(r, 'pairs_per_cpu_s')} | "
                     f"{_cell(r, 'pairs_per_user_cpu_s')} | {_cell(r, 'first_batch_s')} | "
                     f"{_cell(r, 'tail_s')} |")
    lines += ["", "Ratios of the medians:", ""] + [f"- {k}: **{v:.2f}x**" for k, v in results["ratios"].items()]
    lines += ["", "## Against the targets of issue 15", ""]
    rows = {r["id"]: r for r in results["rows"]}
    sync, cluster = rows.get("sync-v1", {}), rows.get("cluster-v1", {})
    if "pairs_per_cpu_s" in sync:
        value = sync["pairs_per_cpu_s"]
        lines.append(f"- synchronous: {sync['pairs_per_s']:.1f} pairs/s at {sync['cpu_percent']:.0f} % CPU = **{value:.1f} pairs "
                     f"per CPU-second** (target >= 50 per core: {'met' if value >= 50 else 'missed'})")
    if "pairs_per_s" in sync and "pairs_per_s" in cluster:
        value = cluster["pairs_per_s"] / sync["pairs_per_s"]
        lines.append(f"- default LocalCluster / synchronous: **{value:.2f}x** (target >= 1.7x: {'met' if value >= 1.7 else 'missed'})")
        warm = rows.get("warm-v1", {})
        if "pairs_per_s" in warm:
            lines.append(f"- started cluster / synchronous (steady state): **{warm['pairs_per_s'] / sync['pairs_per_s']:.2f}x**")
        twin = rows.get("twin-v1", {})
        if "pairs_per_s" in twin:
            lines.append(f"- two synchronous processes at once / one: **{twin['pairs_per_s'] / sync['pairs_per_s']:.2f}x** "
                         "(the most two processes get from this machine, without Dask)")
            if "pairs_per_s" in warm:
                lines.append(f"- started cluster / two synchronous processes: **{warm['pairs_per_s'] / twin['pairs_per_s']:.2f}x** "
                             "(what Dask keeps of it)")
    wide = [r["id"] for r in results["rows"] if r.get("wide")]
    if wide:
        lines += ["", f"**Warning: wide spread** in {', '.join(wide)}: the machine was not quiet; rerun before quoting these."]
    prof = results.get("profile")
    if prof and "error" not in prof:
        lines += ["", f"## Where a synchronous build spends its time (cProfile, {prof['pairs']} pairs, v1)", "",
                  f"{prof['seconds']:.1f} s under the profiler (which inflates Python-heavy stages); cumulative time per stage:", "",
                  "| stage | seconds | share | ms per pair |", "|---|---|---|---|"]
        total = prof["profiled_build_s"] or 1.0
        for s in prof["stages"]:
            lines.append(f"| {s['stage']} | {s['seconds']:.2f} | {100 * s['seconds'] / total:.0f} % | {1000 * s['seconds'] / max(prof['pairs'], 1):.1f} |")
        f = prof["floor"]
        floor = f"libdeflate alone at level {f['level']} on the same predictor-differenced bands **{f['libdeflate_ms']:.1f}**; " \
            if f.get("libdeflate_ms") is not None else ""
        lines += ["", f"COG encode against its floor ({f['pairs']} pairs, CPU ms per pair, best of 3, no profiler): GDAL COG "
                  f"(encode_pair, 4 COGs) **{f['gdal_cog_ms']:.1f}**; {floor}zlib {f['zlib_ms']:.1f}; the predictor itself "
                  f"in numpy {f['predictor_ms']:.1f}.", "",
                  "Top cumulative functions:", "", "```"] + prof["top"] + ["```"]
    elif prof:
        lines += ["", f"Profile failed: {prof['error'][:300]}"]
    env = results["environment"]
    lines += ["", f"Environment: Python {env['python']}, GDAL {env['gdal']}, rasterio {env['rasterio']}, dask {env['dask']}, "
                  f"distributed {env['distributed']}, {env['cpus']} CPUs ({env['platform']}); load average at the start "
                  f"{', '.join(f'{x:.2f}' for x in env['load_average_start'])}, at the end "
                  f"{', '.join(f'{x:.2f}' for x in env['load_average_end'])} (above the number of CPUs: others were running); "
                  f"the run took {results['duration_s'] / 60:.1f} min.", ""]
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "build.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (out / "build.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
