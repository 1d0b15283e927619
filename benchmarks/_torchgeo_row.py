"""Row (a) of the loader benchmark: torchgeo's ``BigEarthNet`` on the raw v1 layout.

Runs in its own virtual environment (torchgeo needs torchvision, which would replace the main
environment's torch), as ``python _torchgeo_row.py '<json args>'``; prints one JSON line. Self-
contained: it imports nothing from this project.
"""

from __future__ import annotations

import json
import sys
import time


def _hwm() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    args = json.loads(sys.argv[1])
    import torch
    import torchgeo
    from torch.utils.data import DataLoader
    from torch.utils.data._utils.collate import default_collate
    from torchgeo.datasets import BigEarthNet

    def collate(batch: list) -> dict:
        out = default_collate(batch)
        info = torch.utils.data.get_worker_info()
        out["_rss"] = torch.tensor([info.id if info else -1, _hwm()])
        return out

    ds = BigEarthNet(root=args["root"], split="train", bands="all", num_classes=19)
    limit = args.get("limit") or len(ds)
    subset = torch.utils.data.Subset(ds, range(min(limit, len(ds))))
    loader = DataLoader(subset, batch_size=args["batch_size"], num_workers=args["workers"], collate_fn=collate,
                        shuffle=False)
    t0 = time.perf_counter()
    n, rss = 0, {}
    for batch in loader:
        n += len(batch["label"])
        wid, hwm = batch["_rss"].tolist()
        rss[wid] = max(rss.get(wid, 0), hwm)
    dt = time.perf_counter() - t0
    print(json.dumps({"samples": n, "seconds": dt, "samples_per_s": n / dt, "peak_rss_per_worker": max(rss.values()),
                      "torchgeo": torchgeo.__version__, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
