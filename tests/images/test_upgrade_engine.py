"""Engine cross-checks: Docker 20.10's legacy load gives our IDs, `docker load` of our output gives them too,
and `docker save` output (1.10-24 layout) reads back with the engine's IDs."""

from __future__ import annotations

import contextlib
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from keepdocker.images.docker_archive import read_archive
from keepdocker.images.upgrade import upgrade_archive
from keepdocker.images.v1 import read_v1_archive
from keepdocker.images.validate import validate_archive
from keepdocker.testing.images import build_image
from keepdocker.testing.v1archives import V1Builder, compress, layer_json, layer_tar, random_v1_archive, tar_end

pytestmark = pytest.mark.engine



@pytest.fixture()
def client(docker_host: str) -> Iterator[docker.DockerClient]:
    """A docker-py client for the test engine."""
    c = docker.DockerClient(base_url=docker_host, timeout=300)
    try:
        yield c
    finally:
        c.close()


def special_cases() -> dict[str, bytes]:
    """Hand-made v1 archives for rules the random generator does not always hit."""
    rng = random.Random(99)
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    body = layer_tar(rng)
    garbage = V1Builder().layer(a, layer_json(rng, a, None, docker_version="1.9.1"), body + b"trailing!")
    garbage.repositories({"kd/case": {"trailing": a}})
    mixed = V1Builder()
    mixed.layer(a, layer_json(rng, a, None, docker_version="0.4.0"), b"")
    mixed.layer(b, layer_json(rng, b, a, docker_version="1.8.3-rc1"), compress(body, "xz"))
    mixed.layer(c, layer_json(rng, c, b, docker_version="1.9.1"), None, link_to=b)
    mixed.repositories({"kd/case": {"mixed": c}})
    nullish = V1Builder().layer(a, b"null", tar_end()).repositories({"kd/case": {"null": a}})
    return {"trailing": garbage.build(), "mixed": mixed.build("gzip"), "null": nullish.build()}


def corpus() -> dict[str, bytes]:
    """Generated archives of every shape (all with repositories: Docker >= 1.13 requires one) plus special cases."""
    cases = {
        f"gen{seed}": random_v1_archive(
            seed, leaves=1 + seed % 2, repositories=True, outer=["none", "gzip", "bzip2", "xz"][seed % 4]
        ).data
        for seed in range(100, 108)
    }
    cases.update(special_cases())
    return cases


def docker_load(docker_host: str, path: Path) -> None:
    """`docker load -i path` with the docker CLI (the engine's own load path, legacy or current)."""
    done = subprocess.run(["docker", "-H", docker_host, "load", "-i", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def forget(client: docker.DockerClient, ids: list[str]) -> None:
    """Remove the given images, children first (each before its parents), from the engine."""
    for image_id in ids:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(image_id, force=True)


def tagged_ids(client: docker.DockerClient, tags: set[str]) -> dict[str, str]:
    """The engine's image ID for each tag."""
    return {tag: client.images.get(tag).id for tag in tags}


@pytest.mark.parametrize("name", sorted(corpus()))
def test_engine_ids_equal_ours(client: docker.DockerClient, docker_host: str, tmp_path: Path, name: str) -> None:
    """Legacy load of the v1 archive and `docker load` of our upgrade give exactly our image IDs and tags."""
    src = tmp_path / "v1.tar"
    src.write_bytes(corpus()[name])
    archive = read_v1_archive(src)
    ours = {tag: v.image.id for v in archive.images.values() for tag in v.image.tags}
    by_depth = sorted(archive.images.values(), key=lambda v: -len(v.image.layers))
    all_ids = list(dict.fromkeys(v.image.id for v in by_depth))
    assert ours
    forget(client, all_ids)
    try:
        docker_load(docker_host, src)
        assert tagged_ids(client, set(ours)) == ours
        forget(client, all_ids)
        dst = tmp_path / "v2.tar"
        entries = upgrade_archive(src, dst)
        validate_archive(dst)
        assert {tag: e.id for e in entries for tag in e.tags} == ours
        docker_load(docker_host, dst)
        assert tagged_ids(client, set(ours)) == ours
    finally:
        forget(client, all_ids)


def test_real_2015_archive_matches_the_engine(
    client: docker.DockerClient, docker_host: str, tmp_path: Path, moby_v1_archive: Path
) -> None:
    """The moby emptyLayer fixture: engine legacy-load ID == our ID == ID after loading our upgrade."""
    (entry,) = upgrade_archive(moby_v1_archive, tmp_path / "v2.tar")
    (tag,) = entry.tags
    forget(client, [entry.id])
    try:
        docker_load(docker_host, moby_v1_archive)
        assert client.images.get(tag).id == entry.id
        forget(client, [entry.id])
        docker_load(docker_host, tmp_path / "v2.tar")
        assert client.images.get(tag).id == entry.id
    finally:
        forget(client, [entry.id])


def test_docker_save_output_is_read(client: docker.DockerClient, docker_host: str, tmp_path: Path) -> None:
    """Real `docker save` output (1.10-24 layout, with v1compat dirs and repositories) reads with the engine's ID."""
    image_id = build_image(docker_host, "kd/saved", "v1", seed=5, payload_bytes=2048)
    path = tmp_path / "saved.tar"
    with open(path, "wb") as f:
        for chunk in client.images.get("kd/saved:v1").save(named=True):
            f.write(chunk)
    (image,) = read_archive(path)
    assert image.id == image_id and image.tags == ("kd/saved:v1",)
    assert image.created is not None and len(image.layers) == 1
    validate_archive(path)
