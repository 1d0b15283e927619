"""The end-to-end demo (``make demo``): raw BigEarthNet -> S3 catalog -> search -> training.

Nothing is downloaded: the six real pairs and the official tables come from
``bigearthnet-common``; a few hundred synthetic pairs in the exact raw layout are added so the
search and the loader have something to chew on. A real S3 server (moto) runs on 127.0.0.1
for the duration and is stopped at the end, as is every other process the demo starts.

    python -m bigearth_devtools.demo [--pairs 300] [--workdir demo-output] [--steps 20]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)
BUCKET = "bigearthnet"
PREFIX = "v1"


@contextmanager
def _bar(desc: str, total: int | None = None, unit: str = "it") -> Iterator[tqdm]:
    with tqdm(total=total, desc=f"{desc:<28}", unit=unit, dynamic_ncols=True) as bar:
        yield bar


def _progress(bar: tqdm) -> Callable[[int, int], None]:
    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return update


def prepare_raw(workdir: Path, pairs: int, seed: int) -> tuple[Path, Path, list[str]]:
    """The six real pairs plus ``pairs`` synthetic ones, all in one raw v1 tree."""
    from catalog_builder.examples import unpack_examples
    from catalog_builder.synthetic import generate

    raw = workdir / "raw"
    if raw.exists():
        shutil.rmtree(raw)
    real_s2, real_s1 = unpack_examples(workdir / "real")
    real_ids = sorted(p.name for p in real_s2.iterdir())
    with _bar("generate synthetic pairs", pairs, "pair") as bar:
        s2_root, s1_root = generate(raw, pairs, seed=seed, exclude=real_ids, progress=_progress(bar))
    for src, dst in ((real_s2, s2_root), (real_s1, s1_root)):
        for folder in src.iterdir():
            shutil.copytree(folder, dst / folder.name)
    return s2_root, s1_root, real_ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=300, help="synthetic pairs beside the six real ones")
    parser.add_argument("--workdir", type=Path, default=Path("demo-output"))
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import distributed  # noqa: F401 - imported first: it sets its loggers to INFO on import

    logging.getLogger("distributed").setLevel(logging.WARNING)

    import torch

    from bigearth_devtools.s3server import CONFLICTING_ENV, DUMMY_CREDENTIALS, start_s3_server
    from bigearth_stac.catalog import Catalog
    from catalog_builder.build import BuildOptions, build
    from catalog_builder.s3store import S3Store
    from catalog_builder.sources import open_source

    t_start = time.perf_counter()
    # The local server accepts any credentials; set dummy ones for this process and the Dask and
    # DataLoader workers it starts, so no client goes looking for real ones.
    for name in CONFLICTING_ENV:
        os.environ.pop(name, None)
    os.environ.update(DUMMY_CREDENTIALS)
    args.workdir.mkdir(parents=True, exist_ok=True)
    s2_root, s1_root, real_ids = prepare_raw(args.workdir, args.pairs, args.seed)
    total_pairs = args.pairs + len(real_ids)

    with start_s3_server() as server:
        settings = server.settings()
        server.create_bucket(BUCKET)
        url = f"s3://{BUCKET}/{PREFIX}"
        print(f"\nS3 server (moto) on {server.endpoint_url}, pid {server.pid}")

        with _bar("build COGs + STAC -> S3", total_pairs, "pair") as bar:
            t0 = time.perf_counter()
            report = build(open_source(str(s2_root), str(s1_root)), S3Store(url, settings=settings),
                           BuildOptions(n_workers=2, batch_size=16), progress=_progress(bar))
            build_s = time.perf_counter() - t0
        if not report.ok:
            raise SystemExit(f"build problems:\n{report.describe()}")
        objects = len(report.manifest)
        print(f"built {report.built} pairs ({objects} objects) in {build_s:.1f} s "
              f"({report.built / build_s:.1f} pairs/s) into {url}")

        catalog = Catalog.open(url, settings=settings)
        t0 = time.perf_counter()
        conifers = catalog.search(labels=["Coniferous forest"], nomenclature="19")
        n_conifers = len(conifers)
        ireland = catalog.search(bbox=[-10.6, 51.3, -5.9, 55.5])
        n_ireland = len(ireland)
        both = catalog.search(labels=["Coniferous forest", "Mixed forest"], match="all", split="train", exclude_snow=True)
        n_both = len(both)
        search_ms = (time.perf_counter() - t0) * 1000 / 3
        print(f"search: {n_conifers} patches with 'Coniferous forest'; {n_ireland} in an Irish bbox "
              f"({', '.join(ireland.ids()[:2])}, ...); {n_both} train patches with conifers AND mixed forest, "
              f"no snow ({search_ms:.0f} ms per query)")

        train = catalog.search(split="train", modality="pair")
        dataset = train.to_torch(modalities=("s2", "s1"), resample_to_10m=True, settings=settings, seed=args.seed)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(14, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(64, 19),
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        seen = 0
        losses = []
        with _bar("train a small CNN from S3", args.steps, "batch") as bar:
            t0 = time.perf_counter()
            step = 0
            while step < args.steps:
                for batch in loader:
                    x = torch.cat([batch["s2"], batch["s1"]], dim=1)
                    loss = loss_fn(model(x), batch["label"])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    losses.append(loss.item())
                    seen += len(batch["id"])
                    step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
                    if step >= args.steps:
                        break
            train_s = time.perf_counter() - t0
        print(f"trained {step} steps on {seen} samples streamed from S3 in {train_s:.1f} s "
              f"({seen / train_s:.0f} samples/s with {args.workers} workers); loss {losses[0]:.3f} -> {losses[-1]:.3f}")
        print(f"\ncatalog: {url}/catalog.json on {server.endpoint_url} "
              f"(search index: {url}/index/bigearthnet-s2.parquet); raw data and logs in {args.workdir}/")
        print("stopping the S3 server; the catalog lived in its memory.")
    print(f"demo finished in {time.perf_counter() - t_start:.0f} s: every process it started has stopped.")


if __name__ == "__main__":
    main()
