"""Which COG layout should the builder write by default? Measured, not guessed.

For each layout (stacked: one COG per S2 resolution group + one S1 COG; per-band: one COG per
band) and codec (DEFLATE, ZSTD), on the six real pairs (repeated to smooth timings) and on
synthetic pairs: encode time per pair, objects and bytes per pair, and decode time per sample
from bytes in memory with GDAL (rasterio) and with tifffile + imagecodecs (the loader's fast
path). One process, one run: compare the ratios, not the absolute figures.

    python -m benchmarks.bench_layouts [--quick]

Writes benchmarks/results/layouts.json and layouts.md.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import tifffile
from rasterio.io import MemoryFile

from catalog_builder.cog import CogOptions
from catalog_builder.examples import unpack_examples
from catalog_builder.pair import encode_pair
from catalog_builder.sources import open_source
from catalog_builder.synthetic import generate

RESULTS = Path(__file__).parent / "results"


def _decode_gdal(blobs: list[bytes]) -> int:
    n = 0
    for data in blobs:
        with MemoryFile(data) as mem, mem.open(driver="GTiff") as src:
            n += src.read().size
    return n


def _decode_tifffile(blobs: list[bytes]) -> int:
    n = 0
    for data in blobs:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            n += tif.pages[0].asarray().size
    return n


def measure(pairs: list, pixels: list, layout: str, compress: str, repeat: int) -> dict:
    options = CogOptions(compress=compress)
    t0 = time.perf_counter()
    for _ in range(repeat):
        encoded = [encode_pair(p, px, layout, options) for p, px in zip(pairs, pixels, strict=True)]  # type: ignore[arg-type]
    encode_s = (time.perf_counter() - t0) / (repeat * len(pairs))
    samples = [[c.data for side in e.values() for c in side.values()] for e in encoded]
    objects = len(samples[0])
    size = sum(len(b) for s in samples for b in s) / len(samples)
    # sanity: both decoders agree with the raw pixels for the first sample
    result = {}
    for name, fn in (("gdal", _decode_gdal), ("tifffile", _decode_tifffile)):
        t0 = time.perf_counter()
        for _ in range(repeat):
            for blobs in samples:
                fn(blobs)
        per = (time.perf_counter() - t0) / (repeat * len(samples))
        result[name] = 1.0 / per
    return {
        "layout": layout, "compress": compress, "objects_per_pair": objects,
        "bytes_per_pair": round(size), "encode_pairs_per_s": round(1.0 / encode_s, 1),
        "decode_samples_per_s_gdal": round(result["gdal"], 1),
        "decode_samples_per_s_tifffile": round(result["tifffile"], 1),
    }


def _check_round_trip(pairs: list, pixels: list) -> None:
    for layout in ("stacked", "per-band"):
        enc = encode_pair(pairs[0], pixels[0], layout)  # type: ignore[arg-type]
        for side in enc.values():
            for cog in side.values():
                with tifffile.TiffFile(io.BytesIO(cog.data)) as tif:
                    a = tif.pages[0].asarray()
                with MemoryFile(cog.data) as mem, mem.open() as src:
                    b = src.read()
                a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
                assert np.array_equal(a, b), "tifffile and GDAL disagree"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 2 if args.quick else 10
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        datasets = {"six real pairs": unpack_examples(Path(tmp) / "real")}
        datasets["synthetic pairs (60)"] = generate(Path(tmp) / "syn", 20 if args.quick else 60, seed=3)
        for label, (s2, s1) in datasets.items():
            source = open_source(str(s2), str(s1))
            pairs = [source.read_pair(u) for u in source.units()]
            pixels = [source.read_pixels(p) for p in pairs]
            _check_round_trip(pairs, pixels)
            raw_bytes = sum(len(Path(s2, f).read_bytes()) for p in pairs for f in p.s2.band_files.values())
            raw_bytes += sum(len(Path(s1, f).read_bytes()) for p in pairs for f in p.s1.band_files.values())
            # raw v1 decoded as torchgeo does: 14 GDAL opens per sample
            blobs = [[Path(s2, f).read_bytes() for f in p.s2.band_files.values()] + [Path(s1, f).read_bytes() for f in p.s1.band_files.values()] for p in pairs]
            t0 = time.perf_counter()
            for _ in range(repeat):
                for b in blobs:
                    _decode_gdal(b)
            raw_rate = repeat * len(blobs) / (time.perf_counter() - t0)
            rows.append({"data": label, "layout": "raw v1 (GDAL, 14 files)", "compress": "none", "objects_per_pair": 14,
                         "bytes_per_pair": round(raw_bytes / len(pairs)), "encode_pairs_per_s": None,
                         "decode_samples_per_s_gdal": round(raw_rate, 1), "decode_samples_per_s_tifffile": None})
            for layout in ("stacked", "per-band"):
                for compress in ("DEFLATE", "ZSTD"):
                    rows.append({"data": label, **measure(pairs, pixels, layout, compress, repeat)})
    meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": __import__("os").cpu_count(),
            "gdal": rasterio.__gdal_version__, "rasterio": rasterio.__version__, "tifffile": tifffile.__version__,
            "repeat": repeat}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "layouts.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = ["| data | layout | codec | objects/pair | bytes/pair | encode pairs/s | decode/s GDAL | decode/s tifffile |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['layout']} | {r['compress']} | {r['objects_per_pair']} | {r['bytes_per_pair']:,} | "
                     f"{r['encode_pairs_per_s'] or '-'} | {r['decode_samples_per_s_gdal']} | {r['decode_samples_per_s_tifffile'] or '-'} |")
    lines.append(f"\n{meta}")
    (RESULTS / "layouts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
