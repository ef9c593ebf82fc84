"""The filter, order, select and paging engine behaves as the Arvados API server's does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keepdocker.standin.clock import format_ns, parse_timestamp
from keepdocker.standin.errors import ApiError
from keepdocker.standin.filters import parse_list_params
from keepdocker.standin.models import LINKS
from keepdocker.standin.store import Caller, Store

LINK_DATA: list[dict[str, Any]] = [
    {"name": "alpha", "link_class": "tag", "properties": {"k": "v1", "n": 3}},
    {"name": "Beta", "link_class": "tag", "properties": {"k": "V2", "arr": ["x", "y"]}},
    {"name": "gamma_1", "link_class": "star", "properties": {"n": 10}},
    {"name": "gamma%2", "link_class": "star", "properties": {}, "tail_uuid": "zzzzz-tpzed-000000000000000"},
    {"name": None, "link_class": "other", "properties": {"k": None}},
]


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    """A store with five links of varied names, classes, tails and properties."""
    s = Store(tmp_path / "db.sqlite3")
    admin = Caller(s.token_user("admin"), True, s.token("admin"))
    for attrs in LINK_DATA:
        s.create_link(admin, attrs)
    return s


def _admin(store: Store) -> Caller:
    return Caller(store.token_user("admin"), True, store.token("admin"))


def _list(store: Store, **query: Any) -> list[dict[str, Any]]:
    items, _ = store.list_records(LINKS, _admin(store), parse_list_params(LINKS, query))
    return items


def _names(store: Store, filters: list[Any], **query: Any) -> list[str | None]:
    return sorted((i["name"] for i in _list(store, filters=filters, **query)), key=lambda n: (n is None, n or ""))


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([["name", "=", "alpha"]], ["alpha"]),
        ([["name", "=", None]], [None]),
        ([["name", "!=", "alpha"]], ["Beta", "gamma%2", "gamma_1", None]),
        ([["name", "!=", None]], ["Beta", "alpha", "gamma%2", "gamma_1"]),
        ([["tail_uuid", "!=", "zzzzz-tpzed-000000000000000"]], ["Beta", "alpha", "gamma_1", None]),
        ([["name", "like", "gamma%"]], ["gamma%2", "gamma_1"]),
        ([["name", "like", "gamma\\%%"]], ["gamma%2"]),
        ([["name", "like", "gamma\\_%"]], ["gamma_1"]),
        ([["name", "like", "beta"]], []),
        ([["name", "ilike", "beta"]], ["Beta"]),
        ([["name", "in", ["alpha", "Beta", "nope"]]], ["Beta", "alpha"]),
        ([["name", "in", []]], []),
        ([["name", "not in", ["alpha"]]], ["Beta", "gamma%2", "gamma_1", None]),
        ([["name", "not in", ["alpha", None]]], ["Beta", "gamma%2", "gamma_1"]),
        ([["name", "<", "b"]], ["Beta", "alpha"]),
        ([["name", ">=", "gamma"]], ["gamma%2", "gamma_1"]),
        ([["tail_uuid", "is_a", "arvados#user"]], ["gamma%2"]),
        ([["uuid", "is_a", ["arvados#link", "arvados#user"]]], ["Beta", "alpha", "gamma%2", "gamma_1", None]),
        ([["uuid", "is_a", "arvados#collection"]], []),
        ([["link_class", "=", "tag"], ["name", "ilike", "A%"]], ["alpha"]),
        ([[["name", "link_class"], "=", "star"]], ["gamma%2", "gamma_1"]),
        ([["properties.k", "=", "v1"]], ["alpha"]),
        ([["properties.k", "!=", "v1"]], ["Beta", "gamma%2", "gamma_1", None]),
        ([["properties.k", "ilike", "v%"]], ["Beta", "alpha"]),
        ([["properties.k", "exists", True]], ["Beta", "alpha", None]),
        ([["properties.k", "exists", False]], ["gamma%2", "gamma_1"]),
        ([["properties.n", ">", 5]], ["gamma_1"]),
        ([["properties.n", "in", [3, 10]]], ["alpha", "gamma_1"]),
        ([["properties.arr", "contains", "y"]], ["Beta"]),
        ([["properties", "exists", "arr"]], ["Beta"]),
        ([["properties", "=", '{"n": 10}']], ["gamma_1"]),
    ],
)
def test_filter_operators(store: Store, filters: list[Any], expected: list[str | None]) -> None:
    """Each operator selects exactly the records the real server would (NULL rules, escapes, subproperties)."""
    assert _names(store, filters) == expected


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ([["nosuch", "=", "x"]], "Invalid attribute 'nosuch' in filter"),
        ([["name", "not like", "x"]], "Invalid operator 'not like'"),
        ([["name", "in", "x"]], "Invalid operand type"),
        ([["name", "@@", "x"]], "Full text search operator is no longer supported"),
        ([["created_at", ">", "yesterday"]], "Invalid timestamp"),
        ([["created_at", "like", "2024%"]], "Invalid attribute 'created_at' for operator 'like'"),
        ([["name", "="]], "expected [attribute, operator, operand]"),
    ],
)
def test_bad_filters_are_422(store: Store, filters: list[Any], message: str) -> None:
    """Malformed filters are refused with 422 and the real server's wording."""
    with pytest.raises(ApiError) as info:
        _list(store, filters=filters)
    assert info.value.status == 422
    assert message in info.value.message


