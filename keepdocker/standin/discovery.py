"""The stand-in's own discovery document: the resources, methods and parameters the Python SDK needs."""

from __future__ import annotations

from typing import Any

__all__ = ["REVISION", "build_discovery"]

REVISION = "20250402"
MAX_REQUEST_SIZE = 134_217_728


def _p(kind: str, location: str = "query", required: bool = False, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "location": location, "required": required, **extra}


def _uuid() -> dict[str, Any]:
    return _p("string", "path", True, description="The UUID of the object.")


_SELECT = _p("array", description="Attributes of the object to return in the response.")
_LIST_PARAMS: dict[str, Any] = {
    "filters": _p("array"),
    "where": _p("object"),
    "order": _p("array"),
    "select": _p("array"),
    "distinct": _p("boolean", default="false"),
    "limit": _p("integer", default="100"),
    "offset": _p("integer", default="0"),
    "count": _p("string", default="exact"),
    "cluster_id": _p("string"),
    "bypass_federation": _p("boolean"),
}
_CREATE_PARAMS: dict[str, Any] = {
    "select": _SELECT,
    "ensure_unique_name": _p("boolean", default="false"),
    "cluster_id": _p("string"),
}


def _method(
    resource: str,
    name: str,
    http: str,
    path: str,
    response: str | None,
    params: dict[str, Any] | None = None,
    request: str | None = None,
) -> dict[str, Any]:
    method: dict[str, Any] = {
        "id": f"arvados.{resource}.{name}",
        "path": path,
        "httpMethod": http,
        "parameters": dict(params or {}),
        "response": {"$ref": response} if response else {},
        "scopes": ["https://api.arvados.org/auth/arvados"],
    }
    if request is not None:
        singular = request[0].lower() + request[1:]
        method["request"] = {"required": True, "properties": {singular: {"$ref": request}}}
    return method


def _crud(resource: str, schema: str, trash: bool, extra_list: dict[str, Any] | None = None) -> dict[str, Any]:
    """get/list/create/update/delete (and trash/untrash) of one record resource."""
    get_params: dict[str, Any] = {"uuid": _uuid(), "select": _SELECT}
    if trash:
        get_params["include_trash"] = _p("boolean", default="false")
    methods = {
        "get": _method(resource, "get", "GET", f"{resource}/{{uuid}}", schema, get_params),
        "list": _method(resource, "list", "GET", resource, f"{schema}List", {**_LIST_PARAMS, **(extra_list or {})}),
        "create": _method(resource, "create", "POST", resource, schema, _CREATE_PARAMS, request=schema),
        "update": _method(
            resource, "update", "PUT", f"{resource}/{{uuid}}", schema, {"uuid": _uuid(), "select": _SELECT},
            request=schema,
        ),
        "delete": _method(resource, "delete", "DELETE", f"{resource}/{{uuid}}", schema, {"uuid": _uuid()}),
    }
    if trash:
        methods["trash"] = _method(resource, "trash", "POST", f"{resource}/{{uuid}}/trash", schema, {"uuid": _uuid()})
        methods["untrash"] = _method(
            resource, "untrash", "POST", f"{resource}/{{uuid}}/untrash", schema,
            {"uuid": _uuid(), "ensure_unique_name": _p("boolean", default="false")},
        )
    return methods


def _resources() -> dict[str, Any]:
    collections = _crud(
        "collections", "Collection", trash=True,
        extra_list={"include_trash": _p("boolean", default="false"),
                    "include_old_versions": _p("boolean", default="false")},
    )
    for name in ("create", "update"):
        collections[name]["parameters"].update(replace_files=_p("object"), replace_segments=_p("object"))
    links = _crud("links", "Link", trash=False)
    groups = _crud("groups", "Group", trash=True, extra_list={"include_trash": _p("boolean", default="false")})
    for name in ("create", "update"):
        groups[name]["parameters"]["async"] = _p("boolean", default="false")
    users = {
        "current": _method("users", "current", "GET", "users/current", "User"),
        "get": _method("users", "get", "GET", "users/{uuid}", "User", {"uuid": _uuid(), "select": _SELECT}),
        "list": _method("users", "list", "GET", "users", "UserList", _LIST_PARAMS),
    }
    keep_services = {
        "accessible": _method("keep_services", "accessible", "GET", "keep_services/accessible", "KeepService"),
        "list": _method("keep_services", "list", "GET", "keep_services", "KeepServiceList", _LIST_PARAMS),
    }
    configs = {"get": _method("configs", "get", "GET", "config", None)}
    return {
        "collections": {"methods": collections},
        "links": {"methods": links},
        "groups": {"methods": groups},
        "users": {"methods": users},
        "keep_services": {"methods": keep_services},
        "configs": {"methods": configs},
    }


