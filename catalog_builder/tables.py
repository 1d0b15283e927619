"""The official BigEarthNet v1 tables: splits, snow and cloud lists, country and season.

They ship as package data of ``bigearthnet-common`` (Apache-2.0, by the dataset's authors); this
module only reads them. Install that package with ``--no-deps`` (its own dependencies are stale).
"""

from __future__ import annotations

import bz2
import hashlib
import importlib.resources
import io
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

_PACKAGE = "bigearthnet_common"
SPLIT_FILES = {"train": "train.csv.bz2", "validation": "val.csv.bz2", "test": "test.csv.bz2"}
SNOW_FILE = "patches_with_seasonal_snow.csv.bz2"
CLOUD_FILE = "patches_with_cloud_and_shadow.csv.bz2"
PAIRS_FILE = "s1_s2_name_country_season.csv.bz2"


@dataclass(frozen=True)
class PatchFacts:
    """What the official tables say about one pair, keyed by its S2 patch name."""

    split: str | None
    """``train``, ``validation``, ``test``, or ``None`` (not in the recommended subset)."""
    seasonal_snow: bool
    cloud_or_shadow: bool
    country: str | None
    season: str | None
    s1_name: str | None


class OfficialTables:
    """Lookups from an S2 patch name into the official tables.

    Holds the joined tables as one Arrow table (a few MB for the whole archive); Python lookups
    are built lazily, and :meth:`subset_for_s1` cuts the rows a batch of work needs with a
    vectorised filter, which is what travels to Dask workers.
    """

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._rows: dict[str, PatchFacts] | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    def _lookup(self) -> dict[str, PatchFacts]:
        if self._rows is None:
            cols = [self.table.column(c).to_pylist() for c in
                    ("s2_name", "split", "seasonal_snow", "cloud_or_shadow", "country", "season", "s1_name")]
            self._rows = {r[0]: PatchFacts(*r[1:]) for r in zip(*cols, strict=True)}
        return self._rows

    def facts(self, s2_name: str) -> PatchFacts:
        """What the tables say about ``s2_name`` (all empty/false if they do not list it)."""
        found = self._lookup().get(s2_name)
        return found if found is not None else PatchFacts(None, False, False, None, None, None)

    def subset_for_s1(self, s1_names: Collection[str]) -> OfficialTables:
        """The rows of the pairs whose S1 patch is in ``s1_names``."""
        return self._subset("s1_name", s1_names)

    def subset_for_s2(self, s2_names: Collection[str]) -> OfficialTables:
        """The rows of the pairs whose S2 patch is in ``s2_names``."""
        return self._subset("s2_name", s2_names)

    def _subset(self, column: str, names: Collection[str]) -> OfficialTables:
        mask = pc.is_in(self.table.column(column), value_set=pa.array(list(names), pa.string()))
        return OfficialTables(self.table.filter(mask))

    def __getstate__(self) -> dict[str, Any]:
        return {"table": self.table}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["table"])  # type: ignore[misc]


def _compressed(directory: Path | None, name: str) -> bytes:
    if directory is not None:
        return (directory / name).read_bytes()
    try:
        return importlib.resources.files(_PACKAGE).joinpath(name).read_bytes()
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "the official BigEarthNet tables come from the package 'bigearthnet-common': "
            "pip install --no-deps bigearthnet-common==2.8.0 (or pass a tables folder)"
        ) from exc


def _raw(directory: Path | None, name: str) -> bytes:
    return bz2.decompress(_compressed(directory, name))


def _open_text(directory: Path | None, name: str) -> io.TextIOBase:
    return io.StringIO(_raw(directory, name).decode("utf-8"))


def _names(directory: Path | None, name: str) -> list[str]:
    return [line.strip() for line in _open_text(directory, name) if line.strip()]


def _parse(folder: Path | None) -> pa.Table:
    """All official tables joined into one Arrow table, one row per pair."""
    split: dict[str, str] = {}
    for split_name, file_name in SPLIT_FILES.items():
        for s2 in _names(folder, file_name):
            split[s2] = split_name
    snow = set(_names(folder, SNOW_FILE))
    cloud = set(_names(folder, CLOUD_FILE))
    pairs = pa_csv.read_csv(pa.BufferReader(_raw(folder, PAIRS_FILE)))
    s2_names = pairs.column("s2_name").to_pylist()
    return pa.table({
        "s2_name": pairs.column("s2_name"),
        "s1_name": pairs.column("s1_name"),
        "country": pairs.column("country"),
        "season": pairs.column("season"),
        "split": pa.array([split.get(n) for n in s2_names], pa.string()),
        "seasonal_snow": pa.array([n in snow for n in s2_names]),
        "cloud_or_shadow": pa.array([n in cloud for n in s2_names]),
    })


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bigearth-stac"


def _joined(folder: Path | None) -> pa.Table:
    """The joined tables, from a Parquet cache keyed by the hash of the source files.

    Decompressing the bz2 tables takes seconds; every build (and every test process) needs them.
    """
    digest = hashlib.sha256()
    for name in (*SPLIT_FILES.values(), SNOW_FILE, CLOUD_FILE, PAIRS_FILE):
        digest.update(_compressed(folder, name))
    cached = _cache_dir() / f"tables-{digest.hexdigest()[:16]}.parquet"
    if cached.is_file():
        try:
            return pq.read_table(cached)
        except (OSError, pa.ArrowInvalid):
            log.warning("ignoring unreadable table cache %s", cached)
    table = _parse(folder)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.part")
        pq.write_table(table, tmp)
        os.replace(tmp, cached)
    except OSError as exc:  # a read-only home is fine: just slower next time
        log.info("could not cache the official tables in %s: %s", cached.parent, exc)
    return table


@lru_cache(maxsize=2)
def load_tables(directory: str | None = None) -> OfficialTables:
    """Read all official tables (from ``bigearthnet-common``, or a folder holding the same files)."""
    table = _joined(Path(directory) if directory else None)
    log.debug("official tables: %d pairs", table.num_rows)
    return OfficialTables(table)


def table_bytes(name: str) -> bytes:
    """The raw (bz2) bytes of one official file; used by the benchmarks and the generators."""
    return importlib.resources.files(_PACKAGE).joinpath(name).read_bytes()
