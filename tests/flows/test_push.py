"""The push-image flow against the stand-in and a real engine: parity with arv-keepdocker, archives, concurrency."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from flows.push import push_image
from keepdocker.arv.catalog import HASH_LINK, REPO_TAG_LINK, keyset, list_images
from keepdocker.arv.client import ArvadosSession
from keepdocker.errors import ImageNotFoundError
from keepdocker.testing.images import build_image
from keepdocker.testing.registry import local_registry, push_to_registry
from keepdocker.testing.standin import RunningStandin
from keepdocker.testing.v1archives import random_v1_archive
from tasks.history import history_key, read_history

BIN = Path(sys.executable).parent


def _run(cmd: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [str(BIN / cmd), *args], env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600
    )


def _collections(session: ArvadosSession) -> list[dict[str, object]]:
    return keyset(session, "collections", [], select=["uuid", "portable_data_hash", "owner_uuid", "manifest_text"])


def _single_file(session: ArvadosSession, uuid: str) -> tuple[str, bytes]:
    import arvados.collection

    reader = arvados.collection.CollectionReader(uuid, api_client=session.api)
    names = list(reader.keys())
    assert len(names) == 1
    with reader.open(names[0], "rb") as f:
        return names[0], f.read()


@pytest.mark.engine
def test_push_is_interchangeable_with_arv_keepdocker(arvados: ArvadosSession, engine_env: str) -> None:
    """A pushed image is listed and found by arv-keepdocker, and satisfies crunch-run's one-tar rule."""
    image_id = build_image(engine_env, "kd/parity", "v1", seed=11)
    result = push_image(image="kd/parity:v1")
    assert (result.action, result.image_id, result.tags) == ("uploaded", image_id, ["kd/parity:v1"])

    listing = _run("arv-keepdocker", "images").stdout.splitlines()
    assert any(line.split()[:4] == ["kd/parity", "v1", image_id[:12], result.collection_uuid] for line in listing), (
        listing
    )
    before = len(_collections(arvados))
    again = _run("arv-keepdocker", "kd/parity", "v1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == result.collection_uuid
    assert len(_collections(arvados)) == before

    name, data = _single_file(arvados, result.collection_uuid)
    assert name == f"{image_id}.tar"
    client = docker.DockerClient(base_url=engine_env)
    client.images.remove(image_id, force=True)
    loaded = client.images.load(data)
    assert [i.id for i in loaded] == [image_id]


@pytest.mark.engine
def test_image_pushed_by_arv_keepdocker_is_found_not_uploaded(arvados: ArvadosSession, engine_env: str) -> None:
    """An image arv-keepdocker pushed is found by the flow (present, no new collection) and listed by ours."""
    image_id = build_image(engine_env, "kd/theirs", "v2", seed=12)
    pushed = _run("arv-keepdocker", "kd/theirs", "v2")
    assert pushed.returncode == 0, pushed.stderr
    uuid = pushed.stdout.strip()
    before = len(_collections(arvados))
    result = push_image(image="kd/theirs", tag="v2")
    assert (result.action, result.collection_uuid, result.links_created) == ("present", uuid, 0)
    assert len(_collections(arvados)) == before
    rows = list_images(arvados, "kd/theirs", "v2")
    assert [(r.repo, r.tag, r.image_id, r.collection_uuid) for r in rows] == [("kd/theirs", "v2", image_id, uuid)]


@pytest.mark.engine
def test_project_push_copies_without_keep_traffic(
    arvados: ArvadosSession, engine_env: str, standin: RunningStandin
) -> None:
    """With a project, an image already elsewhere is copied into it (no Keep PUT) with project-owned links."""
    build_image(engine_env, "kd/proj", "v1", seed=13)
    first = push_image(image="kd/proj:v1")
    project = arvados.api.groups().create(body={"group_class": "project", "name": "images"}).execute()["uuid"]
    puts = standin.stats()["requests"].get("keep PUT", 0)
    copied = push_image(image="kd/proj:v1", project_uuid=project)
    assert copied.action == "copied"
    assert copied.pdh == first.pdh and copied.collection_uuid != first.collection_uuid
    assert standin.stats()["requests"].get("keep PUT", 0) == puts
    links = keyset(arvados, "links", [["head_uuid", "=", copied.collection_uuid]])
    assert sorted((lk["link_class"], lk["owner_uuid"]) for lk in links) == [
        (HASH_LINK, project),
        (REPO_TAG_LINK, project),
    ]
    again = push_image(image="kd/proj:v1", project_uuid=project)
    assert (again.action, again.collection_uuid, again.links_created) == ("present", copied.collection_uuid, 0)
    history = read_history("kd/proj:v1")
    assert [(row["action"], row["outcome"], row["collection"]) for row in history] == [
        ("push", "present", again.collection_uuid),
        ("push", "copied", copied.collection_uuid),
        ("push", "uploaded", first.collection_uuid),
    ]
    assert all(row["flow_run"] and row["pdh"] == first.pdh for row in history)
    # BYTES is the v2 tar in Keep on every row; the same rows are found as IMAGE TAG, by ID and by ID prefix.
    assert {row["v2_bytes"] for row in history} == {first.bytes} and first.bytes > 0
    assert read_history("kd/proj", "v1") == history
    assert read_history(first.image_id) == history
    assert read_history(first.image_id[:19]) == history
    assert read_history(first.image_id.removeprefix("sha256:")[:8]) == history
    assert next(iter(history[0])) == "outcome"


@pytest.mark.engine
def test_missing_image_fails_with_a_clear_message(arvados: ArvadosSession, engine_env: str) -> None:
    """A tag neither in the engine nor in Arvados fails naming repo:tag, and files no history (it is no image)."""
    build_image(engine_env, "kd/somewhere", "v1", seed=14)
    with pytest.raises(ImageNotFoundError, match=r"no local image kd/somewhere:9\.9 "):
        push_image(image="kd/somewhere", tag="9.9")
    assert read_history("kd/somewhere", "9.9") == []
    assert read_history("kd/somewhere") == []


def test_history_keys_are_prefect_artifact_keys() -> None:
    """History keys use only [a-z0-9-], differ per image, and `repo` means `repo:latest`."""
    import re

    keys = {history_key(n) for n in ("Reg.io:5000/A/b:v1", "reg.io:5000/a/b:v1", "sha256:" + "a" * 64)}
    assert len(keys) == 3 and all(re.fullmatch(r"[a-z0-9-]+", k) for k in keys)
    assert history_key("busybox") == history_key("busybox:latest")


def _oci_from_docker_save(data: bytes) -> bytes:
    """Re-lay a Docker 1.10-24 `docker save` archive in the Docker 25+ OCI layout (blobs/sha256, index.json)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as src:
        (entry,) = json.loads(src.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config = src.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        layers = [src.extractfile(p).read() for p in entry["Layers"]]  # type: ignore[union-attr]
    blobs = {hashlib.sha256(b).hexdigest(): b for b in [config, *layers]}
    cfg = hashlib.sha256(config).hexdigest()
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": f"sha256:{cfg}"}}).encode()
    blobs[hashlib.sha256(manifest).hexdigest()] = manifest
    index = json.dumps(
        {"schemaVersion": 2, "manifests": [{"digest": "sha256:" + hashlib.sha256(manifest).hexdigest()}]}
    )
    docker_manifest = [
        {
            "Config": f"blobs/sha256/{cfg}",
            "RepoTags": entry["RepoTags"],
            "Layers": [f"blobs/sha256/{hashlib.sha256(b).hexdigest()}" for b in layers],
        }
    ]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        files = {f"blobs/sha256/{h}": b for h, b in blobs.items()}
        files |= {"index.json": index.encode(), "manifest.json": json.dumps(docker_manifest).encode()}
        files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


@pytest.mark.engine
def test_from_archive_needs_no_engine(
    arvados: ArvadosSession, docker_host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--from-archive pushes a v2, an OCI-layout and a v1 archive with DOCKER_HOST pointing at nothing."""
    image_id = build_image(docker_host, "kd/archived", "v1", seed=14)
    client = docker.DockerClient(base_url=docker_host)
    saved = b"".join(client.images.get(image_id).save(named=True))
    (tmp_path / "v2.tar").write_bytes(saved)
    (tmp_path / "oci.tar").write_bytes(_oci_from_docker_save(saved))
    v1 = random_v1_archive(15, layers=2, repositories=False)
    v1.write(tmp_path / "v1.tar")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")

    for name in ("v2.tar", "oci.tar"):
        result = push_image(image="kd/archived:v1", from_archive=str(tmp_path / name))
        assert result.image_id == image_id, name
    from_v1 = push_image(image="kd/legacy:v1", from_archive=str(tmp_path / "v1.tar"))
    assert from_v1.action == "uploaded" and from_v1.image_id.startswith("sha256:")
    name, data = _single_file(arvados, from_v1.collection_uuid)
    assert name == f"{from_v1.image_id}.tar"
    client.images.load(data)
    assert client.images.get("kd/legacy:v1").id == from_v1.image_id


@pytest.mark.engine
def test_concurrent_pushes_upload_once(
    arvados: ArvadosSession, engine_env: str, standin: RunningStandin, prefect_server: str
) -> None:
    """Two `keepdocker push` processes of the same image at once make one collection; both print its UUID."""
    build_image(engine_env, "kd/twice", "v1", seed=16, payload_bytes=4 << 20)
    env = {"PREFECT_API_URL": prefect_server}
    import os

    procs = [
        subprocess.Popen(
            [str(BIN / "keepdocker"), "push", "kd/twice:v1"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    uuids = {o[0].strip() for o in outs}
    assert len(uuids) == 1
    hashes = keyset(arvados, "links", [["link_class", "=", HASH_LINK]])
    assert len(hashes) == 1 and hashes[0]["head_uuid"] in uuids


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[str]:
    """A local docker-registry for the test."""
    with local_registry(tmp_path / "registry") as address:
        yield address


@pytest.mark.engine
def test_pull_refreshes_before_pushing(arvados: ArvadosSession, engine_env: str, registry: str) -> None:
    """With pull, the registry's current image is pushed even when an older one is local under the same name."""
    name = f"{registry}/kd/fresh"
    old = build_image(engine_env, "kd/fresh-old", "o", seed=21)
    new = build_image(engine_env, "kd/fresh-new", "n", seed=22)
    push_to_registry(engine_env, new, name, "v1")
    docker.APIClient(base_url=engine_env).tag(old, name, "v1")
    result = push_image(image=f"{name}:v1", pull=True)
    assert result.image_id == new
    assert result.tags == [f"{name}:v1"]


@pytest.mark.engine
def test_images_table_matches_arv_keepdocker(arvados: ArvadosSession, engine_env: str) -> None:
    """`keepdocker images` prints the same table as `arv-keepdocker images`, in full and filtered."""
    for seed, (repo, tag) in enumerate([("kd/list-a", "v1"), ("kd/list-b", "v2")], start=31):
        build_image(engine_env, repo, tag, seed=seed)
        push_image(image=f"{repo}:{tag}")
    build_image(engine_env, "kd/list-a", "v3", seed=33)
    assert _run("arv-keepdocker", "kd/list-a", "v3").returncode == 0
    ours = _run("keepdocker", "images")
    theirs = _run("arv-keepdocker", "images")
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout
    assert len(ours.stdout.splitlines()) == 4
    filtered = _run("keepdocker", "images", "kd/list-a", "v3").stdout.splitlines()
    assert len(filtered) == 2 and filtered[1].split()[:2] == ["kd/list-a", "v3"]


@pytest.mark.engine
def test_damaged_cache_entry_is_saved_again_not_published(arvados: ArvadosSession, engine_env: str) -> None:
    """A saved tar damaged in the cache (same size and mtime) is caught at upload, saved again, then published."""
    import os

    from keepdocker.cache import TarCache
    from keepdocker.engine import DockerEngine

    image_id = build_image(engine_env, "kd/damaged", "v1", seed=41, payload_bytes=1 << 20)
    with DockerEngine(engine_env) as engine:
        entry = engine.save_cached(TarCache.from_env(), image_id)
    st = entry.path.stat()
    with entry.path.open("r+b") as f:
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(entry.path, ns=(st.st_atime_ns, st.st_mtime_ns))

    result = push_image(image="kd/damaged:v1")
    assert (result.action, result.image_id) == ("uploaded", image_id)
    name, data = _single_file(arvados, result.collection_uuid)
    assert name == f"{image_id}.tar"
    client = docker.DockerClient(base_url=engine_env)
    client.images.remove(image_id, force=True)
    assert [i.id for i in client.images.load(data)] == [image_id]
    assert len(keyset(arvados, "collections", [])) == 1