_SCHEMAS: dict[str, tuple[str, dict[str, str]]] = {
    "Collection": ("4zz18", {"uuid": "string", "owner_uuid": "string", "name": "string",
                             "manifest_text": "text", "portable_data_hash": "string", "properties": "Hash",
                             "trash_at": "datetime", "created_at": "datetime", "modified_at": "datetime"}),
    "Link": ("o0j2j", {"uuid": "string", "owner_uuid": "string", "link_class": "string", "name": "string",
                       "head_uuid": "string", "tail_uuid": "string", "properties": "Hash",
                       "created_at": "datetime"}),
    "Group": ("j7d0g", {"uuid": "string", "owner_uuid": "string", "name": "string", "group_class": "string",
                        "properties": "Hash", "trash_at": "datetime", "created_at": "datetime"}),
    "User": ("tpzed", {"uuid": "string", "owner_uuid": "string", "email": "string", "is_admin": "boolean",
                       "is_active": "boolean", "created_at": "datetime"}),
    "KeepService": ("bi6l4", {"uuid": "string", "service_host": "string", "service_port": "integer",
                              "service_ssl_flag": "boolean", "service_type": "string", "read_only": "boolean"}),
}


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for name, (infix, props) in _SCHEMAS.items():
        schemas[name] = {
            "id": name,
            "type": "object",
            "uuidPrefix": infix,
            "properties": {k: {"type": v} for k, v in props.items()},
        }
        schemas[f"{name}List"] = {
            "id": f"{name}List",
            "type": "object",
            "properties": {
                "kind": {"type": "string", "default": f"arvados#{name[0].lower()}{name[1:]}List"},
                "etag": {"type": "string"},
                "items": {"type": "array", "items": {"$ref": name}},
                "items_available": {"type": "integer"},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
            },
        }
    return schemas


def build_discovery(root_url: str, cluster_id: str, blob_signature_ttl: int) -> dict[str, Any]:
    """The discovery document for an API served at ``root_url`` (ending in "/")."""
    return {
        "kind": "discovery#restDescription",
        "discoveryVersion": "v1",
        "id": "arvados:v1",
        "name": "arvados",
        "version": "v1",
        "revision": REVISION,
        "title": "Arvados API (keepdocker stand-in)",
        "description": "A local stand-in that speaks the subset of the Arvados API used by the SDK and keepdocker.",
        "protocol": "rest",
        "rootUrl": root_url,
        "baseUrl": f"{root_url}arvados/v1/",
        "servicePath": "arvados/v1/",
        "basePath": "/arvados/v1/",
        "batchPath": "batch",
        "uuidPrefix": cluster_id,
        "defaultCollectionReplication": 1,
        "defaultTrashLifetime": 1_209_600,
        "blobSignatureTtl": blob_signature_ttl,
        "maxRequestSize": MAX_REQUEST_SIZE,
        "maxItemsPerResponse": 1000,
        "dockerImageFormats": ["v2"],
        "remoteHosts": {},
        "remoteHostsViaDNS": False,
        "parameters": {
            "alt": {"type": "string", "default": "json", "enum": ["json"], "location": "query"},
        },
        "auth": {"oauth2": {"scopes": {"https://api.arvados.org/auth/arvados": {"description": "All access."}}}},
        "schemas": _schemas(),
        "resources": _resources(),
    }
