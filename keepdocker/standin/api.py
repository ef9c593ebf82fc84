"""The Arvados API handlers: route a decoded request to the store and shape the JSON response."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from keepdocker.standin.clock import format_ns, parse_timestamp
from keepdocker.standin.discovery import MAX_REQUEST_SIZE, build_discovery
from keepdocker.standin.errors import ApiError
from keepdocker.standin.filters import ModelSpec, parse_list_params, parse_select
from keepdocker.standin.keepstore import BlockStore
from keepdocker.standin.manifest import locator_tokens, map_locators, strip_signatures
from keepdocker.standin.models import COLLECTIONS, GROUPS, LINKS, USERS
from keepdocker.standin.signing import BlobSigner, SignatureError
from keepdocker.standin.store import Caller, Store

__all__ = ["ApiApp", "KeepServiceInfo", "RequestStats", "error_body"]

_BOOL_PARAMS = frozenset(
    {"ensure_unique_name", "include_trash", "distinct", "bypass_federation", "include_old_versions", "async",
     "recursive"}
)
_PDH_LIKE = re.compile(r"^([0-9a-f]{32}\+[0-9]+)(\+\S+)?$")


def error_body(message: str) -> dict[str, Any]:
    """The Arvados error JSON: ``{"errors": [message], "error_token": "<time>+<hex>"}``."""
    return {"errors": [message], "error_token": f"{int(time.time())}+{secrets.token_hex(4)}"}


@dataclass
class RequestStats:
    """Thread-safe request counters, exposed at ``/_standin/stats`` so tests can prove what traffic happened."""

    counts: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0  # requests received and not yet answered (a killed client's included)
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def add(self, key: str, n: int = 1) -> None:
        """Increase counter ``key`` by ``n``."""
        with self._lock:
            self.counts[key] += n

    def started(self, n: int = 1) -> None:
        """Count a request as in flight (``n=-1``: it has been answered or abandoned)."""
        with self._lock:
            self.in_flight += n
            self._lock.notify_all()

    def wait_in_flight(self, test: Callable[[int], bool], timeout: float) -> bool:
        """Wait until ``test(in_flight)`` holds; False if it still does not after ``timeout`` seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: test(self.in_flight), timeout)

    def snapshot(self) -> dict[str, int]:
        """A copy of all counters."""
        with self._lock:
            return dict(self.counts)


@dataclass(frozen=True)
class KeepServiceInfo:
    """Where the Keep service listens."""

    host: str
    port: int
    ssl: bool = False


def _duration(seconds: int) -> str:
    """A duration as the cluster config writes it: ``336h`` for whole hours, else ``90s``."""
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds}s"


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() not in ("", "false", "0", "f", "no", "none", "null")


