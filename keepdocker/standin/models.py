"""The record types the stand-in stores: their SQL columns, Arvados attributes, and row-to-JSON conversion."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from keepdocker.standin.clock import format_ns
from keepdocker.standin.filters import Column, ModelSpec
from keepdocker.standin.ids import KIND_BY_INFIX

__all__ = ["COLLECTIONS", "GROUPS", "LINKS", "MODELS", "USERS", "row_to_record"]

_TRASHED = "(trash_at IS NOT NULL AND trash_at <= {now})"


def _kind_sql(column: str) -> str:
    cases = " ".join(f"WHEN '{infix}' THEN '{kind}'" for infix, kind in KIND_BY_INFIX.items())
    return f"(CASE substr({column}, 7, 5) {cases} ELSE NULL END)"


def _common() -> dict[str, Column]:
    return {
        "uuid": Column("string", "uuid"),
        "owner_uuid": Column("string", "owner_uuid"),
        "created_at": Column("datetime", "created_at"),
        "modified_at": Column("datetime", "modified_at"),
        "modified_by_user_uuid": Column("string", "modified_by_user_uuid"),
        "modified_by_client_uuid": Column("string", "NULL", searchable=False),
    }


USERS = ModelSpec(
    kind="arvados#user",
    table="users",
    columns={
        **_common(),
        "email": Column("string", "email"),
        "first_name": Column("string", "first_name"),
        "last_name": Column("string", "last_name"),
        "full_name": Column("string", "trim(coalesce(first_name,'') || ' ' || coalesce(last_name,''))"),
        "username": Column("string", "username"),
        "identity_url": Column("string", "NULL", searchable=False),
        "is_admin": Column("boolean", "is_admin"),
        "is_active": Column("boolean", "is_active"),
        "is_invited": Column("boolean", "is_active"),
        "prefs": Column("jsonb", "prefs"),
        "can_write": Column("boolean", "1", searchable=False),
        "can_manage": Column("boolean", "1", searchable=False),
    },
)

GROUPS = ModelSpec(
    kind="arvados#group",
    table="groups",
    columns={
        **_common(),
        "name": Column("string", "name"),
        "description": Column("text", "description"),
        "group_class": Column("string", "group_class"),
        "properties": Column("jsonb", "properties"),
        "trash_at": Column("datetime", "trash_at"),
        "delete_at": Column("datetime", "delete_at"),
        "is_trashed": Column("boolean", _TRASHED),
        "frozen_by_uuid": Column("string", "NULL", searchable=False),
        "can_write": Column("boolean", "1", searchable=False),
        "can_manage": Column("boolean", "1", searchable=False),
    },
)

COLLECTIONS = ModelSpec(
    kind="arvados#collection",
    table="collections",
    columns={
        **_common(),
        "name": Column("string", "name"),
        "description": Column("text", "description"),
        "properties": Column("jsonb", "properties"),
        "portable_data_hash": Column("string", "portable_data_hash"),
        "manifest_text": Column("text", "manifest_text", searchable=False),
        "unsigned_manifest_text": Column("text", "manifest_text", searchable=False),
        "replication_desired": Column("integer", "replication_desired"),
        "replication_confirmed": Column("integer", "NULL", searchable=False),
        "replication_confirmed_at": Column("datetime", "NULL", searchable=False),
        "storage_classes_desired": Column("jsonb", "storage_classes_desired"),
        "storage_classes_confirmed": Column("jsonb", "'[]'", searchable=False),
        "storage_classes_confirmed_at": Column("datetime", "NULL", searchable=False),
        "trash_at": Column("datetime", "trash_at"),
        "delete_at": Column("datetime", "delete_at"),
        "is_trashed": Column("boolean", _TRASHED),
        "current_version_uuid": Column("string", "uuid"),
        "version": Column("integer", "1"),
        "preserve_version": Column("boolean", "0", searchable=False),
        "file_count": Column("integer", "file_count"),
        "file_size_total": Column("integer", "file_size_total"),
    },
    list_excludes=frozenset({"manifest_text", "unsigned_manifest_text"}),
)

LINKS = ModelSpec(
    kind="arvados#link",
    table="links",
    columns={
        **_common(),
        "tail_uuid": Column("string", "tail_uuid"),
        "link_class": Column("string", "link_class"),
        "name": Column("string", "name"),
        "head_uuid": Column("string", "head_uuid"),
        "properties": Column("jsonb", "properties"),
        "head_kind": Column("string", _kind_sql("head_uuid")),
        "tail_kind": Column("string", _kind_sql("tail_uuid")),
    },
)

MODELS: dict[str, ModelSpec] = {m.table: m for m in (USERS, GROUPS, COLLECTIONS, LINKS)}


def row_to_record(spec: ModelSpec, names: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    """Convert one SELECTed row (columns in ``names`` order) to the API's JSON attribute values."""
    record: dict[str, Any] = {"kind": spec.kind}
    for name, value in zip(names, row, strict=True):
        col = spec.columns[name]
        if value is None:
            record[name] = None
        elif col.type == "datetime":
            record[name] = format_ns(int(value))
        elif col.type == "boolean":
            record[name] = bool(value)
        elif col.type == "jsonb":
            record[name] = json.loads(value)
        else:
            record[name] = value
    if "modified_at" in record and record.get("modified_at"):
        digest = hashlib.md5(f"{record.get('uuid')}@{record['modified_at']}".encode()).hexdigest()
        record["etag"] = format(int(digest[:12], 16), "x")
    else:
        record["etag"] = ""
    return record
