"""The torchgeo rows of the loader benchmark: torchgeo's ``BigEarthNet`` on the raw v1 layout.

Runs in its own virtual environment (torchgeo needs torchvision, which would replace the main
environment's torch), as ``python _torchgeo_row.py '<json args>'``; prints one JSON line with the
same fields as the other rows. Self-contained: it imports nothing from this project. Timed from
building the dataset to the last batch, as the other rows.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _cpu() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def main() -> None:
    args = json.loads(sys.argv[1])
    import torch
    import torchgeo
    from torch.utils.data import DataLoader
    from torchgeo.datasets import BigEarthNet

    c0 = _cpu()
    t0 = time.perf_counter()
    ds = BigEarthNet(root=args["root"], split="train", bands="all", num_classes=19)
    loader = DataLoader(ds, batch_size=args["batch_size"], num_workers=args["workers"], shuffle=False)
    n = sum(len(batch["label"]) for batch in loader)
    seconds = time.perf_counter() - t0
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"samples": n, "seconds": seconds, "samples_per_s": n / seconds,
                      "cpu_percent": 100 * (_cpu() - c0) / seconds, "peak_rss": rss * 1024, "requests": 14 * n,
                      "torchgeo": torchgeo.__version__, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
