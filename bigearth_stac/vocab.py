"""The shared vocabulary of BigEarthNet: bands, nomenclatures, the 43 -> 19 mapping, statistics.

This is the only place these facts live; ``catalog_builder`` and ``bigearth_stac`` both import
it. The 43 -> 19 mapping and both class orders follow the authors' ``label_indices.json`` as
shipped in ``bigearthnet-common`` (``constants.py``); a test compares them with that file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Nomenclature = Literal["19", "43"]
Modality = Literal["s2", "s1"]

#: Prefix of the project's own STAC properties (see the JSON Schema in ``bigearth_stac/schema``).
PREFIX = "bigearthnet"
SCHEMA_VERSION = "v1.0.0"
SCHEMA_URI = f"https://bigearth-stac.github.io/bigearthnet/{SCHEMA_VERSION}/schema.json"

S2_COLLECTION = "bigearthnet-s2"
S1_COLLECTION = "bigearthnet-s1"

# --------------------------------------------------------------------------------------------
# Bands
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """One band of a BigEarthNet patch as the raw v1 files hold it."""

    name: str
    """Name users know (``B02``, ``B8A``, ``VV``); also the raw file suffix and the per-band asset key."""
    resolution: int
    """Ground sampling distance in metres."""
    dtype: str
    """numpy dtype name of the raw pixels."""
    common_name: str | None = None
    """``eo:common_name`` (Sentinel-2 only)."""
    center_wavelength: float | None = None
    """Centre wavelength in micrometres (Sentinel-2 only)."""
    full_width_half_max: float | None = None
    """Bandwidth in micrometres (Sentinel-2 only)."""

    @property
    def size(self) -> int:
        """Width and height in pixels of a 1.2 km patch at this band's resolution."""
        return PATCH_SIZE_M // self.resolution


PATCH_SIZE_M = 1200

S2_BANDS: tuple[Band, ...] = (
    Band("B01", 60, "uint16", "coastal", 0.443, 0.027),
    Band("B02", 10, "uint16", "blue", 0.490, 0.098),
    Band("B03", 10, "uint16", "green", 0.560, 0.045),
    Band("B04", 10, "uint16", "red", 0.665, 0.038),
    Band("B05", 20, "uint16", "rededge", 0.704, 0.019),
    Band("B06", 20, "uint16", "rededge", 0.740, 0.018),
    Band("B07", 20, "uint16", "rededge", 0.783, 0.028),
    Band("B08", 10, "uint16", "nir", 0.842, 0.145),
    Band("B8A", 20, "uint16", "nir08", 0.865, 0.033),
    Band("B09", 60, "uint16", "nir09", 0.945, 0.026),
    Band("B11", 20, "uint16", "swir16", 1.610, 0.143),
    Band("B12", 20, "uint16", "swir22", 2.190, 0.242),
)
"""The 12 Sentinel-2 L2A bands of BigEarthNet (B10 is absent: L2A drops it), in sensor order."""

S1_BANDS: tuple[Band, ...] = (
    Band("VV", 10, "float32"),
    Band("VH", 10, "float32"),
)
"""Sentinel-1 GRD IW polarisations, backscatter in dB."""

BANDS: dict[str, Band] = {b.name: b for b in S2_BANDS + S1_BANDS}

S2_BAND_NAMES: tuple[str, ...] = tuple(b.name for b in S2_BANDS)
S1_BAND_NAMES: tuple[str, ...] = tuple(b.name for b in S1_BANDS)
RGB_BANDS: tuple[str, str, str] = ("B04", "B03", "B02")

#: Band groups of the stacked layout: one multi-band COG per group, bands in this order.
S2_GROUPS: dict[str, tuple[str, ...]] = {
    "s2_10m": ("B02", "B03", "B04", "B08"),
    "s2_20m": ("B05", "B06", "B07", "B8A", "B11", "B12"),
    "s2_60m": ("B01", "B09"),
}
S1_GROUPS: dict[str, tuple[str, ...]] = {"s1": ("VV", "VH")}

