"""The Arvados filter, order, select and paging parameters, compiled to SQLite for one record type."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from keepdocker.standin.clock import parse_timestamp
from keepdocker.standin.errors import ApiError
from keepdocker.standin.ids import INFIX_BY_KIND

__all__ = [
    "Column",
    "ColumnType",
    "ListParams",
    "ModelSpec",
    "compile_filters",
    "compile_order",
    "parse_list_params",
    "parse_select",
]

ColumnType = Literal["string", "text", "datetime", "integer", "boolean", "jsonb"]
_COMPARISON_OPS = ("<", "<=", ">", ">=")
_ALL_OPS = frozenset(
    ["=", "!=", "<>", "<", "<=", ">", ">=", "like", "ilike", "in", "not in", "is_a", "exists", "contains"]
)
_NOT_NULL = frozenset({"uuid", "owner_uuid", "created_at", "modified_at"})
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_ORDER_RE = re.compile(r"^\s*(?:[a-z_]+\.)?([a-z_]+)(?:\s+(asc|desc))?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Column:
    """One attribute: its type and the SQL expression that yields it (``{now}`` is the current time in ns)."""

    type: ColumnType
    sql: str
    searchable: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """The filterable, orderable and selectable attributes of one record type."""

    kind: str
    table: str
    columns: dict[str, Column]
    default_select: tuple[str, ...] = ()
    list_excludes: frozenset[str] = field(default_factory=frozenset)

    def column(self, name: str) -> Column | None:
        """The column named ``name`` or None."""
        return self.columns.get(name)


@dataclass
class ListParams:
    """Parsed list parameters."""

    filters: list[Any]
    order: list[str]
    select: list[str] | None
    limit: int
    offset: int
    count: bool


def _sql(col: Column, now: int) -> str:
    return col.sql.replace("{now}", str(now))


def _json_path(key: str) -> str:
    if '"' in key or "\\" in key:
        raise ApiError(422, f"Invalid property key {key!r} in filter: quotes and backslashes are not supported")
    return f'$."{key}"'


class _Compiler:
    """Accumulates SQL fragments and parameters for one WHERE clause."""

    def __init__(self, spec: ModelSpec, now: int) -> None:
        self.spec = spec
        self.now = now
        self.params: list[Any] = []

    def p(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    # -- operands ---------------------------------------------------------------------------------------------

    def scalar(self, col: Column, attr: str, op: str, value: Any) -> Any:
        """Convert an operand to the column's storage form, or raise 422."""
        if value is None:
            return None
        if col.type == "datetime":
            if not isinstance(value, str):
                raise ApiError(422, f"Invalid operand {value!r} for datetime attribute '{attr}' in filter")
            try:
                return parse_timestamp(value)
            except ValueError:
                raise ApiError(422, f"Invalid timestamp {value!r} for attribute '{attr}' in filter") from None
        if col.type == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ApiError(422, f"Invalid operand {value!r} for integer attribute '{attr}' in filter")
            return value
        if col.type == "boolean":
            if op not in ("=", "!=", "<>", "in", "not in"):
                raise ApiError(422, f"Invalid operator '{op}' for boolean attribute '{attr}' in filter")
            if isinstance(value, bool):
                return int(value)
            text = str(value).lower()
            if text in ("true", "t", "1", "yes"):
                return 1
            if text in ("false", "f", "0", "no"):
                return 0
            raise ApiError(422, f"Invalid operand {value!r} for boolean attribute '{attr}' in filter")
        if isinstance(value, (dict, list)):
            raise ApiError(422, f"Invalid operand type {type(value).__name__} for attribute '{attr}' in filter")
        return value

    # -- one filter -----------------------------------------------------------------------------------------

    def condition(self, attr: str, op: str, operand: Any) -> str:
        if attr.startswith("properties.") and "properties" in self.spec.columns:
            return self.subproperty(_sql(self.spec.columns["properties"], self.now), attr[len("properties.") :], op,
                                    operand)
        if attr == "any":
            return self.any_attr(op, operand)
        col = self.spec.column(attr)
        if col is None or not col.searchable:
            raise ApiError(422, f"Invalid attribute '{attr}' in filter")
        expr = _sql(col, self.now)
        if col.type == "jsonb":
            return self.jsonb(expr, attr, op, operand)
        if op in ("like", "ilike"):
            if col.type not in ("string", "text"):
                raise ApiError(422, f"Invalid attribute '{attr}' for operator '{op}' in filter")
            if not isinstance(operand, str):
                raise ApiError(422, f"Invalid operand type for '{op}' operator in filter: expected a string")
            if op == "like":
                return f"({expr} LIKE {self.p(operand)} ESCAPE '\\')"
            return f"(lower({expr}) LIKE lower({self.p(operand)}) ESCAPE '\\')"
        if op == "is_a":
            return self.is_a(expr, attr, operand)
        if op == "exists":
            raise ApiError(422, f"Invalid attribute '{attr}' for operator 'exists' in filter")
        if op == "contains":
            raise ApiError(422, f"Invalid attribute '{attr}' for operator 'contains' in filter")
        if op in ("in", "not in"):
            if not isinstance(operand, list):
                raise ApiError(422, f"Invalid operand type '{type(operand).__name__}' for '{op}' operator in filter")
            values = [self.scalar(col, attr, op, v) for v in operand]
            non_null = [v for v in values if v is not None]
            has_null = len(non_null) != len(values)
            marks = ",".join(self.p(v) for v in non_null)
            if op == "in":
                parts = [f"{expr} IN ({marks})"] if non_null else []
                if has_null:
                    parts.append(f"{expr} IS NULL")
                return "(" + " OR ".join(parts) + ")" if parts else "(0)"
            base = f"{expr} NOT IN ({marks})" if non_null else "1"
            return f"({base} AND {expr} IS NOT NULL)" if has_null else f"({base} OR {expr} IS NULL)"
        value = self.scalar(col, attr, op, operand)
        if op == "=":
            return f"({expr} IS NULL)" if value is None else f"({expr} = {self.p(value)})"
        if op in ("!=", "<>"):
            return f"({expr} IS NOT NULL)" if value is None else f"({expr} <> {self.p(value)} OR {expr} IS NULL)"
        if op in _COMPARISON_OPS:
            if value is None:
                raise ApiError(422, f"Invalid operand null for operator '{op}' in filter")
            if col.type == "boolean":
                raise ApiError(422, f"Invalid operator '{op}' for boolean attribute '{attr}' in filter")
            return f"({expr} {op} {self.p(value)})"
        raise ApiError(422, f"Invalid operator '{op}' in filter")

    def any_attr(self, op: str, operand: Any) -> str:
        names = [n for n, c in self.spec.columns.items() if c.type in ("string", "text") and c.searchable]
        if op not in ("like", "ilike", "=", "in"):
            raise ApiError(422, f"Invalid operator '{op}' for attribute 'any' in filter")
        return "(" + " OR ".join(self.condition(n, op, operand) for n in names) + ")"

    def is_a(self, expr: str, attr: str, operand: Any) -> str:
        kinds = operand if isinstance(operand, list) else [operand]
        infixes: list[str] = []
        for kind in kinds:
            if not isinstance(kind, str) or kind not in INFIX_BY_KIND:
                raise ApiError(422, f"Invalid kind {kind!r} for 'is_a' operator in filter")
            infixes.append(INFIX_BY_KIND[kind])
        if attr == "uuid":
            own = INFIX_BY_KIND.get(self.spec.kind)
            return "(1)" if own in infixes else "(0)"
        marks = ",".join(self.p(i) for i in infixes)
        return f"(substr({expr}, 7, 5) IN ({marks}))"

    def jsonb(self, expr: str, attr: str, op: str, operand: Any) -> str:
        if op == "exists":
            if not isinstance(operand, str):
                raise ApiError(422, f"Invalid operand for 'exists' on '{attr}' in filter: expected a key string")
            return f"(json_type({expr}, {self.p(_json_path(operand))}) IS NOT NULL)"
        if op == "contains":
            items = operand if isinstance(operand, list) else [operand]
            if not items or not all(isinstance(i, str) for i in items):
                raise ApiError(422, f"Invalid operand for 'contains' on '{attr}' in filter: expected strings")
            parts = [
                f"EXISTS (SELECT 1 FROM json_each({expr}) WHERE json_each.key = {self.p(i)} "
                f"OR (json_each.type = 'text' AND json_each.value = {self.p(i)}))"
                for i in items
            ]
            return "(" + " AND ".join(parts) + ")"
        if op in ("=", "!=", "<>"):
            value = operand
            if isinstance(operand, str):
                try:
                    value = json.loads(operand)
                except ValueError:
                    raise ApiError(422, f"Invalid JSON operand for attribute '{attr}' in filter") from None
            canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
            eq = f"({expr} = {self.p(canonical)})"
            return eq if op == "=" else f"(NOT COALESCE({eq}, 0))"
        raise ApiError(422, f"Invalid operator '{op}' for attribute '{attr}' in filter")

    def subproperty(self, expr: str, key: str, op: str, operand: Any) -> str:
        path = _json_path(key)

        def eq(value: Any) -> str:
            jtype = f"json_type({expr}, {self.p(path)})"
            if value is None:
                return f"({jtype} = 'null')"
            if isinstance(value, bool):
                return f"({jtype} = {self.p('true' if value else 'false')})"
            if isinstance(value, (int, float)):
                return f"({jtype} IN ('integer','real') AND json_extract({expr}, {self.p(path)}) = {self.p(value)})"
            if isinstance(value, str):
                return f"({jtype} = 'text' AND json_extract({expr}, {self.p(path)}) = {self.p(value)})"
            raise ApiError(422, f"Invalid operand type for 'properties.{key}' in filter")

        if op == "=":
            return eq(operand)
        if op in ("!=", "<>"):
            return f"(NOT COALESCE({eq(operand)}, 0))"
        if op in ("in", "not in"):
            if not isinstance(operand, list):
                raise ApiError(422, f"Invalid operand type for '{op}' operator in filter: expected an array")
            any_eq = "(" + " OR ".join(eq(v) for v in operand) + ")" if operand else "(0)"
            return any_eq if op == "in" else f"(NOT COALESCE({any_eq}, 0))"
        if op in _COMPARISON_OPS:
            if not isinstance(operand, (str, int, float)) or isinstance(operand, bool):
                raise ApiError(422, f"Invalid operand for '{op}' on 'properties.{key}' in filter")
            return f"(json_extract({expr}, {self.p(path)}) {op} {self.p(operand)})"
        if op in ("like", "ilike"):
            if not isinstance(operand, str):
                raise ApiError(422, f"Invalid operand type for '{op}' operator in filter: expected a string")
            value = f"json_extract({expr}, {self.p(path)})"
            typed = f"json_type({expr}, {self.p(path)}) = 'text'"
            if op == "like":
                return f"({typed} AND {value} LIKE {self.p(operand)} ESCAPE '\\')"
            return f"({typed} AND lower({value}) LIKE lower({self.p(operand)}) ESCAPE '\\')"
        if op == "exists":
            flag = operand
            if isinstance(operand, str) and operand.lower() in ("true", "false"):
                flag = operand.lower() == "true"
            if not isinstance(flag, bool):
                raise ApiError(422, f"Invalid operand for 'exists' on 'properties.{key}': expected true or false")
            return f"(json_type({expr}, {self.p(path)}) IS {'NOT ' if flag else ''}NULL)"
        if op == "contains":
            return (
                f"(EXISTS (SELECT 1 FROM json_each({expr}, {self.p(path)}) "
                f"WHERE json_each.type NOT IN ('object','array') AND json_each.value = {self.p(operand)}))"
            )
        raise ApiError(422, f"Invalid operator '{op}' for attribute 'properties.{key}' in filter")


