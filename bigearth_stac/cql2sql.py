"""CQL2 (JSON or text) -> DuckDB SQL with bound parameters, over the index's columns.

``cql2.Expr`` parses and validates the filter; the translation is ours (DESIGN.md #4: ``cql2``'s
``to_sql()`` targets PostgreSQL). Supported operators::

    and or not  = <> < <= > >=  like  in  between  isNull
    a_contains (list_has_all)  a_overlaps (list_has_any)  a_containedBy  a_equals
    s_intersects (bbox comparison in SQL, then an exact shapely test)  t_intersects

Anything else raises :class:`UnsupportedOperator`, which names the operator and lists these.
Property names are index columns (``bigearthnet:labels_19``, ``datetime``, ``id``, ...); the
``bigearthnet:`` prefix may be left out. Label values of the label columns are checked against
the nomenclature, with suggestions for misspellings.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Mapping
from typing import Any

import cql2
import pyarrow as pa

from bigearth_stac._predicates import (
    Column,
    Columns,
    Predicate,
    QueryError,
    and_,
    intersects,
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


class UnsupportedOperator(QueryError):
    """A CQL2 operator this translator does not handle."""


def parse(filter: str | Mapping[str, Any]) -> dict[str, Any]:
    """CQL2 text or JSON (a dict or a JSON string) -> validated CQL2 JSON (a dict).

    ``cql2``'s validation (a JSON Schema check) takes about 0.2 s, so validated filters are
    cached by their text: a filter that is run again is not validated again.
    """
    if isinstance(filter, Mapping):
        filter = json.dumps(filter, sort_keys=True)
    return copy.deepcopy(_parse_text(filter))


@functools.lru_cache(maxsize=256)
def _parse_text(filter: str) -> dict[str, Any]:
    if filter.lstrip().startswith("{"):
        try:
            filter = json.loads(filter)
        except json.JSONDecodeError as exc:
            raise QueryError(f"invalid CQL2 JSON: {exc}") from None
    try:
        expr = cql2.Expr(filter)
        expr.validate()
    except Exception as exc:  # cql2 raises plain Exception for parse errors, as well as its own types
        raise QueryError(f"invalid CQL2 filter: {exc}") from None
    out = expr.to_json()
    if not isinstance(out, dict):
        raise QueryError(f"a CQL2 filter must be a boolean expression, got {out!r}")
    return out


def translate(filter: str | Mapping[str, Any], columns: Columns) -> Predicate:
    """A :class:`Predicate` equivalent to a CQL2 filter over an index with these ``columns``."""
    return _Translator(columns).node(parse(filter))


class _Translator:
    def __init__(self, columns: Columns) -> None:
        self.columns = columns

    # -- operands ---------------------------------------------------------------------------------
    @staticmethod
    def _no_function(arg: Any) -> None:
        if isinstance(arg, Mapping) and "op" in arg:  # casei(), accenti(), arithmetic, functions
            raise UnsupportedOperator(f"unsupported CQL2 operator {arg['op']!r} as an operand; "
                                      f"supported: {', '.join(SUPPORTED)} between properties and literals")

    def prop(self, arg: Any, op: str) -> Column:
        self._no_function(arg)
        if isinstance(arg, Mapping) and "property" in arg:
            return self.columns.get(arg["property"])
        raise QueryError(f"{op}: expected a property, got {json.dumps(arg)}")

    @staticmethod
    def is_prop(arg: Any) -> bool:
        return isinstance(arg, Mapping) and "property" in arg

    def literal(self, value: Any, col: Column, op: str) -> Any:
        """A Python value for a literal compared with ``col``, checked against its kind."""
        self._no_function(value)
        if isinstance(value, Mapping) and ("timestamp" in value or "date" in value):
            if col.kind != "timestamp":
                raise QueryError(f"{op}: {col.name} is a {col.kind}; it cannot be compared with a time")
            return parse_instant(value.get("timestamp", value.get("date")))
        ok = {
            "string": isinstance(value, str),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "timestamp": isinstance(value, str),
        }.get(col.kind, False)
        if not ok:
            raise QueryError(f"{op}: {col.name} is a {col.kind} column; {json.dumps(value)} is not a {col.kind}")
        if col.kind == "timestamp":
            return parse_instant(value)
        return value

    def arrow_scalar(self, value: Any, col: Column) -> pa.Scalar | Any:
        if col.kind == "timestamp":
            return pa.scalar(value, pa.timestamp("us", tz="UTC"))
        return value

    # -- nodes ------------------------------------------------------------------------------------
    def node(self, node: Any) -> Predicate:
        if isinstance(node, bool):
            return Predicate("TRUE" if node else "FALSE")
        if not isinstance(node, Mapping) or "op" not in node:
            raise QueryError(f"expected a CQL2 boolean expression, got {json.dumps(node)}")
        op, args = node["op"], node.get("args", [])
        if op == "and":
            return and_([self.node(a) for a in args])
        if op == "or":
            return or_([self.node(a) for a in args])
        if op == "not":
            return not_(self.node(args[0]))
        if op in COMPARISONS:
            return self.comparison(op, args)
        if op == "like":
            col = self.prop(args[0], op)
            if col.kind != "string":
                raise QueryError(f"like: {col.name} is a {col.kind}, not a string")
            return Predicate(f"({col.sql} LIKE ? ESCAPE '\\')", (self.literal(args[1], col, op),))
        if op == "in":
            col = self.prop(args[0], op)
            values = [self.literal(v, col, op) for v in args[1]]
            if not values:
                return Predicate("FALSE")
            pre = col.field.isin([self.arrow_scalar(v, col) for v in values]) if col.kind in ("string", "number") else None
            return Predicate(f"({col.sql} IN ({', '.join('?' * len(values))}))", tuple(values), pre)
        if op == "between":
            col = self.prop(args[0], op)
            lo, hi = (self.literal(v, col, op) for v in args[1:3])
            pre = (col.field >= self.arrow_scalar(lo, col)) & (col.field <= self.arrow_scalar(hi, col))
            return Predicate(f"({col.sql} BETWEEN ? AND ?)", (lo, hi), pre)
        if op == "isNull":
            col = self.prop(args[0], op)
            return Predicate(f"({col.sql} IS NULL)")
        if op in ARRAY_OPS:
            return self.array(op, args)
        if op == "s_intersects":
            return self.spatial(args)
        if op == "t_intersects":
            return self.temporal(args)
        raise UnsupportedOperator(f"unsupported CQL2 operator {op!r}; supported: {', '.join(SUPPORTED)}")

    def comparison(self, op: str, args: list[Any]) -> Predicate:
        left, right = args
        if self.is_prop(left) and self.is_prop(right):
            a, b = self.prop(left, op), self.prop(right, op)
            return Predicate(f"({a.sql} {COMPARISONS[op]} {b.sql})")
        flip = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}
        if not self.is_prop(left):  # literal op property -> property op' literal
            left, right, op = right, left, flip.get(op, op)
        col = self.prop(left, op)
        if col.kind in ("list", "geometry"):
            raise QueryError(f"{op}: {col.name} is a {col.kind}; use a_contains / a_overlaps / "
                             "a_containedBy / a_equals for arrays and s_intersects for geometry")
        value = self.literal(right, col, op)
        scalar = self.arrow_scalar(value, col)
        field = col.field
        pre = {"=": field == scalar, "<>": field != scalar, "<": field < scalar, "<=": field <= scalar,
               ">": field > scalar, ">=": field >= scalar}[op]
        return Predicate(f"({col.sql} {COMPARISONS[op]} ?)", (value,), pre)

    def array(self, op: str, args: list[Any]) -> Predicate:
        left, right = args
        if not self.is_prop(left):
            # a literal on the left: a_contains(lit, prop) == a_containedBy(prop, lit), ...
            left, right = right, left
            op = {"a_contains": "a_containedBy", "a_containedBy": "a_contains"}.get(op, op)
        col = self.prop(left, op)
        if col.kind != "list":
            raise QueryError(f"{op}: {col.name} is a {col.kind}, not an array")
        if not isinstance(right, list):
            raise QueryError(f"{op}: expected an array literal, got {json.dumps(right)}")
        values = list(right)
        nomenclature = _LABEL_COLUMNS.get(col.name)
        if nomenclature:
            try:
                values = [check_label(v, nomenclature) for v in values]  # type: ignore[arg-type]
            except UnknownLabelError as exc:
                raise QueryError(f"{op} on {col.name}: {exc}") from None
        sql = {
            "a_contains": f"list_has_all({col.sql}, ?)",
            "a_overlaps": f"list_has_any({col.sql}, ?)",
            "a_containedBy": f"list_has_all(?, {col.sql})",
            "a_equals": f"(list_has_all({col.sql}, ?) AND list_has_all(?, {col.sql}))",
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
            w, s, e, n = parse_bbox(b if len(b) == 4 else [b[0], b[1], b[3], b[4]])
            import shapely

            return intersects(shapely.box(w, s, e, n))
        return intersects(parse_geometry(right))

    def temporal(self, args: list[Any]) -> Predicate:
        left, right = args
        if not self.is_prop(left):
            left, right = right, left
        col = self.prop(left, "t_intersects")
        if col.kind != "timestamp":
            raise QueryError(f"t_intersects: {col.name} is a {col.kind}, not a timestamp")
        if isinstance(right, Mapping) and "interval" in right:
            lo, hi = right["interval"]
            lo = lo.get("timestamp", lo.get("date")) if isinstance(lo, Mapping) else lo
            hi = hi.get("timestamp", hi.get("date")) if isinstance(hi, Mapping) else hi
            return time_predicate(parse_interval((lo, hi)), col.name)
        if isinstance(right, Mapping) and ("timestamp" in right or "date" in right):
            return time_predicate(parse_interval(right.get("timestamp", right.get("date"))), col.name)
        raise QueryError(f"t_intersects: expected a TIMESTAMP, DATE or INTERVAL, got {json.dumps(right)}")


__all__ = ["SUPPORTED", "UnsupportedOperator", "parse", "translate"]