LAYOUTS = ("stacked", "per-band")
Layout = Literal["stacked", "per-band"]


def band_groups(modality: Modality, layout: Layout) -> dict[str, tuple[str, ...]]:
    """Asset key -> band names for a modality in a layout (per-band: one asset per band)."""
    if layout == "per-band":
        names = S2_BAND_NAMES if modality == "s2" else S1_BAND_NAMES
        return {n: (n,) for n in names}
    if layout == "stacked":
        return dict(S2_GROUPS if modality == "s2" else S1_GROUPS)
    raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")


#: Per-band mean and standard deviation for normalisation (authors' statistics over the archive).
BAND_STATS: dict[str, tuple[float, float]] = {
    "B01": (340.76769064, 554.81258967),
    "B02": (429.9430203, 572.41639287),
    "B03": (614.21682446, 582.87945694),
    "B04": (590.23569706, 675.88746967),
    "B05": (950.68368468, 729.89827633),
    "B06": (1792.46290469, 1096.01480586),
    "B07": (2075.46795189, 1273.45393088),
    "B08": (2218.94553375, 1365.45589904),
    "B8A": (2266.46036911, 1356.13789355),
    "B09": (2246.0605464, 1302.3292881),
    "B11": (1594.42694882, 1079.19066363),
    "B12": (1009.32729131, 818.86747235),
    "VV": (-12.619993741972035, 5.115911777546365),
    "VH": (-19.29044597721542, 5.464428464912864),
}

#: BigEarthNet v2.0 (reBEN) per-band mean and standard deviation, as the authors publish them in
#: ConfigILM (``configilm.extra.BENv2_utils``, the ``no_interpolation`` set: native resolution),
#: computed over the images of the v2 official train split. v2's L2A processing differs from
#: v1's, so v1's :data:`BAND_STATS` do not normalise v2 pixels.
BAND_STATS_V2: dict[str, tuple[float, float]] = {
    "B01": (361.0767822265625, 575.0687255859375),
    "B02": (438.3720703125, 607.02685546875),
    "B03": (614.0556640625, 603.2968139648438),
    "B04": (588.4096069335938, 684.56884765625),
    "B05": (942.8433227539062, 738.4326782226562),
    "B06": (1769.931640625, 1100.4560546875),
    "B07": (2049.551513671875, 1275.805419921875),
    "B08": (2193.2919921875, 1369.3717041015625),
    "B8A": (2235.556640625, 1356.5440673828125),
    "B09": (2241.455322265625, 1316.393310546875),
    "B11": (1568.226806640625, 1070.1612548828125),
    "B12": (997.7324829101562, 813.5276489257812),
    "VV": (-12.643863677978516, 5.133493900299072),
    "VH": (-19.352558135986328, 5.590505599975586),
}

# --------------------------------------------------------------------------------------------
# Nomenclatures
# --------------------------------------------------------------------------------------------

#: CORINE Land Cover Level-3 code -> name, for the 43 classes that occur in BigEarthNet,
#: in the original order of ``label_indices.json`` (which is also ascending code order).
CLC_CODES: dict[int, str] = {
    111: "Continuous urban fabric",
    112: "Discontinuous urban fabric",
    121: "Industrial or commercial units",
    122: "Road and rail networks and associated land",
    123: "Port areas",
    124: "Airports",
    131: "Mineral extraction sites",
    132: "Dump sites",
    133: "Construction sites",
    141: "Green urban areas",
    142: "Sport and leisure facilities",
    211: "Non-irrigated arable land",
    212: "Permanently irrigated land",
    213: "Rice fields",
    221: "Vineyards",
    222: "Fruit trees and berry plantations",
    223: "Olive groves",
    231: "Pastures",
    241: "Annual crops associated with permanent crops",
    242: "Complex cultivation patterns",
    243: "Land principally occupied by agriculture, with significant areas of natural vegetation",
    244: "Agro-forestry areas",
    311: "Broad-leaved forest",
    312: "Coniferous forest",
    313: "Mixed forest",
    321: "Natural grassland",
    322: "Moors and heathland",
    323: "Sclerophyllous vegetation",
    324: "Transitional woodland/shrub",
    331: "Beaches, dunes, sands",
    332: "Bare rock",
    333: "Sparsely vegetated areas",
    334: "Burnt areas",
    411: "Inland marshes",
    412: "Peatbogs",
    421: "Salt marshes",
    422: "Salines",
    423: "Intertidal flats",
    511: "Water courses",
    512: "Water bodies",
    521: "Coastal lagoons",
    522: "Estuaries",
    523: "Sea and ocean",
}

