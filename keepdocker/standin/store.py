"""SQLite records of the stand-in: users, tokens, projects, collections and links, with Arvados permission rules."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keepdocker.standin.clock import MonotonicClock, parse_timestamp
from keepdocker.standin.errors import ApiError
from keepdocker.standin.filters import ListParams, ModelSpec, compile_filters, compile_order
from keepdocker.standin.ids import is_uuid, kind_of, new_secret, new_uuid
from keepdocker.standin.keepstore import BlockStore
from keepdocker.standin.manifest import ManifestError, portable_data_hash, validate_manifest
from keepdocker.standin.models import COLLECTIONS, LINKS, MODELS, USERS, row_to_record

__all__ = ["Caller", "SeededImage", "Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    uuid TEXT PRIMARY KEY, owner_uuid TEXT NOT NULL, created_at INTEGER NOT NULL, modified_at INTEGER NOT NULL,
    modified_by_user_uuid TEXT, email TEXT, first_name TEXT, last_name TEXT, username TEXT,
    is_admin INTEGER NOT NULL DEFAULT 0, is_active INTEGER NOT NULL DEFAULT 1, prefs TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS api_client_authorizations (
    uuid TEXT PRIMARY KEY, secret TEXT NOT NULL UNIQUE, user_uuid TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
    uuid TEXT PRIMARY KEY, owner_uuid TEXT NOT NULL, created_at INTEGER NOT NULL, modified_at INTEGER NOT NULL,
    modified_by_user_uuid TEXT, name TEXT, description TEXT, group_class TEXT NOT NULL,
    properties TEXT NOT NULL DEFAULT '{}', trash_at INTEGER, delete_at INTEGER);
CREATE TABLE IF NOT EXISTS collections (
    uuid TEXT PRIMARY KEY, owner_uuid TEXT NOT NULL, created_at INTEGER NOT NULL, modified_at INTEGER NOT NULL,
    modified_by_user_uuid TEXT, name TEXT, description TEXT, properties TEXT NOT NULL DEFAULT '{}',
    portable_data_hash TEXT NOT NULL, manifest_text TEXT NOT NULL, replication_desired INTEGER,
    storage_classes_desired TEXT NOT NULL DEFAULT '["default"]', trash_at INTEGER, delete_at INTEGER,
    file_count INTEGER NOT NULL DEFAULT 0, file_size_total INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS links (
    uuid TEXT PRIMARY KEY, owner_uuid TEXT NOT NULL, created_at INTEGER NOT NULL, modified_at INTEGER NOT NULL,
    modified_by_user_uuid TEXT, tail_uuid TEXT, link_class TEXT, name TEXT, head_uuid TEXT,
    properties TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS groups_owner ON groups (owner_uuid, name);
CREATE INDEX IF NOT EXISTS collections_owner_name ON collections (owner_uuid, name);
CREATE INDEX IF NOT EXISTS collections_pdh ON collections (portable_data_hash);
CREATE INDEX IF NOT EXISTS collections_created ON collections (created_at, uuid);
CREATE INDEX IF NOT EXISTS links_class_created ON links (link_class, created_at, uuid);
CREATE INDEX IF NOT EXISTS links_class_name ON links (link_class, name);
CREATE INDEX IF NOT EXISTS links_head ON links (head_uuid);
CREATE INDEX IF NOT EXISTS links_tail ON links (tail_uuid);
CREATE INDEX IF NOT EXISTS links_owner ON links (owner_uuid);
CREATE INDEX IF NOT EXISTS links_created ON links (created_at, uuid);
"""

BLOB_SIGNING_TTL = 1_209_600
TRASH_LIFETIME_NS = 1_209_600 * 1_000_000_000
_READ_PERMS = ("can_read", "can_write", "can_manage")
_WRITE_PERMS = ("can_write", "can_manage")
_PERMISSION_NAMES = ("can_read", "can_write", "can_manage", "can_login")
_IGNORED_ATTRS = frozenset(
    {"uuid", "kind", "etag", "href", "created_at", "modified_at", "modified_by_user_uuid", "modified_by_client_uuid",
     "is_trashed", "current_version_uuid", "version", "file_count", "file_size_total", "unsigned_manifest_text",
     "replication_confirmed", "replication_confirmed_at", "storage_classes_confirmed",
     "storage_classes_confirmed_at", "head_kind", "tail_kind", "can_write", "can_manage", "frozen_by_uuid",
     "writable_by"}
)


class _ClosedDatabase:
    """Stands in for the connection after ``close``: a request that was in flight fails as a temporary 503."""

    def __getattr__(self, name: str) -> Any:
        raise ApiError(503, "the stand-in is shutting down; retry the request")