def compile_filters(spec: ModelSpec, filters: Sequence[Any], now: int) -> tuple[str, list[Any]]:
    """Compile Arvados filters (ANDed; an attribute list ORs) into a WHERE fragment and its parameters.

    Raises ApiError(422) with the real server's wording for bad attributes, operators and operands.
    """
    compiler = _Compiler(spec, now)
    clauses: list[str] = []
    for f in filters:
        if isinstance(f, str):
            raise ApiError(422, f"Unsupported filter expression {f!r}: use [attribute, operator, operand] filters")
        if not isinstance(f, list) or len(f) != 3:
            raise ApiError(422, f"Invalid filter {json.dumps(f)}: expected [attribute, operator, operand]")
        attr, op, operand = f
        if not isinstance(op, str):
            raise ApiError(422, f"Invalid operator {op!r} in filter")
        op = op.lower()
        if op == "@@":
            raise ApiError(422, "Full text search operator is no longer supported")
        if op not in _ALL_OPS:
            raise ApiError(422, f"Invalid operator '{op}' in filter")
        if isinstance(attr, list):
            if not attr or not all(isinstance(a, str) for a in attr):
                raise ApiError(422, f"Invalid attribute list {attr!r} in filter")
            clauses.append("(" + " OR ".join(compiler.condition(a, op, operand) for a in attr) + ")")
        elif isinstance(attr, str):
            clauses.append(compiler.condition(attr, op, operand))
        else:
            raise ApiError(422, f"Invalid attribute {attr!r} in filter")
    return (" AND ".join(clauses) if clauses else "1"), compiler.params


