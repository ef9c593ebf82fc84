"""Registry source (skopeo + archive writer) against Debian's docker-registry on loopback, with no engine contacted."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from keepdocker.cache import TarCache
from keepdocker.errors import ImageNotFoundError, RegistryError, RegistryUnavailableError, UsageError
from keepdocker.images.distribution import Platform
from keepdocker.images.validate import validate_archive
from keepdocker.registry import RegistryOptions, fetch_to_cache, resolve_image
from keepdocker.standin.tls import ensure_certificate
from keepdocker.testing.images import build_image, rootfs_tar
from keepdocker.testing.registry import (
    flaky_front,
    local_registry,
    push_to_registry,
    put_image,
    put_index,
    token_registry,
    write_htpasswd,
)

pytestmark = pytest.mark.skipif(
    os.system("command -v skopeo >/dev/null") != 0 and os.environ.get("CI") != "true",
    reason="skopeo is not installed (apt-get install -y skopeo)",
)


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[str]:
    """A plain-HTTP docker-registry on loopback."""
    with local_registry(tmp_path / "registry") as address:
        yield address


@pytest.fixture()
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """DOCKER_HOST points at a socket nobody listens on, and HOME has no Docker config."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)


@pytest.mark.engine
def test_image_pushed_by_dockerd_is_converted_with_the_engine_id(
    docker_host: str, registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive written from the registry's blobs loads into dockerd with the ID `docker pull` reports."""
    image_id = build_image(docker_host, "kd/reg-src", "v1", seed=41, payload_bytes=300_000)
    push_to_registry(docker_host, image_id, f"{registry}/kd/reg", "v1")
    client = docker.DockerClient(base_url=docker_host)
    client.images.remove(f"{registry}/kd/reg:v1")
    client.images.remove("kd/reg-src:v1")
    pulled = client.images.pull(f"{registry}/kd/reg", tag="v1").id
    assert pulled == image_id
    client.images.remove(image_id, force=True)

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    found = resolve_image(f"{registry}/kd/reg:v1")
    assert (found.image_id, found.repo_tag) == (image_id, f"{registry}/kd/reg:v1")
    cache = TarCache(tmp_path / "cache")
    entry = fetch_to_cache(found, cache)
    assert [i.id for i in validate_archive(entry.path)] == [image_id]
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".registry-")]

    loaded = client.images.load(entry.path.read_bytes())
    assert [i.id for i in loaded] == [image_id]
    again = fetch_to_cache(resolve_image(f"{registry}/kd/reg:v1"), cache)
    assert (again.path, again.created) == (entry.path, False)


def test_index_is_resolved_by_platform(registry: str, no_engine: None, tmp_path: Path) -> None:
    """An OCI index with amd64 and arm64/v8 images gives each one by --platform, and names the offers otherwise."""
    amd = put_image(registry, "kd/multi", "amd64", [rootfs_tar(1, busybox=False)], "amd64")
    arm = put_image(registry, "kd/multi", "arm64", [rootfs_tar(2, busybox=False)], "arm64", "v8")
    put_index(registry, "kd/multi", "v1", [(amd[0], amd[2], "linux/amd64"), (arm[0], arm[2], "linux/arm64/v8")])
    assert resolve_image(f"{registry}/kd/multi:v1").image_id == amd[1]
    found = resolve_image(f"{registry}/kd/multi:v1", options=RegistryOptions(platform="linux/arm64"))
    assert (found.image_id, found.manifest_digest) == (arm[1], arm[0])
    entry = fetch_to_cache(found, TarCache(tmp_path / "cache"))
    assert [i.id for i in validate_archive(entry.path)] == [arm[1]]
    with pytest.raises(UsageError, match=r"no image for platform linux/s390x; it offers linux/amd64, linux/arm64"):
        resolve_image(f"{registry}/kd/multi:v1", options=RegistryOptions(platform="linux/s390x"))
    with pytest.raises(UsageError, match="is a linux/arm64 image, not linux/amd64"):
        resolve_image(f"{registry}/kd/multi:arm64")


def test_uncompressed_layers_are_accepted_and_zstd_refused(registry: str, no_engine: None, tmp_path: Path) -> None:
    """Plain tar layers convert; a zstd layer is refused with one line saying how to re-push, and nothing is kept."""
    tars = [rootfs_tar(3, busybox=False), rootfs_tar(4, busybox=False)]
    plain = put_image(registry, "kd/plain", "v1", tars, compress=False)
    cache = TarCache(tmp_path / "cache")
    entry = fetch_to_cache(resolve_image(f"{registry}/kd/plain:v1"), cache)
    assert [[layer.size for layer in i.layers] for i in validate_archive(entry.path)] == [[len(t) for t in tars]]
    assert entry.key == plain[1]

    fake_zstd = b"\x28\xb5\x2f\xfd" + os.urandom(64)
    put_image(registry, "kd/zstd", "v1", tars[:1], raw_blobs=[fake_zstd])
    with pytest.raises(RegistryError, match=r"is zstd-compressed.*--dest-compress-format gzip"):
        fetch_to_cache(resolve_image(f"{registry}/kd/zstd:v1"), cache)
    assert [e.key for e in cache.entries()] == [plain[1]]
    assert not [p for p in cache.root.iterdir() if p.name.startswith((".registry-", ".tmp#"))]


