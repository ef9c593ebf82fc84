"""Verification streams what Arvados serves into a real Docker engine and checks the loaded image ID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keepdocker.arv.client import ArvadosConfig, ArvadosSession, connect
from keepdocker.arv.transfer import CollectionRef, upload_tar
from keepdocker.engine import DockerEngine
from keepdocker.errors import ArvadosUnavailableError, VerificationError
from keepdocker.images.upgrade import upgrade_archive
from keepdocker.testing.standin import running_standin
from keepdocker.testing.v1archives import random_v1_archive
from keepdocker.verify import collection_tar_chunks, verify_collection_loads

pytestmark = pytest.mark.engine


@pytest.fixture()
def session(tmp_path: Path, isolated_home: Path) -> Iterator[ArvadosSession]:
    """An admin session on a fresh stand-in."""
    with running_standin(tmp_path / "standin") as standin:
        yield connect(ArvadosConfig(standin.env["ARVADOS_API_HOST"], standin.admin_token, insecure=True))


def _v2(tmp_path: Path, seed: int) -> tuple[Path, str]:
    """A v2 archive converted from a generated v1 image, and its image ID."""
    generated = random_v1_archive(seed, layers=2)
    src = generated.write(tmp_path / f"v1-{seed}.tar")
    entries = upgrade_archive(src, tmp_path / f"v2-{seed}.tar", (f"verify/seed{seed}:1",), generated.leaves[0])
    return tmp_path / f"v2-{seed}.tar", entries[0].id


def _store(session: ArvadosSession, path: Path, filename: str) -> CollectionRef:
    return upload_tar(session, path, filename, name=filename, owner_uuid=None, properties={})


def test_collection_that_loads_as_its_id_passes(session: ArvadosSession, docker_host: str, tmp_path: Path) -> None:
    """A collection holding the image's v2 tar loads from Keep as the expected ID."""
    path, image_id = _v2(tmp_path, 301)
    ref = _store(session, path, f"{image_id}.tar")
    with DockerEngine(docker_host) as engine:
        loaded = verify_collection_loads(session, ref.pdh, image_id, engine)
    assert image_id in loaded.image_ids


def test_chunks_are_the_stored_bytes(session: ArvadosSession, tmp_path: Path) -> None:
    """The chunks streamed from Keep are exactly the stored file, in order."""
    path, image_id = _v2(tmp_path, 302)
    ref = _store(session, path, f"{image_id}.tar")
    assert b"".join(collection_tar_chunks(session, ref.uuid)) == path.read_bytes()


def test_collection_of_another_image_fails(session: ArvadosSession, docker_host: str, tmp_path: Path) -> None:
    """A collection whose tar is another image fails verification naming both IDs; the error is permanent."""
    path, loaded_id = _v2(tmp_path, 303)
    _, expected_id = _v2(tmp_path, 304)
    ref = _store(session, path, f"{expected_id}.tar")
    with DockerEngine(docker_host) as engine, pytest.raises(VerificationError) as info:
        verify_collection_loads(session, ref.pdh, expected_id, engine)
    assert loaded_id in info.value.message and expected_id in info.value.message
    assert not info.value.temporary


def test_collection_of_junk_fails(session: ArvadosSession, docker_host: str, tmp_path: Path) -> None:
    """A collection whose tar the engine refuses fails verification (permanent), with the engine's reason."""
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar archive at all\n" * 1000)
    expected_id = "sha256:" + "ab" * 32
    ref = _store(session, junk, f"{expected_id}.tar")
    with DockerEngine(docker_host) as engine, pytest.raises(VerificationError, match="does not load as") as info:
        verify_collection_loads(session, ref.pdh, expected_id, engine)
    assert not info.value.temporary


@pytest.mark.slow  # the SDK's own Keep retries back off for about a minute before giving up
def test_keep_failing_during_verify_is_temporary(tmp_path: Path, isolated_home: Path, docker_host: str) -> None:
    """When Keep keeps answering 503, verification fails as ArvadosUnavailableError (retried), not as a mismatch."""
    path, image_id = _v2(tmp_path, 305)
    data_dir = tmp_path / "standin"
    with running_standin(data_dir) as standin:
        session = connect(ArvadosConfig(standin.env["ARVADOS_API_HOST"], standin.admin_token, insecure=True))
        ref = _store(session, path, f"{image_id}.tar")
    with running_standin(data_dir, ["--keep-failure-rate", "1"]) as failing:
        session = connect(ArvadosConfig(failing.env["ARVADOS_API_HOST"], failing.admin_token, insecure=True))
        with DockerEngine(docker_host) as engine, pytest.raises(ArvadosUnavailableError) as info:
            verify_collection_loads(session, ref.pdh, image_id, engine)
    assert info.value.temporary and "Keep" in info.value.message
