"""The six real BigEarthNet v1 pairs shipped in ``bigearthnet-common``, unpacked in the raw layout."""

from __future__ import annotations

import importlib.resources
import io
import logging
import os
import tarfile
from pathlib import Path

log = logging.getLogger(__name__)

ARCHIVES = {"s2": "BigEarthNet-S2-Example.tar.bz2", "s1": "BigEarthNet-S1-Example.tar.bz2"}
FOLDERS = {"s2": "BigEarthNet-S2-Example", "s1": "BigEarthNet-S1-Example"}


def _strict_data_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo | None:
    """``tarfile.data_filter``, but an absolute member name is refused instead of made relative."""
    if member.name.startswith(("/", "\\")) or os.path.isabs(member.name):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest_path)


def safe_extract(archive: tarfile.TarFile, dest: Path) -> None:
    """Extract with the ``data`` filter: no absolute paths, no ``..``, no links out, no devices."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        archive.extractall(dest, filter=_strict_data_filter)
    except tarfile.FilterError as exc:
        raise ValueError(f"refusing unsafe archive member: {exc}") from None


def unpack_examples(dest: str | Path) -> tuple[Path, Path]:
    """Unpack the six real pairs under ``dest``; returns the (S2 root, S1 root) folders."""
    out = Path(dest)
    roots = {}
    for modality, name in ARCHIVES.items():
        data = importlib.resources.files("bigearthnet_common").joinpath(name).read_bytes()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:bz2") as tar:
            safe_extract(tar, out)
        roots[modality] = out / FOLDERS[modality]
        log.info("unpacked %s into %s", name, roots[modality])
    return roots["s2"], roots["s1"]
