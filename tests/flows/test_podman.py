"""Podman as the engine: a rootful podman service (vfs, private socket) as DOCKER_HOST for push and push --pull."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from flows.push import push_image
from keepdocker.arv.client import ArvadosSession
from keepdocker.testing.images import rootfs_tar
from keepdocker.testing.podman import podman_service
from keepdocker.testing.registry import local_registry, put_image

BIN = Path(sys.executable).parent


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[str]:
    """A plain-HTTP docker-registry on loopback."""
    with local_registry(tmp_path / "registry") as address:
        yield address


@pytest.fixture()
def podman(registry: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private podman service that may pull from the test registry; DOCKER_HOST points at it."""
    if shutil.which("podman") is None and os.environ.get("CI") != "true":
        pytest.skip("podman is not installed (apt-get install -y podman)")
    with podman_service([registry]) as host:
        monkeypatch.setenv("DOCKER_HOST", host)
        yield host


def _collection_files(session: ArvadosSession, uuid: str) -> tuple[list[str], bytes]:
    import arvados.collection

    reader = arvados.collection.CollectionReader(uuid, api_client=session.api)
    names = list(reader.keys())
    with reader.open(names[0], "rb") as f:
        return names, f.read()


def _listed(image_id: str, uuid: str) -> bool:
    rows = subprocess.run(
        [str(BIN / "arv-keepdocker"), "images"], capture_output=True, text=True, timeout=300, check=True
    ).stdout.splitlines()
    return any(line.split()[2:4] == [image_id[:12], uuid] for line in rows)


def test_push_from_podman(arvados: ArvadosSession, podman: str) -> None:
    """An image in podman is pushed with its podman ID, listed by arv-keepdocker, and loads back with that ID."""
    client = docker.APIClient(base_url=podman)
    client.import_image_from_data(rootfs_tar(71), repository="kd/pod", changes=['CMD ["/bin/sh"]'])
    client.tag("kd/pod:latest", "kd/pod", "v1")  # podman's import ignores the tag parameter
    image_id = client.inspect_image("kd/pod:v1")["Id"]

    result = push_image(image="kd/pod:v1")
    assert (result.action, result.image_id, result.tags) == ("uploaded", image_id, ["kd/pod:v1"])
    assert _listed(image_id, result.collection_uuid)
    names, data = _collection_files(arvados, result.collection_uuid)
    assert names == [f"{image_id}.tar"]
    client.remove_image(image_id, force=True)
    loaded = docker.DockerClient(base_url=podman).images.load(data)
    assert [i.id for i in loaded] == [image_id]


def test_pull_through_podman(arvados: ArvadosSession, registry: str, podman: str) -> None:
    """push --pull makes podman pull from the registry first, then pushes the registry's image ID."""
    _, image_id, _ = put_image(registry, "kd/podpull", "v1", [rootfs_tar(72)])
    result = push_image(image=f"{registry}/kd/podpull:v1", pull=True)
    assert (result.image_id, result.tags) == (image_id, [f"{registry}/kd/podpull:v1"])
    assert _listed(image_id, result.collection_uuid)
    names, _ = _collection_files(arvados, result.collection_uuid)
    assert names == [f"{image_id}.tar"]
