"""push-image with no Docker engine: straight from docker-registry on loopback, and archives pushed under their tags."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from flows.push import push_image
from keepdocker.arv.catalog import REPO_TAG_LINK, keyset, list_images
from keepdocker.arv.client import ArvadosSession
from keepdocker.engine import DockerEngine
from keepdocker.errors import UsageError
from keepdocker.requests import PushRequest
from keepdocker.standin.tls import ensure_certificate
from keepdocker.testing.images import build_image, rootfs_tar
from keepdocker.testing.registry import local_registry, push_to_registry, put_image, put_index, write_htpasswd

BIN = Path(sys.executable).parent


def _keepdocker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "keepdocker"), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _single_file(session: ArvadosSession, uuid: str) -> tuple[list[str], bytes]:
    import arvados.collection

    reader = arvados.collection.CollectionReader(uuid, api_client=session.api)
    names = list(reader.keys())
    with reader.open(names[0], "rb") as f:
        return names, f.read()


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[str]:
    """A plain-HTTP docker-registry on loopback."""
    with local_registry(tmp_path / "registry") as address:
        yield address


@pytest.fixture()
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """DOCKER_HOST pointing at a socket nobody listens on."""
    host = f"unix://{tmp_path}/no-engine.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    return host


@pytest.mark.engine
def test_registry_image_is_pushed_without_an_engine(
    arvados: ArvadosSession, docker_host: str, registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image dockerd pushed to the registry lands in Keep with no engine: the `docker pull` ID, one tar, loadable."""
    built = build_image(docker_host, "kd/reg-flow-src", "v1", seed=51, payload_bytes=200_000)
    name = f"{registry}/kd/reg-flow"
    push_to_registry(docker_host, built, name, "v1")
    client = docker.DockerClient(base_url=docker_host)
    client.images.remove(built, force=True)
    image_id = client.images.pull(name, tag="v1").id
    client.images.remove(image_id, force=True)

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    result = push_image(image=f"{name}:v1", from_registry=True)
    assert (result.action, result.image_id, result.tags) == ("uploaded", image_id, [f"{name}:v1"])
    listing = subprocess.run(
        [str(BIN / "arv-keepdocker"), "images"], capture_output=True, text=True, timeout=300, check=True
    ).stdout.splitlines()
    assert any(line.split()[:4] == [name, "v1", image_id[:12], result.collection_uuid] for line in listing), listing
    names, data = _single_file(arvados, result.collection_uuid)
    assert names == [f"{image_id}.tar"]
    assert [i.id for i in client.images.load(data)] == [image_id]

    again = _keepdocker("push", name, "v1", "--from-registry")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == result.collection_uuid


def test_platform_parameter_picks_from_an_index(arvados: ArvadosSession, registry: str, no_engine: str) -> None:
    """from_registry with platform linux/arm64 pushes the arm64 image of a two-platform OCI index."""
    amd = put_image(registry, "kd/multi", "amd64", [rootfs_tar(61, busybox=False)], "amd64")
    arm = put_image(registry, "kd/multi", "arm64", [rootfs_tar(62, busybox=False)], "arm64", "v8")
    put_index(registry, "kd/multi", "v2", [(amd[0], amd[2], "linux/amd64"), (arm[0], arm[2], "linux/arm64/v8")])
    result = push_image(image=f"{registry}/kd/multi:v2", from_registry=True, platform="linux/arm64")
    assert result.image_id == arm[1]
    default = push_image(image=f"{registry}/kd/multi:v2", from_registry=True)
    assert default.image_id == amd[1]
    rows = list_images(arvados, f"{registry}/kd/multi", "v2")
    assert {r.image_id for r in rows} == {amd[1], arm[1]}


def test_cli_errors_are_one_line_and_exit_1(
    arvados: ArvadosSession, registry: str, no_engine: str, tmp_path: Path, prefect_server: str
) -> None:
    """A missing tag, missing repository, wrong password and untrusted certificate: one line each, exit 1."""
    env = {"PREFECT_API_URL": prefect_server, "KEEPDOCKER_RETRY_DELAY": "0"}
    put_image(registry, "kd/cli", "v1", [rootfs_tar(63, busybox=False)])
    cert, key = ensure_certificate(tmp_path / "tls", ["127.0.0.1"])
    htpasswd = write_htpasswd(tmp_path / "htpasswd", "kd", "right-pw")
    config = tmp_path / "docker-config"
    config.mkdir()
    with local_registry(tmp_path / "secure", htpasswd=htpasswd, tls=(cert, key)) as secure:
        import base64

        auth = base64.b64encode(b"kd:wrong-pw").decode()
        (config / "config.json").write_text(f'{{"auths": {{"{secure}": {{"auth": "{auth}"}}}}}}')
        cases = {
            "no such tag": ["push", f"{registry}/kd/cli:nope", "--from-registry"],
            "no such repository": ["push", f"{registry}/kd/absent:v1", "--from-registry"],
            "refused the credentials": ["push", f"{secure}/kd/cli:v1", "--from-registry", "--registry-ca", str(cert)],
            "is not trusted": ["push", f"{secure}/kd/cli:v1", "--from-registry"],
        }
        for expected, argv in cases.items():
            run = _keepdocker(*argv, env={**env, "DOCKER_CONFIG": str(config)})
            lines = run.stderr.strip().splitlines()
            assert run.returncode == 1, (expected, run.stderr)
            assert len(lines) == 1 and expected in lines[0] and "wrong-pw" not in run.stderr, (expected, lines)


@pytest.mark.engine
def test_archive_without_a_name_is_pushed_under_its_own_tags(
    arvados: ArvadosSession, docker_host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: str
) -> None:
    """`push --from-archive FILE` alone links the archive's tags; an archive of two images is refused, listing both."""
    first = build_image(docker_host, "kd/own", "v1", seed=64)
    client = docker.APIClient(base_url=docker_host)
    client.tag(first, "kd/own", "also")
    second = build_image(docker_host, "kd/other", "v1", seed=65)
    one, two = tmp_path / "one.tar", tmp_path / "two.tar"
    with DockerEngine(docker_host) as engine:
        engine.save(["kd/own:v1", "kd/own:also"], one)
        engine.save(["kd/own:v1", "kd/other:v1"], two)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")

    result = push_image(from_archive=str(one))
    assert (result.image_id, sorted(result.tags)) == (first, ["kd/own:also", "kd/own:v1"])
    links = keyset(arvados, "links", [["link_class", "=", REPO_TAG_LINK]])
    assert sorted(lk["name"] for lk in links) == ["kd/own:also", "kd/own:v1"]
    with pytest.raises(UsageError, match="holds 2 images") as many:
        push_image(from_archive=str(two))
    assert first in many.value.message and second in many.value.message

    cli = _keepdocker("push", "--from-archive", str(two), env={"PREFECT_API_URL": prefect_server})
    assert cli.returncode == 2 and "kd/other:v1" in cli.stderr and len(cli.stderr.strip().splitlines()) == 1


def test_request_rules_for_registry_and_nameless_archive() -> None:
    """from_registry excludes pull/from_archive and needs a name; registry options need from_registry."""
    for fields in (
        {"image": "x", "from_registry": True, "pull": True},
        {"image": "sha256:abcdef", "from_registry": True},
        {"image": "x", "platform": "linux/arm64"},
        {"image": "x", "from_registry": True, "platform": "arm64"},
        {},
        {"from_archive": "/tmp/x.tar", "tag": "v1"},
    ):
        with pytest.raises(UsageError):
            PushRequest(**fields)  # type: ignore[arg-type]
    assert PushRequest(from_archive="/tmp/x.tar").image is None
