"""The plain record types that flow between the builder's stages.

A release reader (:mod:`~catalog_builder.sources.v1`, :mod:`~catalog_builder.sources.v2`)
yields :class:`PairRecord` values; the COG and STAC stages consume them. Records hold metadata
and the names of the raw files, never pixels. One record type serves both releases: what only
one release has is an optional field, ``None`` where the release (or its input) does not say.
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
    """Where the record's metadata came from: v1 the ``*_labels_metadata.json`` (relative to the
    reader's root), v2 the metadata table's location."""


@dataclass(frozen=True)
class PairRecord:
    """An S2 patch, its S1 partner, and what the official tables say about them."""

    s2: PatchRecord
    s1: PatchRecord
    tile: str
    """Sentinel-2 MGRS tile (``33UUP``)."""
    labels_43: tuple[str, ...] | None
    """43-class labels of the pair, in the official order: v1 from the metadata JSON, v2 the
    classes present in the reference map; ``None`` when unknown (v2 built without maps)."""
    labels_19: tuple[str, ...]
    """19-class labels in the official order (may be empty): v1 derived with the official mapping,
    v2 the official labels of the metadata table (never derived from the map)."""
    split: str | None
    country: str | None
    season: str | None
    """v1 only (the official tables); ``None`` in v2, which publishes no season."""
    seasonal_snow: bool | None
    """``None`` when the input does not say (a v2 table without the column)."""
    cloud_or_shadow: bool | None
    release: str = "v1.0"
    reference_map: str | None = None
    """v2: name of the raw reference map, relative to the reference-map reader's root."""
    clc_fractions: dict[int, float] | None = None
    """v2: share of the reference map's pixels per CLC Level-3 code present (4 decimals)."""
    s2v1_name: str | None = None
    """v2: the S2 patch's v1 name (``S2A_MSIL2A_20171101T94132_0_0``), when the table gives it."""
    label_disagreement: SourceProblem | None = None
    """Two label sources of the pair that disagree (v2: the reference map's 19-class projection
    and the official labels), with the file at odds; the build reports it as a warning and
    builds the pair with the official labels."""
    extra: dict[str, object] = field(default_factory=dict)
    """Other release-specific facts."""

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