LABELS_43: tuple[str, ...] = tuple(CLC_CODES.values())
"""The 43 CLC Level-3 class names in the original order (``label_indices.json``)."""

CODE_OF_43: dict[str, int] = {name: code for code, name in CLC_CODES.items()}

LABELS_19: tuple[str, ...] = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)
"""The 19 class names in the paper's order (torchgeo's order too)."""

#: Official 43 -> 19 mapping; ``None`` for the 11 classes with no 19-class counterpart.
MAP_43_TO_19: dict[str, str | None] = {
    "Continuous urban fabric": "Urban fabric",
    "Discontinuous urban fabric": "Urban fabric",
    "Industrial or commercial units": "Industrial or commercial units",
    "Road and rail networks and associated land": None,
    "Port areas": None,
    "Airports": None,
    "Mineral extraction sites": None,
    "Dump sites": None,
    "Construction sites": None,
    "Green urban areas": None,
    "Sport and leisure facilities": None,
    "Non-irrigated arable land": "Arable land",
    "Permanently irrigated land": "Arable land",
    "Rice fields": "Arable land",
    "Vineyards": "Permanent crops",
    "Fruit trees and berry plantations": "Permanent crops",
    "Olive groves": "Permanent crops",
    "Pastures": "Pastures",
    "Annual crops associated with permanent crops": "Permanent crops",
    "Complex cultivation patterns": "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation": (
        "Land principally occupied by agriculture, with significant areas of natural vegetation"
    ),
    "Agro-forestry areas": "Agro-forestry areas",
    "Broad-leaved forest": "Broad-leaved forest",
    "Coniferous forest": "Coniferous forest",
    "Mixed forest": "Mixed forest",
    "Natural grassland": "Natural grassland and sparsely vegetated areas",
    "Moors and heathland": "Moors, heathland and sclerophyllous vegetation",
    "Sclerophyllous vegetation": "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland/shrub": "Transitional woodland, shrub",
    "Beaches, dunes, sands": "Beaches, dunes, sands",
    "Bare rock": None,
    "Sparsely vegetated areas": "Natural grassland and sparsely vegetated areas",
    "Burnt areas": None,
    "Inland marshes": "Inland wetlands",
    "Peatbogs": "Inland wetlands",
    "Salt marshes": "Coastal wetlands",
    "Salines": "Coastal wetlands",
    "Intertidal flats": None,
    "Water courses": "Inland waters",
    "Water bodies": "Inland waters",
    "Coastal lagoons": "Marine waters",
    "Estuaries": "Marine waters",
    "Sea and ocean": "Marine waters",
}

#: Named class orders for multi-hot vectors. ``original`` is the paper's (and torchgeo's);
#: ``lex`` sorts names lexicographically (ConfigILM's default). Never inferred: always named.
CLASS_ORDERS: dict[str, dict[str, tuple[str, ...]]] = {
    "original": {"19": LABELS_19, "43": LABELS_43},
    "lex": {"19": tuple(sorted(LABELS_19)), "43": tuple(sorted(LABELS_43))},
}

