"""Which samples a (rank, worker) reads in an epoch: exact-once, equal per rank, deterministic.

The order of an epoch is a permutation of the table's rows drawn from ``(seed, epoch)`` alone,
so every rank and every worker computes the same one without talking to the others. Ranks take
a strided slice of it after padding (repeat the first samples of the permutation) or dropping
(its last samples) to a multiple of the world size, so every rank yields the same number of
samples and DDP never waits on a rank that ran dry. Workers of a rank stride over the rank's
slice. Every row is read exactly once per epoch across all ranks and workers ("drop" leaves
fewer than ``world_size`` rows out; "pad" reads that many twice).
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Uneven", "epoch_order", "per_rank", "shard", "resolve_world"]

Uneven = Literal["pad", "drop"]


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Row order of an epoch: a permutation from ``(seed, epoch)``, or ``0..n-1`` unshuffled."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


def per_rank(n: int, world_size: int, uneven: Uneven) -> int:
    """Samples each rank yields in an epoch."""
    if uneven == "pad":
        return -(-n // world_size)
    if uneven == "drop":
        return n // world_size
    raise ValueError(f"uneven must be 'pad' or 'drop', got {uneven!r}")


def shard(
    order: np.ndarray, rank: int, world_size: int, worker: int, num_workers: int, uneven: Uneven
) -> np.ndarray:
    """Rows read by ``worker`` of ``rank``, in reading order."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    if not 0 <= worker < num_workers:
        raise ValueError(f"worker {worker} outside {num_workers} workers")
    total = per_rank(len(order), world_size, uneven) * world_size
    # np.resize repeats from the start when padding (wrapping again if n < world_size) and
    # truncates when dropping.
    fitted = np.resize(order, total) if total else order[:0]
    return fitted[rank::world_size][worker::num_workers]


def resolve_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world size): torch.distributed if initialised, else the arguments, else ``RANK``/``WORLD_SIZE``."""
    explicit = (rank, world_size) if rank is not None or world_size is not None else None
    if explicit is not None and (rank is None or world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    try:
        import torch.distributed as dist

        initialised = dist.is_available() and dist.is_initialized()
    except ImportError:  # pragma: no cover - torch is an optional dependency
        initialised = False
    if initialised:
        got = (dist.get_rank(), dist.get_world_size())
        if explicit is not None and explicit != got:
            raise ValueError(f"rank/world_size {explicit} disagree with torch.distributed {got}")
        return got
    if explicit is not None:
        r, w = explicit
    else:
        r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if w < 1 or not 0 <= r < w:  # type: ignore[operator]
        raise ValueError(f"invalid rank {r} for world size {w}")
    return r, w  # type: ignore[return-value]
