"""SQL predicates over the index, each with a ``pyarrow`` prefilter that prunes row groups.

A :class:`Predicate` is a DuckDB SQL fragment with ``?`` parameters (bound, never spliced in)
plus, where one is cheap to state, a ``pyarrow.compute`` expression that every matching row also
satisfies. The search applies the prefilter to the ``pyarrow.dataset`` itself, so the scan skips
row groups by their statistics before DuckDB sees a row (DuckDB pushes only some comparisons on
struct fields into an Arrow scan), and DuckDB evaluates the exact SQL on what is left.

Geometry is exact without DuckDB's spatial extension: a bbox comparison in SQL, then the Python
function :data:`INTERSECTS_UDF` (shapely, vectorised over Arrow) on the rows whose bbox
intersects but is not inside the query rectangle.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
import reprlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely
import shapely.errors
import shapely.geometry

from bigearth_stac.contract import CLC_FRACTIONS, LABEL_MASK_COLUMNS, label_bits
from bigearth_stac.vocab import (
    CLC_CODES,
    CODE_OF_43,
    LABELS_19,
    LABELS_43,
    MAP_43_TO_19,
    PREFIX,
    RELEASE_V1,
    UnknownLabelError,
    closest,
)

INTERSECTS_UDF = "bes_intersects"

INT64_MAX = 2**63 - 1
"""The largest integer DuckDB and Arrow take as a BIGINT (limits, offsets, integer literals)."""

MAX_JSON_DEPTH = 32
"""How deeply lists and objects may nest in a CQL2 JSON filter or a GeoJSON geometry. A boolean
expression adds two levels per operator (the object and its ``args``), a MultiPolygon five:
32 leaves room for any filter a person writes while keeping ``cql2``'s validation (whose cost
grows steeply with depth) well under a second and a few hundred MB."""

MAX_JSON_NODES = 500_000
"""How many values (objects, lists, strings, numbers...) a JSON filter or geometry may hold."""


class QueryError(ValueError):
    """A search parameter or filter that cannot be answered; the message says what is allowed."""


class LabelQueryError(QueryError, UnknownLabelError):
    """An unknown class name in a search: both a :class:`QueryError` and an
    :class:`~bigearth_stac.vocab.UnknownLabelError`, so either ``except`` catches it."""


_REPR = reprlib.Repr()
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlevel = 6


def excerpt(value: Any) -> str:
    """A short ``repr`` of a user's value for an error message, safe on huge or deep values."""
    return _REPR.repr(value)


