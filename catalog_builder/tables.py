"""The official BigEarthNet v1 tables: splits, snow and cloud lists, country and season.

They ship as package data of ``bigearthnet-common`` (Apache-2.0, by the dataset's authors); this
module only reads them. Install that package with ``--no-deps`` (its own dependencies are stale).
"""

from __future__ import annotations

import bz2
import csv
import importlib.resources
import io
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

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


@dataclass(frozen=True)
class OfficialTables:
    """Lookups from an S2 patch name into the official tables."""

    split: dict[str, str] = field(default_factory=dict)
    snow: frozenset[str] = frozenset()
    cloud: frozenset[str] = frozenset()
    country: dict[str, str] = field(default_factory=dict)
    season: dict[str, str] = field(default_factory=dict)
    s1_of: dict[str, str] = field(default_factory=dict)

    def facts(self, s2_name: str) -> PatchFacts:
        return PatchFacts(
            split=self.split.get(s2_name),
            seasonal_snow=s2_name in self.snow,
            cloud_or_shadow=s2_name in self.cloud,
            country=self.country.get(s2_name),
            season=self.season.get(s2_name),
            s1_name=self.s1_of.get(s2_name),
        )

    def subset(self, s2_names: set[str]) -> OfficialTables:
        """The same tables restricted to some S2 names (small enough to ship to workers)."""
        return OfficialTables(
            split={k: v for k, v in self.split.items() if k in s2_names},
            snow=frozenset(self.snow & s2_names),
            cloud=frozenset(self.cloud & s2_names),
            country={k: v for k, v in self.country.items() if k in s2_names},
            season={k: v for k, v in self.season.items() if k in s2_names},
            s1_of={k: v for k, v in self.s1_of.items() if k in s2_names},
        )


def _open_text(directory: Path | None, name: str) -> io.TextIOBase:
    if directory is not None:
        raw = (directory / name).read_bytes()
    else:
        try:
            raw = importlib.resources.files(_PACKAGE).joinpath(name).read_bytes()
        except ModuleNotFoundError as exc:
            raise RuntimeError(
                "the official BigEarthNet tables come from the package 'bigearthnet-common': "
                "pip install --no-deps bigearthnet-common==2.8.0 (or pass a tables folder)"
            ) from exc
    return io.StringIO(bz2.decompress(raw).decode("utf-8"))


def _names(directory: Path | None, name: str) -> list[str]:
    return [line.strip() for line in _open_text(directory, name) if line.strip()]


@lru_cache(maxsize=2)
def load_tables(directory: str | None = None) -> OfficialTables:
    """Read all official tables (from ``bigearthnet-common``, or a folder holding the same files)."""
    folder = Path(directory) if directory else None
    split: dict[str, str] = {}
    for split_name, file_name in SPLIT_FILES.items():
        for s2 in _names(folder, file_name):
            split[s2] = split_name
    snow = frozenset(_names(folder, SNOW_FILE))
    cloud = frozenset(_names(folder, CLOUD_FILE))
    country: dict[str, str] = {}
    season: dict[str, str] = {}
    s1_of: dict[str, str] = {}
    for row in csv.DictReader(_open_text(folder, PAIRS_FILE)):
        s2 = row["s2_name"]
        country[s2] = row["country"]
        season[s2] = row["season"]
        s1_of[s2] = row["s1_name"]
    log.debug("official tables: %d pairs, %d with a split", len(s1_of), len(split))
    return OfficialTables(split, snow, cloud, country, season, s1_of)


def table_bytes(name: str) -> bytes:
    """The raw (bz2) bytes of one official file; used by the benchmarks and the generators."""
    return importlib.resources.files(_PACKAGE).joinpath(name).read_bytes()