#: An RGB colour per class for plots (CLC's official legend colours for Level 3).
CLC_COLOURS: dict[int, str] = {
    111: "#e6004d", 112: "#ff0000", 121: "#cc4df2", 122: "#cc0000", 123: "#e6cccc",
    124: "#e6cce6", 131: "#a600cc", 132: "#a64d00", 133: "#ff4dff", 141: "#ffa6ff",
    142: "#ffe6ff", 211: "#ffffa8", 212: "#ffff00", 213: "#e6e600", 221: "#e68000",
    222: "#f2a64d", 223: "#e6a600", 231: "#e6e64d", 241: "#ffe6a6", 242: "#ffe64d",
    243: "#e6cc4d", 244: "#f2cca6", 311: "#80ff00", 312: "#00a600", 313: "#4dff00",
    321: "#ccf24d", 322: "#a6ff80", 323: "#a6e64d", 324: "#a6f200", 331: "#e6e6e6",
    332: "#cccccc", 333: "#ccffcc", 334: "#000000", 411: "#a6a6ff", 412: "#4d4dff",
    421: "#ccccff", 422: "#e6e6ff", 423: "#a6a6e6", 511: "#00ccf2", 512: "#80f2e6",
    521: "#00ffa6", 522: "#a6ffe6", 523: "#e6f2ff",
}  # fmt: skip

# --------------------------------------------------------------------------------------------
# Splits, flags, countries, seasons
# --------------------------------------------------------------------------------------------

SPLITS: tuple[str, ...] = ("train", "validation", "test")
COUNTRIES: tuple[str, ...] = (
    "Austria", "Belgium", "Finland", "Ireland", "Kosovo",
    "Lithuania", "Luxembourg", "Portugal", "Serbia", "Switzerland",
)  # fmt: skip
SEASONS: tuple[str, ...] = ("Spring", "Summer", "Fall", "Winter")
FLAGS: tuple[str, ...] = ("seasonal_snow", "cloud_or_shadow")

RELEASE_V1 = "v1.0"
RELEASE_V2 = "v2.0"

#: Normalisation statistics of each release's pixels (band -> (mean, standard deviation)).
BAND_STATS_BY_RELEASE: dict[str, dict[str, tuple[float, float]]] = {RELEASE_V1: BAND_STATS, RELEASE_V2: BAND_STATS_V2}

CLC_NODATA = 0
"""Value of v2 reference-map pixels with no CLC class (the files' GDAL nodata)."""


def clc_codes_to_43(codes: Iterable[int]) -> list[str]:
    """43-class names of CLC Level-3 codes, deduplicated, in the official order.

    Raises ``KeyError`` naming the first code that is not one of the 43 classes.
    """
    present = set(codes)
    unknown = sorted(present - CLC_CODES.keys())
    if unknown:
        raise KeyError(unknown[0])
    return [name for code, name in CLC_CODES.items() if code in present]


class UnknownLabelError(ValueError):
    """A class name that is not in the requested nomenclature."""


def closest(name: str, choices: Iterable[str]) -> list[str]:
    """Up to three names in ``choices`` closest to ``name`` (case-insensitive)."""
    lowered = {c.lower(): c for c in choices}
    return [lowered[m] for m in difflib.get_close_matches(name.lower(), lowered, n=3, cutoff=0.5)]


def check_label(name: str, nomenclature: Nomenclature) -> str:
    """Return ``name`` if it belongs to the nomenclature, else raise with suggestions.

    A 43-class name asked for in the 19-class nomenclature gets its own message: 11 of the 43
    classes have no 19-class counterpart, and the others map to a differently named class.
    """
    valid = LABELS_19 if nomenclature == "19" else LABELS_43
    if name in valid:
        return name
    if nomenclature == "19" and name in MAP_43_TO_19:
        target = MAP_43_TO_19[name]
        if target is None:
            raise UnknownLabelError(
                f"{name!r} is a 43-class (CLC Level-3) label with no 19-class counterpart; "
                "search it with nomenclature='43'"
            )
        raise UnknownLabelError(
            f"{name!r} is a 43-class label; in the 19-class nomenclature it is {target!r} "
            "(or search it with nomenclature='43')"
        )
    hint = closest(name, valid)
    suggestion = f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
    raise UnknownLabelError(
        f"unknown {nomenclature}-class label {name!r}.{suggestion} Valid names: "
        + "; ".join(valid)
    )