def check_json_shape(value: Any, what: str, max_depth: int = MAX_JSON_DEPTH,
                     max_nodes: int = MAX_JSON_NODES) -> None:
    """Raise :class:`QueryError` if ``value`` nests lists / objects deeper than ``max_depth``,
    holds more than ``max_nodes`` values, or a number that JSON cannot hold (NaN, infinity).

    Iterative, so a value of any depth (or one that contains itself) is refused without
    recursion, before a recursive consumer (``json``, ``cql2``, shapely, the translator) sees it.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise QueryError(f"{what} is too large: more than {max_nodes:,} values (the limit)")
        if isinstance(item, Mapping):
            children: Iterable[Any] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            if isinstance(item, float) and not math.isfinite(item):
                raise QueryError(f"{what} holds {item}, which is not a finite number: {excerpt(value)}")
            continue
        if depth >= max_depth:
            raise QueryError(f"{what} nests lists and objects more than {max_depth} levels deep "
                             f"(the limit): {excerpt(value)}")
        stack.extend((child, depth + 1) for child in children)


def as_int(value: Any, what: str, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``; raises :class:`QueryError` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise QueryError(f"{what} must be an integer, got {excerpt(value)} ({type(value).__name__})")
    number = int(value)
    if not minimum <= number <= maximum:
        raise QueryError(f"{what} must be an integer from {minimum:,} to {maximum:,}, got {number:,}")
    return number


@dataclass(frozen=True)
class Predicate:
    """A SQL boolean expression with ``?`` parameters and an optional pruning prefilter."""

    sql: str
    params: tuple[Any, ...] = ()
    prefilter: pc.Expression | None = None
    """Every row for which ``sql`` is true also satisfies this (``None``: no pruning)."""


TRUE = Predicate("TRUE")


def and_(preds: Iterable[Predicate]) -> Predicate:
    items = [p for p in preds if p is not TRUE]
    if not items:
        return TRUE
    if len(items) == 1:
        return items[0]
    pre = [p.prefilter for p in items if p.prefilter is not None]
    return Predicate(
        "(" + " AND ".join(p.sql for p in items) + ")",
        tuple(x for p in items for x in p.params),
        functools.reduce(lambda a, b: a & b, pre) if pre else None,
    )


def or_(preds: Sequence[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    pre = [p.prefilter for p in preds]
    return Predicate(
        "(" + " OR ".join(p.sql for p in preds) + ")",
        tuple(x for p in preds for x in p.params),
        None if any(e is None for e in pre) else functools.reduce(lambda a, b: a | b, pre),  # type: ignore[operator]
    )


def not_(pred: Predicate) -> Predicate:
    # NOT of a superset says nothing about the rows: no prefilter. NULLs stay excluded, as in SQL.
    return Predicate(f"(NOT {pred.sql})", pred.params)


def quote(name: str) -> str:
    """A SQL identifier for a column name (``"bigearthnet:split"``)."""
    return '"' + name.replace('"', '""') + '"'


# -----------------------------------------------------------------------------------------------
# Columns: property names -> SQL, kinds, prefilter fields
# -----------------------------------------------------------------------------------------------

#: Columns that are not properties a filter may name.
_NOT_QUERYABLE = {"type", "stac_version", "stac_extensions", "links", "assets", "bbox",
                  *LABEL_MASK_COLUMNS.values()}


def label_array_predicate(op: str, nomenclature: str, names: Sequence[str], columns: Columns) -> Predicate:
    """An array operator on a label column, as a bit test on its mask column when the index has one.

    DESIGN.md #15: ``list_has_any`` over 590k label arrays costs 130-190 ms; the same test on the
    ``int64`` mask is a few ms. Indexes written before the masks existed use the arrays.
    ``op``: ``a_overlaps`` (any), ``a_contains`` (all), ``a_containedBy``, ``a_equals``.
    """
    mask_column = LABEL_MASK_COLUMNS[nomenclature]
    if mask_column in columns.masks:
        bits = label_bits(names, nomenclature)
        m = quote(mask_column)
        sql = {
            "a_overlaps": f"(({m} & ?) <> 0)",
            "a_contains": f"(({m} & ?) = ?)",
            "a_containedBy": f"(({m} & ~CAST(? AS BIGINT)) = 0)",
            "a_equals": f"({m} = ?)",
        }[op]
        params: tuple[Any, ...] = (bits, bits) if op == "a_contains" else (bits,)
        return Predicate(sql, params)
    col = quote(f"{PREFIX}:labels_{nomenclature}")
    sql = {
        "a_overlaps": f"list_has_any({col}, ?::VARCHAR[])",
        "a_contains": f"list_has_all({col}, ?::VARCHAR[])",
        "a_containedBy": f"list_has_all(?::VARCHAR[], {col})",
        "a_equals": f"(list_has_all({col}, ?::VARCHAR[]) AND list_has_all(?::VARCHAR[], {col}))",
    }[op]
    values = list(names)
    return Predicate(f"({sql})", (values, values) if op == "a_equals" else (values,))


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    """``string``, ``number``, ``bool``, ``timestamp``, ``list`` or ``geometry``."""
    element: str | None = None
    """For a ``list``: the kind of its elements (``string``, ``number``...); ``None`` otherwise."""
    path: tuple[str, str] | None = None
    """A field of a struct column, ``(column, field)`` (a pixel fraction); ``None``: a column."""
    float32: bool = False
    """Values are ``float32``: literals are compared as ``float32`` too, so ``>= 0.35`` holds for a
    stored ``0.35`` (as a double, float32's 0.35 is 0.3499999940...)."""

    @property
    def sql(self) -> str:
        if self.path is not None:
            return f"struct_extract({quote(self.path[0])}, '{self.path[1]}')"
        return quote(self.name)

    @property
    def param(self) -> str:
        """The SQL placeholder of a literal compared with this column."""
        return "CAST(? AS FLOAT)" if self.float32 else "?"

    @property
    def prunable(self) -> bool:
        """Whether a ``pyarrow`` prefilter on :attr:`field` prunes row groups exactly (top-level
        columns compared in their own type; not struct fields or float32 values)."""
        return self.path is None and not self.float32

    @property
    def field(self) -> pc.Expression:
        return pc.field(*self.path) if self.path is not None else pc.field(self.name)


# -----------------------------------------------------------------------------------------------
# Pixel fractions (BigEarthNet v2.0: the reference maps' share of each CLC Level-3 class)
# -----------------------------------------------------------------------------------------------

FRACTION_PROPERTIES = ("clc_fractions", CLC_FRACTIONS)
"""How a filter names a pixel fraction: ``clc_fractions.<code>`` or ``bigearthnet:clc_fractions.<code>``
(``<code>`` a CLC Level-3 code such as ``312``, or the 43-class name, ``Coniferous forest``)."""

FRACTIONS_HELP = ("pixel fractions are per CLC Level-3 class: a CLC code of the 43 classes (111 ... 523) or a "
                  "43-class name, with a fraction from 0 to 1")


def fraction_code(key: Any) -> int:
    """The CLC Level-3 code of a pixel-fraction key: a code (``312``, ``"312"``) or a 43-class name.

    A 19-class name that is not also a 43-class name is refused with the 43-class classes it
    stands for; an unknown name with the closest 43-class names. Raises :class:`LabelQueryError`.
    """
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        code: Any = int(key)
    elif isinstance(key, str) and key.strip().isdigit():
        code = int(key.strip())
    elif isinstance(key, str):
        if key in CODE_OF_43:
            return CODE_OF_43[key]
        if key in LABELS_19:
            members = [f"{n!r} ({CODE_OF_43[n]})" for n, t in MAP_43_TO_19.items() if t == key]
            raise LabelQueryError(f"pixel fraction of {key!r}: that is a 19-class name, and fractions are per "
                                  f"43-class (CLC Level-3) class; it stands for {', '.join(members)}")
        hint = closest(key, LABELS_43)
        did = f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
        raise LabelQueryError(f"pixel fraction of unknown class {excerpt(key)}.{did} {FRACTIONS_HELP}")
    else:
        raise QueryError(f"pixel fraction of {excerpt(key)}: {FRACTIONS_HELP}")
    if code not in CLC_CODES:
        raise LabelQueryError(f"pixel fraction of CLC code {code}: not one of the 43 classes of BigEarthNet "
                              f"({', '.join(map(str, CLC_CODES))})")
    return int(code)


def fraction_value(key: Any, value: Any) -> float:
    """A fraction threshold in [0, 1] as a float; :class:`QueryError` naming the class otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or not 0 <= float(value) <= 1:
        raise QueryError(f"pixel fraction of {excerpt(key)} must be a number from 0 to 1, got {excerpt(value)}")
    return float(value)


def min_fractions_predicate(thresholds: Any, columns: Columns) -> Predicate:
    """``{class: fraction}`` -> every class covers at least its fraction of the reference map.

    Keys are CLC codes or 43-class names (:func:`fraction_code`), values in [0, 1]. The test is
    ``clc_fractions.<code> >= value`` in ``float32``, the type the index stores; rows without a
    map (null fractions) never match.
    """
    if not isinstance(thresholds, Mapping):
        raise QueryError(f"min_fractions must be a mapping of class (43-class name or CLC code) to a fraction "
                         f"from 0 to 1, e.g. {{'Coniferous forest': 0.3}}, got {excerpt(thresholds)}")
    parts: list[Predicate] = []
    for key, value in thresholds.items():
        threshold = fraction_value(key, value)
        col = columns.fraction(key)
        parts.append(Predicate(f"({col.sql} >= {col.param})", (threshold,)))
    return and_(parts)


def _kind(t: pa.DataType) -> str | None:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "list"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or isinstance(t, pa.ExtensionType):
        return "geometry"
    return None


class Columns:
    """The queryable properties of one index (from its Arrow schema), with short aliases.

    ``bigearthnet:labels_19`` may also be written ``labels_19``; ``geometry`` is only for the
    spatial operators. The pixel fractions of a v2.0 index are the properties
    ``bigearthnet:clc_fractions.<code>`` (``clc_fractions.<code>``; a 43-class name for the code
    works too), numbers (:meth:`fraction`).

    ``release``: the release of the index's items, when known; pixel fractions of a v1.0 index
    (which has no reference maps) are refused.
    """

    def __init__(self, schema: pa.Schema, release: str | None = None) -> None:
        self.masks: frozenset[str] = frozenset(n for n in LABEL_MASK_COLUMNS.values() if n in schema.names)
        """The label bit-mask columns this index has (see :func:`label_array_predicate`)."""
        self.release = release
        fractions = schema.field(CLC_FRACTIONS).type if CLC_FRACTIONS in schema.names else None
        self.fractions: frozenset[str] | None = (
            frozenset(fractions.field(i).name for i in range(fractions.num_fields))
            if fractions is not None and pa.types.is_struct(fractions) else None)
        """CLC codes (as strings) of the index's pixel-fraction struct; ``None``: the index has none."""
        self.by_name: dict[str, Column] = {}
        for f in schema:
            kind = _kind(f.type)
            if f.name in _NOT_QUERYABLE or kind is None:
                continue
            element = _kind(f.type.value_type) if kind == "list" else None
            self.by_name[f.name] = Column(f.name, kind, element)
        self.aliases = {n.split(":", 1)[1]: n for n in self.by_name if n.startswith(f"{PREFIX}:")}

    def names(self) -> list[str]:
        return sorted(self.by_name)

    def get(self, name: str) -> Column:
        if not isinstance(name, str):
            raise QueryError(f"a property name must be a string, got {excerpt(name)}")
        head, dot, rest = name.partition(".")
        if dot and head in FRACTION_PROPERTIES:
            return self.fraction(rest)
        full = self.aliases.get(name, name)
        if full in self.by_name:
            return self.by_name[full]
        hint = closest(name, list(self.by_name) + list(self.aliases))
        did = f" Did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
        fractions = self.fractions is not None and self.release != RELEASE_V1
        more = f", {CLC_FRACTIONS}.<CLC code or 43-class name>" if fractions else ""
        raise QueryError(f"unknown property {excerpt(name)}.{did} Queryable properties: {', '.join(self.names())}"
                         f"{more} (the bigearthnet: prefix may be left out)")

    def fraction(self, key: Any) -> Column:
        """The pixel fraction of one class (a CLC code or a 43-class name) as a number column.

        A :class:`QueryError` when the index has no fractions (a v1.0 index, or one built before
        them), naming what has them.
        """
        if self.release == RELEASE_V1 or self.fractions is None:
            what = ("BigEarthNet v1.0 has no reference maps" if self.release == RELEASE_V1
                    else f"this index has no pixel fractions ({CLC_FRACTIONS})")
            raise QueryError(f"pixel fraction of {excerpt(key)}: {what}; pixel fractions come from the reference "
                             "maps of BigEarthNet v2.0: search a v2.0 catalog (release='v2.0')")
        code = str(fraction_code(key))
        if code not in self.fractions:
            raise QueryError(f"pixel fraction of {excerpt(key)}: the index's {CLC_FRACTIONS} has no field {code}")
        return Column(f"{CLC_FRACTIONS}.{code}", "number", path=(CLC_FRACTIONS, code), float32=True)


# -----------------------------------------------------------------------------------------------
# Space
# -----------------------------------------------------------------------------------------------

BBOX_HELP = ("a bbox is four numbers west,south,east,north in degrees (WGS84), with "
             "-180 <= west, east <= 180 and -90 <= south <= north <= 90; west > east crosses the antimeridian")


def parse_bbox(value: Any) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` from a sequence or ``"W,S,E,N"``; raises :class:`QueryError`."""
    raw = value.split(",") if isinstance(value, str) else value
    try:
        nums = [float(v) for v in raw]
    except (TypeError, ValueError):
        raise QueryError(f"malformed bbox {value!r}: {BBOX_HELP}") from None
    if len(nums) != 4:
        raise QueryError(f"malformed bbox {value!r} ({len(nums)} numbers): {BBOX_HELP}")
    w, s, e, n = nums
    if not all(np.isfinite(nums)) or not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= n <= 90):
        raise QueryError(f"malformed bbox {value!r}: {BBOX_HELP}")
    return w, s, e, n


GEOMETRY_HELP = ("give a GeoJSON geometry dict (Point, LineString, Polygon, Multi*, GeometryCollection) "
                 "or a shapely geometry, with finite longitude, latitude coordinates")


def parse_geometry(value: Any) -> shapely.Geometry:
    """A shapely geometry from GeoJSON (a dict or its ``__geo_interface__``) or a shapely object.

    Refused with :class:`QueryError`: anything that is not a geometry, JSON nested deeper than
    :data:`MAX_JSON_DEPTH`, empty geometries and coordinates that are NaN or infinite (GEOS
    cannot compare them). An invalid polygon (self-intersecting...) is repaired with ``make_valid``.
    """
    if isinstance(value, shapely.Geometry):
        geom = value
    else:
        gi = getattr(value, "__geo_interface__", value)
        if not isinstance(gi, Mapping):
            raise QueryError(f"malformed intersects geometry {excerpt(value)}: {GEOMETRY_HELP}")
        check_json_shape(gi, "intersects geometry")
        try:
            geom = shapely.geometry.shape(gi)
        except Exception as exc:  # shapely raises several types for bad GeoJSON
            raise QueryError(f"malformed intersects geometry {excerpt(value)}: {exc}; {GEOMETRY_HELP}") from None
    if not np.isfinite(shapely.get_coordinates(geom)).all():
        raise QueryError(f"intersects geometry {excerpt(value)} has coordinates that are NaN or infinite; "
                         f"{GEOMETRY_HELP}")
    if geom.is_empty:
        raise QueryError(f"intersects geometry {excerpt(value)} is empty")
    if not geom.is_valid:
        try:
            geom = shapely.make_valid(geom)
        except shapely.errors.GEOSException as exc:
            raise QueryError(f"intersects geometry {excerpt(value)} is invalid and cannot be repaired: {exc}") from None
    return geom


def _bbox_sql(w: float, s: float, e: float, n: float, inside: bool) -> tuple[str, tuple[float, ...]]:
    if inside:
        return ("(bbox.xmin >= ? AND bbox.xmax <= ? AND bbox.ymin >= ? AND bbox.ymax <= ?)", (w, e, s, n))
    return ("(bbox.xmin <= ? AND bbox.xmax >= ? AND bbox.ymin <= ? AND bbox.ymax >= ?)", (e, w, n, s))


def _bbox_prefilter(w: float, s: float, e: float, n: float) -> pc.Expression:
    f = functools.partial(pc.field, "bbox")
    return (f("xmin") <= e) & (f("xmax") >= w) & (f("ymin") <= n) & (f("ymax") >= s)


def intersects(geom: shapely.Geometry) -> Predicate:
    """Rows whose footprint intersects ``geom`` (boundaries touching count), exactly."""
    w, s, e, n = geom.bounds
    hit_sql, hit_params = _bbox_sql(w, s, e, n, inside=False)
    wkb = shapely.to_wkb(geom)
    if geom.equals(shapely.box(w, s, e, n)):
        # A rectangle: a footprint whose bbox lies inside it intersects it; test only the rest.
        in_sql, in_params = _bbox_sql(w, s, e, n, inside=True)
        sql = (f"(CASE WHEN NOT {hit_sql} THEN false WHEN {in_sql} THEN true "
               f"ELSE {INTERSECTS_UDF}(geometry::BLOB, ?) END)")
        params = hit_params + in_params + (wkb,)
    else:
        sql = f"(CASE WHEN NOT {hit_sql} THEN false ELSE {INTERSECTS_UDF}(geometry::BLOB, ?) END)"
        params = hit_params + (wkb,)
    return Predicate(sql, params, _bbox_prefilter(w, s, e, n))


def bbox_predicate(bbox: tuple[float, float, float, float]) -> Predicate:
    w, s, e, n = bbox
    if w > e:  # crosses the antimeridian: two rectangles
        return or_([intersects(shapely.box(w, s, 180.0, n)), intersects(shapely.box(-180.0, s, e, n))])
    return intersects(shapely.box(w, s, e, n))


_LOCAL = threading.local()


def _prepared(wkb: bytes) -> shapely.Geometry:
    """The query geometry, prepared once per thread.

    DuckDB calls the function from several threads at once, and shapely releases the GIL: a
    prepared GEOS geometry builds its index lazily and must not be shared between threads (it
    crashed the process when it was).
    """
    cache: dict[bytes, shapely.Geometry] = getattr(_LOCAL, "cache", None) or {}
    _LOCAL.cache = cache
    geom = cache.get(wkb)
    if geom is None:
        if len(cache) > 64:
            cache.clear()
        geom = cache[wkb] = shapely.from_wkb(wkb)
        shapely.prepare(geom)
    return geom


def intersects_udf(footprints: pa.Array, query: pa.Array) -> pa.Array:
    """DuckDB Arrow UDF: does each WKB footprint intersect the (constant) WKB query geometry?"""
    if len(footprints) == 0:
        return pa.array([], pa.bool_())
    geoms = shapely.from_wkb(np.asarray(footprints.to_numpy(zero_copy_only=False), dtype=object))
    qs = query.to_pylist()
    if len(set(qs)) == 1:
        return pa.array(shapely.intersects(_prepared(qs[0]), geoms))
    return pa.array([bool(shapely.intersects(_prepared(q), g)) for q, g in zip(qs, geoms, strict=False)])


# -----------------------------------------------------------------------------------------------
# Time
# -----------------------------------------------------------------------------------------------

DATETIME_HELP = ("use an RFC 3339 timestamp ('2017-06-01T10:30:00Z'), a date ('2017-06-01', the whole "
                 "day), or an interval 'start/end' of those with '..' for an open end ('2017-06-01/..')")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def parse_instant(value: Any, end: bool = False) -> datetime:
    """A UTC datetime; a date means its first (or, with ``end``, its last) microsecond."""
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, date):
        day = datetime.combine(value, time(), tzinfo=timezone.utc)
        return day + timedelta(days=1, microseconds=-1) if end else day
    if isinstance(value, str):
        text = value.strip()
        if _DATE_RE.match(text):
            try:
                return parse_instant(date.fromisoformat(text), end)
            except ValueError:
                pass
        elif "T" in text.upper():
            try:
                return _utc(datetime.fromisoformat(text.upper().replace("Z", "+00:00")))
            except ValueError:
                pass
    raise QueryError(f"malformed datetime {value!r}: {DATETIME_HELP}")


def _is_day(value: Any) -> bool:
    return (isinstance(value, date) and not isinstance(value, datetime)) or (
        isinstance(value, str) and bool(_DATE_RE.match(value.strip())))


def parse_interval(value: Any) -> tuple[datetime | None, datetime | None]:
    """``(start, end)`` inclusive, ``None`` for an open end, from a datetime, date, string or pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise QueryError(f"malformed datetime interval {value!r}: two ends expected; {DATETIME_HELP}")
        lo, hi = value
    elif isinstance(value, str) and "/" in value:
        parts = value.split("/")
        if len(parts) != 2:
            raise QueryError(f"malformed datetime interval {value!r}: {DATETIME_HELP}")
        lo, hi = parts
    else:
        if _is_day(value):
            return parse_instant(value), parse_instant(value, end=True)
        t = parse_instant(value)
        return t, t
    start = None if lo in (None, "", "..") else parse_instant(lo)
    stop = None if hi in (None, "", "..") else parse_instant(hi, end=True)
    if start is None and stop is None:
        raise QueryError(f"datetime interval {value!r} is open at both ends; {DATETIME_HELP}")
    if start is not None and stop is not None and start > stop:
        raise QueryError(f"datetime interval {value!r} ends before it starts")
    return start, stop


def time_predicate(interval: tuple[datetime | None, datetime | None], column: str = "datetime") -> Predicate:
    start, stop = interval
    parts = []
    ts = pa.timestamp("us", tz="UTC")
    if start is not None:
        parts.append(Predicate(f"{quote(column)} >= ?", (start,), pc.field(column) >= pa.scalar(start, ts)))
    if stop is not None:
        parts.append(Predicate(f"{quote(column)} <= ?", (stop,), pc.field(column) <= pa.scalar(stop, ts)))
    return and_(parts)


__all__ = [
    "INT64_MAX", "INTERSECTS_UDF", "MAX_JSON_DEPTH", "MAX_JSON_NODES", "TRUE", "Column", "Columns",
    "FRACTION_PROPERTIES", "LabelQueryError", "Predicate", "QueryError", "and_", "as_int", "bbox_predicate",
    "check_json_shape", "excerpt", "fraction_code", "fraction_value", "min_fractions_predicate", "intersects", "intersects_udf", "not_", "or_", "parse_bbox", "parse_geometry", "parse_instant",
    "parse_interval", "quote", "time_predicate",
]
