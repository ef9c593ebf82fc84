"""The real arv-keepdocker uploads, re-finds, copies into a project, lists and looks up images on the stand-in."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keepdocker.testing.images import build_image
from keepdocker.testing.standin import RunningStandin, running_standin

pytestmark = pytest.mark.engine
KEEPDOCKER = str(Path(sys.executable).parent / "arv-keepdocker")
REPO, TAG = "kdtest/standin", "v1"


@dataclass
class Uploaded:
    """A stand-in holding one image uploaded by the regular user."""

    standin: RunningStandin
    env: dict[str, str]
    image_id: str
    collection_uuid: str


def _keepdocker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KEEPDOCKER, *args], env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory, docker_host: str) -> Iterator[Uploaded]:
    """Build a small image and upload it once with `arv-keepdocker` as the non-admin user."""
    root = tmp_path_factory.mktemp("keepdocker")
    image_id = build_image(docker_host, REPO, TAG, seed=4242, payload_bytes=256 * 1024)
    with running_standin(root / "standin-data") as standin:
        home = root / "home"
        home.mkdir()
        env = standin.client_env(token=standin.user_token)
        env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"),
                   DOCKER_HOST=docker_host)
        env.pop("CACHE_DIRECTORY", None)
        result = _keepdocker(env, REPO, TAG)
        assert result.returncode == 0, result.stderr
        yield Uploaded(standin, env, image_id, result.stdout.strip())


def test_upload_creates_collection_and_links(uploaded: Uploaded) -> None:
    """The upload stores one `<id>.tar` collection with the repo:tag property and hash + repo+tag links."""
    s = uploaded.standin
    status, coll = s.request("GET", f"/arvados/v1/collections/{uploaded.collection_uuid}", token=s.user_token)
    assert status == 200, coll
    assert coll["properties"] == {"docker-image-repo-tag": f"{REPO}:{TAG}"}
    assert uploaded.image_id.replace(":", "\\072") + ".tar" in coll["manifest_text"]
    status, links = s.request(
        "GET", "/arvados/v1/links", token=s.user_token,
        query={"filters": [["head_uuid", "=", uploaded.collection_uuid]], "order": ["link_class asc"]},
    )
    assert status == 200, links
    assert [(link["link_class"], link["name"]) for link in links["items"]] == [
        ("docker_image_hash", uploaded.image_id),
        ("docker_image_repo+tag", f"{REPO}:{TAG}"),
    ]
    assert all("image_timestamp" in link["properties"] for link in links["items"])


def test_rerun_finds_existing_copy(uploaded: Uploaded) -> None:
    """A second `arv-keepdocker` of the same image prints the same collection and sends nothing to Keep."""
    before = uploaded.standin.stats()
    result = _keepdocker(uploaded.env, REPO, TAG)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == uploaded.collection_uuid
    after = uploaded.standin.stats()
    assert after["requests"].get("keep PUT", 0) == before["requests"].get("keep PUT", 0)
    assert after["records"]["collections"] == before["records"]["collections"]


def test_project_copy_without_keep_traffic(uploaded: Uploaded) -> None:
    """`--project-uuid` makes a project-owned copy and links by re-posting the signed manifest: no Keep PUT."""
    s = uploaded.standin
    status, project = s.request(
        "POST", "/arvados/v1/groups", token=s.user_token,
        body={"group": {"name": "docker images", "group_class": "project"}},
    )
    assert status == 200, project
    before = s.stats()
    result = _keepdocker(uploaded.env, "--project-uuid", project["uuid"], REPO, TAG)
    assert result.returncode == 0, result.stderr
    copy_uuid = result.stdout.strip()
    assert copy_uuid != uploaded.collection_uuid
    after = s.stats()
    assert after["requests"].get("keep PUT", 0) == before["requests"].get("keep PUT", 0)
    assert after["blocks"] == before["blocks"]
    status, copy = s.request("GET", f"/arvados/v1/collections/{copy_uuid}", token=s.user_token)
    assert copy["owner_uuid"] == project["uuid"]
    status, orig = s.request("GET", f"/arvados/v1/collections/{uploaded.collection_uuid}", token=s.user_token)
    assert copy["portable_data_hash"] == orig["portable_data_hash"]
    status, links = s.request(
        "GET", "/arvados/v1/links", token=s.user_token, query={"filters": [["owner_uuid", "=", project["uuid"]]]}
    )
    assert sorted(link["link_class"] for link in links["items"]) == ["docker_image_hash", "docker_image_repo+tag"]
    assert all(link["head_uuid"] == copy_uuid for link in links["items"])


def test_images_listing(uploaded: Uploaded) -> None:
    """`arv-keepdocker images` lists the repository, tag, short image id and collection."""
    result = _keepdocker(uploaded.env, "images")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [REPO, TAG, uploaded.image_id[:12], uploaded.collection_uuid] in [row[:4] for row in rows]


def test_lookup_by_hash_prefix_without_docker(uploaded: Uploaded) -> None:
    """With no reachable Docker engine, a hash prefix is resolved from the stand-in's hash links alone."""
    env = {**uploaded.env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    result = _keepdocker(env, uploaded.image_id[:19])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {uploaded.collection_uuid}