SHARED_LABELS: frozenset[str] = frozenset(LABELS_19) & frozenset(LABELS_43)
"""Class names that are in both nomenclatures. Each means the same patches in both: the 43-class
class of that name maps to the 19-class class of that name, and no other 43-class class does."""


def label_nomenclatures(name: str) -> tuple[Nomenclature, ...]:
    """The nomenclatures that have a class called ``name``: ``("19",)``, ``("43",)``, both, or none."""
    found: list[Nomenclature] = []
    if name in LABELS_19:
        found.append("19")
    if name in LABELS_43:
        found.append("43")
    return tuple(found)


def resolve_label(name: object, prefer: Nomenclature = "19") -> tuple[Nomenclature, str]:
    """``(nomenclature, name)`` for a class name of either nomenclature.

    A name of one nomenclature only (``"Olive groves"``: 43, ``"Permanent crops"``: 19) belongs to
    that one; a name of both (:data:`SHARED_LABELS`, which mean the same patches in both) to
    ``prefer``. An unknown name raises :class:`UnknownLabelError` with the closest names of both.
    """
    if not isinstance(name, str):
        raise UnknownLabelError(f"a class name must be a string, got {name!r} ({type(name).__name__})")
    found = label_nomenclatures(name)
    if found:
        return (prefer if prefer in found else found[0]), name
    hints = [f"{h!r} ({'/'.join(label_nomenclatures(h))})" for h in closest(name, LABELS_19 + LABELS_43)]
    suggestion = f" Did you mean {', '.join(hints)}?" if hints else ""
    raise UnknownLabelError(
        f"unknown class name {name!r}.{suggestion} Valid names: 19 classes: {'; '.join(LABELS_19)}; "
        f"43 classes: {'; '.join(LABELS_43)}"
    )


def to_19(labels_43: Sequence[str]) -> list[str]:
    """Map 43-class names to the 19-class names, deduplicated, in the official 19-class order."""
    targets = {MAP_43_TO_19[n] for n in labels_43}
    return [name for name in LABELS_19 if name in targets]


def multi_hot(labels: Iterable[str], nomenclature: Nomenclature, order: str = "original") -> list[int]:
    """Multi-hot vector of ``labels`` in a named class order (``original`` or ``lex``)."""
    classes = CLASS_ORDERS[order][nomenclature]
    index = {c: i for i, c in enumerate(classes)}
    vec = [0] * len(classes)
    for name in labels:
        vec[index[check_label(name, nomenclature)]] = 1
    return vec


__all__ = [
    "BANDS", "BAND_STATS", "BAND_STATS_BY_RELEASE", "BAND_STATS_V2", "CLASS_ORDERS", "CLC_NODATA", "CLC_CODES", "CLC_COLOURS", "CODE_OF_43", "COUNTRIES", "FLAGS",
    "LABELS_19", "LABELS_43", "LAYOUTS", "MAP_43_TO_19", "PATCH_SIZE_M", "PREFIX", "RELEASE_V1", "RELEASE_V2", "RGB_BANDS",
    "S1_BANDS", "S1_BAND_NAMES", "S1_COLLECTION", "S1_GROUPS", "S2_BANDS", "S2_BAND_NAMES", "S2_COLLECTION",
    "S2_GROUPS", "SCHEMA_URI", "SCHEMA_VERSION", "SEASONS", "SHARED_LABELS", "SPLITS", "Band", "Layout",
    "Modality", "Nomenclature", "UnknownLabelError", "band_groups", "check_label", "closest",
    "clc_codes_to_43", "label_nomenclatures", "multi_hot", "resolve_label", "to_19",
]
