"""collections.create/update check the permission signature on every block locator for non-admins, as Arvados does."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import arvados
import arvados.collection
import arvados.keep
import googleapiclient.errors
import pytest

from keepdocker.testing.standin import RunningStandin, running_standin

SIZES = (1000, 777, 1501)  # odd block sizes, so segments start and end mid-block


def _api(standin: RunningStandin, token: str) -> Any:
    return arvados.api(
        "v1", host=standin.env["ARVADOS_API_HOST"], token=token, insecure=True, num_retries=0, cache=False
    )


def _blocks(api: Any, seed: int) -> tuple[list[str], bytes]:
    """Three blocks put into Keep with ``api``'s token: their signed locators and their bytes concatenated."""
    rng = random.Random(seed)
    keep = arvados.keep.KeepClient(api_client=api, num_retries=0)
    datas = [rng.randbytes(n) for n in SIZES]
    return [str(keep.put(d, copies=1)) for d in datas], b"".join(datas)


def _create(api: Any, manifest: str) -> dict[str, Any]:
    return dict(api.collections().create(body={"collection": {"manifest_text": manifest}}).execute())


def _signed_locators(api: Any, uuid: str) -> list[str]:
    """The block locators of a collection's (one-stream) manifest, signed for ``api``'s token by a fresh get."""
    text = api.collections().get(uuid=uuid).execute()["manifest_text"]
    return [t for t in text.split("\n")[0].split(" ")[1:] if ":" not in t]


def _read(api: Any, uuid: str, name: str) -> bytes:
    reader = arvados.collection.CollectionReader(uuid, api_client=api, num_retries=0)
    with reader.open(name, "rb") as f:
        return bytes(f.read())


def _status(exc: googleapiclient.errors.HttpError) -> tuple[int, str]:
    return int(exc.resp.status), exc.content.decode(errors="replace")


@pytest.fixture()
def source(standin: RunningStandin, isolated_home: Path) -> tuple[Any, str, bytes]:
    """A user's API client and a collection of three odd-sized blocks holding one file ``src.bin``."""
    user = _api(standin, standin.user_token)
    locs, data = _blocks(user, 1)
    coll = _create(user, f". {' '.join(locs)} 0:{len(data)}:src.bin\n")
    return user, coll["uuid"], data


def test_user_reuses_signed_blocks_of_a_readable_collection(source: tuple[Any, str, bytes]) -> None:
    """A manifest over some of a fresh get's signed blocks, with mid-block segments, is accepted and reads back."""
    user, uuid, data = source
    locs = _signed_locators(user, uuid)
    # Blocks 2 and 3 only; the file is two segments, out of order: the tail of block 3, then mid-block 2 to mid-block 3.
    start2 = SIZES[0]
    manifest = f". {locs[1]} {locs[2]} {SIZES[1] + 1000}:501:new.bin 100:1200:new.bin\n"
    coll = _create(user, manifest)
    want = data[start2 + SIZES[1] + 1000 :] + data[start2 + 100 : start2 + 1300]
    assert _read(user, coll["uuid"], "new.bin") == want
    stored = user.collections().get(uuid=coll["uuid"]).execute()
    assert stored["manifest_text"].count("+A") == 2


@pytest.mark.parametrize("forge", ["unsigned", "tampered-signature", "tampered-expiry", "other-token"])
@pytest.mark.parametrize("where", ["create", "update"])
def test_one_bad_locator_among_good_ones_is_403(
    standin: RunningStandin, source: tuple[Any, str, bytes], forge: str, where: str
) -> None:
    """The last of three locators unsigned, tampered, or signed for another token gives 403 naming the locator."""
    user, uuid, _ = source
    locs = _signed_locators(user, uuid)
    if forge == "other-token":
        locs = [*locs[:2], _signed_locators(_api(standin, standin.admin_token), uuid)[2]]
    else:
        head, sig = locs[2].split("+A")
        hexsig, expiry = sig.split("@")
        if forge == "unsigned":
            locs[2] = head
        elif forge == "tampered-signature":
            locs[2] = f"{head}+A{hexsig[:-1]}{'0' if hexsig[-1] != '0' else '1'}@{expiry}"
        else:  # a later expiry under the same signature
            locs[2] = f"{head}+A{hexsig}@{int(expiry, 16) + 3600:08x}"
    manifest = f". {' '.join(locs)} 0:{sum(SIZES)}:copy.bin\n"
    with pytest.raises(googleapiclient.errors.HttpError) as info:
        if where == "create":
            _create(user, manifest)
        else:
            target = _create(user, "")
            user.collections().update(uuid=target["uuid"], body={"collection": {"manifest_text": manifest}}).execute()
    status, body = _status(info.value)
    assert status == 403
    assert "Permission denied" in body and locs[2].split("+")[0] in body and "signature" in body