def _decode_query(raw: dict[str, str]) -> dict[str, Any]:
    """Query values as the Go controller reads them: JSON when they start with [, { or "; booleans parsed."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "alt":
            continue
        decoded: Any = value
        if value[:1] in ("[", "{", '"'):
            try:
                decoded = json.loads(value)
            except ValueError:
                raise ApiError(422, f"Invalid JSON in parameter '{key}'") from None
        if key in _BOOL_PARAMS:
            decoded = _bool(decoded)
        out[key] = decoded
    return out


Handler = Callable[["ApiApp", Caller | None, list[str], dict[str, Any], dict[str, Any]], dict[str, Any]]


class ApiApp:
    """All API routes; ``handle`` turns one decoded request into ``(status, json_body)``."""

    def __init__(
        self,
        store: Store,
        blocks: BlockStore,
        signer: BlobSigner,
        root_url: str,
        keep: KeepServiceInfo,
        stats: RequestStats,
    ) -> None:
        self.store = store
        self.blocks = blocks
        self.signer = signer
        self.root_url = root_url
        self.keep = keep
        self.stats = stats
        self._discovery = json.dumps(build_discovery(root_url, store.cluster_id, signer.ttl_seconds)).encode()

    @property
    def discovery_bytes(self) -> bytes:
        """The serialized discovery document."""
        return self._discovery

    # -- entry point ----------------------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, raw_query: dict[str, str], token: str | None, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """Dispatch one API request; errors become 4xx responses with the Arvados error body."""
        try:
            return 200, self._dispatch(method, path, raw_query, token, body)
        except ApiError as exc:
            return exc.status, error_body(exc.message)

    def _dispatch(
        self, method: str, path: str, raw_query: dict[str, str], token: str | None, body: bytes
    ) -> dict[str, Any]:
        if path == "/arvados/v1/config" and method == "GET":
            return self.config()
        parts = [unquote(p) for p in path.strip("/").split("/")]
        query = _decode_query(raw_query)
        caller = self.store.authenticate(token) if token else None
        if parts[:1] == ["_standin"]:
            return self._standin(method, parts[1:], caller, query, body)
        if parts[:2] != ["arvados", "v1"] or len(parts) < 3:
            raise ApiError(404, f"Path not found: {path}")
        if caller is None:
            raise ApiError(401, "Not logged in: send 'Authorization: Bearer <token>' with a valid API token")
        attrs, query = self._body(parts[2], body, query)
        resource, rest = parts[2], parts[3:]
        route: Handler | None = None
        if rest and len(rest) <= 2:
            route = _ROUTES.get((method, resource, rest[-1]))
        if route is None and len(rest) < 2:
            route = _ROUTES.get((method, resource, len(rest)))
        if route is None:
            raise ApiError(404, f"Path not found: {method} {path}")
        return route(self, caller, rest, query, attrs)

    @staticmethod
    def _body(resource: str, body: bytes, query: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Attributes from a bare or ``{"<singular>": {...}}`` body; other keys of a wrapped body become params."""
        if not body:
            return {}, query
        if len(body) > MAX_REQUEST_SIZE:
            raise ApiError(413, f"request body larger than maxRequestSize ({MAX_REQUEST_SIZE} bytes)")
        try:
            data = json.loads(body)
        except ValueError:
            raise ApiError(400, "request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(422, "request body must be a JSON object")
        singular = resource[:-1] if resource.endswith("s") else resource
        if isinstance(data.get(singular), dict):
            attrs = data.pop(singular)
            extra = {k: (_bool(v) if k in _BOOL_PARAMS else v) for k, v in data.items()}
            return attrs, {**query, **extra}
        return data, query

    # -- responses ------------------------------------------------------------------------------------------------

    def _sign(self, record: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Sign ``manifest_text`` for the caller's token (unsigned when the record is trashed)."""
        text = record.get("manifest_text")
        if not isinstance(text, str) or not text:
            return record
        now_ns = time.time_ns()
        expiry = self.signer.default_expiry()
        trash_at = record.get("trash_at")
        if trash_at:
            trash_ns = parse_timestamp(trash_at)
            if trash_ns <= now_ns:
                return record
            expiry = min(expiry, trash_ns // 1_000_000_000)
        record["manifest_text"] = map_locators(
            text, lambda loc: self.signer.sign_locator(loc, caller.token, expiry)
        )
        return record

    def _list(
        self, spec: ModelSpec, caller: Caller, query: dict[str, Any], include_trash: bool = False
    ) -> dict[str, Any]:
        params = parse_list_params(spec, query)
        added_trash = False
        if params.select is not None and "manifest_text" in params.select and "trash_at" not in params.select:
            params.select.append("trash_at")
            added_trash = True
        items, total = self.store.list_records(spec, caller, params, include_trash=include_trash)
        # Records returned by list calls, beside the request counts: shows how much a client scans, page size aside.
        self.stats.add(f"listed {spec.table}", len(items))
        if spec is COLLECTIONS:
            items = [self._sign(item, caller) for item in items]
            if added_trash:
                for item in items:
                    item.pop("trash_at", None)
        result: dict[str, Any] = {
            "kind": f"{spec.kind}List",
            "etag": "",
            "self_link": "",
            "offset": params.offset,
            "limit": params.limit,
            "items": items,
        }
        if total is not None:
            result["items_available"] = total
        return result

    def _get(self, spec: ModelSpec, caller: Caller, uuid: str, query: dict[str, Any]) -> dict[str, Any]:
        select = parse_select(spec, query.get("select"))
        record = self.store.get(spec, caller, uuid, select=select, include_trash=bool(query.get("include_trash")))
        return self._sign(record, caller) if spec is COLLECTIONS else record

    def config(self) -> dict[str, Any]:
        """The exported cluster config subset the SDK reads."""
        return {
            "ClusterID": self.store.cluster_id,
            "StorageClasses": {"default": {"Default": True, "Priority": 0}},
            "Collections": {
                "BlobSigning": True,
                "BlobSigningTTL": _duration(self.signer.ttl_seconds),
                "CollectionVersioning": False,
                "DefaultReplication": 1,
                "DefaultTrashLifetime": "336h",
                "TrustAllContent": False,
            },
            "Containers": {"SupportedDockerImageFormats": {"v2": {}}},
            "API": {"MaxItemsPerResponse": 1000, "MaxRequestSize": MAX_REQUEST_SIZE},
            "Services": {
                "Controller": {"ExternalURL": self.root_url},
                "Keepstore": {"InternalURLs": {self.keep_root: {}}},
            },
            "Users": {"AnonymousUserToken": ""},
            "Volumes": {},
        }

    @property
    def keep_root(self) -> str:
        """The Keep service root URL."""
        return f"{'https' if self.keep.ssl else 'http'}://{self.keep.host}:{self.keep.port}/"

    def keep_service(self) -> dict[str, Any]:
        """The one Keep service record."""
        return {
            "kind": "arvados#keepService",
            "uuid": f"{self.store.cluster_id}-bi6l4-000000000000000",
            "owner_uuid": self.store.system_user_uuid,
            "service_host": self.keep.host,
            "service_port": self.keep.port,
            "service_ssl_flag": self.keep.ssl,
            "service_type": "disk",
            "read_only": False,
            "created_at": format_ns(0),
            "modified_at": format_ns(0),
            "etag": "",
        }

    # -- collections ----------------------------------------------------------------------------------------------

    def _unsigned_manifest(self, caller: Caller, attrs: dict[str, Any]) -> dict[str, Any]:
        """Verify the permission signatures in ``manifest_text`` (non-admins) and strip them."""
        text = attrs.get("manifest_text")
        if not isinstance(text, str):
            return attrs
        if not caller.is_admin:
            for locator in locator_tokens(text):
                try:
                    self.signer.verify_locator(locator, caller.token)
                except SignatureError as exc:
                    raise ApiError(403, f"Permission denied: {exc}") from None
        return {**attrs, "manifest_text": strip_signatures(text)}

    def collections_get(self, caller: Caller, rest: list[str], query: dict[str, Any], _a: dict[str, Any]) -> Any:
        """``collections.get`` by UUID or by portable data hash."""
        key = rest[0]
        match = _PDH_LIKE.match(key)
        if match is None:
            return self._get(COLLECTIONS, caller, key, query)
        found = self.store.collections_by_pdh(caller, match.group(1))
        if not found:
            raise ApiError(404, f"collection with portable data hash '{key}' not found, or not readable")
        item = found[0]
        record = {
            "kind": "arvados#collection",
            "uuid": item["portable_data_hash"],
            "portable_data_hash": item["portable_data_hash"],
            "manifest_text": item["manifest_text"],
            "trash_at": item["trash_at"],
        }
        return self._sign(record, caller)

    def collections_create(self, caller: Caller, _r: list[str], query: dict[str, Any], attrs: dict[str, Any]) -> Any:
        """``collections.create`` (signatures verified for non-admins, stored unsigned, returned signed)."""
        uuid = self.store.create_collection(
            caller, self._unsigned_manifest(caller, attrs), bool(query.get("ensure_unique_name"))
        )
        return self._get(COLLECTIONS, caller, uuid, {**query, "include_trash": True})

    def collections_update(self, caller: Caller, rest: list[str], query: dict[str, Any], attrs: dict[str, Any]) -> Any:
        """``collections.update``: a partial update."""
        self.store.update_collection(caller, rest[0], self._unsigned_manifest(caller, attrs))
        return self._get(COLLECTIONS, caller, rest[0], {**query, "include_trash": True})

    def _standin(
        self, method: str, rest: list[str], caller: Caller | None, query: dict[str, Any], body: bytes
    ) -> dict[str, Any]:
        """Admin-only helpers: request counters and fast seeding."""
        if caller is None or not caller.is_admin:
            raise ApiError(403, "the /_standin endpoints need the stand-in's admin token")
        if method == "GET" and rest == ["stats"]:
            return {
                "requests": self.stats.snapshot(),
                "in_flight": self.stats.in_flight,
                "records": self.store.counts(),
                "blocks": self.blocks.count(),
            }
        if method == "POST" and rest == ["seed_images"]:
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                raise ApiError(400, "seed_images: the request body is not valid JSON") from None
            count = data.get("count") if isinstance(data, dict) else None
            if not isinstance(count, int) or count < 0:
                raise ApiError(422, "seed_images needs {'count': <non-negative integer>}")
            seeded = self.store.seed_docker_images(
                count, owner_uuid=data.get("owner_uuid"), repo=data.get("repo", "seed/image"), blocks=self.blocks,
                start=int(data.get("start", 0)),
            )
            return {"items": [s.__dict__ for s in seeded]}
        raise ApiError(404, f"Path not found: /_standin/{'/'.join(rest)}")


def _users_current(app: ApiApp, caller: Caller | None, rest: list[str], q: dict[str, Any], _a: Any) -> Any:
    assert caller is not None
    return app.store.get(USERS, caller, caller.user_uuid)


def _getter(spec: ModelSpec) -> Handler:
    def route(app: ApiApp, caller: Caller | None, rest: list[str], q: dict[str, Any], _a: Any) -> Any:
        assert caller is not None
        return app._get(spec, caller, rest[0], q)

    return route


def _links_create(app: ApiApp, caller: Caller | None, rest: list[str], q: dict[str, Any], attrs: Any) -> Any:
    assert caller is not None
    return app.store.get(LINKS, caller, app.store.create_link(caller, attrs))


def _links_update(app: ApiApp, caller: Caller | None, rest: list[str], q: dict[str, Any], attrs: Any) -> Any:
    assert caller is not None
    app.store.update_link(caller, rest[0], attrs)
    return app.store.get(LINKS, caller, rest[0])


def _links_delete(app: ApiApp, caller: Caller | None, rest: list[str], q: dict[str, Any], _a: Any) -> Any:
    assert caller is not None
    return app.store.delete_link(caller, rest[0])


def _groups_create(app: ApiApp, caller: Caller | None, rest: list[str], q: dict[str, Any], attrs: Any) -> Any:
    assert caller is not None
    uuid = app.store.create_group(caller, attrs, bool(q.get("ensure_unique_name")))
    return app.store.get(GROUPS, caller, uuid, include_trash=True)


def _groups_update(app: ApiApp, caller: Caller | None, rest: list[str], q: dict[str, Any], attrs: Any) -> Any:
    assert caller is not None
    app.store.update_group(caller, rest[0], attrs)
    return app.store.get(GROUPS, caller, rest[0], include_trash=True)


def _trasher(table: str, mode: str) -> Handler:
    spec = {"collections": COLLECTIONS, "groups": GROUPS}[table]

    def route(app: ApiApp, caller: Caller | None, rest: list[str], q: dict[str, Any], _a: Any) -> Any:
        assert caller is not None
        if mode == "untrash":
            app.store.untrash(caller, table, rest[0], bool(q.get("ensure_unique_name")))
        else:
            app.store.trash(caller, table, rest[0], mode)
        record = app.store.get(spec, caller, rest[0], include_trash=True)
        return app._sign(record, caller) if spec is COLLECTIONS else record

    return route


def _keep_accessible(app: ApiApp, caller: Caller | None, rest: list[str], q: dict[str, Any], _a: Any) -> Any:
    return {"kind": "arvados#keepServiceList", "etag": "", "self_link": "", "offset": 0, "limit": 1,
            "items_available": 1, "items": [app.keep_service()]}


def _list(spec: ModelSpec) -> Handler:
    def route(app: ApiApp, caller: Caller | None, rest: list[str], q: dict[str, Any], _a: Any) -> Any:
        assert caller is not None
        return app._list(spec, caller, q, include_trash=bool(q.get("include_trash")))

    return route


def _bound(name: str) -> Handler:
    def route(app: ApiApp, caller: Caller | None, rest: list[str], q: dict[str, Any], attrs: Any) -> Any:
        return getattr(app, name)(caller, rest, q, attrs)

    return route


# (HTTP method, resource, number of path segments after the resource | literal action) -> handler
_ROUTES: dict[tuple[str, str, int | str], Handler] = {
    ("GET", "users", "current"): _users_current,
    ("GET", "users", 1): _getter(USERS),
    ("GET", "users", 0): _list(USERS),
    ("GET", "keep_services", "accessible"): _keep_accessible,
    ("GET", "keep_services", 0): _keep_accessible,
    ("GET", "collections", 0): _list(COLLECTIONS),
    ("GET", "collections", 1): _bound("collections_get"),
    ("POST", "collections", 0): _bound("collections_create"),
    ("PUT", "collections", 1): _bound("collections_update"),
    ("PATCH", "collections", 1): _bound("collections_update"),
    ("DELETE", "collections", 1): _trasher("collections", "delete"),
    ("POST", "collections", "trash"): _trasher("collections", "trash"),
    ("POST", "collections", "untrash"): _trasher("collections", "untrash"),
    ("GET", "links", 0): _list(LINKS),
    ("GET", "links", 1): _getter(LINKS),
    ("POST", "links", 0): _links_create,
    ("PUT", "links", 1): _links_update,
    ("PATCH", "links", 1): _links_update,
    ("DELETE", "links", 1): _links_delete,
    ("GET", "groups", 0): _list(GROUPS),
    ("GET", "groups", 1): _getter(GROUPS),
    ("POST", "groups", 0): _groups_create,
    ("PUT", "groups", 1): _groups_update,
    ("PATCH", "groups", 1): _groups_update,
    ("DELETE", "groups", 1): _trasher("groups", "delete"),
    ("POST", "groups", "trash"): _trasher("groups", "trash"),
    ("POST", "groups", "untrash"): _trasher("groups", "untrash"),
}
