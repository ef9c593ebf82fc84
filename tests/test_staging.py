"""A save's blocks put into Keep as they stream into the cache: the upload then only creates the collection."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import arvados.collection
import pytest

from keepdocker.arv import staging
from keepdocker.arv.client import ArvadosConfig, ArvadosSession, connect
from keepdocker.arv.staging import StagingUpload
from keepdocker.arv.transfer import upload_tar
from keepdocker.cache import CachedFile, TarCache
from keepdocker.testing.standin import RunningStandin, running_standin

DATA = random.Random(7).randbytes(5 * (1 << 20) + 123)


def _session(standin: RunningStandin, token: str) -> ArvadosSession:
    return connect(ArvadosConfig(standin.env["ARVADOS_API_HOST"], token, insecure=True))


def _fill(data: bytes, fail_at: int | None = None) -> Callable[[object], None]:
    def fill(sink: object) -> None:
        for at in range(0, len(data), 1 << 16):
            if fail_at is not None and at >= fail_at:
                raise OSError("the save broke off")
            sink.write(data[at : at + (1 << 16)])  # type: ignore[attr-defined]

    return fill


def _stage(session: ArvadosSession, cache: TarCache, key: str = "sha256:" + "ab" * 32) -> CachedFile:
    return cache.put_stream(key, StagingUpload(session).tee(_fill(DATA)))


def _put_bytes(standin: RunningStandin) -> int:
    return int(standin.stats()["requests"].get("keep PUT bytes", 0))


def _read(session: ArvadosSession, uuid: str, name: str) -> bytes:
    reader = arvados.collection.CollectionReader(uuid, api_client=session.api, num_retries=0)
    with reader.open(name, "rb") as f:
        return bytes(f.read())


def _upload(session: ArvadosSession, entry: CachedFile, name: str = "img.tar") -> str:
    ref = upload_tar(session, entry.path, name, name=name, owner_uuid=None, properties={}, expected_sha256=entry.sha256)
    assert ref.size == len(DATA)
    return ref.uuid


@pytest.fixture()
def standin(tmp_path: Path, isolated_home: Path) -> Iterator[RunningStandin]:
    """A fresh stand-in."""
    with running_standin(tmp_path / "standin") as running:
        yield running


def test_staged_blocks_become_the_collection_without_reading_the_file(standin: RunningStandin, tmp_path: Path) -> None:
    """Keep receives the bytes once, during the save; the upload reads no byte of the file (here: overwritten)."""
    user = _session(standin, standin.user_token)  # not an admin: the stand-in checks every staged signature
    entry = _stage(user, TarCache(tmp_path / "cache"))
    assert entry.created and entry.size == len(DATA)
    put_during_save = _put_bytes(standin)
    assert put_during_save == len(DATA)
    with open(entry.path, "r+b") as f:  # same size, other bytes: an upload that read the file would publish these
        f.write(b"\0" * len(DATA))
    uuid = _upload(user, entry)
    assert _read(user, uuid, "img.tar") == DATA
    assert _put_bytes(standin) == put_during_save
    assert staging.take(user, entry.sha256, entry.size) is None, "a staging is used once"


def test_another_token_uploads_the_file(standin: RunningStandin, tmp_path: Path) -> None:
    """Blocks signed for one token are not offered to another: that upload reads and sends the file itself."""
    user = _session(standin, standin.user_token)
    entry = _stage(user, TarCache(tmp_path / "cache"))
    admin = _session(standin, standin.admin_token)
    assert staging.take(admin, entry.sha256, entry.size) is None
    uuid = _upload(admin, entry)
    assert _read(admin, uuid, "img.tar") == DATA
    assert _put_bytes(standin) == 2 * len(DATA)
    staging.take(user, entry.sha256, entry.size)  # leave nothing staged for later tests


def test_expired_staging_falls_back_to_uploading(tmp_path: Path, isolated_home: Path) -> None:
    """Staged signatures that expired before the upload are refused by the server; the file is uploaded instead."""
    with running_standin(tmp_path / "short-ttl", blob_signature_ttl=2) as standin:
        user = _session(standin, standin.user_token)
        entry = _stage(user, TarCache(tmp_path / "cache"))
        time.sleep(3.1)
        uuid = _upload(user, entry)
        assert _read(user, uuid, "img.tar") == DATA
        assert _put_bytes(standin) == 2 * len(DATA)


def test_a_broken_save_stages_nothing_and_leaves_no_file(standin: RunningStandin, tmp_path: Path) -> None:
    """A save that fails midway leaves no cache entry and nothing for an upload to take."""
    user = _session(standin, standin.user_token)
    cache = TarCache(tmp_path / "cache")
    teed = StagingUpload(user)
    with pytest.raises(OSError, match="broke off"):
        cache.put_stream("sha256:" + "cd" * 32, teed.tee(_fill(DATA, fail_at=3 << 20)))
    assert teed.staged is None
    assert [p for p in os.listdir(cache.root) if not p.endswith(".lock")] == []