def compile_order(spec: ModelSpec, order: Sequence[str], select: Sequence[str] | None, now: int) -> str:
    """ORDER BY terms: valid requested terms, then ``modified_at desc, uuid desc``, stopping at ``uuid``.

    Unknown columns and bad directions are dropped silently; with ``select``, unselected columns are dropped too.
    """
    terms: list[str] = []
    seen: set[str] = set()
    for raw in [*order, "modified_at desc", "uuid desc"]:
        match = _ORDER_RE.match(raw)
        if match is None:
            continue
        name, direction = match.group(1).lower(), (match.group(2) or "asc").upper()
        col = spec.column(name)
        if col is None or col.type == "jsonb" or name in seen:
            continue
        if select is not None and name not in select and name != "uuid":
            continue
        seen.add(name)
        # PostgreSQL puts NULLs last ascending and first descending; SQLite does the opposite unless told.
        nulls = "" if name in _NOT_NULL else (" NULLS LAST" if direction == "ASC" else " NULLS FIRST")
        terms.append(f"{_sql(col, now)} {direction}{nulls}")
        if name == "uuid":
            break
    return ", ".join(terms)


def _decode(value: Any, name: str) -> Any:
    if isinstance(value, str) and value[:1] in ("[", "{", '"'):
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(422, f"Invalid JSON in parameter '{name}'") from None
    return value


