"""Write the three notebooks of this folder from the cells below (clean: no outputs).

    python notebooks/make_notebooks.py

The notebooks are generated so that a review reads plain Python and a change to a shared step
(the local data, the S3 server) is made once. Cell ids are fixed, so regenerating an unchanged
notebook gives identical bytes. Each notebook sets up its own data (the six real pairs plus a
few dozen synthetic ones), runs against a local S3 server it starts, and stops it at the end;
``tests/test_notebooks.py`` executes all three.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def _md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(textwrap.dedent(text).strip())


def _code(text: str, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    cell = new_code_cell(textwrap.dedent(text).strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def _notebook(slug: str, cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    for i, cell in enumerate(cells):
        cell.id = f"{slug}-{i:02d}"
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    return nb


# -----------------------------------------------------------------------------------------------
# Steps shared by the notebooks
# -----------------------------------------------------------------------------------------------


def _parameters(n_synthetic: int, extra: str = "") -> nbformat.NotebookNode:
    common = textwrap.dedent(f"""
        # Parameters (tagged "parameters": papermill or the tests may override them).
        N_SYNTHETIC = {n_synthetic}  # synthetic pairs generated beside the six real ones
        SEED = 0  # seed of the synthetic pairs (and of the loader's shuffling)
        WORKDIR = None  # where the raw data goes; None: a temporary folder, removed at the end
        BUCKET = "bigearthnet"  # bucket on the local S3 server
        PREFIX = "v1"  # the catalog lives at s3://BUCKET/PREFIX
        """)
    return _code(common + textwrap.dedent(extra), tags=("parameters",))


DATA_MD = """
    ## Data for this notebook

    Nothing is downloaded. The **six real BigEarthNet v1 pairs** (Sentinel-2 L2A + Sentinel-1 GRD
    patches from Portugal, Ireland, Austria and Finland) ship with the PyPI package
    `bigearthnet-common` by the dataset's authors; `unpack_examples` writes them in the raw
    BigEarthNet v1 folder layout. `generate` adds synthetic pairs in exactly the same layout: their
    names, countries, seasons and official splits are real (drawn from the official tables), their
    pixels, labels and footprints are made up. On the real archive you would point the builder at
    the downloaded `BigEarthNet-v1.0` and `BigEarthNet-S1-v1.0` folders (or at `s3://` copies).
    """

DATA_CODE = """
    %matplotlib inline
    import atexit
    import os
    import shutil
    import tempfile
    import time
    from pathlib import Path

    from catalog_builder.examples import unpack_examples
    from catalog_builder.synthetic import generate

    t_notebook = time.perf_counter()
    workdir = Path(WORKDIR) if WORKDIR else Path(tempfile.mkdtemp(prefix="bigearth-notebook-"))
    workdir.mkdir(parents=True, exist_ok=True)

    real_s2, real_s1 = unpack_examples(workdir / "real")
    real_ids = sorted(p.name for p in real_s2.iterdir())
    # Synthetic pairs (never one of the real names), then the real ones copied into the same tree,
    # so one build sees them all.
    s2_root, s1_root = generate(workdir / "raw", N_SYNTHETIC, seed=SEED, exclude=real_ids)
    for src, dst in ((real_s2, s2_root), (real_s1, s1_root)):
        for folder in src.iterdir():
            shutil.copytree(folder, dst / folder.name)
    print(f"{len(real_ids)} real + {N_SYNTHETIC} synthetic pairs under {workdir}")
    print("S2 root:", s2_root, "\\nS1 root:", s1_root)
    """

SERVER_MD = """
    ## A local S3 server

    `start_s3_server()` runs a real S3-compatible HTTP server (moto) on 127.0.0.1 as a separate
    process, so everything below talks S3 over HTTP exactly as it would to AWS, MinIO or Ceph. It
    accepts any credentials, but clients still sign their requests, so the notebook sets dummy
    ones for this kernel (and the DataLoader workers it starts). **With a real bucket, skip this
    cell**: `StorageSettings.from_env()` picks up your endpoint, region and credentials.
    """

SERVER_CODE = """
    from bigearth_devtools.s3server import CONFLICTING_ENV, DUMMY_CREDENTIALS, start_s3_server

    for name in CONFLICTING_ENV:  # variables that would send clients to another endpoint
        os.environ.pop(name, None)
    os.environ.update(DUMMY_CREDENTIALS)

    server = start_s3_server()
    atexit.register(server.stop)  # the last cell stops it; this also covers an interrupted notebook
    # Endpoint, region, path-style addressing and the checksum mode non-AWS stores need.
    settings = server.settings()
    server.create_bucket(BUCKET)
    URL = f"s3://{BUCKET}/{PREFIX}"
    print(f"S3 server on {server.endpoint_url} (pid {server.pid}); the catalog will live at {URL}")
    """

BUILD_S3_MD = """
    ## Build the catalog straight to S3

    The builder turns every raw pair into Cloud-Optimized GeoTIFFs (4 objects per pair in the
    default *stacked* layout), one STAC item per patch with both label nomenclatures, the
    official split and the snow/cloud flags, and a stac-geoparquet index per collection. Here it
    runs in this process (`scheduler="synchronous"`); by default it starts a Dask `LocalCluster`,
    and `scheduler="tcp://host:8786"` uses an existing cluster.
    """

BUILD_S3_CODE = """
    from catalog_builder.build import BuildOptions, build
    from catalog_builder.s3store import S3Store
    from catalog_builder.sources import open_source

    t0 = time.perf_counter()
    report = build(open_source(str(s2_root), str(s1_root)), S3Store(URL, settings=settings),
                   BuildOptions(scheduler="synchronous"))
    print(report.describe(), f"({time.perf_counter() - t0:.1f} s)")
    if not report.ok:
        raise RuntimeError(report.describe())
    """


def _stop_code(what: str) -> nbformat.NotebookNode:
    return _code(
        f"""
        server.stop()
        if not WORKDIR:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"S3 server stopped: {{not server.alive()}}; {what} finished in "
              f"{{time.perf_counter() - t_notebook:.0f}} s")
        """
    )


STOP_MD = """
    ## Clean up

    Stop the S3 server (the catalog lived in its memory) and remove the temporary data.
    """


# -----------------------------------------------------------------------------------------------
# 01: quickstart
# -----------------------------------------------------------------------------------------------


def quickstart() -> nbformat.NotebookNode:
    return _notebook("quickstart", [
        _md("""
            # BigEarthNet on S3: quickstart

            BigEarthNet pairs a 1.2 km x 1.2 km Sentinel-2 patch (12 bands, 10/20/60 m) with the
            Sentinel-1 patch (VV, VH backscatter) of the same place, and labels each pair with the
            CORINE land cover classes present in it (43 Level-3 classes, or the 19-class set
            recommended for learning). This notebook opens a published catalog of such pairs,
            searches it by label and by region **without reading a single item JSON** (the search
            runs on a small stac-geoparquet index), and looks at the patches it finds.

            Runs in well under a minute: it builds its own small catalog on a local S3 server first.
            """),
        _parameters(30),
        _md(DATA_MD),
        _code(DATA_CODE),
        _md(SERVER_MD),
        _code(SERVER_CODE),
        _md(BUILD_S3_MD),
        _code(BUILD_S3_CODE),
        _md("""
            ## Open the catalog

            `Catalog.open` reads the root `catalog.json` and the two collections (Sentinel-2 and
            Sentinel-1) and finds their search indexes. That is all: the index is read by range
            requests when a search runs, and only the columns and row groups a search needs.
            """),
        _code("""
            from bigearth_stac.catalog import Catalog

            catalog = Catalog.open(URL, settings=settings)
            for modality, index in catalog.indexes.items():
                print(f"{modality}: {index.collection_id}, {index.num_rows} items, "
                      f"index {index.nbytes / 1e3:.0f} kB at {index.url}")
            """),
        _md("""
            ## Search by label

            Labels are class names; `nomenclature="19"` (the default) searches the 19-class set,
            `"43"` the original CORINE Level-3 classes. `match="any"` (default) finds patches with
            at least one of the labels, `"all"` patches with every one. A misspelt class name is
            an error that suggests the closest valid names, never an empty result.
            """),
        _code("""
            conifers = catalog.search(labels=["Coniferous forest"])
            print(f"search by label: {len(conifers)} patches with 'Coniferous forest'")
            both = catalog.search(labels=["Coniferous forest", "Mixed forest"], match="all")
            print(f"{len(both)} patches with coniferous AND mixed forest")
            peat = catalog.search(labels="Peatbogs", nomenclature="43")
            print(f"{len(peat)} patches with 'Peatbogs' (43-class nomenclature)")
            try:
                catalog.search(labels="Coniferous forrest")
            except ValueError as exc:
                print("misspelt:", str(exc)[:110], "...")
            conifers.ids()[:5]
            """),
        _md("""
            Search results are lazy and columnar (Arrow underneath): `len()`, `ids()`, iteration over
            light `dict` rows, `to_arrow()`, `to_geodataframe()`, `to_item_collection()` (pystac, for
            small results), `sample_table()`, `to_torch()` and `to_xarray()`.
            """),
        _code("""
            conifers.to_geodataframe(columns=["id", "datetime", "bigearthnet:country", "bigearthnet:split",
                                              "bigearthnet:labels_19"]).head()
            """),
        _md("""
            ## Search by region, time and metadata

            `bbox` is `(west, south, east, north)` in degrees, `intersects` any GeoJSON geometry;
            footprints are tested exactly. Every parameter narrows the result (AND): `datetime`
            (a date, a timestamp or an interval `start/end`), `split` (the official
            train/validation/test split), `countries`, `seasons`, and the official quality lists
            (`exclude_snow`, `exclude_clouds`). `filter` takes CQL2 (text or JSON) for the rest.
            """),
        _code("""
            IRELAND = (-10.6, 51.3, -5.9, 55.5)
            ireland = catalog.search(bbox=IRELAND)
            print(f"search by region: {len(ireland)} patches in the bbox {IRELAND}")

            finland = {"type": "Polygon", "coordinates": [[[20.5, 59.8], [31.6, 59.8], [31.6, 70.1],
                                                           [20.5, 70.1], [20.5, 59.8]]]}
            print(f"{len(catalog.search(intersects=finland))} patches intersect a polygon around Finland")

            summer_train = catalog.search(split="train", seasons="Summer", datetime="2017-06-01/2017-08-31",
                                          exclude_snow=True, exclude_clouds=True)
            print(f"{len(summer_train)} clear training patches from summer 2017")

            cql2 = catalog.search(filter="a_overlaps(\\"bigearthnet:labels_19\\", ('Pastures', 'Arable land')) "
                                         "AND country IN ('Ireland', 'Austria')")
            print(f"{len(cql2)} patches with pastures or arable land in Ireland or Austria (CQL2)")
            """),
        _md("""
            ## Look at the patches

            `sample_table()` turns a result into what the loader reads: one row per sample with the
            absolute URLs of its COGs and its labels. With `modality="pair"` each row carries the
            Sentinel-1 partner's assets too. `read_patch` fetches one row's objects from S3 and
            decodes them into numpy arrays by band name; `plot_patch` shows the Sentinel-2 true
            colour composite (B04, B03, B02, stretched between the 2nd and 98th percentiles), the
            Sentinel-1 VV and VH backscatter (dB) and both label sets. Here: the six real pairs
            (the synthetic pixels are smooth noise).
            """),
        _code("""
            from bigearth_stac.patch import read_patch
            from bigearth_stac.plot import plot_patch, plot_patches

            real = catalog.search(modality="pair", filter={"op": "in", "args": [{"property": "id"}, real_ids]})
            patches = [read_patch(row, settings) for row in real.sample_table().to_pylist()]
            print(f"read {len(patches)} patches; bands of one: {sorted(patches[0].bands)}")
            lake = next(p for p in patches if p.id.endswith("_69_24"))  # a Finnish lake among forest
            plot_patch(lake)
            """),
        _code("""
            plot_patches(patches, columns=3)
            """),
        _md("""
            ## Footprints on a map

            Each patch is a 1.2 km square in its Sentinel-2 tile's UTM zone; its footprint in the
            index is in longitude/latitude. Grey: every patch of the catalog; red: the Irish bbox
            search.
            """),
        _code("""
            from bigearth_stac.plot import plot_footprints

            everything = catalog.search()
            plot_footprints([row["bbox"] for row in everything], highlight=[row["bbox"] for row in ireland],
                            title=f"{len(everything)} patches; red: {len(ireland)} in the Irish bbox")
            """),
        _md("""
            ## Label statistics

            How many patches carry each class (a patch has several). On the real archive the classes
            are very unbalanced, which matters for the loss and for per-class metrics.
            """),
        _code("""
            from bigearth_stac.plot import plot_label_counts

            labels_19 = everything.to_arrow(["bigearthnet:labels_19"]).column("bigearthnet:labels_19").to_pylist()
            plot_label_counts(labels_19, nomenclature="19")
            """),
        _md(STOP_MD),
        _stop_code("quickstart"),
    ])


# -----------------------------------------------------------------------------------------------
# 02: training
# -----------------------------------------------------------------------------------------------


def training() -> nbformat.NotebookNode:
    return _notebook("training", [
        _md("""
            # Training from S3 with PyTorch

            A search result becomes a PyTorch `IterableDataset` that streams samples straight from
            object storage: no download step, no local copy. Each DataLoader worker fetches whole
            COG objects (many GETs in flight), decodes them, normalises the bands and yields
            tensors with a multi-hot label. This notebook trains a small CNN for a few steps,
            explains how samples are split across DDP ranks and DataLoader workers, resumes an
            interrupted epoch, and computes per-class metrics on the validation split.
            """),
        _parameters(40, """
            BATCH_SIZE = 8
            EPOCHS = 3  # a few short epochs: enough to show set_epoch, not to learn much
            NUM_WORKERS = 2  # DataLoader worker processes
            """),
        _md(DATA_MD),
        _code(DATA_CODE),
        _md(SERVER_MD),
        _code(SERVER_CODE),
        _md(BUILD_S3_MD),
        _code(BUILD_S3_CODE),
        _md("""
            ## The official splits

            Every item carries the official split (`train`, `validation`, `test`, or none for the
            pairs the authors left out: seasonal snow, clouds or shadow, no 19-class label), so
            the training and validation sets are two searches. `modality="pair"` gives samples
            with both sensors.
            """),
        _code("""
            import torch
            from torch.utils.data import DataLoader

            from bigearth_stac.catalog import Catalog

            torch.manual_seed(SEED)
            catalog = Catalog.open(URL, settings=settings)
            train = catalog.search(split="train", modality="pair")
            val = catalog.search(split="validation", modality="pair")
            print(f"search: {len(train)} training pairs, {len(val)} validation pairs")
            """),
        _md("""
            ## The dataset

            `to_torch()` takes the loader options (all keyword arguments of `BigEarthNetStream`):
            which `modalities` and `bands`, `resample_to_10m` (stack all 12 Sentinel-2 bands at
            120 x 120 with bilinear upsampling; by default the bands stay at their native 10/20/60 m
            resolution in a dict), `normalize` (official per-band mean and standard deviation),
            `nomenclature` (`"19"` or `"43"`) and `class_order` of the label vector, `shuffle` and
            `seed`, and `settings` for the object store.
            """),
        _code("""
            dataset = train.to_torch(modalities=("s2", "s1"), resample_to_10m=True, settings=settings, seed=SEED)
            sample = next(iter(dataset))
            print(f"{len(dataset)} samples per epoch; S2 bands {dataset.bands['s2']}, S1 bands {dataset.bands['s1']}")
            print({k: (tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else v for k, v in sample.items()})
            print("labels of", sample["id"], "->", [c for c, v in zip(dataset.classes, sample["label"], strict=True) if v])
            """),
        _md("""
            ## A few epochs of a small CNN

            Call `set_epoch(epoch)` before each epoch: the order is a permutation drawn from
            `(seed, epoch)`, the same in every rank and worker, so a new epoch is a new shuffle and a
            rerun with the same seed sees the same order. It reaches the workers even with
            `persistent_workers=True`. Each DataLoader worker reads its own share of the epoch
            (below), so `num_workers` scales the fetching.
            """),
        _code("""
            model = torch.nn.Sequential(
                torch.nn.Conv2d(14, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
                torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                torch.nn.Flatten(), torch.nn.Linear(64, len(dataset.classes)),
            )
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            loss_fn = torch.nn.BCEWithLogitsLoss()  # multi-label: one sigmoid per class
            loader = DataLoader(dataset, batch_size=BATCH_SIZE, num_workers=NUM_WORKERS)

            t0, seen, step = time.perf_counter(), 0, 0
            for epoch in range(EPOCHS):
                dataset.set_epoch(epoch)
                first_ids = None
                for batch in loader:
                    x = torch.cat([batch["s2"], batch["s1"]], dim=1)  # 12 S2 + 2 S1 channels
                    loss = loss_fn(model(x), batch["label"])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    seen += len(batch["id"])
                    step += 1
                    first_ids = first_ids or batch["id"][:2]
                print(f"epoch {epoch}: starts with {first_ids}, loss {loss.item():.3f}")
            seconds = time.perf_counter() - t0
            print(f"trained {step} steps on {seen} samples streamed from S3 in {seconds:.1f} s "
                  f"({seen / seconds:.0f} samples/s with {NUM_WORKERS} workers); loader stats {dataset.stats}")
            """),
        _md("""
            ## Who reads what: ranks, workers, uneven shards

            Sharding needs no communication. The epoch's permutation is cut into one strided slice
            per DDP rank, and each DataLoader worker of a rank takes a strided slice of that, so every
            sample is read exactly once per epoch across all ranks and workers. DDP needs every rank
            to run the same number of steps: when the row count is not a multiple of the world size,
            `uneven="pad"` (default) repeats the first few samples of the permutation, `"drop"`
            leaves the last few out (fewer than `world_size`).

            The rank and world size come from `torch.distributed` when it is initialised (else the
            `rank=` / `world_size=` arguments, else the `RANK` / `WORLD_SIZE` environment variables
            that `torchrun` sets). A DDP script needs nothing else:

            ```python
            torch.distributed.init_process_group("nccl")            # torchrun sets RANK, WORLD_SIZE
            dataset = train.to_torch(settings=settings, seed=0)     # this rank's share, automatically
            loader = DataLoader(dataset, batch_size=64, num_workers=8)
            for epoch in range(epochs):
                dataset.set_epoch(epoch)                            # same permutation on every rank
                for batch in loader: ...
            ```

            Here are the rows of 11 samples on 3 ranks with 2 workers each:
            """),
        _code("""
            from bigearth_stac.sharding import epoch_order, shard

            order = epoch_order(11, seed=SEED, epoch=0, shuffle=True)
            print("permutation of epoch 0:", order.tolist())
            for uneven in ("pad", "drop"):
                print(f"uneven={uneven!r}")
                for rank in range(3):
                    rows = [shard(order, rank, 3, worker, 2, uneven).tolist() for worker in range(2)]
                    print(f"  rank {rank}: worker 0 reads {rows[0]}, worker 1 reads {rows[1]}")

            ranks = [train.to_torch(settings=settings, rank=r, world_size=2) for r in range(2)]
            rows = sorted(i for ds in ranks for i in ds.shard_rows().tolist())
            print(f"{len(train)} training rows on 2 ranks: {[len(ds) for ds in ranks]} samples each; "
                  f"together they read rows {rows}")
            """),
        _md("""
            ## Resume an interrupted epoch

            `state_dict()` records the epoch and the position in the shard; `load_state_dict()` on a
            dataset over the same search (same seed) continues right after the last sample yielded.
            This is torchdata's `StatefulDataLoader` protocol: with `StatefulDataLoader` the loader's
            own `state_dict()` holds each worker's position, and resuming works with workers too.
            """),
        _code("""
            import itertools


            def light() -> torch.utils.data.IterableDataset:
                # RGB only: quicker to read, the same order as any other dataset with this seed.
                return train.to_torch(modalities=("s2",), bands=["B04", "B03", "B02"], settings=settings, seed=SEED)


            full = light()
            full.set_epoch(1)
            uninterrupted = [s["id"] for s in full]

            interrupted = light()
            interrupted.set_epoch(1)
            head = [s["id"] for s in itertools.islice(interrupted, 5)]  # stop after 5 samples
            state = interrupted.state_dict()
            print("saved state:", state)

            resumed = light()
            resumed.load_state_dict(state)
            resumed.set_epoch(1)  # the usual loop calls it again: the restored position survives
            tail = [s["id"] for s in resumed]
            print(f"resumed after {len(head)} samples, read the other {len(tail)}: "
                  f"same as uninterrupted: {head + tail == uninterrupted}")
            """),
        _code("""
            import importlib.util
            import warnings

            if importlib.util.find_spec("torchdata") is None:
                print("torchdata is not installed: pip install torchdata for StatefulDataLoader")
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # torchdata 0.11 calls a deprecated torch API
                    from torchdata.stateful_dataloader import StatefulDataLoader

                    def stateful() -> StatefulDataLoader:
                        return StatefulDataLoader(light(), batch_size=4, num_workers=NUM_WORKERS)

                    whole = [i for batch in stateful() for i in batch["id"]]
                    first = stateful()
                    batches = iter(first)
                    head = [i for _ in range(2) for i in next(batches)["id"]]
                    state = first.state_dict()  # would go into the training checkpoint
                    del batches
                    second = stateful()
                    second.load_state_dict(state)
                    tail = [i for batch in second for i in batch["id"]]
                print(f"StatefulDataLoader with {NUM_WORKERS} workers: resumed after {len(head)} samples, "
                      f"same as uninterrupted: {head + tail == whole}")
            """),
        _md("""
            ## Per-class metrics on the validation split

            Precision, recall and F1 of each of the 19 classes, from true/false positives and false
            negatives counted with torch (threshold 0.5 on the sigmoid), and the average precision
            (AP) of each class. `shuffle=False` reads the validation set in index order. After a few
            steps on a few dozen patches, most of them synthetic with made-up labels, the model has
            learnt next to nothing: the point is the mechanics. Classes absent from this validation
            set (support 0) get 0 by this convention.
            """),
        _code("""
            import pandas as pd

            from bigearth_stac.plot import plot_per_class_metric

            val_set = val.to_torch(modalities=("s2", "s1"), resample_to_10m=True, settings=settings, shuffle=False)
            model.eval()
            scores, actual = [], []
            with torch.no_grad():
                for batch in DataLoader(val_set, batch_size=BATCH_SIZE, num_workers=NUM_WORKERS):
                    logits = model(torch.cat([batch["s2"], batch["s1"]], dim=1))
                    scores.append(torch.sigmoid(logits))
                    actual.append(batch["label"] > 0.5)
            score, true = torch.cat(scores), torch.cat(actual)
            pred = score > 0.5
            tp = (pred & true).sum(0).float()
            fp = (pred & ~true).sum(0).float()
            fn = (~pred & true).sum(0).float()
            precision = tp / (tp + fp).clamp(min=1)
            recall = tp / (tp + fn).clamp(min=1)
            f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
            micro_f1 = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()).clamp(min=1)


            def average_precision(class_scores: torch.Tensor, positive: torch.Tensor) -> float:
                # The mean of the precision at each positive, patches ranked by score (no threshold).
                hits = positive[class_scores.argsort(descending=True)].float()
                ranks = torch.arange(1, len(hits) + 1)
                return float((hits.cumsum(0) / ranks * hits).sum() / hits.sum()) if hits.sum() else 0.0


            ap = torch.tensor([average_precision(score[:, c], true[:, c]) for c in range(true.shape[1])])
            present = true.sum(0) > 0
            print(f"validation: {len(true)} samples, micro-F1 {micro_f1:.3f}; over the {int(present.sum())} "
                  f"classes present: macro-F1 {f1[present].mean():.3f}, mean AP {ap[present].mean():.3f}")
            metrics = pd.DataFrame({"precision": precision, "recall": recall, "F1": f1, "AP": ap,
                                    "support": true.sum(0)}, index=list(val_set.classes))
            metrics.round(3)
            """),
        _code("""
            plot_per_class_metric(dict(zip(val_set.classes, f1.tolist(), strict=True)), metric="F1 (validation, threshold 0.5)")
            """),
        _md("""
            A model this young rarely gives any class a probability above 0.5, so F1 at that threshold
            is mostly 0. Average precision ranks the validation patches by the model's score for
            each class and needs no threshold: the usual companion metric for multi-label
            BigEarthNet results.
            """),
        _code("""
            plot_per_class_metric(dict(zip(val_set.classes, ap.tolist(), strict=True)), metric="average precision (validation)")
            """),
        _md(STOP_MD),
        _stop_code("training"),
    ])


# -----------------------------------------------------------------------------------------------
# 03: publishing
# -----------------------------------------------------------------------------------------------


def publishing() -> nbformat.NotebookNode:
    return _notebook("publishing", [
        _md("""
            # Build, validate and publish a catalog

            The publishing workflow: build the catalog on local disk, validate every STAC document
            against its JSON Schemas, look at an item, then publish it to S3 in an order that never
            lets a reader see a broken catalog, verify every object, and open the published
            catalog from S3. (Building straight to `s3://` also works, see the quickstart; a local
            build first lets you validate and inspect before anything is public.)
            """),
        _parameters(20),
        _md(DATA_MD),
        _code(DATA_CODE),
        _md("""
            ## Build locally

            The same build as on a cluster, in this process. A rerun skips every pair whose item
            and COGs are already there with the recorded size and checksum, so an interrupted
            build resumes; `catalog.json` is written last.
            """),
        _code("""
            import pyarrow.parquet as pq

            from catalog_builder.build import BuildOptions, build
            from catalog_builder.sources import open_source
            from catalog_builder.store import LocalStore

            local = workdir / "catalog"
            t0 = time.perf_counter()
            report = build(open_source(str(s2_root), str(s1_root)), LocalStore(local), BuildOptions(scheduler="synchronous"))
            print(report.describe(), f"({time.perf_counter() - t0:.1f} s)")
            if not report.ok:
                raise RuntimeError(report.describe())
            rerun = build(open_source(str(s2_root), str(s1_root)), LocalStore(local), BuildOptions(scheduler="synchronous"))
            print("rerun:", rerun.describe())

            manifest = pq.read_table(local / "manifest.parquet").to_pandas()
            print(f"{len(manifest)} objects, {manifest['size'].sum() / 1e6:.1f} MB; by media type:")
            manifest.groupby("media_type")["size"].agg(["count", "sum"])
            """),
        _md("""
            ## Validate

            Every document (root catalog, collections, tile catalogs, items) is validated against
            the STAC core schemas and each extension it declares (projection, eo, raster, file, sar
            and the project's own `bigearthnet:` extension). The package ships every schema it
            needs, so validation is offline: nothing is downloaded. The catalog is crawlable:
            collection -> one catalog per tile -> items, so any STAC tool finds every item.
            """),
        _code("""
            from bigearth_stac.validate import validate_catalog

            count, problems = validate_catalog(local)
            tiles = len(list(local.glob("*/*/catalog.json")))
            print(f"validated {count} STAC documents (offline, {tiles} tile catalogs): {len(problems)} problems")
            for problem in problems[:10]:
                print(" ", problem)
            """),
        _md("""
            ## Inspect an item

            One item per patch, keys partitioned by Sentinel-2 tile. Its properties hold both label
            nomenclatures (names and CORINE codes), the official split, country, season and
            quality flags, the projection, and the id of the partner patch; each asset lists its
            bands (with per-band statistics), its projection shape and transform, its size and its
            checksum (a sha2-256 multihash).
            """),
        _code("""
            import json

            # The JSON as published. (pystac.Item.from_file would migrate it to the newest
            # projection extension on reading, dropping proj:epsg, which stackstac needs.)
            item_path = next(local.glob("bigearthnet-s2/*/S2B_MSIL2A_20170924T93020_69_24/*.json"))
            item = json.loads(item_path.read_text())
            print(item_path.relative_to(local), "extensions:", *item["stac_extensions"], sep="\\n  ")
            print(json.dumps(item["properties"], indent=1))
            """),
        _code("""
            import pandas as pd

            for link in item["links"]:
                print(f"link {link['rel']:>10}: {link['href']}")
            pd.DataFrame([{"asset": key, "bands": ", ".join(b["name"] for b in asset["bands"]),
                           "shape": asset["proj:shape"], "bytes": asset["file:size"],
                           "checksum": asset["file:checksum"][:16] + "...", "href": asset["href"]}
                          for key, asset in item["assets"].items()])
            """),
        _md(SERVER_MD),
        _code(SERVER_CODE),
        _md("""
            ## Publish

            `publish` uploads the objects listed in the catalog's `manifest.parquet` stage by stage:
            COGs, then items, then the indexes, collections, schema and manifest, and the root
            `catalog.json` last. A stage starts only when every object of the previous one is uploaded
            and verified, so a reader never finds a document pointing at a missing object. Each
            upload carries `Content-MD5` and its sha256 in the object's metadata, with the right
            content type, and is verified with a `HEAD` (`PublishOptions(verify="get")` re-downloads
            and re-hashes instead). JSON and Parquet whose hrefs are local paths or carry credentials
            are refused. The server's settings use `checksums="when_required"`, which S3-compatible
            stores other than AWS (MinIO, Ceph, moto) need; on AWS use `"when_supported"`.
            """),
        _code("""
            from catalog_builder.publish import PublishOptions, publish

            first = publish(local, URL, settings, PublishOptions(workers=8))
            print("publish:", first.describe())
            """),
        _md("""
            A rerun checks every object with a `HEAD` and uploads only what is missing or different:
            here, nothing. This is also how an interrupted publish resumes.
            """),
        _code("""
            again = publish(local, URL, settings, PublishOptions(workers=8))
            print("re-publish:", again.describe())
            print(f"uploaded the second time: {again.uploaded} objects")

            client = settings.boto3_client()
            cog = next(p for p in manifest["path"] if p.endswith("_s2_10m.tif"))
            head = client.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{cog}")
            print(f"{cog}: {head['ContentLength']} bytes, {head['ContentType']}, sha256 {head['Metadata']['sha256'][:16]}...")
            """),
        _md("""
            ## Open it from S3 and search

            The published catalog is usable straight away: open its root URL, search, read a patch.
            """),
        _code("""
            from bigearth_stac.catalog import Catalog
            from bigearth_stac.patch import read_patch
            from bigearth_stac.plot import plot_patch

            catalog = Catalog.open(URL, settings=settings)
            pastures = catalog.search(labels="Pastures", modality="pair")
            print(f"search: {len(pastures)} patches with 'Pastures' in {URL}")
            real_pasture = next(row for row in pastures.sample_table().to_pylist() if row["id"] in real_ids)
            plot_patch(read_patch(real_pasture, settings))
            """),
        _md(STOP_MD),
        _stop_code("publishing"),
    ])


NOTEBOOKS = {
    "01_quickstart.ipynb": quickstart,
    "02_training.ipynb": training,
    "03_publishing.ipynb": publishing,
}


def main() -> None:
    for name, make in NOTEBOOKS.items():
        nb = make()
        nbformat.validate(nb)
        with open(HERE / name, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