def test_layer_not_matching_the_config_is_refused(registry: str, no_engine: None, tmp_path: Path) -> None:
    """A gzip blob whose content is not the diff ID the config names is refused, not written."""
    tar = rootfs_tar(5, busybox=False)
    put_image(registry, "kd/liar", "v1", [tar], raw_blobs=[gzip.compress(rootfs_tar(6, busybox=False))])
    with pytest.raises(RegistryError, match="the config says"):
        fetch_to_cache(resolve_image(f"{registry}/kd/liar:v1"), TarCache(tmp_path / "cache"))


def test_missing_tag_and_repository_are_one_line(registry: str, no_engine: None) -> None:
    """A missing tag or repository is ImageNotFoundError with one line naming the registry."""
    put_image(registry, "kd/there", "v1", [rootfs_tar(7, busybox=False)])
    with pytest.raises(ImageNotFoundError, match=f"no such tag or digest in {registry}; it has v1$") as tag:
        resolve_image(f"{registry}/kd/there:nope")
    with pytest.raises(ImageNotFoundError, match=f"no such repository in {registry}") as repo:
        resolve_image(f"{registry}/kd/absent:v1")
    for exc in (tag.value, repo.value):
        assert "\n" not in exc.message and not exc.temporary


def test_platform_text_is_checked() -> None:
    """--platform takes os/arch[/variant]; arm64/v8 and aarch64 mean arm64."""
    assert str(Platform.parse("linux/aarch64/v8")) == "linux/arm64"
    assert str(Platform.parse("linux/arm/v7")) == "linux/arm/v7"
    with pytest.raises(UsageError, match="os/architecture"):
        Platform.parse("amd64")


@pytest.fixture()
def secure_registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A registry on loopback with TLS (self-signed CA) and htpasswd basic auth (user kd, password s3cret-pw)."""
    cert, key = ensure_certificate(tmp_path / "tls", ["127.0.0.1"])
    htpasswd = write_htpasswd(tmp_path / "htpasswd", "kd", "s3cret-pw")
    with local_registry(tmp_path / "secure", htpasswd=htpasswd, tls=(cert, key)) as address:
        yield address, cert


def _seed_secure(plain: str, secure: str, cert: Path, name: str) -> str:
    """Copy an image from the plain registry into the secure one with skopeo; return its image ID."""
    import subprocess

    _, image_id, _ = put_image(plain, name, "v1", [rootfs_tar(8, busybox=False)])
    certs = cert.parent / "certs"
    certs.mkdir(exist_ok=True)
    (certs / "ca.crt").write_bytes(cert.read_bytes())
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"--dest-cert-dir={certs}",
            "--dest-creds=kd:s3cret-pw",  # test setup only: the code under test never passes secrets in argv
            f"docker://{plain}/{name}:v1",
            f"docker://{secure}/{name}:v1",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return image_id


def _docker_config(directory: Path, host: str, user: str, password: str) -> Path:
    import base64

    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return directory


def test_basic_auth_over_tls_with_a_custom_ca(
    registry: str, secure_registry: tuple[str, Path], no_engine: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials from $DOCKER_CONFIG and a CA file reach a TLS + htpasswd registry; bad ones give one line."""
    secure, cert = secure_registry
    image_id = _seed_secure(registry, secure, cert, "kd/private")
    ref = f"{secure}/kd/private:v1"
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path / "dc", secure, "kd", "s3cret-pw")))
    found = resolve_image(ref, options=RegistryOptions(ca_file=cert))
    assert found.image_id == image_id
    entry = fetch_to_cache(found, TarCache(tmp_path / "cache"), RegistryOptions(ca_file=cert))
    assert [i.id for i in validate_archive(entry.path)] == [image_id]

    explicit = RegistryOptions(ca_file=cert, username="kd", password="s3cret-pw")
    monkeypatch.delenv("DOCKER_CONFIG")
    assert resolve_image(ref, options=explicit).image_id == image_id

    with pytest.raises(RegistryError, match=r"is not trusted.*--registry-ca") as untrusted:
        resolve_image(ref)
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path / "bad", secure, "kd", "wrong-pw")))
    with pytest.raises(RegistryError, match="refused the credentials") as refused:
        resolve_image(ref, options=RegistryOptions(ca_file=cert))
    for exc in (untrusted.value, refused.value):
        assert "\n" not in exc.message and not exc.temporary and "wrong-pw" not in exc.message