def parse_select(spec: ModelSpec, raw: Any) -> list[str] | None:
    """The ``select`` list, checked against the model's attributes (422 on an unknown one)."""
    if raw is None:
        return None
    value = _decode(raw, "select")
    if isinstance(value, str):
        value = [s.strip() for s in value.split(",") if s.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(422, "Invalid 'select' parameter: expected an array of attribute names")
    for name in value:
        if name not in spec.columns and name not in ("kind", "etag", "href"):
            raise ApiError(422, f"Invalid attribute '{name}' in select parameter")
    return list(dict.fromkeys(value))


def _int_param(value: Any, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ApiError(422, f"Invalid '{name}' parameter: expected an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ApiError(422, f"Invalid '{name}' parameter {value!r}: expected an integer") from None
    if number < 0:
        raise ApiError(422, f"Invalid '{name}' parameter {number}: must not be negative")
    return number


def parse_list_params(spec: ModelSpec, query: dict[str, Any]) -> ListParams:
    """Parse filters, where, order, select, limit, offset and count from a list request's parameters."""
    filters = _decode(query.get("filters"), "filters") or []
    if not isinstance(filters, list):
        raise ApiError(422, "Invalid 'filters' parameter: expected an array of [attribute, operator, operand]")
    where = _decode(query.get("where"), "where") or {}
    if not isinstance(where, dict):
        raise ApiError(422, "Invalid 'where' parameter: expected an object")
    filters = list(filters) + [[k, "in" if isinstance(v, list) else "=", v] for k, v in where.items()]
    order_raw = _decode(query.get("order"), "order") or []
    if isinstance(order_raw, str):
        order_raw = [o for o in order_raw.split(",") if o.strip()]
    if not isinstance(order_raw, list) or not all(isinstance(o, str) for o in order_raw):
        raise ApiError(422, "Invalid 'order' parameter: expected an array of 'attribute [asc|desc]' strings")
    count = query.get("count", "exact") or "exact"
    if count not in ("exact", "none"):
        raise ApiError(422, f"Invalid 'count' parameter {count!r}: expected 'exact' or 'none'")
    return ListParams(
        filters=filters,
        order=order_raw,
        select=parse_select(spec, query.get("select")),
        limit=min(_int_param(query.get("limit"), "limit", DEFAULT_LIMIT), MAX_LIMIT),
        offset=_int_param(query.get("offset"), "offset", 0),
        count=count == "exact",
    )