@dataclass(frozen=True)
class Caller:
    """The authenticated user of one request and the exact token string it presented."""

    user_uuid: str
    is_admin: bool
    token: str


@dataclass(frozen=True)
class SeededImage:
    """One seeded docker image: its collection, image hash and repo:tag."""

    collection_uuid: str
    image_hash: str
    repo_tag: str
    portable_data_hash: str


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _ids_param(ids: Iterable[str]) -> str:
    return json.dumps(sorted(ids))


class Store:
    """All records of one stand-in data directory; every method is thread-safe (one connection, one lock)."""

    def __init__(self, db_path: Path, cluster_id: str = "zzzzz", blob_signing_ttl: int = BLOB_SIGNING_TTL) -> None:
        self.path = db_path
        self.blob_signing_ttl = blob_signing_ttl
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA case_sensitive_like=ON")
        self._db.executescript(_SCHEMA)
        self.clock = MonotonicClock()
        for table in ("users", "groups", "collections", "links"):
            (last,) = self._db.execute(f"SELECT COALESCE(MAX(created_at), 0) FROM {table}").fetchone()
            self.clock.advance_past(int(last))
        self.cluster_id = self._setting("cluster_id", lambda: cluster_id)
        self.signing_key = bytes.fromhex(self._setting("blob_signing_key", lambda: secrets.token_hex(32)))
        self.system_user_uuid = f"{self.cluster_id}-tpzed-000000000000000"
        self._bootstrap()

    # -- setup ----------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database; requests still in flight are then answered 503, as by a server shutting down."""
        with self._lock:
            self._db.close()
            self._db = _ClosedDatabase()  # type: ignore[assignment]

    def _setting(self, key: str, default: Any) -> str:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return str(row[0])
        value = str(default())
        self._db.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (key, value))
        return value

    def _bootstrap(self) -> None:
        """Create the system user, an admin and a regular user with their tokens on first start."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM users WHERE uuid = ?", (self.system_user_uuid,)).fetchone():
                return
            self._db.execute("BEGIN")
            try:
                self._insert_user(self.system_user_uuid, "root", "System", "user", admin=True)
                for role, first, admin in (("admin", "Admin", True), ("user", "Regular", False)):
                    uuid = new_uuid(self.cluster_id, "tpzed")
                    self._insert_user(uuid, role, first, "User", admin=admin)
                    token_uuid = new_uuid(self.cluster_id, "gj3su")
                    secret = new_secret()
                    self._db.execute(
                        "INSERT INTO api_client_authorizations VALUES (?, ?, ?, ?)",
                        (token_uuid, secret, uuid, self.clock.now()),
                    )
                    self._db.execute(
                        "INSERT INTO settings VALUES (?, ?)", (f"{role}_token", f"v2/{token_uuid}/{secret}")
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _insert_user(self, uuid: str, username: str, first: str, last: str, admin: bool) -> None:
        now = self.clock.now()
        self._db.execute(
            "INSERT INTO users (uuid, owner_uuid, created_at, modified_at, modified_by_user_uuid, email, first_name,"
            " last_name, username, is_admin, is_active) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (uuid, self.system_user_uuid, now, now, self.system_user_uuid, f"{username}@standin.invalid", first,
             last, username, int(admin)),
        )

    def token(self, role: str) -> str:
        """The bootstrap token of ``role`` ("admin" or "user")."""
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (f"{role}_token",)).fetchone()
        if row is None:
            raise KeyError(role)
        return str(row[0])

    # -- authentication and permissions ---------------------------------------------------------------------------

    def authenticate(self, token: str) -> Caller | None:
        """The caller a token belongs to (v2 ``v2/<uuid>/<secret>`` or a bare secret), or None."""
        if token.startswith("v2/"):
            parts = token.split("/")
            if len(parts) != 3:
                return None
            sql, args = "a.uuid = ? AND a.secret = ?", [parts[1], parts[2]]
        else:
            sql, args = "a.secret = ?", [token]
        with self._lock:
            row = self._db.execute(
                f"SELECT u.uuid, u.is_admin, u.is_active FROM api_client_authorizations a "
                f"JOIN users u ON u.uuid = a.user_uuid WHERE {sql}",
                args,
            ).fetchone()
        if row is None or not row[2]:
            return None
        return Caller(user_uuid=row[0], is_admin=bool(row[1]), token=token)

    def _reachable(self, user_uuid: str, perms: Sequence[str], now: int) -> set[str]:
        """The user, the objects shared with them by ``perms`` links, and every live project they transitively own."""
        marks = ",".join("?" * len(perms))
        rows = self._db.execute(
            f"""WITH RECURSIVE
            roots(u) AS (SELECT ? UNION SELECT head_uuid FROM links
                         WHERE link_class = 'permission' AND tail_uuid = ? AND name IN ({marks})),
            reach(u) AS (SELECT u FROM roots
                         UNION SELECT g.uuid FROM groups g JOIN reach r ON g.owner_uuid = r.u
                         WHERE g.group_class = 'project' AND NOT (g.trash_at IS NOT NULL AND g.trash_at <= ?))
            SELECT u FROM reach""",
            (user_uuid, user_uuid, *perms, now),
        ).fetchall()
        found = {r[0] for r in rows}
        trashed = self._trashed_projects(now)
        return found - trashed

    def _trashed_projects(self, now: int) -> set[str]:
        """Projects that are trashed, directly or through a trashed ancestor."""
        rows = self._db.execute(
            """WITH RECURSIVE t(u) AS (
                SELECT uuid FROM groups WHERE trash_at IS NOT NULL AND trash_at <= ?
                UNION SELECT g.uuid FROM groups g JOIN t ON g.owner_uuid = t.u)
            SELECT u FROM t""",
            (now,),
        ).fetchall()
        return {r[0] for r in rows}

    def readable_set(self, caller: Caller, now: int | None = None) -> set[str] | None:
        """UUIDs whose owned objects the caller may read (None: everything, for admins)."""
        if caller.is_admin:
            return None
        with self._lock:
            return self._reachable(caller.user_uuid, _READ_PERMS, now or time.time_ns())

    def writable_set(self, caller: Caller, now: int | None = None) -> set[str] | None:
        """UUIDs the caller may write into as owner (None: everything, for admins)."""
        if caller.is_admin:
            return None
        with self._lock:
            return self._reachable(caller.user_uuid, _WRITE_PERMS, now or time.time_ns())

    def _visibility(self, spec: ModelSpec, caller: Caller, now: int, include_trash: bool) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if spec is USERS:
            return "1", params
        if not include_trash and "trash_at" in spec.columns:
            clauses.append("NOT (trash_at IS NOT NULL AND trash_at <= ?)")
            params.append(now)
        if caller.is_admin:
            if not include_trash:
                trashed = self._trashed_projects(now)
                if trashed:
                    clauses.append("owner_uuid NOT IN (SELECT value FROM json_each(?))")
                    params.append(_ids_param(trashed))
        else:
            readable = _ids_param(self._reachable(caller.user_uuid, _READ_PERMS, now))
            own = "(owner_uuid IN (SELECT value FROM json_each(?)) OR uuid IN (SELECT value FROM json_each(?)))"
            params += [readable, readable]
            if spec is LINKS:
                writable = _ids_param(self._reachable(caller.user_uuid, _WRITE_PERMS, now))
                own = (
                    f"({own} OR (link_class = 'permission' AND (tail_uuid = ? OR "
                    f"head_uuid IN (SELECT value FROM json_each(?)))))"
                )
                params += [caller.user_uuid, writable]
            clauses.append(own)
        return (" AND ".join(clauses) if clauses else "1"), params

    # -- generic reads --------------------------------------------------------------------------------------------

    def list_records(
        self, spec: ModelSpec, caller: Caller, params: ListParams, include_trash: bool = False
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of visible records matching the filters, and the total count when ``params.count``."""
        now = time.time_ns()
        names = params.select or [n for n in spec.columns if n not in spec.list_excludes]
        names = [n for n in names if n in spec.columns]
        with self._lock:
            vis_sql, vis_args = self._visibility(spec, caller, now, include_trash)
            flt_sql, flt_args = compile_filters(spec, params.filters, now)
            order = compile_order(spec, params.order, params.select, now)
            cols = ", ".join(f"{spec.columns[n].sql.replace('{now}', str(now))} AS \"{n}\"" for n in names) or "1"
            where = f"({vis_sql}) AND ({flt_sql})"
            sql = f"SELECT {cols} FROM {spec.table} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"
            rows = self._db.execute(sql, [*vis_args, *flt_args, params.limit, params.offset]).fetchall()
            total: int | None = None
            if params.count:
                (total,) = self._db.execute(
                    f"SELECT COUNT(*) FROM {spec.table} WHERE {where}", [*vis_args, *flt_args]
                ).fetchone()
        if not names:
            return [{"kind": spec.kind, "etag": ""} for _ in rows], total
        return [row_to_record(spec, names, row) for row in rows], total

    def get(
        self,
        spec: ModelSpec,
        caller: Caller,
        uuid: str,
        select: list[str] | None = None,
        include_trash: bool = False,
    ) -> dict[str, Any]:
        """One visible record by UUID; 404 when it does not exist or the caller may not read it."""
        names = select or [n for n in spec.columns if n != "unsigned_manifest_text"]
        lookup = ListParams(filters=[["uuid", "=", uuid]], order=[], select=names, limit=1, offset=0, count=False)
        items, _ = self.list_records(spec, caller, lookup, include_trash=include_trash)
        if not items:
            noun = spec.kind.split("#")[1]
            raise ApiError(404, f"{noun} '{uuid}' not found, or not readable with this token")
        return items[0]

    def _raw(self, table: str, uuid: str) -> dict[str, Any] | None:
        cur = self._db.execute(f"SELECT * FROM {table} WHERE uuid = ?", (uuid,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def _readable(self, caller: Caller, uuid: str, now: int) -> bool:
        """Whether an object of a stored type exists and the caller may read it."""
        table = {"arvados#user": "users", "arvados#group": "groups", "arvados#collection": "collections",
                 "arvados#link": "links"}.get(kind_of(uuid) or "")
        if table is None:
            return False
        spec = MODELS[table]
        vis, args = self._visibility(spec, caller, now, include_trash=False)
        return self._db.execute(f"SELECT 1 FROM {table} WHERE uuid = ? AND {vis}", [uuid, *args]).fetchone() is not None

    # -- writes: common checks ------------------------------------------------------------------------------------

    def _check_owner(self, caller: Caller, owner_uuid: Any, now: int) -> str:
        """Validate a new ``owner_uuid``: a user or project that exists and the caller may write into."""
        if not isinstance(owner_uuid, str) or not is_uuid(owner_uuid):
            raise ApiError(422, f"owner_uuid {owner_uuid!r} is not a valid user or project UUID")
        kind = kind_of(owner_uuid)
        if kind == "arvados#user":
            exists = self._db.execute("SELECT 1 FROM users WHERE uuid = ?", (owner_uuid,)).fetchone()
        elif kind == "arvados#group":
            row = self._db.execute("SELECT group_class FROM groups WHERE uuid = ?", (owner_uuid,)).fetchone()
            if row is not None and row[0] != "project":
                raise ApiError(422, f"owner_uuid {owner_uuid} must be a project (it is a {row[0]} group)")
            exists = row
        else:
            raise ApiError(422, f"owner_uuid {owner_uuid} must be a user or project UUID")
        if exists is None:
            raise ApiError(422, f"owner_uuid '{owner_uuid}' not found")
        if not caller.is_admin and owner_uuid not in self._reachable(caller.user_uuid, _WRITE_PERMS, now):
            raise ApiError(
                403, f"Permission denied: {caller.user_uuid} cannot write to owner_uuid {owner_uuid}"
            )
        return owner_uuid

    def _check_writable_record(self, caller: Caller, record: dict[str, Any], noun: str, now: int) -> None:
        if caller.is_admin:
            return
        writable = self._reachable(caller.user_uuid, _WRITE_PERMS, now)
        if record["owner_uuid"] not in writable and record["uuid"] not in writable:
            raise ApiError(403, f"Permission denied: {caller.user_uuid} cannot modify {noun} {record['uuid']}")

    def _unique_name(
        self, table: str, owner: str, name: Any, uuid: str, ensure_unique: bool, now: int, noun: str
    ) -> Any:
        """``name``, or with the Arvados >= 3.0 ``" (<uuid tail>)"`` suffix under ensure_unique_name; 422 on a clash."""
        if name is None:
            return None

        def clash(candidate: str) -> bool:
            return (
                self._db.execute(
                    f"SELECT 1 FROM {table} WHERE owner_uuid = ? AND name = ? AND uuid <> ? "
                    f"AND NOT (trash_at IS NOT NULL AND trash_at <= ?)",
                    (owner, candidate, uuid, now),
                ).fetchone()
                is not None
            )

        if not clash(name):
            return name
        if ensure_unique:
            candidate = f"{name[:237]} ({uuid[-15:]})"
            if not clash(candidate):
                return candidate
        raise ApiError(
            422,
            f'duplicate key value violates unique constraint "index_{table}_on_owner_uuid_and_name": '
            f"a {noun} named {name!r} already exists in {owner} (pass ensure_unique_name=true to get a unique name)",
        )

    @staticmethod
    def _check_attrs(attrs: dict[str, Any], allowed: frozenset[str], noun: str) -> dict[str, Any]:
        unknown = sorted(k for k in attrs if k not in allowed and k not in _IGNORED_ATTRS)
        if unknown:
            raise ApiError(422, f"unknown attribute(s) for {noun}: {', '.join(unknown)}")
        return {k: v for k, v in attrs.items() if k in allowed}

    @staticmethod
    def _properties(value: Any) -> str:
        if value is None:
            return "{}"
        if not isinstance(value, dict):
            raise ApiError(422, "properties must be a JSON object")
        return _canon(value)

    @staticmethod
    def _time(value: Any, field: str) -> int | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ApiError(422, f"{field} must be a timestamp string or null")
        try:
            return parse_timestamp(value)
        except ValueError:
            raise ApiError(422, f"{field} {value!r} is not a valid timestamp") from None

    def _transaction(self) -> _Tx:
        return _Tx(self._db)

    # -- collections ----------------------------------------------------------------------------------------------

    _COLLECTION_ATTRS = frozenset(
        {"owner_uuid", "name", "description", "properties", "manifest_text", "portable_data_hash",
         "replication_desired", "storage_classes_desired", "trash_at", "delete_at", "preserve_version"}
    )

    def _collection_values(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Validate and convert writable collection attributes to column values (manifest already unsigned)."""
        values: dict[str, Any] = {}
        if "manifest_text" in attrs:
            text = attrs["manifest_text"] if attrs["manifest_text"] is not None else ""
            if not isinstance(text, str):
                raise ApiError(422, "manifest_text must be a string")
            try:
                stats = validate_manifest(text)
            except ManifestError as exc:
                raise ApiError(422, f"Invalid manifest_text: {exc}") from None
            values.update(
                manifest_text=text,
                portable_data_hash=portable_data_hash(text),
                file_count=stats.file_count,
                file_size_total=stats.file_size_total,
            )
            given = attrs.get("portable_data_hash")
            if given and str(given)[:32] != values["portable_data_hash"][:32]:
                raise ApiError(
                    422,
                    f"portable_data_hash {given} does not match manifest_text (computed "
                    f"{values['portable_data_hash']})",
                )
        for key in ("name", "description"):
            if key in attrs:
                if attrs[key] is not None and not isinstance(attrs[key], str):
                    raise ApiError(422, f"{key} must be a string or null")
                values[key] = attrs[key]
        if "properties" in attrs:
            values["properties"] = self._properties(attrs["properties"])
        if "replication_desired" in attrs:
            rep = attrs["replication_desired"]
            if rep is not None and (isinstance(rep, bool) or not isinstance(rep, int) or rep < 1):
                raise ApiError(422, "replication_desired must be a positive integer or null")
            values["replication_desired"] = rep
        if "storage_classes_desired" in attrs:
            classes = attrs["storage_classes_desired"]
            if classes is None:
                classes = ["default"]
            if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
                raise ApiError(422, "storage_classes_desired must be an array of strings")
            values["storage_classes_desired"] = _canon(classes)
        for key in ("trash_at", "delete_at"):
            if key in attrs:
                values[key] = self._time(attrs[key], key)
        return values

    def create_collection(self, caller: Caller, attrs: dict[str, Any], ensure_unique_name: bool = False) -> str:
        """Insert a collection from unsigned attributes; return its UUID."""
        attrs = self._check_attrs(attrs, self._COLLECTION_ATTRS, "collection")
        attrs.setdefault("manifest_text", "")
        values = self._collection_values(attrs)
        uuid = new_uuid(self.cluster_id, "4zz18")
        with self._lock, self._transaction():
            now = self.clock.now()
            owner = self._check_owner(caller, attrs.get("owner_uuid") or caller.user_uuid, now)
            values.setdefault("properties", "{}")
            values.setdefault("storage_classes_desired", '["default"]')
            if values.get("trash_at") is not None and values.get("delete_at") is None:
                values["delete_at"] = values["trash_at"] + TRASH_LIFETIME_NS
            values["name"] = self._unique_name(
                "collections", owner, values.get("name"), uuid, ensure_unique_name, now, "collection"
            )
            values.update(uuid=uuid, owner_uuid=owner, created_at=now, modified_at=now,
                          modified_by_user_uuid=caller.user_uuid)
            self._insert("collections", values)
        return uuid

    def _insert(self, table: str, values: dict[str, Any]) -> None:
        cols = ", ".join(values)
        marks = ", ".join("?" * len(values))
        self._db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(values.values()))

    def _update(self, table: str, uuid: str, values: dict[str, Any]) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        self._db.execute(f"UPDATE {table} SET {sets} WHERE uuid = ?", [*values.values(), uuid])

    def _editable(self, caller: Caller, table: str, uuid: str, now: int, include_trash: bool = True) -> dict[str, Any]:
        """The raw row of a record the caller can read (404 otherwise) and write (403 otherwise)."""
        spec = MODELS[table]
        noun = spec.kind.split("#")[1]
        raw = self._raw(table, uuid)
        vis, args = self._visibility(spec, caller, now, include_trash=include_trash)
        if raw is None or self._db.execute(
            f"SELECT 1 FROM {table} WHERE uuid = ? AND {vis}", [uuid, *args]
        ).fetchone() is None:
            raise ApiError(404, f"{noun} '{uuid}' not found, or not readable with this token")
        self._check_writable_record(caller, raw, noun, now)
        return raw

    def update_collection(self, caller: Caller, uuid: str, attrs: dict[str, Any]) -> None:
        """Apply a partial update (``properties`` replaces wholesale, ``manifest_text`` is re-hashed)."""
        attrs = self._check_attrs(attrs, self._COLLECTION_ATTRS, "collection")
        values = self._collection_values(attrs)
        with self._lock, self._transaction():
            now = self.clock.now()
            raw = self._editable(caller, "collections", uuid, now)
            owner = raw["owner_uuid"]
            if attrs.get("owner_uuid") and attrs["owner_uuid"] != owner:
                owner = self._check_owner(caller, attrs["owner_uuid"], now)
                values["owner_uuid"] = owner
            trash_at = values.get("trash_at", raw["trash_at"])
            if "trash_at" in values and trash_at is not None and "delete_at" not in values:
                values["delete_at"] = trash_at + TRASH_LIFETIME_NS
            if trash_at is None or trash_at > now:
                values["name"] = self._unique_name(
                    "collections", owner, values.get("name", raw["name"]), uuid, False, now, "collection"
                )
            values.update(modified_at=now, modified_by_user_uuid=caller.user_uuid)
            self._update("collections", uuid, values)

    def trash(self, caller: Caller, table: str, uuid: str, mode: str) -> None:
        """``delete`` (trash now, delete_at capped at trash+TTL) or ``trash`` (trash now, delete after lifetime)."""
        with self._lock, self._transaction():
            now = self.clock.now()
            raw = self._editable(caller, table, uuid, now)
            trash_at = raw["trash_at"] if raw["trash_at"] is not None and raw["trash_at"] <= now else now
            if mode == "delete":
                cap = trash_at + self.blob_signing_ttl * 1_000_000_000
                delete_at = min(raw["delete_at"], cap) if raw["delete_at"] is not None else cap
            else:
                delete_at = now + TRASH_LIFETIME_NS
            self._update(table, uuid, {"trash_at": trash_at, "delete_at": delete_at, "modified_at": now,
                                       "modified_by_user_uuid": caller.user_uuid})

    def untrash(self, caller: Caller, table: str, uuid: str, ensure_unique_name: bool = False) -> None:
        """Clear trash_at/delete_at of a trashed record that is not yet past delete_at (422 otherwise)."""
        with self._lock, self._transaction():
            now = self.clock.now()
            raw = self._editable(caller, table, uuid, now)
            if raw["trash_at"] is None or raw["trash_at"] > now:
                raise ApiError(422, f"InvalidStateTransition: {uuid} is not in the trash")
            if raw["delete_at"] is not None and raw["delete_at"] <= now:
                raise ApiError(422, f"InvalidStateTransition: {uuid} is past its delete_at time")
            noun = MODELS[table].kind.split("#")[1]
            name = self._unique_name(table, raw["owner_uuid"], raw["name"], uuid, ensure_unique_name, now, noun)
            self._update(table, uuid, {"trash_at": None, "delete_at": None, "name": name, "modified_at": now,
                                       "modified_by_user_uuid": caller.user_uuid})

    def collections_by_pdh(self, caller: Caller, pdh: str) -> list[dict[str, Any]]:
        """Readable, untrashed collections with this PDH, latest trash_at first (as the real server picks)."""
        params = ListParams(
            filters=[["portable_data_hash", "=", pdh]],
            order=["trash_at desc"],
            select=["uuid", "portable_data_hash", "manifest_text", "trash_at"],
            limit=1,
            offset=0,
            count=False,
        )
        items, _ = self.list_records(COLLECTIONS, caller, params)
        return items

    # -- links ----------------------------------------------------------------------------------------------------

    _LINK_ATTRS = frozenset({"owner_uuid", "link_class", "name", "head_uuid", "tail_uuid", "properties"})

    def _link_values(self, caller: Caller, attrs: dict[str, Any], now: int) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key in ("link_class", "name", "head_uuid", "tail_uuid"):
            if key in attrs:
                if attrs[key] is not None and not isinstance(attrs[key], str):
                    raise ApiError(422, f"{key} must be a string or null")
                values[key] = attrs[key]
        if "properties" in attrs:
            values["properties"] = self._properties(attrs["properties"])
        for key in ("head_uuid", "tail_uuid"):
            ref = values.get(key)
            if (
                isinstance(ref, str)
                and kind_of(ref) is not None
                and ref.startswith(self.cluster_id + "-")
                and not self._readable(caller, ref, now)
            ):
                raise ApiError(422, f"'{ref}' not found ({key} must name an existing object readable with this token)")
        return values

    def _check_permission_link(self, caller: Caller, link: dict[str, Any], now: int) -> None:
        if link.get("link_class") != "permission":
            return
        if link.get("name") not in _PERMISSION_NAMES:
            raise ApiError(422, f"permission link name must be one of {', '.join(_PERMISSION_NAMES)}")
        tail = link.get("tail_uuid") or ""
        if kind_of(tail) not in ("arvados#user", "arvados#group"):
            raise ApiError(422, "permission link tail_uuid must be a user or role group")
        if caller.is_admin:
            return
        head = link.get("head_uuid") or ""
        writable = self._reachable(caller.user_uuid, _WRITE_PERMS, now)
        owner: str | None = None
        for table in ("groups", "collections", "users"):
            row = self._db.execute(f"SELECT owner_uuid FROM {table} WHERE uuid = ?", (head,)).fetchone()
            if row is not None:
                owner = row[0]
        if head not in writable and owner not in writable:
            raise ApiError(403, f"Permission denied: {caller.user_uuid} cannot manage {head}")

    def create_link(self, caller: Caller, attrs: dict[str, Any]) -> str:
        """Insert a link (head/tail must be readable objects when they are local UUIDs of a known type)."""
        attrs = self._check_attrs(attrs, self._LINK_ATTRS, "link")
        uuid = new_uuid(self.cluster_id, "o0j2j")
        with self._lock, self._transaction():
            now = self.clock.now()
            owner = self._check_owner(caller, attrs.get("owner_uuid") or caller.user_uuid, now)
            values = self._link_values(caller, attrs, now)
            values.setdefault("properties", "{}")
            self._check_permission_link(caller, values, now)
            values.update(uuid=uuid, owner_uuid=owner, created_at=now, modified_at=now,
                          modified_by_user_uuid=caller.user_uuid)
            self._insert("links", values)
        return uuid

    def update_link(self, caller: Caller, uuid: str, attrs: dict[str, Any]) -> None:
        """Apply a partial link update."""
        attrs = self._check_attrs(attrs, self._LINK_ATTRS, "link")
        with self._lock, self._transaction():
            now = self.clock.now()
            raw = self._editable(caller, "links", uuid, now)
            values = self._link_values(caller, attrs, now)
            if attrs.get("owner_uuid") and attrs["owner_uuid"] != raw["owner_uuid"]:
                values["owner_uuid"] = self._check_owner(caller, attrs["owner_uuid"], now)
            self._check_permission_link(caller, {**raw, **values}, now)
            values.update(modified_at=now, modified_by_user_uuid=caller.user_uuid)
            self._update("links", uuid, values)

    def delete_link(self, caller: Caller, uuid: str) -> dict[str, Any]:
        """Hard-delete a link; return the record as it was."""
        with self._lock, self._transaction():
            now = self.clock.now()
            record = self.get(LINKS, caller, uuid)
            self._editable(caller, "links", uuid, now)
            self._db.execute("DELETE FROM links WHERE uuid = ?", (uuid,))
        return record

    # -- groups ---------------------------------------------------------------------------------------------------

    _GROUP_ATTRS = frozenset({"owner_uuid", "name", "description", "group_class", "properties", "trash_at",
                              "delete_at"})

    def _group_values(self, attrs: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key in ("name", "description"):
            if key in attrs:
                if attrs[key] is not None and not isinstance(attrs[key], str):
                    raise ApiError(422, f"{key} must be a string or null")
                values[key] = attrs[key]
        if "group_class" in attrs:
            if attrs["group_class"] not in ("project", "role", "filter"):
                raise ApiError(422, "group_class must be one of 'project', 'role', 'filter'")
            values["group_class"] = attrs["group_class"]
        if "properties" in attrs:
            values["properties"] = self._properties(attrs["properties"])
        for key in ("trash_at", "delete_at"):
            if key in attrs:
                values[key] = self._time(attrs[key], key)
        return values

    def create_group(self, caller: Caller, attrs: dict[str, Any], ensure_unique_name: bool = False) -> str:
        """Insert a group (a project when group_class is "project"); return its UUID."""
        attrs = self._check_attrs(attrs, self._GROUP_ATTRS, "group")
        values = self._group_values(attrs)
        if "group_class" not in values:
            raise ApiError(422, "group_class must be one of 'project', 'role', 'filter'")
        if not values.get("name"):
            raise ApiError(422, "name can't be blank")
        uuid = new_uuid(self.cluster_id, "j7d0g")
        with self._lock, self._transaction():
            now = self.clock.now()
            owner = self._check_owner(caller, attrs.get("owner_uuid") or caller.user_uuid, now)
            values["name"] = self._unique_name("groups", owner, values["name"], uuid, ensure_unique_name, now, "group")
            values.setdefault("properties", "{}")
            values.update(uuid=uuid, owner_uuid=owner, created_at=now, modified_at=now,
                          modified_by_user_uuid=caller.user_uuid)
            self._insert("groups", values)
        return uuid

    def update_group(self, caller: Caller, uuid: str, attrs: dict[str, Any]) -> None:
        """Apply a partial group update (group_class cannot change)."""
        attrs = self._check_attrs(attrs, self._GROUP_ATTRS, "group")
        values = self._group_values(attrs)
        with self._lock, self._transaction():
            now = self.clock.now()
            raw = self._editable(caller, "groups", uuid, now)
            if values.get("group_class", raw["group_class"]) != raw["group_class"]:
                raise ApiError(422, "group_class cannot be changed")
            owner = raw["owner_uuid"]
            if attrs.get("owner_uuid") and attrs["owner_uuid"] != owner:
                if attrs["owner_uuid"] == uuid:
                    raise ApiError(422, "a project cannot own itself")
                owner = self._check_owner(caller, attrs["owner_uuid"], now)
                values["owner_uuid"] = owner
            values["name"] = self._unique_name(
                "groups", owner, values.get("name", raw["name"]), uuid, False, now, "group"
            )
            values.update(modified_at=now, modified_by_user_uuid=caller.user_uuid)
            self._update("groups", uuid, values)

    # -- seeding --------------------------------------------------------------------------------------------------

    def seed_docker_images(
        self,
        count: int,
        owner_uuid: str | None = None,
        repo: str = "seed/image",
        blocks: BlockStore | None = None,
        start: int = 0,
    ) -> list[SeededImage]:
        """Insert ``count`` docker images (collection + hash link + repo+tag link each) in one transaction.

        For tests and benchmarks: no permission checks. Each collection holds one small ``sha256:<hash>.tar`` file
        (a segment of a block shared by the batch); the block is written to ``blocks`` when given, so the
        collections can also be read back.
        """
        owner = owner_uuid or self.token_user("admin")
        seeded: list[SeededImage] = []
        collections: list[tuple[Any, ...]] = []
        links: list[tuple[Any, ...]] = []
        # All images of a batch share one block; each collection's file is its own segment of it.
        contents = [f"seeded docker image {i}\n".encode() for i in range(start, start + count)]
        batch = 100_000
        for first in range(0, count, batch):
            chunk = contents[first : first + batch]
            block = b"".join(chunk)
            md5 = blocks.put_bytes(block) if blocks is not None else hashlib.md5(block).hexdigest()
            offset = 0
            for n, content in enumerate(chunk):
                i = start + first + n
                image_hash = "sha256:" + hashlib.sha256(f"seed-image-{i}".encode()).hexdigest()
                tag = f"v{i}"
                repo_tag = f"{repo}:{tag}"
                file_name = image_hash.replace(":", "\\072") + ".tar"
                manifest = f". {md5}+{len(block)} {offset}:{len(content)}:{file_name}\n"
                offset += len(content)
                pdh = portable_data_hash(manifest)
                coll_uuid = new_uuid(self.cluster_id, "4zz18")
                now = self.clock.now()
                name = f"Docker image {repo.replace('/', ' ')}:{tag} {image_hash[:12]}"
                collections.append((coll_uuid, owner, now, now, owner, name,
                                    _canon({"docker-image-repo-tag": repo_tag}), pdh, manifest, len(content)))
                props = _canon({"image_timestamp": "2024-01-01T00:00:00.000000000Z"})
                for link_class, link_name in (("docker_image_hash", image_hash), ("docker_image_repo+tag", repo_tag)):
                    t = self.clock.now()
                    links.append((new_uuid(self.cluster_id, "o0j2j"), owner, t, t, owner, link_class, link_name,
                                  coll_uuid, props))
                seeded.append(SeededImage(coll_uuid, image_hash, repo_tag, pdh))
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT INTO collections (uuid, owner_uuid, created_at, modified_at, modified_by_user_uuid, name,"
                " properties, portable_data_hash, manifest_text, file_count, file_size_total)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
                collections,
            )
            self._db.executemany(
                "INSERT INTO links (uuid, owner_uuid, created_at, modified_at, modified_by_user_uuid, link_class,"
                " name, head_uuid, properties) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                links,
            )
        return seeded

    def token_user(self, role: str) -> str:
        """The user UUID behind the bootstrap token of ``role``."""
        caller = self.authenticate(self.token(role))
        if caller is None:
            raise KeyError(role)
        return caller.user_uuid

    def counts(self) -> dict[str, int]:
        """Number of records per table (for stats and tests)."""
        with self._lock:
            return {
                t: int(self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                for t in ("users", "groups", "collections", "links")
            }


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