def test_bearer_token_flow_with_docker_config_credentials(
    no_engine: None, registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry that wants bearer tokens: skopeo gets one from the realm with the Docker config's credentials."""
    import subprocess

    _, image_id, _ = put_image(registry, "kd/tok", "v1", [rootfs_tar(9, busybox=False)])
    with token_registry(tmp_path / "tok", "kd", "tok-pw") as (secured, tokens):
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false", "--dest-creds=kd:tok-pw",
             f"docker://{registry}/kd/tok:v1", f"docker://{secured}/kd/tok:v1"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        issued = tokens.issued
        monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path / "dc", secured, "kd", "tok-pw")))
        entry = fetch_to_cache(resolve_image(f"{secured}/kd/tok:v1"), TarCache(tmp_path / "cache"))
        assert [i.id for i in validate_archive(entry.path)] == [image_id]
        assert tokens.issued > issued
        monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path / "bad", secured, "kd", "nope-pw")))
        refused = tokens.refused
        with pytest.raises(RegistryError, match="refused the credentials"):
            resolve_image(f"{secured}/kd/tok:v1")
        assert tokens.refused > refused


def test_server_errors_are_retried_then_temporary(registry: str, no_engine: None) -> None:
    """500s from the registry are retried; a registry that keeps failing is RegistryUnavailableError (temporary)."""
    _, image_id, _ = put_image(registry, "kd/flaky", "v1", [rootfs_tar(10, busybox=False)])
    with flaky_front(registry, failures=2) as (front, server):
        assert resolve_image(f"{front}/kd/flaky:v1").image_id == image_id
        assert server.failed == 2
    with flaky_front(registry, failures=1000) as (front, server):
        with pytest.raises(RegistryUnavailableError, match="unavailable") as info:
            resolve_image(f"{front}/kd/flaky:v1")
        assert info.value.temporary and "\n" not in info.value.message and server.failed > 1


def test_digest_reference_is_checked(registry: str, no_engine: None) -> None:
    """repo:tag@digest resolves by the digest; a digest the registry does not hold is not found."""
    digest, image_id, _ = put_image(registry, "kd/dig", "v1", [rootfs_tar(11, busybox=False)])
    found = resolve_image(f"{registry}/kd/dig:v1@{digest}")
    assert (found.manifest_digest, found.image_id, found.repo_tag) == (digest, image_id, f"{registry}/kd/dig:v1")
    with pytest.raises(ImageNotFoundError):
        resolve_image(f"{registry}/kd/dig@sha256:{'0' * 64}")


def test_streamed_archive_is_the_writers_layout(tmp_path: Path) -> None:
    """Written front to back, the archive has DockerArchiveWriter's exact bytes (a repeated layer stored once)."""
    import hashlib
    import io

    from keepdocker.images.distribution import Descriptor, ImageManifest, write_docker_archive
    from keepdocker.images.docker_archive import DockerArchiveWriter, manifest_bytes, repositories_bytes

    tars = [rootfs_tar(12, busybox=False), rootfs_tar(13, busybox=False, payload_bytes=70_000)]
    layers = [tars[0], tars[1], tars[0]]
    blobs = [gzip.compress(layers[0], mtime=0), layers[1], gzip.compress(layers[2], mtime=1)]
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    directory = tmp_path / "blobs"
    directory.mkdir()
    descs = []
    for data in [config.encode(), *blobs]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (directory / digest[7:]).write_bytes(data)
        descs.append(Descriptor("application/octet-stream", digest, len(data)))
    manifest = ImageManifest("application/vnd.oci.image.manifest.v1+json", descs[0], tuple(descs[1:]))
    out = io.BytesIO()
    image = write_docker_archive(directory, manifest, out.write, ["kd/same:v1"])

    reference = io.BytesIO()
    writer = DockerArchiveWriter(reference)
    paths = []
    for data, diff_id in zip(layers, diff_ids, strict=True):
        writer.start_layer()(data)
        paths.append(writer.finish_layer(diff_id))
    writer.add_file(f"{image.id[7:]}.json", config.encode())
    writer.add_file("manifest.json", manifest_bytes([(image.id, ["kd/same:v1"], paths)]))
    writer.add_file("repositories", repositories_bytes({"kd/same:v1": paths[-1].split("/")[0]}))
    writer.close()
    assert out.getvalue() == reference.getvalue()
    assert image.id == descs[0].digest and [layer.size for layer in image.layers] == [len(t) for t in layers]
