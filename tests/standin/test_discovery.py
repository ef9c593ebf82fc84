"""The stand-in's own discovery document declares what the SDK needs, matching the real document's methods."""

from __future__ import annotations

from typing import Any

from keepdocker.standin.discovery import build_discovery

DOC = build_discovery("https://127.0.0.1:1234/", "zzzzz", 1_209_600)
NEEDED = {
    "collections": {"get", "list", "create", "update", "delete", "trash", "untrash"},
    "links": {"list", "get", "create", "update", "delete"},
    "users": {"current", "get", "list"},
    "groups": {"get", "list", "create", "update", "delete", "trash", "untrash"},
    "keep_services": {"accessible", "list"},
    "configs": {"get"},
}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_root_keys_and_resources() -> None:
    """The cluster-specific root keys are present and every needed method exists with a response key."""
    assert DOC["rootUrl"] == "https://127.0.0.1:1234/" and DOC["servicePath"] == "arvados/v1/"
    assert DOC["uuidPrefix"] == "zzzzz" and DOC["dockerImageFormats"] == ["v2"]
    assert DOC["defaultCollectionReplication"] == 1 and DOC["remoteHosts"] == {}
    for key in ("basePath", "batchPath", "maxRequestSize", "blobSignatureTtl", "revision"):
        assert key in DOC
    for resource, methods in NEEDED.items():
        declared = DOC["resources"][resource]["methods"]
        assert methods <= set(declared)
        assert all("response" in m for m in declared.values())


def test_every_ref_names_a_schema() -> None:
    """Every $ref resolves to a schema (a missing one breaks the SDK at call time)."""
    refs = set(_refs(DOC["resources"]))
    assert refs and refs <= set(DOC["schemas"])


def test_list_parameters_are_json_arrays() -> None:
    """filters, select and order are declared "array" so the SDK sends them as JSON."""
    for resource in ("collections", "links", "users", "groups"):
        params = DOC["resources"][resource]["methods"]["list"]["parameters"]
        assert {params[p]["type"] for p in ("filters", "select", "order")} == {"array"}


def test_methods_match_the_real_document(arvados_methods: dict[str, Any]) -> None:
    """Path, HTTP method, and every parameter (name, type, location) of each method equal the real document's."""
    assert set(arvados_methods["resources"]) == set(NEEDED)
    for resource, methods in NEEDED.items():
        assert set(arvados_methods["resources"][resource]) == methods
        for name in methods:
            ours = DOC["resources"][resource]["methods"][name]
            real = arvados_methods["resources"][resource][name]
            assert (ours["path"], ours["httpMethod"]) == (real["path"], real["httpMethod"]), (resource, name)
            assert ("request" in ours) == real["request"], (resource, name)
            for pname, param in real["parameters"].items():
                assert pname in ours["parameters"], (resource, name, pname)
                mine = ours["parameters"][pname]
                assert (mine["type"], mine["location"]) == (param["type"], param["location"]), (resource, name, pname)
