"""Record rules of the store: PDH, unique names, trash, ownership, visibility, sharing and restart."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from keepdocker.standin.errors import ApiError
from keepdocker.standin.filters import parse_list_params
from keepdocker.standin.manifest import portable_data_hash, strip_signatures, validate_manifest
from keepdocker.standin.models import COLLECTIONS, GROUPS
from keepdocker.standin.store import Caller, Store

BLOCK = "acbd18db4cc2f85cedef654fccc4a4d8+3"


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    """A fresh store."""
    return Store(tmp_path / "db.sqlite3")


def _caller(store: Store, role: str) -> Caller:
    return Caller(store.token_user(role), role == "admin", store.token(role))


def _visible(store: Store, caller: Caller, uuid: str) -> bool:
    try:
        store.get(COLLECTIONS, caller, uuid)
    except ApiError as exc:
        assert exc.status == 404
        return False
    return True


def test_pdh_strips_hints_without_normalizing() -> None:
    """The PDH is md5 of the text with locators cut to md5+size, keeping odd escapes and order as given."""
    signature = "+A" + "f" * 40 + "@12345678"
    text = f"./b {BLOCK}+K@zzzzz{signature} 0:3:sha256:x.tar\n. {BLOCK} 0:3:a\n"
    portable = f"./b {BLOCK} 0:3:sha256:x.tar\n. {BLOCK} 0:3:a\n".encode()
    assert portable_data_hash(text) == f"{hashlib.md5(portable).hexdigest()}+{len(portable)}"
    assert portable_data_hash("") == "d41d8cd98f00b204e9800998ecf8427e+0"
    assert strip_signatures(text).startswith(f"./b {BLOCK}+K@zzzzz 0:3")


@pytest.mark.parametrize(
    "text",
    ["no newline", f". {BLOCK} 0:3:a", f"bad {BLOCK} 0:3:a\n", ". 0:3:a\n", f". {BLOCK}\n", f". {BLOCK} 0:9:a\n"],
)
def test_malformed_manifests_are_refused(store: Store, text: str) -> None:
    """Broken manifest grammar is a 422 naming the problem, never a stored record."""
    with pytest.raises(ApiError) as info:
        store.create_collection(_caller(store, "user"), {"manifest_text": text})
    assert info.value.status == 422 and "manifest" in info.value.message
    assert validate_manifest(f". {BLOCK} 0:1:a 1:2:b 0:0:\\056\n").file_count == 3


def test_ensure_unique_name_uses_uuid_suffix(store: Store) -> None:
    """A clash is 422 without ensure_unique_name and gets " (<last 15 of uuid>)" with it (Arvados >= 3.0)."""
    user = _caller(store, "user")
    store.create_collection(user, {"name": "Docker image foo"})
    with pytest.raises(ApiError) as info:
        store.create_collection(user, {"name": "Docker image foo"})
    assert info.value.status == 422 and "already exists" in info.value.message
    uuid = store.create_collection(user, {"name": "Docker image foo"}, ensure_unique_name=True)
    assert store.get(COLLECTIONS, user, uuid)["name"] == f"Docker image foo ({uuid[-15:]})"
    long_uuid = store.create_collection(user, {"name": "x" * 250}, ensure_unique_name=False)
    clash = store.create_collection(user, {"name": "x" * 250}, ensure_unique_name=True)
    assert store.get(COLLECTIONS, user, clash)["name"] == "x" * 237 + f" ({clash[-15:]})"
    assert long_uuid != clash


def test_trash_hides_frees_name_and_untrash_restores(store: Store) -> None:
    """Trashed collections vanish from get/list (not with include_trash) and free their name; untrash reverses."""
    user = _caller(store, "user")
    uuid = store.create_collection(user, {"name": "n", "manifest_text": f". {BLOCK} 0:3:a\n"})
    store.trash(user, "collections", uuid, "delete")
    assert not _visible(store, user, uuid)
    assert store.get(COLLECTIONS, user, uuid, include_trash=True)["is_trashed"] is True
    other = store.create_collection(user, {"name": "n"})
    with pytest.raises(ApiError, match="already exists"):
        store.untrash(user, "collections", uuid)
    store.untrash(user, "collections", uuid, ensure_unique_name=True)
    assert _visible(store, user, uuid) and _visible(store, user, other)
    with pytest.raises(ApiError, match="not in the trash"):
        store.untrash(user, "collections", uuid)


def test_ownership_and_write_checks(store: Store) -> None:
    """Owners must be users or projects; users write only to themselves and projects they own (recursively)."""
    user, admin = _caller(store, "user"), _caller(store, "admin")
    project = store.create_group(user, {"name": "p", "group_class": "project"})
    sub = store.create_group(user, {"name": "sub", "group_class": "project", "owner_uuid": project})
    store.create_collection(user, {"name": "in sub", "owner_uuid": sub})
    admin_project = store.create_group(admin, {"name": "a", "group_class": "project"})
    with pytest.raises(ApiError) as info:
        store.create_collection(user, {"owner_uuid": admin_project})
    assert info.value.status == 403 and "cannot write to owner_uuid" in info.value.message
    coll = store.create_collection(user, {"name": "c"})
    with pytest.raises(ApiError) as info:
        store.create_collection(user, {"owner_uuid": coll})
    assert info.value.status == 422 and "must be a user or project" in info.value.message
    role = store.create_group(admin, {"name": "r", "group_class": "role"})
    with pytest.raises(ApiError, match="must be a project"):
        store.create_collection(admin, {"owner_uuid": role})
    with pytest.raises(ApiError) as info:
        store.update_collection(user, coll, {"owner_uuid": admin_project})
    assert info.value.status == 403


def test_visibility_follows_owner_chain_and_permission_links(store: Store) -> None:
    """Users read what they or their projects own; a can_read link shares a project read-only; admins read all."""
    user, admin = _caller(store, "user"), _caller(store, "admin")
    shared = store.create_group(admin, {"name": "shared", "group_class": "project"})
    inner = store.create_group(admin, {"name": "inner", "group_class": "project", "owner_uuid": shared})
    coll = store.create_collection(admin, {"name": "deep", "owner_uuid": inner})
    assert not _visible(store, user, coll)
    store.create_link(admin, {"link_class": "permission", "name": "can_read", "tail_uuid": user.user_uuid,
                              "head_uuid": shared})
    assert _visible(store, user, coll)
    with pytest.raises(ApiError) as info:
        store.update_collection(user, coll, {"name": "mine now"})
    assert info.value.status == 403
    store.trash(admin, "groups", shared, "trash")
    assert not _visible(store, user, coll)
    assert not _visible(store, admin, coll)
    listed, _ = store.list_records(GROUPS, user, parse_list_params(GROUPS, {}))
    assert listed == []


def test_records_and_clock_survive_reopen(tmp_path: Path) -> None:
    """Reopening the database keeps tokens, keys and records, and new created_at values stay later than old ones."""
    first = Store(tmp_path / "db.sqlite3")
    user = _caller(first, "user")
    uuid = first.create_collection(user, {"name": "kept"})
    created = first.get(COLLECTIONS, user, uuid)["created_at"]
    tokens, key = (first.token("admin"), first.token("user")), first.signing_key
    first.close()
    second = Store(tmp_path / "db.sqlite3")
    assert (second.token("admin"), second.token("user")) == tokens and second.signing_key == key
    again = _caller(second, "user")
    assert second.get(COLLECTIONS, again, uuid)["name"] == "kept"
    newer = second.create_collection(again, {"name": "new"})
    assert second.get(COLLECTIONS, again, newer)["created_at"] > created


def test_request_after_close_is_a_temporary_503(store: Store) -> None:
    """A request still in flight when the stand-in stops gets 503 (clients retry), not a permanent internal error."""
    caller = _caller(store, "admin")
    store.close()
    with pytest.raises(ApiError) as raised:
        store.get(COLLECTIONS, caller, "zzzzz-4zz18-000000000000000")
    assert raised.value.status == 503
    assert "shutting down" in raised.value.message


def test_stop_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    """A request the stand-in is still handling when it stops is answered from the open database, not refused."""
    import json
    import ssl
    import threading
    import urllib.request

    from keepdocker.standin.server import Standin, StandinConfig

    server = Standin(StandinConfig(tmp_path / "data", latency_ms=700))
    env = server.start()
    tls = ssl.create_default_context(cafile=env["KEEPDOCKER_STANDIN_CA_FILE"])
    request = urllib.request.Request(
        f"https://{env['ARVADOS_API_HOST']}/arvados/v1/users/current",
        headers={"Authorization": f"Bearer {env['ARVADOS_API_TOKEN']}"},
    )
    answers: list[tuple[int, dict[str, object]]] = []

    def call() -> None:
        with urllib.request.urlopen(request, context=tls, timeout=30) as response:
            answers.append((response.status, json.load(response)))

    caller = threading.Thread(target=call)
    caller.start()
    assert server.stats.wait_in_flight(lambda n: n > 0, 10), "the request never arrived"
    server.stop()
    caller.join(30)
    assert answers and answers[0][0] == 200, answers
    assert answers[0][1].get("is_admin") is True
