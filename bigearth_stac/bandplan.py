"""Which objects to fetch for a band selection, and where each band sits in them.

Both readers (the PyTorch stream and the xarray view) turn a band selection into a
:class:`BandPlan` per modality and layout: the positions of the assets to fetch in a sample
table row (``band_groups(modality, layout)`` order) and, for every requested band, which fetched
asset and which band of that file holds it. A selection of RGB in the stacked layout fetches one
object, not four; in the per-band layout three.

A plan also says what each fetched object must hold (:func:`asset_expectations`: bands, size
and dtype from :mod:`bigearth_stac.vocab`), and its decoders check that on the header, so a
valid GeoTIFF of the wrong shape is an error naming the asset, not an ``IndexError`` or
silently resampled pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bigearth_stac.contract import REFERENCE_MAP_ASSET
from bigearth_stac.decode import DecodeError, Expected, decode
from bigearth_stac.vocab import (
    BANDS,
    CLASS_ORDERS,
    CLC_CODES,
    CLC_NODATA,
    MAP_43_TO_19,
    S1_BAND_NAMES,
    S2_BAND_NAMES,
    Layout,
    Modality,
    band_groups,
)

__all__ = ["BandPlan", "MaskPlan", "asset_expectations", "band_plan", "mask_plan", "reference_map_expectation",
           "split_bands", "upsample_nearest", "downsample_mean"]


@dataclass(frozen=True)
class BandPlan:
    """How to read the requested bands of one modality from one layout."""

    modality: Modality
    layout: Layout
    bands: tuple[str, ...]
    """Requested bands, in output order."""
    assets: tuple[int, ...]
    """Positions (in the row's asset list) of the objects to fetch, ascending."""
    picks: tuple[tuple[int, int], ...]
    """Per requested band: (index into ``assets``, band index inside that file)."""
    expected: tuple[Expected, ...]
    """Per fetched asset (aligned with ``assets``): what it must decode to. Its ``decode``
    method is the decoder to hand the fetcher."""
    asset_count: int
    """How many assets a row of this modality and layout has (``band_groups`` order)."""

    @property
    def requests(self) -> int:
        return len(self.assets)

    def select(self, decoded: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per requested band, its 2-D array, given the decoded (bands, h, w) arrays of ``assets``."""
        return [decoded[a][b] for a, b in self.picks]


def split_bands(bands: Sequence[str] | None, modalities: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Requested bands per modality (all of a modality's bands, in sensor order, when ``None``)."""
    known = {"s2": S2_BAND_NAMES, "s1": S1_BAND_NAMES}
    for m in modalities:
        if m not in known:
            raise ValueError(f"unknown modality {m!r}; choose from 's2', 's1'")
    if bands is None:
        return {m: known[m] for m in modalities}
    unknown = [b for b in bands if b not in BANDS]
    if unknown:
        raise ValueError(f"unknown band(s) {unknown}; valid: {', '.join(S2_BAND_NAMES + S1_BAND_NAMES)}")
    if len(set(bands)) != len(bands):
        raise ValueError(f"band selection has duplicates: {list(bands)}")
    out = {m: tuple(b for b in bands if b in known[m]) for m in modalities}
    stray = [b for b in bands if not any(b in known[m] for m in modalities)]
    if stray:
        raise ValueError(f"band(s) {stray} belong to no requested modality {tuple(modalities)}")
    empty = [m for m, bs in out.items() if not bs]
    if empty:
        raise ValueError(f"no band selected for modality {empty}; drop it from modalities or add its bands")
    return out


def asset_expectations(modality: Modality, layout: Layout) -> dict[str, Expected]:
    """Asset key -> what its COG must decode to, in ``band_groups(modality, layout)`` order."""
    out = {}
    for key, names in band_groups(modality, layout).items():
        specs = {(BANDS[b].size, BANDS[b].dtype) for b in names}
        if len(specs) != 1:  # pragma: no cover - the vocabulary groups bands of one size and dtype
            raise ValueError(f"asset {key!r} mixes band sizes or dtypes: {sorted(specs)}")
        size, dtype = specs.pop()
        out[key] = Expected(len(names), size, size, np.dtype(dtype), key)
    return out


def band_plan(modality: Modality, layout: Layout, bands: Sequence[str]) -> BandPlan:
    """The objects to fetch and the band positions for ``bands`` of ``modality`` in ``layout``."""
    groups = band_groups(modality, layout)
    keys = list(groups)
    where = {b: (keys.index(k), i) for k, names in groups.items() for i, b in enumerate(names)}
    missing = [b for b in bands if b not in where]
    if missing:
        raise ValueError(f"band(s) {missing} are not {modality} bands")
    assets = tuple(sorted({where[b][0] for b in bands}))
    picks = tuple((assets.index(where[b][0]), where[b][1]) for b in bands)
    expect = list(asset_expectations(modality, layout).values())
    return BandPlan(modality, layout, tuple(bands), assets, picks, tuple(expect[a] for a in assets), len(keys))


def upsample_nearest(array: np.ndarray, factor: int) -> np.ndarray:
    """Repeat each pixel ``factor`` x ``factor`` times along the last two axes (exact, no new values)."""
    if factor == 1:
        return array
    return np.repeat(np.repeat(array, factor, axis=-2), factor, axis=-1)


def downsample_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks of the last two axes, as float32."""
    if factor == 1:
        return array
    *lead, h, w = array.shape
    blocks = array.reshape(*lead, h // factor, factor, w // factor, factor).astype(np.float32)
    return blocks.mean(axis=(-3, -1), dtype=np.float32)


# -- reference maps (BigEarthNet v2.0) -> class-index masks ------------------------------------------


def reference_map_expectation() -> Expected:
    """What a reference-map COG must decode to: one band of 120 x 120 ``uint16`` CLC codes."""
    size = BANDS["B02"].size  # the grid of the 10 m bands
    return Expected(1, size, size, np.dtype("uint16"), REFERENCE_MAP_ASSET)


@dataclass(frozen=True)
class MaskPlan:
    """How a reference map (CLC Level-3 codes) becomes a mask of class indices.

    ``lut[code]`` is the index of the code's class in ``classes`` (the 43 classes, or the 19
    through the official 43 -> 19 table), ``ignore_index`` for nodata (0) and for the 11 classes
    without a 19-class counterpart. A code that is neither nodata nor one of the 43 classes is a
    :class:`~bigearth_stac.decode.DecodeError` naming it (a map the builder would have refused).
    """

    nomenclature: str
    """``"19"`` or ``"43"``."""
    class_order: str
    classes: tuple[str, ...]
    """Class names, in index order (``CLASS_ORDERS[class_order][nomenclature]``)."""
    ignore_index: int
    lut: np.ndarray
    """``int64`` of 65,536 entries: CLC code -> class index or ``ignore_index``."""
    known: np.ndarray
    """``bool`` of 65,536 entries: nodata or one of the 43 codes."""
    expected: Expected

    def check(self, codes: np.ndarray) -> None:
        """Raise :class:`DecodeError` if ``codes`` holds a value that is neither nodata nor a CLC code of the 43."""
        if not self.known[codes].all():
            bad = np.unique(codes[~self.known[codes]])
            raise DecodeError(f"{REFERENCE_MAP_ASSET}: values {bad[:8].tolist()} are neither nodata ({CLC_NODATA}) "
                              "nor CLC codes of the 43 BigEarthNet classes")

    def decode(self, data: bytes) -> np.ndarray:
        """COG bytes -> the ``int64`` (120, 120) mask (shape and dtype checked on the header)."""
        codes = decode(data, self.expected)[0]
        self.check(codes)
        return self.lut[codes]

    def write(self, out: np.ndarray, data: bytes) -> None:
        """Decode ``data`` into ``out`` (a (120, 120) array of any integer dtype that holds the indices)."""
        codes = decode(data, self.expected)[0]
        self.check(codes)
        if out.dtype == self.lut.dtype:
            np.take(self.lut, codes, out=out)
        else:
            np.copyto(out, self.lut[codes], casting="unsafe")


def mask_plan(nomenclature: str, class_order: str = "original", ignore_index: int = 255) -> MaskPlan:
    """The :class:`MaskPlan` of masks over the ``nomenclature`` classes in ``class_order``.

    ``ignore_index`` must not be a class index (0 ... 18 or 0 ... 42) and must fit ``int64``.
    """
    if nomenclature not in ("19", "43"):
        raise ValueError(f"mask nomenclature must be '19' or '43', got {nomenclature!r}")
    if class_order not in CLASS_ORDERS:
        raise ValueError(f"unknown class order {class_order!r}; choose from {sorted(CLASS_ORDERS)}")
    classes = CLASS_ORDERS[class_order][nomenclature]
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise ValueError(f"ignore_index must be an integer, got {ignore_index!r}")
    ignore_index = int(ignore_index)
    if 0 <= ignore_index < len(classes):
        raise ValueError(f"ignore_index {ignore_index} is the index of class {classes[ignore_index]!r} of the "
                         f"{nomenclature}-class mask (0 ... {len(classes) - 1}); choose another (default 255)")
    if not -(2**63) <= ignore_index < 2**63:
        raise ValueError(f"ignore_index {ignore_index} does not fit int64")
    position = {name: i for i, name in enumerate(classes)}
    lut = np.full(65536, ignore_index, dtype=np.int64)
    known = np.zeros(65536, dtype=bool)
    known[CLC_NODATA] = True
    for code, name in CLC_CODES.items():
        known[code] = True
        target = name if nomenclature == "43" else MAP_43_TO_19[name]
        if target is not None:
            lut[code] = position[target]
    lut.flags.writeable = False
    known.flags.writeable = False
    return MaskPlan(nomenclature, class_order, classes, ignore_index, lut, known, reference_map_expectation())
