"""BigEarthNet v2.0 beside v1.0: build and loader throughput on generated trees of the same size.

Rows (each measured in a fresh subprocess, so imports are not timed and no cache carries over):

- **build**: ``catalog_builder.build`` of N generated pairs into a fresh local folder (opening the
  source, which reads v1's official tables or v2's ``metadata.parquet``, is timed apart), in the
  calling process (``--scheduler synchronous``: the cost per core; a cluster divides it). v1 reads
  14 band files and a JSON per pair; v2 reads 14 band files, the reference map and its row of
  ``metadata.parquet``, and writes one more COG (the map) with its pixel fractions;
- **loader**: one epoch of the pairs (S2 + S1, all bands, float32, normalised with each release's
  statistics) from the local catalogs (opening the catalog, the search and the sample table are
  timed apart), ``BigEarthNetStream(batch_size=32)`` in the process itself
  (``num_workers=0``); v2 also with ``mask="19"`` (one more object per sample).

The rows are alternated over ``--rounds`` rounds (the order reversed every other round), so a slow
spell of a shared machine hits every row alike. Reported: the median over rounds and the spread
(min - max), flagged where it exceeds 25 % of the median; v2 / v1 ratios of the medians.

    python -m benchmarks.bench_v2 [--quick] [--pairs 200] [--rounds 5] [--workdir DIR]

Writes benchmarks/results/v2.json and v2.md (``--quick``: 12 pairs, 2 rounds, a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

ROWS: dict[str, tuple[str, str]] = {
    "build-v1": ("build", "v1.0: 14 band files + label JSON -> 4 COGs + 2 items per pair"),
    "build-v2": ("build", "v2.0: 14 band files + reference map + metadata row -> 5 COGs + 2 items per pair"),
    "load-v1": ("loader", "v1.0 pairs, S2 + S1"),
    "load-v2": ("loader", "v2.0 pairs, S2 + S1"),
    "load-v2-mask": ("loader", "v2.0 pairs, S2 + S1 + mask='19'"),
}


# -- data --------------------------------------------------------------------------------------


def prepare(workdir: Path, n: int, seed: int) -> dict[str, Any]:
    """Raw v1 and v2 trees of ``n`` pairs and their catalogs (for the loader rows), cached in ``workdir``."""
    from catalog_builder.build import BuildOptions, build
    from catalog_builder.store import LocalStore
    from catalog_builder.synthetic import generate
    from catalog_builder.synthetic_v2 import generate_v2

    stamp = workdir / f"prepared-{n}-{seed}.json"
    if stamp.exists():
        return json.loads(stamp.read_text())
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    s2, s1 = generate(workdir / "raw-v1", n, seed=seed)
    tree = generate_v2(workdir / "raw-v2", n, seed=seed, disagree=0)
    paths: dict[str, Any] = {
        "v1": {"s2": str(s2), "s1": str(s1)},
        "v2": {"s2": str(tree.s2), "s1": str(tree.s1), "metadata": [str(m) for m in tree.metadata]},
    }
    for release in ("v1", "v2"):
        out = workdir / f"catalog-{release}"
        report = build(_source(paths[release]), LocalStore(out), BuildOptions(scheduler="synchronous"))
        if not report.ok:
            raise SystemExit(f"building the {release} catalog failed:\n{report.describe()}")
        paths[release]["catalog"] = str(out)
    stamp.write_text(json.dumps(paths))
    return paths


def _source(raw: dict[str, Any]) -> Any:
    from catalog_builder.sources import open_source

    if "metadata" in raw:
        return open_source(raw["s2"], raw["s1"], release="v2", metadata=raw["metadata"])
    return open_source(raw["s2"], raw["s1"], release="v1")


# -- one measurement (in a child process) ------------------------------------------------------


def measure(row: str, paths: dict[str, Any]) -> dict[str, Any]:
    kind = ROWS[row][0]
    release = "v2" if "v2" in row else "v1"
    if kind == "build":
        from catalog_builder.build import BuildOptions, build
        from catalog_builder.store import LocalStore

        out = Path(tempfile.mkdtemp(prefix=f"bench-v2-{row}-"))
        try:
            t0 = time.perf_counter()
            source = _source(paths[release])  # v1: the official tables; v2: metadata.parquet
            t1 = time.perf_counter()
            report = build(source, LocalStore(out / "catalog"), BuildOptions(scheduler="synchronous"))
            seconds = time.perf_counter() - t1
            if not report.ok:
                raise SystemExit(report.describe())
            size = sum(p.stat().st_size for p in (out / "catalog").rglob("*") if p.is_file())
            return {"rate": report.built / seconds, "seconds": seconds, "setup_s": t1 - t0, "pairs": report.built,
                    "bytes_per_pair": size / max(report.built, 1)}
        finally:
            shutil.rmtree(out, ignore_errors=True)
    import bigearth_stac.torch_dataset  # noqa: F401 - imports (torch) are not timed
    from bigearth_stac import Catalog

    t0 = time.perf_counter()
    result = Catalog.open(paths[release]["catalog"]).search(modality="pair")
    options: dict[str, Any] = {"batch_size": 32, "shuffle": False}
    if row.endswith("-mask"):
        options["mask"] = "19"
    dataset = result.to_torch(**options)
    t1 = time.perf_counter()
    samples = 0
    for batch in dataset:
        samples += len(batch["id"])
    seconds = time.perf_counter() - t1
    stats = dataset.stats
    return {"rate": samples / seconds, "seconds": seconds, "setup_s": t1 - t0, "samples": samples,
            "requests_per_sample": stats["requests"] / max(samples, 1),
            "kb_per_sample": stats["bytes"] / 1024 / max(samples, 1)}


def _child(row: str, paths_file: str) -> None:
    print(json.dumps(measure(row, json.loads(Path(paths_file).read_text()))))


def _run(row: str, paths_file: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_v2", "--child", row, str(paths_file)],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{row} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the run -----------------------------------------------------------------------------------


def _summary(values: list[float]) -> dict[str, Any]:
    median = statistics.median(values)
    spread = (max(values) - min(values)) / median if median else 0.0
    return {"median": median, "min": min(values), "max": max(values), "spread": spread, "wide": spread > WIDE}


def _environment() -> dict[str, Any]:
    import numpy
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "numpy": numpy.__version__}


def _markdown(out: dict[str, Any]) -> str:
    p = out["params"]
    lines = [
        "# BigEarthNet v2.0 beside v1.0: build and loader throughput",
        "",
        f"{p['pairs']} generated pairs per release, {p['rounds']} rounds, rows alternated"
        f"{' (quick mode: a smoke test, not a measurement)' if p['quick'] else ''}. Median over rounds, "
        "spread = (max - min) / median (flagged above 25 %).",
        "",
        "| row | what | unit | median | min - max | spread | per item; setup (not in the rate) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in out["rows"].items():
        s = row["summary"]
        unit = "pairs/s" if row["kind"] == "build" else "samples/s"
        extra = row["extra"]
        if row["kind"] == "build":
            per = f"{extra['bytes_per_pair'] / 1024:.0f} KB written/pair"
        else:
            per = f"{extra['requests_per_sample']:.2f} requests, {extra['kb_per_sample']:.0f} KB/sample"
        per += f"; setup {extra['setup_s']:.2f} s"
        flag = " (wide)" if s["wide"] else ""
        lines.append(f"| {name} | {row['what']} | {unit} | {s['median']:.1f} | {s['min']:.1f} - {s['max']:.1f} | "
                     f"{s['spread'] * 100:.0f} %{flag} | {per} |")
    lines += ["", "Ratios of the medians (v2 / v1):", ""]
    lines += [f"- {k}: **{v:.2f}x**" for k, v in out["ratios"].items()]
    env = out["environment"]
    lines += ["", f"Environment: Python {env['python']}, torch {env['torch']}, numpy {env['numpy']}, "
                  f"{env['cpus']} CPUs ({env['platform']}). Build rows run in one process (synchronous scheduler); "
                  "loader rows with num_workers=0 and the default decode threads, from local disk. Every row runs "
                  "in a fresh subprocess; the machine may be shared: compare rows of one run.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="12 pairs, 2 rounds: checks the benchmark runs")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench-v2")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=2, metavar=("ROW", "PATHS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return
    if args.quick:
        args.pairs, args.rounds = 12, 2
    paths = prepare(args.workdir, args.pairs, args.seed)
    paths_file = args.workdir / "paths.json"
    paths_file.write_text(json.dumps(paths))
    names = list(ROWS)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            runs[name].append(_run(name, paths_file))
            print(f"round {r + 1}/{args.rounds} {name}: {runs[name][-1]['rate']:.1f}/s", flush=True)
    rows = {}
    for name in names:
        kind, what = ROWS[name]
        extra = {k: statistics.median(m[k] for m in runs[name]) for k in runs[name][0] if k not in ("rate",)}
        rows[name] = {"kind": kind, "what": what, "rates": [m["rate"] for m in runs[name]],
                      "summary": _summary([m["rate"] for m in runs[name]]), "extra": extra}
    med = {n: rows[n]["summary"]["median"] for n in names}
    out = {
        "params": {"pairs": args.pairs, "rounds": args.rounds, "seed": args.seed, "quick": args.quick},
        "rows": rows,
        "ratios": {"build v2 / v1": med["build-v2"] / med["build-v1"],
                   "loader v2 / v1": med["load-v2"] / med["load-v1"],
                   "loader v2 with mask / v1": med["load-v2-mask"] / med["load-v1"]},
        "environment": _environment(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "v2.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.out / "v2.md").write_text(_markdown(out))
    print(_markdown(out))


if __name__ == "__main__":
    main()