def test_bad_locator_on_a_later_stream_is_403(source: tuple[Any, str, bytes]) -> None:
    """Every stream line is checked, not just the first."""
    user, uuid, _ = source
    locs = _signed_locators(user, uuid)
    manifest = f". {locs[0]} 0:{SIZES[0]}:a.bin\n./sub {locs[1].split('+A')[0]} 0:{SIZES[1]}:b.bin\n"
    with pytest.raises(googleapiclient.errors.HttpError) as info:
        _create(user, manifest)
    assert _status(info.value)[0] == 403


def test_unsigned_locator_out_of_place_is_403_before_the_form_is_checked(source: tuple[Any, str, bytes]) -> None:
    """A locator after the file segments is still a referenced block: unsigned, it is refused as unsigned (403)."""
    user, uuid, _ = source
    locs = _signed_locators(user, uuid)
    manifest = f". {locs[0]} 0:{SIZES[0]}:a.bin {locs[1].split('+A')[0]}\n"
    with pytest.raises(googleapiclient.errors.HttpError) as info:
        _create(user, manifest)
    status, body = _status(info.value)
    assert status == 403 and "no +A permission signature" in body


def test_admin_skips_the_signature_check(standin: RunningStandin, source: tuple[Any, str, bytes]) -> None:
    """An admin token may reference blocks with no signature at all (the API server's admin bypass)."""
    user, uuid, data = source
    admin = _api(standin, standin.admin_token)
    bare = [loc.split("+A")[0] for loc in _signed_locators(user, uuid)]
    coll = _create(admin, f". {' '.join(bare)} 0:{len(data)}:all.bin\n")
    assert _read(admin, coll["uuid"], "all.bin") == data


@pytest.fixture()
def short_ttl(tmp_path: Path, isolated_home: Path) -> Iterator[RunningStandin]:
    """A stand-in whose block signatures are valid for 2 seconds."""
    with running_standin(tmp_path / "short-ttl", blob_signature_ttl=2) as running:
        yield running


def test_expired_signature_needs_a_fresh_get(short_ttl: RunningStandin) -> None:
    """Locators from a get older than the TTL are refused (403 expired); the same blocks re-signed by a new get pass."""
    user = _api(short_ttl, short_ttl.user_token)
    assert user._rootDesc["blobSignatureTtl"] == 2
    status, config = short_ttl.request("GET", "/arvados/v1/config")
    assert status == 200 and config["Collections"]["BlobSigningTTL"] == "2s"
    locs, data = _blocks(user, 2)
    coll = _create(user, f". {' '.join(locs)} 0:{len(data)}:src.bin\n")
    stale = _signed_locators(user, coll["uuid"])
    time.sleep(3.1)
    manifest = f". {' '.join(stale)} 0:{len(data)}:copy.bin\n"
    with pytest.raises(googleapiclient.errors.HttpError) as info:
        _create(user, manifest)
    status, body = _status(info.value)
    assert status == 403 and "expired" in body
    fresh = _signed_locators(user, coll["uuid"])
    assert [f.split("+A")[0] for f in fresh] == [s.split("+A")[0] for s in stale] and fresh != stale
    copy = _create(user, f". {' '.join(fresh)} 0:{len(data)}:copy.bin\n")
    assert _read(user, copy["uuid"], "copy.bin") == data
