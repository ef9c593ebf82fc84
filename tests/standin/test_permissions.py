"""Permission rules: non-admin tokens get clear 4xx answers for what they may not do."""

from __future__ import annotations

import hashlib
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from keepdocker.standin.signing import BlobSigner
from keepdocker.testing.standin import RunningStandin, running_standin

SYSTEM_USER = "zzzzz-tpzed-000000000000000"
EMPTY = "d41d8cd98f00b204e9800998ecf8427e+0"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStandin]:
    """One stand-in for this module: every test makes its own objects and checks only those."""
    with running_standin(tmp_path_factory.mktemp("permissions") / "standin-data") as running:
        yield running


def _keep_put(standin: RunningStandin, data: bytes, token: str) -> str:
    req = urllib.request.Request(standin.keep_url + hashlib.md5(data).hexdigest(), data=data, method="PUT")
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read().decode().strip()


def standin_sign(standin: RunningStandin, locator: str) -> str:
    """Sign a locator for the user token with the key read (read-only) from the live data directory."""
    db = sqlite3.connect(f"file:{standin.data_dir / 'standin.sqlite3'}?mode=ro", uri=True)
    try:
        (key,) = db.execute("SELECT value FROM settings WHERE key = 'blob_signing_key'").fetchone()
    finally:
        db.close()
    signer = BlobSigner(bytes.fromhex(key))
    return signer.sign_locator(locator, standin.user_token, signer.default_expiry())


def _message(payload: object) -> str:
    assert isinstance(payload, dict) and isinstance(payload.get("errors"), list), payload
    return " ".join(payload["errors"])


def _admin_collection(standin: RunningStandin) -> dict[str, object]:
    locator = _keep_put(standin, b"admin secret data", standin.admin_token)
    status, coll = standin.request(
        "POST", "/arvados/v1/collections", body={"manifest_text": f". {locator} 0:17:secret.txt\n", "name": "private"},
        query={"ensure_unique_name": "true"},
    )
    assert status == 200, coll
    return coll


def test_user_cannot_create_link_owned_by_system_user(standin: RunningStandin) -> None:
    """A non-admin creating a link owned by the system user gets 403 naming the owner; an admin may."""
    body = {"link": {"owner_uuid": SYSTEM_USER, "link_class": "docker_image_migration", "name": "migrate_1.9_1.10",
                     "tail_uuid": EMPTY, "head_uuid": EMPTY}}
    status, payload = standin.request("POST", "/arvados/v1/links", token=standin.user_token, body=body)
    assert status == 403
    assert "cannot write to owner_uuid" in _message(payload) and SYSTEM_USER in _message(payload)
    status, link = standin.request("POST", "/arvados/v1/links", body=body)
    assert status == 200, link
    assert link["owner_uuid"] == SYSTEM_USER


def test_user_cannot_read_other_users_private_collection(standin: RunningStandin) -> None:
    """Another user's collection is invisible to a non-admin: get is 404, list omits it, PDH lookup is 404."""
    coll = _admin_collection(standin)
    status, payload = standin.request("GET", f"/arvados/v1/collections/{coll['uuid']}", token=standin.user_token)
    assert status == 404
    assert "not found" in _message(payload)
    status, listing = standin.request("GET", "/arvados/v1/collections", token=standin.user_token)
    assert status == 200 and coll["uuid"] not in {item["uuid"] for item in listing["items"]}
    assert all(item["owner_uuid"] != coll["owner_uuid"] for item in listing["items"])
    status, payload = standin.request(
        "GET", f"/arvados/v1/collections/{coll['portable_data_hash']}", token=standin.user_token
    )
    assert status == 404


def test_user_cannot_link_to_unreadable_collection(standin: RunningStandin) -> None:
    """A link whose head is a collection the user cannot read is refused with 422 "'<uuid>' not found"."""
    coll = _admin_collection(standin)
    status, payload = standin.request(
        "POST", "/arvados/v1/links", token=standin.user_token,
        body={"link_class": "docker_image_hash", "name": "sha256:x", "head_uuid": coll["uuid"]},
    )
    assert status == 422
    assert f"'{coll['uuid']}' not found" in _message(payload)


@pytest.mark.parametrize("forge", ["other-token", "bad-hmac", "unsigned"])
def test_user_cannot_create_collection_with_forged_signature(standin: RunningStandin, forge: str) -> None:
    """Signatures made for another token, tampered with, or missing are refused with 403 for non-admins."""
    data = b"some block data"
    if forge == "other-token":
        locator = _keep_put(standin, data, standin.admin_token)
    elif forge == "bad-hmac":
        signed = _keep_put(standin, data, standin.user_token)
        sig_start = signed.index("+A") + 2
        locator = signed[:sig_start] + ("0" if signed[sig_start] != "0" else "1") + signed[sig_start + 1 :]
    else:
        locator = _keep_put(standin, data, standin.user_token).split("+A")[0]
    status, payload = standin.request(
        "POST", "/arvados/v1/collections", token=standin.user_token,
        body={"collection": {"manifest_text": f". {locator} 0:15:f.txt\n"}},
    )
    assert status == 403
    assert "Permission denied" in _message(payload) and "signature" in _message(payload)


def test_user_can_create_collection_with_own_signature(standin: RunningStandin) -> None:
    """The control case: the user's own signed locator is accepted, stored unsigned, and returned re-signed."""
    locator = _keep_put(standin, b"some block data", standin.user_token)
    status, coll = standin.request(
        "POST", "/arvados/v1/collections", token=standin.user_token,
        body={"manifest_text": f". {locator} 0:15:f.txt\n"},
    )
    assert status == 200, coll
    portable = f". {locator.split('+A')[0]} 0:15:f.txt\n".encode()
    assert coll["portable_data_hash"] == f"{hashlib.md5(portable).hexdigest()}+{len(portable)}"
    assert "+A" in coll["manifest_text"]
    status, listing = standin.request(
        "GET", "/arvados/v1/collections", token=standin.user_token,
        query={"select": ["unsigned_manifest_text"], "filters": [["uuid", "=", coll["uuid"]]]},
    )
    assert listing["items"][0]["unsigned_manifest_text"] == portable.decode()


def test_keep_read_needs_valid_signature(standin: RunningStandin) -> None:
    """Keep GET answers 401 without a signature, 403 with another token's signature, 200 with the right one."""
    signed = _keep_put(standin, b"keep read check", standin.user_token)

    def get(locator: str, token: str) -> tuple[int, bytes]:
        req = urllib.request.Request(standin.keep_url + locator, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    assert get(signed, standin.user_token) == (200, b"keep read check")
    assert get(signed.split("+A")[0], standin.user_token)[0] == 401
    assert get(signed, standin.admin_token)[0] == 403
    assert get("d41d8cd98f00b204e9800998ecf8427e+0", "nonsense") == (200, b"")
    unknown = "0" * 32 + "+5"
    assert get(standin_sign(standin, unknown), standin.user_token)[0] == 404


def test_unauthenticated_api_request_is_401(standin: RunningStandin) -> None:
    """A request with an unknown token gets 401 with the Arvados error body."""
    status, payload = standin.request("GET", "/arvados/v1/users/current", token="v2/zzzzz-gj3su-000000000000000/x")
    assert status == 401
    assert "Not logged in" in _message(payload)