def test_timestamps_are_exact_and_strictly_increasing(store: Store) -> None:
    """created_at has nine fractional digits, rises strictly, and echoes back exactly in >= / > filters."""
    items = _list(store, order=["created_at asc"])
    stamps = [i["created_at"] for i in items]
    assert all(len(s) == 30 and s.endswith("Z") and s[19] == "." for s in stamps)
    assert [parse_timestamp(s) for s in stamps] == sorted({parse_timestamp(s) for s in stamps})
    assert format_ns(parse_timestamp(stamps[2])) == stamps[2]
    assert len(_list(store, filters=[["created_at", ">=", stamps[2]]])) == 3
    assert len(_list(store, filters=[["created_at", ">", stamps[2]]])) == 2
    assert len(_list(store, filters=[["created_at", "=", stamps[2]]])) == 1
    assert len(_list(store, filters=[["created_at", "in", [stamps[0], stamps[4]]]])) == 2


def test_order_limit_offset_count_select(store: Store) -> None:
    """Unknown order columns are dropped, default orders appended, limit capped at 1000, select trims fields."""
    names = [i["name"] for i in _list(store, order=["nosuch desc", "link_class asc", "name desc"])]
    assert names == [None, "gamma_1", "gamma%2", "alpha", "Beta"]
    names = [i["name"] for i in _list(store, order=["name asc"])]
    assert names == ["Beta", "alpha", "gamma%2", "gamma_1", None]
    names = [i["name"] for i in _list(store, order=["name desc"])]
    assert names == [None, "gamma_1", "gamma%2", "alpha", "Beta"]
    page = _list(store, order=["created_at asc"], limit=2, offset=1)
    assert [i["name"] for i in page] == ["Beta", "gamma_1"]
    params = parse_list_params(LINKS, {"limit": 5000, "count": "none"})
    assert params.limit == 1000 and params.count is False
    items, total = store.list_records(LINKS, _admin(store), parse_list_params(LINKS, {"limit": 0}))
    assert items == [] and total == 5
    selected = _list(store, select=["uuid", "name"], order=["created_at asc"])
    assert set(selected[0]) == {"kind", "etag", "uuid", "name"}
    with pytest.raises(ApiError, match="Invalid attribute 'nosuch' in select"):
        _list(store, select=["nosuch"])
    with pytest.raises(ApiError, match="'count'"):
        _list(store, count="maybe")


def test_select_drops_order_on_unselected_columns(store: Store) -> None:
    """With select, ordering by an unselected column is ignored (the real server drops it), uuid still orders."""
    by_name = _list(store, select=["uuid"], order=["name asc"])
    assert [i["uuid"] for i in by_name] == sorted((i["uuid"] for i in by_name), reverse=True)
