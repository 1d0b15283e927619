"""CQL2 (JSON or text) -> DuckDB SQL with bound parameters, over the index's columns.

``cql2.Expr`` parses and validates the filter; the translation is ours (DESIGN.md #4: ``cql2``'s
``to_sql()`` targets PostgreSQL). Supported operators::

    and or not  = <> < <= > >=  like  in  between  isNull
    a_contains (list_has_all)  a_overlaps (list_has_any)  a_containedBy  a_equals
    s_intersects (bbox comparison in SQL, then an exact shapely test)  t_intersects

Anything else raises :class:`UnsupportedOperator`, which names the operator and lists these.
Property names are index columns (``bigearthnet:labels_19``, ``datetime``, ``id``, ...); the
``bigearthnet:`` prefix may be left out. On a BigEarthNet v2.0 index the pixel fractions of the
reference maps are numbers named ``bigearthnet:clc_fractions.<code>`` (``clc_fractions.312``; a
43-class name works too: ``"clc_fractions.Coniferous forest"``), compared as ``float32`` like the
index stores them. Operands are checked against the kinds of the columns
(string, number, boolean, timestamp, array, geometry) before any SQL runs, and label values of
the label columns against the nomenclature, with suggestions for misspellings.

Hostile input is bounded before ``cql2`` sees it. ``cql2``'s parser recurses once per nested
parenthesis and per chained operator, and overflows the stack (a segfault, not an exception) on
a few thousand; its validator's time and memory grow steeply with nesting (400 nested ``NOT``
took 17 GB). So a filter is refused with a :class:`QueryError` naming the limit when it exceeds
:data:`MAX_FILTER_BYTES`, :data:`MAX_FILTER_NESTING`, :data:`MAX_FILTER_CONNECTIVES` or
:data:`MAX_CHAINED_OPERATORS` (a linear scan of the text), or, as JSON,
:data:`~bigearth_stac._predicates.MAX_JSON_DEPTH` (an iterative walk).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

import cql2

from bigearth_stac._predicates import (
    INT64_MAX,
    MAX_JSON_DEPTH,
    Column,
    Columns,
    LabelQueryError,
    Predicate,
    QueryError,
    and_,
    bbox_predicate,
    check_json_shape,
    excerpt,
    intersects,
    label_array_predicate,
    not_,
    or_,
    parse_bbox,
    parse_geometry,
    parse_instant,
    parse_interval,
    time_predicate,
)
from bigearth_stac.vocab import PREFIX, UnknownLabelError, check_label

log = logging.getLogger(__name__)

COMPARISONS = {"=": "=", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
ARRAY_OPS = ("a_contains", "a_overlaps", "a_containedBy", "a_equals")
SUPPORTED = ("and", "or", "not", *COMPARISONS, "like", "in", "between", "isNull", *ARRAY_OPS,
             "s_intersects", "t_intersects")
_LABEL_COLUMNS = {f"{PREFIX}:labels_19": "19", f"{PREFIX}:labels_43": "43"}
_SCALAR_KINDS = ("string", "number", "bool", "timestamp")
#: DuckDB type of a bound array literal, by element kind (the column's list type is cast to it).
_ARRAY_SQL = {"string": "VARCHAR[]", "bool": "BOOLEAN[]"}

MAX_FILTER_BYTES = 1 << 20
"""Largest filter, in bytes of CQL2 text or of JSON (1 MiB: an ``in`` list of 25,000 ids)."""

MAX_FILTER_NESTING = 12
"""How deeply parentheses (function calls and geometry literals included) and ``NOT`` may nest
in CQL2 text. A bare ``NOT`` nests until the next ``and`` / ``or``: ``NOT NOT x`` is 2 deep."""

MAX_FILTER_CONNECTIVES = 1000
"""How many ``and`` / ``or`` one filter may hold (one fewer than the terms they join). Longer
lists of alternatives are one ``in``: ``id in ('a', 'b', ...)``."""

MAX_CHAINED_OPERATORS = 8
"""How many operators other than ``and`` / ``or`` one term may chain (``=``, ``like``, ``in``,
``is``, arithmetic, a sign): ``gsd = 10`` has one. ``cql2`` spends much stack on each."""

_CACHED_BYTES = 16 << 10  # filters up to 16 KiB are cached once validated; larger ones are not

_TEXT_TOKEN = re.compile(
    r"""
      (?P<string>'[^']*(?:''[^']*)*'|"[^"]*(?:""[^"]*)*")
    | (?P<unterminated>['"].*)
    | (?P<word>[^\W\d]\w*(?:[:.]\w+)*)
    | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<comma>,)
    | (?P<op><>|<=|>=|!=|[=<>+\-*/%^])
    """,
    re.VERBOSE | re.DOTALL,
)
_CONNECTIVES = {"and", "or"}
_WORD_OPERATORS = {"like", "in", "between", "is", "div"}
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[{]|[\]}]', re.DOTALL)


class UnsupportedOperator(QueryError):
    """A CQL2 operator this translator does not handle."""


# -----------------------------------------------------------------------------------------------
# Bounds: refuse what would crash or exhaust the parser, before it sees anything
# -----------------------------------------------------------------------------------------------


def _too_big(text: str) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILTER_BYTES:
        raise QueryError(f"CQL2 filter {excerpt(text)} is {size:,} bytes; the limit is {MAX_FILTER_BYTES:,} "
                         "(a long list of alternatives is one `in (...)`)")


def _scan_text(text: str) -> None:
    """Refuse CQL2 text nested, chained or joined beyond the limits (one linear pass, no parsing)."""
    depth = 0  # open parentheses
    levels = [[0, 0]]  # per open parenthesis: [NOTs still open, operators chained in this term]
    open_nots = 0
    connectives = 0
    previous = ""
    for m in _TEXT_TOKEN.finditer(text):
        kind = m.lastgroup
        level = levels[-1]
        if kind == "unterminated":
            break  # nothing after an unclosed quote is parsed as syntax; cql2 reports it
        if kind == "open":
            depth += 1
            levels.append([0, 0])
        elif kind == "close":
            if len(levels) > 1:
                open_nots -= levels.pop()[0]
                depth -= 1
        elif kind == "comma":
            open_nots -= level[0]
            level[0] = level[1] = 0
        elif kind == "word":
            word = m.group().lower()
            if word in _CONNECTIVES:
                connectives += 1
                if connectives > MAX_FILTER_CONNECTIVES:
                    raise QueryError(f"CQL2 filter {excerpt(text)} joins more than {MAX_FILTER_CONNECTIVES} "
                                     "terms with and/or (the limit); a long list of alternatives is one "
                                     "`in (...)`")
                open_nots -= level[0]
                level[0] = level[1] = 0
            elif word == "not":
                level[0] += 1
                open_nots += 1
            elif word in _WORD_OPERATORS:
                level[1] += 1
        elif kind == "op" and not (m.group() in "+-" and previous in ("open", "comma")):
            level[1] += 1  # a sign after ( or , is free: BBOX(-10, -20, ...); "x -y" in WKT counts 1
        if depth + open_nots > MAX_FILTER_NESTING:
            raise QueryError(f"CQL2 filter {excerpt(text)} nests parentheses and NOT more than "
                             f"{MAX_FILTER_NESTING} deep (the limit)")
        if level[1] > MAX_CHAINED_OPERATORS:
            raise QueryError(f"CQL2 filter {excerpt(text)} chains more than {MAX_CHAINED_OPERATORS} operators "
                             f"in one term (the limit), near {excerpt(text[max(m.start() - 30, 0):m.end()])}")
        previous = kind or ""


def _scan_json_text(text: str) -> None:
    """Refuse JSON text nested deeper than :data:`MAX_JSON_DEPTH` before ``json.loads`` recurses."""
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        ch = m.group()
        if ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise QueryError(f"CQL2 JSON filter {excerpt(text)} nests lists and objects more than "
                                 f"{MAX_JSON_DEPTH} levels deep (the limit)")
        elif ch in "]}":
            depth -= 1


def _check_tree(tree: Any, what: str) -> None:
    """Depth, size and number of and/or terms of a filter as JSON, walked without recursion."""
    check_json_shape(tree, what)
    stack = [tree]
    connectives = 0
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            op, args = item.get("op"), item.get("args")
            if isinstance(op, str) and op in _CONNECTIVES and isinstance(args, list):
                connectives += max(len(args) - 1, 0)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    if connectives > MAX_FILTER_CONNECTIVES:
        raise QueryError(f"{what} joins more than {MAX_FILTER_CONNECTIVES} terms with and/or (the limit); "
                         "a long list of alternatives is one `in`")


def _no_constant(name: str) -> Any:
    raise QueryError(f"CQL2 JSON filter holds {name}, which is not a JSON number")


# -----------------------------------------------------------------------------------------------
# Parsing
# -----------------------------------------------------------------------------------------------


def parse(filter: str | Mapping[str, Any] | bool) -> dict[str, Any] | bool:
    """CQL2 text or JSON (a dict, a JSON string, or a boolean) -> validated CQL2 JSON.

    ``True`` / ``False`` (and the text ``true`` / ``false``) are valid CQL2: they match every
    row / no row. Filters beyond the limits of this module raise :class:`QueryError` before
    ``cql2`` sees them. ``cql2``'s validation (a JSON Schema check) takes about 0.2 s, so
    validated filters up to 16 KiB are cached by their text and not validated again.
    """
    if isinstance(filter, bool):
        return filter
    if isinstance(filter, Mapping):
        _check_tree(filter, "CQL2 JSON filter")
        try:
            filter = json.dumps(filter, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise QueryError(f"CQL2 JSON filter {excerpt(filter)} is not JSON: {exc}") from None
    elif not isinstance(filter, str):
        raise QueryError(f"filter must be CQL2 text (a str), CQL2 JSON (a dict) or a boolean, got "
                         f"{excerpt(filter)} ({type(filter).__name__})")
    _too_big(filter)
    if len(filter) <= _CACHED_BYTES:
        return copy.deepcopy(_parse_cached(filter))
    return _parse_text(filter)


def _parse_text(text: str) -> dict[str, Any] | bool:
    if text.lstrip().startswith("{"):
        _scan_json_text(text)
        try:
            tree = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise QueryError(f"invalid CQL2 JSON {excerpt(text)}: {exc}") from None
        _check_tree(tree, "CQL2 JSON filter")
        source: Any = tree
    else:
        _scan_text(text)
        source = text
    try:
        expr = cql2.Expr(source)
        out = expr.to_json()
        _check_tree(out, "CQL2 filter")  # before validation, whose cost grows with depth
        expr.validate()
    except QueryError:
        raise
    except Exception as exc:  # cql2 raises plain Exception for parse errors, as well as its own types
        raise QueryError(f"invalid CQL2 filter {excerpt(text)}: {exc}") from None
    if not isinstance(out, (dict, bool)):
        raise QueryError(f"a CQL2 filter must be a boolean expression, got {excerpt(out)}")
    return out


_parse_cached = functools.lru_cache(maxsize=256)(_parse_text)


def translate(filter: str | Mapping[str, Any] | bool, columns: Columns) -> Predicate:
    """A :class:`Predicate` equivalent to a CQL2 filter over an index with these ``columns``."""
    return _Translator(columns).node(parse(filter))


# -----------------------------------------------------------------------------------------------
# Translation
# -----------------------------------------------------------------------------------------------


def _args(node: Mapping[str, Any], op: str, count: int | None = None) -> list[Any]:
    args = node.get("args", [])
    if not isinstance(args, list) or (count is not None and len(args) != count) or (count is None and not args):
        want = f"{count} arguments" if count is not None else "arguments"
        raise QueryError(f"{op}: expected {want}, got {excerpt(args)}")
    return args


def _like_pattern(pattern: str) -> str:
    """Refuse a LIKE pattern that ends in an unpaired escape character (``\\``)."""
    trailing = len(pattern) - len(pattern.rstrip("\\"))
    if trailing % 2:
        raise QueryError(f"like: pattern {pattern!r} ends with the escape character \\; "
                         "write \\\\ for a literal backslash")
    return pattern


class _Translator:
    def __init__(self, columns: Columns) -> None:
        self.columns = columns

    # -- operands ---------------------------------------------------------------------------------
    @staticmethod
    def _no_function(arg: Any) -> None:
        if isinstance(arg, Mapping) and "op" in arg:  # casei(), accenti(), arithmetic, functions
            raise UnsupportedOperator(f"unsupported CQL2 operator {excerpt(arg['op'])} as an operand; "
                                      f"supported: {', '.join(SUPPORTED)} between properties and literals")

    def prop(self, arg: Any, op: str) -> Column:
        self._no_function(arg)
        if isinstance(arg, Mapping) and "property" in arg:
            return self.columns.get(arg["property"])
        raise QueryError(f"{op}: expected a property, got {excerpt(arg)}")

    @staticmethod
    def is_prop(arg: Any) -> bool:
        return isinstance(arg, Mapping) and "property" in arg

    def scalar(self, value: Any, kind: str | None, where: str, op: str) -> Any:
        """``value`` as a literal of ``kind``; ``where`` says what it is compared with ("x is ...")."""
        self._no_function(value)
        if self.is_prop(value):
            raise QueryError(f"{op}: {where}; compare it with a {kind} literal here, not with the property "
                             f"{excerpt(value['property'])}")
        if isinstance(value, Mapping) and ("timestamp" in value or "date" in value):
            if kind != "timestamp":
                raise QueryError(f"{op}: {where}; it cannot be compared with the time {excerpt(value)}")
            return parse_instant(value.get("timestamp", value.get("date")))
        if kind == "number":
            if isinstance(value, int) and not isinstance(value, bool):
                if not -INT64_MAX - 1 <= value <= INT64_MAX:
                    raise QueryError(f"{op}: {where}; the integer {value} is outside the 64-bit range")
                return value
            if isinstance(value, float):
                if not math.isfinite(value):
                    raise QueryError(f"{op}: {where}; {value} is not a finite number")
                return value
        elif (kind == "string" and isinstance(value, str)) or (kind == "bool" and isinstance(value, bool)):
            return value
        elif kind == "timestamp" and isinstance(value, str):
            return parse_instant(value)
        raise QueryError(f"{op}: {where}; {excerpt(value)} is not a {kind}")

    def literal(self, value: Any, col: Column, op: str) -> Any:
        """A Python value for a literal compared with ``col``, checked against its kind."""
        return self.scalar(value, col.kind, f"{col.name} is a {col.kind} column", op)

    @staticmethod
    def prefilter_value(value: Any, col: Column) -> Any:
        if col.kind == "timestamp":
            import pyarrow as pa

            return pa.scalar(value, pa.timestamp("us", tz="UTC"))
        return value

    # -- nodes ------------------------------------------------------------------------------------
    def node(self, node: Any) -> Predicate:
        if isinstance(node, bool):
            return Predicate("TRUE" if node else "FALSE")
        if not isinstance(node, Mapping) or "op" not in node:
            raise QueryError(f"expected a CQL2 boolean expression, got {excerpt(node)}")
        op = node["op"]
        if not isinstance(op, str):
            raise QueryError(f"a CQL2 operator is a string, got {excerpt(op)}")
        if op in ("and", "or"):
            parts = [self.node(a) for a in _args(node, op)]
            return and_(parts) if op == "and" else or_(parts)
        if op == "not":
            return not_(self.node(_args(node, op, 1)[0]))
        if op in COMPARISONS:
            return self.comparison(op, _args(node, op, 2))
        if op == "like":
            return self.like(_args(node, op, 2))
        if op == "in":
            return self.in_(_args(node, op, 2))
        if op == "between":
            args = _args(node, op, 3)
            col = self.scalar_column(args[0], op)
            lo, hi = (self.literal(v, col, op) for v in args[1:3])
            pre = ((col.field >= self.prefilter_value(lo, col)) & (col.field <= self.prefilter_value(hi, col))
                   if col.prunable else None)
            return Predicate(f"({col.sql} BETWEEN {col.param} AND {col.param})", (lo, hi), pre)
        if op == "isNull":
            col = self.prop(_args(node, op, 1)[0], op)
            return Predicate(f"({col.sql} IS NULL)")
        if op in ARRAY_OPS:
            return self.array(op, _args(node, op, 2))
        if op == "s_intersects":
            return self.spatial(_args(node, op, 2))
        if op == "t_intersects":
            return self.temporal(_args(node, op, 2))
        raise UnsupportedOperator(f"unsupported CQL2 operator {excerpt(op)}; supported: {', '.join(SUPPORTED)}")

    def scalar_column(self, arg: Any, op: str) -> Column:
        col = self.prop(arg, op)
        if col.kind not in _SCALAR_KINDS:
            raise QueryError(f"{op}: {col.name} is a {col.kind}; use a_contains / a_overlaps / "
                             "a_containedBy / a_equals for arrays and s_intersects for geometry")
        return col

    def comparison(self, op: str, args: list[Any]) -> Predicate:
        left, right = args
        if self.is_prop(left) and self.is_prop(right):
            a, b = self.scalar_column(left, op), self.scalar_column(right, op)
            if a.kind != b.kind:
                raise QueryError(f"{op}: cannot compare {a.name} (a {a.kind}) with {b.name} (a {b.kind}); "
                                 "two properties compared must be of the same kind")
            return Predicate(f"({a.sql} {COMPARISONS[op]} {b.sql})")
        flip = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}
        if not self.is_prop(left):  # literal op property -> property op' literal
            left, right, op = right, left, flip.get(op, op)
        col = self.scalar_column(left, op)
        value = self.literal(right, col, op)
        pre = None
        if col.prunable:
            scalar = self.prefilter_value(value, col)
            field = col.field
            pre = {"=": field == scalar, "<>": field != scalar, "<": field < scalar, "<=": field <= scalar,
                   ">": field > scalar, ">=": field >= scalar}[op]
        return Predicate(f"({col.sql} {COMPARISONS[op]} {col.param})", (value,), pre)

    def like(self, args: list[Any]) -> Predicate:
        col = self.scalar_column(args[0], "like")
        if col.kind != "string":
            raise QueryError(f"like: {col.name} is a {col.kind}, not a string")
        pattern = _like_pattern(self.literal(args[1], col, "like"))
        return Predicate(f"({col.sql} LIKE ? ESCAPE '\\')", (pattern,))

    def in_(self, args: list[Any]) -> Predicate:
        col = self.scalar_column(args[0], "in")
        if not isinstance(args[1], list):
            raise QueryError(f"in: expected a list of values, got {excerpt(args[1])}")
        values = [self.literal(v, col, "in") for v in args[1]]
        if not values:
            return Predicate("FALSE")
        pre = (col.field.isin([self.prefilter_value(v, col) for v in values])
               if col.kind in ("string", "number") and col.prunable else None)
        return Predicate(f"({col.sql} IN ({', '.join([col.param] * len(values))}))", tuple(values), pre)

    def array(self, op: str, args: list[Any]) -> Predicate:
        left, right = args
        if not self.is_prop(left):
            # a literal on the left: a_contains(lit, prop) == a_containedBy(prop, lit), ...
            left, right = right, left
            op = {"a_contains": "a_containedBy", "a_containedBy": "a_contains"}.get(op, op)
        col = self.prop(left, op)
        if col.kind != "list":
            raise QueryError(f"{op}: {col.name} is a {col.kind}, not an array")
        if col.element not in ("string", "number", "bool"):
            raise QueryError(f"{op}: {col.name} is an array of {col.element or 'structures'}, which cannot be searched")
        if not isinstance(right, list):
            raise QueryError(f"{op}: expected an array literal, got {excerpt(right)}")
        where = f"{col.name} is an array of {col.element}s"
        values = [self.scalar(v, col.element, where, op) for v in right]
        nomenclature = _LABEL_COLUMNS.get(col.name)
        if nomenclature:
            try:
                values = [check_label(v, nomenclature) for v in values]  # type: ignore[arg-type]
            except UnknownLabelError as exc:
                raise LabelQueryError(f"{op} on {col.name}: {exc}") from None
        if nomenclature:
            return label_array_predicate(op, nomenclature, values, self.columns)
        if col.element == "number":
            cast = "BIGINT[]" if all(isinstance(v, int) for v in values) else "DOUBLE[]"
        else:
            cast = _ARRAY_SQL[col.element]
        param = f"?::{cast}"
        sql = {
            "a_contains": f"list_has_all({col.sql}, {param})",
            "a_overlaps": f"list_has_any({col.sql}, {param})",
            "a_containedBy": f"list_has_all({param}, {col.sql})",
            "a_equals": f"(list_has_all({col.sql}, {param}) AND list_has_all({param}, {col.sql}))",
        }[op]
        params: tuple[Any, ...] = (values, values) if op == "a_equals" else (values,)
        return Predicate(f"({sql})", params)

    def spatial(self, args: list[Any]) -> Predicate:
        left, right = args
        if not self.is_prop(left):
            left, right = right, left
        col = self.prop(left, "s_intersects")
        if col.kind != "geometry":
            raise QueryError(f"s_intersects: {col.name} is not the geometry; use the property 'geometry'")
        if isinstance(right, Mapping) and "bbox" in right:
            b = right["bbox"]
            if not isinstance(b, list) or len(b) not in (4, 6):
                raise QueryError(f"s_intersects: a BBOX has 4 (or 6, with heights) numbers, got {excerpt(b)}")
            return bbox_predicate(parse_bbox(b if len(b) == 4 else [b[0], b[1], b[3], b[4]]))
        return intersects(parse_geometry(right))

    def temporal(self, args: list[Any]) -> Predicate:
        left, right = args
        if not self.is_prop(left):
            left, right = right, left
        col = self.prop(left, "t_intersects")
        if col.kind != "timestamp":
            raise QueryError(f"t_intersects: {col.name} is a {col.kind}, not a timestamp")
        if isinstance(right, Mapping) and "interval" in right:
            ends = right["interval"]
            if not isinstance(ends, list) or len(ends) != 2:
                raise QueryError(f"t_intersects: an INTERVAL has two ends, got {excerpt(ends)}")
            lo, hi = (e.get("timestamp", e.get("date")) if isinstance(e, Mapping) else e for e in ends)
            return time_predicate(parse_interval((lo, hi)), col.name)
        if isinstance(right, Mapping) and ("timestamp" in right or "date" in right):
            return time_predicate(parse_interval(right.get("timestamp", right.get("date"))), col.name)
        raise QueryError(f"t_intersects: expected a TIMESTAMP, DATE or INTERVAL, got {excerpt(right)}")


__all__ = [
    "MAX_CHAINED_OPERATORS", "MAX_FILTER_BYTES", "MAX_FILTER_CONNECTIVES", "MAX_FILTER_NESTING", "SUPPORTED",
    "QueryError", "UnsupportedOperator", "parse", "translate",
]
