"""The end-to-end demo (``make demo``): raw BigEarthNet -> S3 catalog -> search -> training.

Nothing is downloaded: the six real pairs and the official tables come from
``bigearthnet-common``; a few hundred synthetic pairs in the exact raw layout are added so the
search and the loader have something to chew on. A real S3 server (moto) runs on 127.0.0.1
for the duration and is stopped at the end, as is every other process the demo starts.

    python -m bigearth_devtools.demo [--pairs 300] [--workdir demo-output] [--steps 20] [--release v2]

``--release v2`` runs it on BigEarthNet v2.0 (reBEN) instead: synthetic pairs in the exact v2
layout (nested product folders, ``metadata.parquet``, reference maps), a catalog with both label
sets, pixel fractions and reference-map COGs, searches by label and by pixel fraction, and a
small segmentation model trained on the loader's ``mask`` (19 classes, ``ignore_index=255``).
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
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)
BUCKET = "bigearthnet"
PREFIX = "v1"
PREFIXES = {"v1": "v1", "v2": "v2"}


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


def prepare_raw_v2(workdir: Path, pairs: int, seed: int) -> Any:
    """``pairs`` synthetic pairs in the raw v2 layout (a :class:`~catalog_builder.synthetic_v2.V2Tree`)."""
    from catalog_builder.synthetic_v2 import generate_v2

    raw = workdir / "raw-v2"
    if raw.exists():
        shutil.rmtree(raw)
    with _bar("generate synthetic v2 pairs", pairs, "pair") as bar:
        return generate_v2(raw, pairs, seed=seed, progress=_progress(bar))


def search_v2(catalog: Any) -> None:
    """The v2 searches: labels of both nomenclatures, pixel fractions, CQL2 on fractions."""
    t0 = time.perf_counter()
    conifers = len(catalog.search(labels=["Coniferous forest"]))
    pastures_43 = len(catalog.search(labels=["Pastures"], nomenclature="43"))
    dense = catalog.search(min_fractions={"Coniferous forest": 0.3})
    n_dense = len(dense)
    cql = len(catalog.search(filter="clc_fractions.312 >= 0.3 AND bigearthnet:split = 'train'"))
    search_ms = (time.perf_counter() - t0) * 1000 / 4
    print(f"search (v2.0): {conifers} patches labelled 'Coniferous forest'; {pastures_43} with the 43-class "
          f"'Pastures'; {n_dense} at least 30 % coniferous forest by pixel ({cql} of them in train, as CQL2) "
          f"({search_ms:.0f} ms per query)")


def train_segmentation(catalog: Any, settings: Any, args: argparse.Namespace) -> None:
    """A small fully convolutional model on S2 + S1, trained on the 19-class reference-map masks."""
    import torch

    train = catalog.search(split="train", modality="pair")
    dataset = train.to_torch(modalities=("s2", "s1"), resample_to_10m=True, mask="19", ignore_index=255,
                             settings=settings, seed=args.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(14, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, len(dataset.mask_classes), 1),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    seen, losses, correct, counted = 0, [], 0, 0
    with _bar("train a segmenter from S3", args.steps, "batch") as bar:
        t0 = time.perf_counter()
        step = 0
        while step < args.steps:
            for batch in loader:
                x = torch.cat([batch["s2"], batch["s1"]], dim=1)
                logits = model(x)
                loss = loss_fn(logits, batch["mask"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                valid = batch["mask"] != 255
                correct += int((logits.argmax(1) == batch["mask"])[valid].sum())
                counted += int(valid.sum())
                seen += len(batch["id"])
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if step >= args.steps:
                    break
        train_s = time.perf_counter() - t0
    print(f"trained {step} steps on {seen} samples + masks streamed from S3 in {train_s:.1f} s "
          f"({seen / train_s:.0f} samples/s with {args.workers} workers); loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
          f"pixel accuracy {correct / max(counted, 1):.2f} on the labelled pixels")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=300, help="synthetic pairs beside the six real ones")
    parser.add_argument("--workdir", type=Path, default=Path("demo-output"))
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--release", choices=("v1", "v2"), default="v1",
                        help="v1: BigEarthNet-MM v1.0 (the six real pairs + synthetic ones); v2: reBEN v2.0 "
                             "(synthetic pairs in the v2 layout, reference maps, masks)")
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
    if args.release == "v2":
        tree = prepare_raw_v2(args.workdir, args.pairs, args.seed)
        source = open_source(str(tree.s2), str(tree.s1), release="v2", metadata=[str(m) for m in tree.metadata])
        total_pairs = len(tree.patches)
    else:
        s2_root, s1_root, real_ids = prepare_raw(args.workdir, args.pairs, args.seed)
        source = open_source(str(s2_root), str(s1_root))
        total_pairs = args.pairs + len(real_ids)

    with start_s3_server() as server:
        settings = server.settings()
        server.create_bucket(BUCKET)
        url = f"s3://{BUCKET}/{PREFIXES[args.release]}"
        print(f"\nS3 server (moto) on {server.endpoint_url}, pid {server.pid}")

        with _bar("build COGs + STAC -> S3", total_pairs, "pair") as bar:
            t0 = time.perf_counter()
            report = build(source, S3Store(url, settings=settings),
                           BuildOptions(n_workers=2, batch_size=16), progress=_progress(bar))
            build_s = time.perf_counter() - t0
        if not report.ok:
            raise SystemExit(f"build problems:\n{report.describe()}")
        objects = len(report.manifest)
        print(f"built {report.built} pairs ({objects} objects) in {build_s:.1f} s "
              f"({report.built / build_s:.1f} pairs/s) into {url}")
        disagreements = getattr(report, "label_disagreements", [])
        if disagreements:
            print(f"  {len(disagreements)} pairs whose official labels disagree with their reference map "
                  "(kept, with the official labels; named in the build report)")

        catalog = Catalog.open(url, settings=settings)
        if args.release == "v2":
            search_v2(catalog)
            train_segmentation(catalog, settings, args)
            index = f"{url}/index/bigearthnet-v2-s2.parquet"
            print(f"\ncatalog: {url}/catalog.json on {server.endpoint_url} (search index: {index}); "
                  f"raw data in {args.workdir}/")
        else:
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
