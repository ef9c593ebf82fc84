"""Discovery by PDH filters in the queries: a few requests per image whatever the cluster holds, same results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keepdocker.arv.catalog import HASH_LINK, MIGRATION_LINK, MIGRATION_LINK_NAME, REPO_TAG_LINK
from keepdocker.arv.client import ArvadosConfig, ArvadosSession, connect
from keepdocker.arv.migration import discover_v1_images, require_admin
from keepdocker.testing.oldcluster import seed_v1_records
from keepdocker.testing.standin import RunningStandin, running_standin

# One image's discovery in a fan-out (users.current, migration links, collections, links): a constant.
REQUESTS_PER_IMAGE = 4


def _api_requests(standin: RunningStandin) -> int:
    """API requests served so far, the stats requests themselves excluded."""
    counts = standin.stats()["requests"]
    return sum(v for k, v in counts.items() if k.startswith("api ") and "_standin" not in k)


def _listed(standin: RunningStandin) -> int:
    """Records returned by list requests so far."""
    return sum(v for k, v in standin.stats()["requests"].items() if k.startswith("listed "))


@pytest.fixture()
def cluster(request: pytest.FixtureRequest, tmp_path: Path, isolated_home: Path) -> Iterator[tuple[Any, list[str]]]:
    """A stand-in seeded with ``request.param`` v1 images (10 of them already migrated); the PDHs left to do."""
    root = tmp_path / "standin"
    todo = seed_v1_records(root, int(request.param), migrated=10)
    with running_standin(root) as standin:
        yield standin, todo


@pytest.mark.parametrize("cluster", [50, 2500], indirect=True)
def test_fanned_out_discovery_is_constant_per_image(cluster: tuple[RunningStandin, list[str]]) -> None:
    """Discovering each image by its PDH (as every fanned-out run does) costs the same few requests at any size."""
    standin, todo = cluster
    session = connect(ArvadosConfig.from_env(standin.client_env({})))
    require_admin(session)  # the discovery document and first-use costs, outside the measurement
    images = todo[:200]
    requests_before, listed_before = _api_requests(standin), _listed(standin)
    per_image = []
    for pdh in images:
        before = _api_requests(standin)
        require_admin(session)
        found = discover_v1_images(session, pdhs=[pdh])
        per_image.append(_api_requests(standin) - before)
        assert [i.pdh for i in found] == [pdh]
    total = _api_requests(standin) - requests_before
    listed = _listed(standin) - listed_before
    assert set(per_image) == {REQUESTS_PER_IMAGE}
    assert total == REQUESTS_PER_IMAGE * len(images)
    assert listed == 3 * len(images)  # one collection, its hash link and its repo+tag link each
    migrated = seed_migrated_pdh(standin)
    assert discover_v1_images(session, pdhs=[migrated]) == []


def seed_migrated_pdh(standin: RunningStandin) -> str:
    """The PDH of one seeded image that has a system-owned migration link."""
    trusted = [["link_class", "=", MIGRATION_LINK], ["owner_uuid", "=", "zzzzz-tpzed-000000000000000"]]
    status, page = standin.request("GET", "/arvados/v1/links", query={"filters": trusted, "limit": 1})
    assert status == 200 and page["items"], page
    return str(page["items"][0]["tail_uuid"])


def _create(session: ArvadosSession, resource: str, body: dict[str, Any]) -> dict[str, Any]:
    return dict(getattr(session.api, resource)().create(body=body).execute())


@pytest.mark.parametrize("cluster", [30], indirect=True)
def test_by_pdh_matches_the_cluster_wide_listing(cluster: tuple[RunningStandin, list[str]]) -> None:
    """For every image, by-PDH discovery returns exactly the cluster-wide result, in duplicate and edge cases too."""
    standin, todo = cluster
    admin = connect(ArvadosConfig.from_env(standin.client_env({})))
    user = connect(ArvadosConfig.from_env(standin.client_env({}, standin.user_token)))
    user_uuid = str(user.api.users().current().execute()["uuid"])
    project = _create(admin, "groups", {"group_class": "project", "name": "old", "owner_uuid": user_uuid})["uuid"]
    # A second collection with the same manifest (same PDH) in a project, with a newer hash link and its own tag:
    # it becomes the preferred copy and its links join the image's.
    first = admin.api.collections().get(uuid=todo[0]).execute()
    copy = _create(admin, "collections", {"manifest_text": first["manifest_text"], "owner_uuid": project})
    v1_id = first["manifest_text"].split(" ")[-1].split(":")[2].removesuffix(".tar\n").removesuffix(".tar")
    later = {"image_timestamp": "2020-01-01T00:00:00Z"}
    for link_class, name in ((HASH_LINK, v1_id), (REPO_TAG_LINK, "dup/extra:1")):
        link = {"link_class": link_class, "name": name, "head_uuid": copy["uuid"], "properties": later}
        _create(admin, "links", {**link, "owner_uuid": project})
    # A migration link not owned by the system user is not trusted: the image is still to do.
    untrusted = {"link_class": MIGRATION_LINK, "name": MIGRATION_LINK_NAME, "tail_uuid": todo[1], "head_uuid": todo[2]}
    _create(admin, "links", untrusted)

    everything = discover_v1_images(admin)
    assert sorted(i.pdh for i in everything) == sorted(todo)
    by_pdh = {i.pdh: i for i in everything}
    assert by_pdh[todo[0]].collection_uuid == copy["uuid"]
    assert "dup/extra:1" in by_pdh[todo[0]].repo_tags and len(by_pdh[todo[0]].repo_tags) == 2
    for pdh in todo:
        assert discover_v1_images(admin, pdhs=[pdh]) == [by_pdh[pdh]]
    assert discover_v1_images(admin, pdhs=list(reversed(todo))) == everything
    assert discover_v1_images(admin, pdhs=todo, limit=5) == everything[:5]
    assert discover_v1_images(admin, pdhs=[]) == []
    assert discover_v1_images(admin, pdhs=[seed_migrated_pdh(standin)]) == []
    assert discover_v1_images(admin, project_uuid=project, pdhs=todo) == discover_v1_images(admin, project_uuid=project)
    scoped = discover_v1_images(admin, project_uuid=project, pdhs=[todo[0]])
    assert [(i.collection_uuid, i.repo_tags) for i in scoped] == [(copy["uuid"], ["dup/extra:1"])]
