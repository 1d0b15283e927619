"""The plain record types that flow between the builder's stages.

A release reader (v1 today, v2 later) yields :class:`PairRecord` values; the COG and STAC stages
consume them. Records hold metadata and the names of the raw files, never pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class PatchRecord:
    """One Sentinel-1 or Sentinel-2 patch of a pair."""

    id: str
    """Patch name, also the STAC item id (``S2A_MSIL2A_20170613T101031_87_48``)."""
    modality: str
    """``s2`` or ``s1``."""
    datetime: datetime
    """Acquisition time (UTC), from the metadata, never from the name."""
    epsg: int
    """UTM EPSG code of the patch grid."""
    bounds: tuple[float, float, float, float]
    """(ulx, uly, lrx, lry) in the patch CRS, metres."""
    band_files: dict[str, str]
    """Band name -> name of the raw file, relative to the reader's root."""
    source_product: str
    """The product the patch was cut from (S2 ``tile_source`` / S1 ``scene_source``)."""
    labels_43: tuple[str, ...]
    """CLC Level-3 names as the metadata lists them."""
    metadata_file: str
    """Name of the ``*_labels_metadata.json`` the record was parsed from."""


@dataclass(frozen=True)
class PairRecord:
    """An S2 patch, its S1 partner, and what the official tables say about them."""

    s2: PatchRecord
    s1: PatchRecord
    tile: str
    """Sentinel-2 MGRS tile (``33UUP``)."""
    labels_43: tuple[str, ...]
    """43-class labels of the pair, in the official order."""
    labels_19: tuple[str, ...]
    """19-class labels derived with the official mapping, in the official order (may be empty)."""
    split: str | None
    country: str | None
    season: str | None
    seasonal_snow: bool
    cloud_or_shadow: bool
    release: str = "v1.0"
    extra: dict[str, object] = field(default_factory=dict)
    """Release-specific facts (v2: reference map file, pixel fractions, ...)."""

    @property
    def id(self) -> str:
        """A pair is named by its S2 patch."""
        return self.s2.id


@dataclass(frozen=True)
class SourceProblem:
    """A pair that could not be read: the file at fault and what is wrong with it."""

    pair: str
    """S2 or S1 patch name of the pair."""
    file: str
    """Location of the offending file (path or URL)."""
    problem: str

    def __str__(self) -> str:
        return f"{_printable(self.pair)}: {_printable(self.file)}: {_printable(self.problem)}"


def _printable(text: str) -> str:
    """``text`` with control characters escaped: a raw name holding a newline must not be able
    to forge lines of a build report."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class SourceError(Exception):
    """Raised by a release reader for a pair it cannot read; carries a :class:`SourceProblem`."""

    def __init__(self, pair: str, file: str, problem: str, partner: str | None = None) -> None:
        self.record = SourceProblem(pair, file, problem)
        self.partner = partner
        """S2 name of the pair when the reader knew it before failing: that S2 patch is then
        accounted for by this problem and is not reported again as one without a partner."""
        super().__init__(str(self.record))

    def __reduce__(self) -> tuple[object, ...]:
        return (SourceError, (self.record.pair, self.record.file, self.record.problem, self.partner))
