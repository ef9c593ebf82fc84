"""The migrate-images flow against a stand-in seeded like an old cluster: results, re-runs, failures, resolution."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from flows.migrate import migrate_images
from keepdocker.arv.catalog import HASH_LINK, MIGRATION_LINK, REPO_TAG_LINK, LinkSpec, create_links, keyset
from keepdocker.arv.client import ArvadosConfig, ArvadosSession, connect
from keepdocker.arv.transfer import upload_tar
from keepdocker.errors import ConfigurationError, PartialFailureError
from keepdocker.images.upgrade import upgrade_archive
from keepdocker.testing.oldcluster import SeededImage, seed_v1_image
from keepdocker.testing.resolution import resolve_image
from keepdocker.testing.standin import RunningStandin
from keepdocker.testing.v1archives import ATTACKS, random_v1_archive


@dataclass
class OldCluster:
    """What the fixture seeded: images by name, and the owners used."""

    images: dict[str, SeededImage]
    archives: dict[str, Path]
    project: str
    user: str


def _seed(
    session: ArvadosSession,
    tmp: Path,
    name: str,
    seed: int,
    tags: tuple[str, ...],
    owner: str | None,
    repositories: bool,
) -> tuple[SeededImage, Path]:
    generated = random_v1_archive(seed, layers=3, repositories=repositories)
    path = generated.write(tmp / f"{name}.tar")
    return seed_v1_image(session, path, generated.leaves[0], tags, owner), path


@pytest.fixture()
def old_cluster(arvados: ArvadosSession, standin: RunningStandin, tmp_path: Path) -> OldCluster:
    """Four v1 images as an old cluster held them: three owners, two without `repositories`, one untagged."""
    project = arvados.api.groups().create(body={"group_class": "project", "name": "old"}).execute()["uuid"]
    user_session = connect(ArvadosConfig(arvados.config.host, standin.user_token, insecure=True))
    user = user_session.api.users().current().execute()["uuid"]
    specs = {
        "base": (201, ("old/base:2014",), None, False),
        "app": (202, ("old/app:1.0", "old/app:latest"), project, False),
        "tool": (203, ("old/tool:3",), user, True),
        "bare": (204, (), project, True),
    }
    images, archives = {}, {}
    for name, (seed, tags, owner, repos) in specs.items():
        images[name], archives[name] = _seed(arvados, tmp_path, name, seed, tags, owner, repos)
    return OldCluster(images=images, archives=archives, project=project, user=user)


def _counts(session: ArvadosSession) -> tuple[int, int]:
    return len(keyset(session, "collections", [])), len(keyset(session, "links", []))


def test_dry_run_plans_and_writes_nothing(arvados: ArvadosSession, old_cluster: OldCluster) -> None:
    """dry_run lists every v1 image with its size and creates no collection or link."""
    before = _counts(arvados)
    report = migrate_images(dry_run=True)
    assert report.dry_run
    assert sorted(i.old_pdh for i in report.images) == sorted(i.collection.pdh for i in old_cluster.images.values())
    assert all(i.bytes > 0 and i.outcome == "planned" for i in report.images)
    assert _counts(arvados) == before


@pytest.mark.engine
def test_sweep_migrates_every_image_once(
    arvados: ArvadosSession, old_cluster: OldCluster, docker_host: str, tmp_path: Path
) -> None:
    """Each image gets one v2 collection, its links and one migration link; a second sweep does nothing."""
    terms = {name: (img.repo_tags[0] if img.repo_tags else img.v1_id) for name, img in old_cluster.images.items()}
    for name, term in terms.items():
        old = old_cluster.images[name].collection.pdh
        assert resolve_image(arvados, term, ("v1", "v2")) == old
        assert resolve_image(arvados, term, ("v2",)) is None

    report = migrate_images(concurrency=2)
    assert [i.outcome for i in report.images] == ["migrated"] * 4
    by_old = {i.old_pdh: i for i in report.images}
    client = docker.DockerClient(base_url=docker_host)
    for name, img in old_cluster.images.items():
        outcome = by_old[img.collection.pdh]
        expected = upgrade_archive(old_cluster.archives[name], tmp_path / f"{name}-v2.tar", img.repo_tags, img.v1_id)
        assert outcome.new_id == expected[0].id
        migrations = keyset(
            arvados, "links", [["link_class", "=", MIGRATION_LINK], ["tail_uuid", "=", img.collection.pdh]]
        )
        assert [(m["head_uuid"], m["owner_uuid"]) for m in migrations] == [(outcome.new_pdh, arvados.system_user_uuid)]
        new_coll = arvados.api.collections().get(uuid=outcome.collection).execute()
        assert new_coll["owner_uuid"] == img.owner_uuid
        links = keyset(arvados, "links", [["head_uuid", "=", outcome.collection]])
        assert sorted((lk["link_class"], lk["name"], lk["owner_uuid"]) for lk in links) == sorted(
            [(HASH_LINK, outcome.new_id, img.owner_uuid)] + [(REPO_TAG_LINK, t, img.owner_uuid) for t in img.repo_tags]
        )
        assert resolve_image(arvados, terms[name], ("v2",)) == outcome.new_pdh
        assert resolve_image(arvados, img.collection.pdh, ("v2",)) == outcome.new_pdh
        import arvados.collection as ac

        reader = ac.CollectionReader(outcome.collection, api_client=arvados.api)
        (tar_name,) = list(reader.keys())
        assert tar_name == f"{outcome.new_id}.tar"
        with reader.open(tar_name, "rb") as f:
            loaded = client.images.load(f.read())
        assert outcome.new_id in [i.id for i in loaded]

    before = _counts(arvados)
    again = migrate_images()
    assert again.images == []
    assert _counts(arvados) == before


def test_corrupt_image_fails_alone(
    arvados: ArvadosSession, old_cluster: OldCluster, tmp_path: Path, prefect_server: str
) -> None:
    """A malicious v1 tar fails its image with a clear message; the others migrate; the flow ends failed."""
    attack = ATTACKS["outer_dotdot_name"]()
    bad_path = tmp_path / "evil.tar"
    bad_path.write_bytes(attack.data)
    bad = seed_v1_image(arvados, bad_path, "e" * 64, ("evil/image:1",))
    with pytest.raises(PartialFailureError) as info:
        migrate_images(concurrency=2)
    report = info.value.report
    failed = [i for i in report.images if i.outcome == "failed"]
    assert [i.old_pdh for i in failed] == [bad.collection.pdh]
    assert attack.rule in failed[0].error
    assert sum(i.outcome == "migrated" for i in report.images) == 4
    assert keyset(arvados, "links", [["link_class", "=", MIGRATION_LINK], ["tail_uuid", "=", bad.collection.pdh]]) == []

    # `keepdocker history IMAGE TAG` (a real process) prints the whole reason: no column is cut.
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "keepdocker"), "history", "evil/image", "1"],
        env={**os.environ, "PREFECT_API_URL": prefect_server},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()
    assert header.split() == [
        "OUTCOME", "ACTION", "TIME", "IMAGE", "IMAGE_ID", "V1_ID", "COLLECTION", "PDH", "V2_BYTES", "BYTES_REUSED",
        "BYTES_WRITTEN", "SECONDS",
        "FLOW_RUN", "REASON",
    ]  # fmt: skip
    assert row.startswith("failed  ") and row.endswith(failed[0].error) and "e" * 64 in row


def test_images_no_engine_would_load_fail_and_are_never_published(arvados: ArvadosSession, tmp_path: Path) -> None:
    """v1 images whose conversion no engine would load (a path twice in a layer, a chain of 126 layers, padding after
    a gzip archive) each fail with Docker's reason; no collection or link is made for them."""
    unloadable = ("layer_duplicate_path", "chain_too_deep", "outer_gzip_padding")
    seeded = {}
    for i, name in enumerate(unloadable, start=1):
        path = tmp_path / f"{name}.tar"
        path.write_bytes(ATTACKS[name]().data)
        seeded[name] = seed_v1_image(arvados, path, f"{i:x}" * 64, (f"unloadable/{name.replace('_', '-')}:1",))
    before = _counts(arvados)
    with pytest.raises(PartialFailureError) as info:
        migrate_images(concurrency=2)
    outcomes = {i.old_pdh: i for i in info.value.report.images}
    assert len(outcomes) == len(unloadable)
    for name, image in seeded.items():
        outcome = outcomes[image.collection.pdh]
        assert outcome.outcome == "failed" and ATTACKS[name]().rule in (outcome.error or ""), (name, outcome)
    assert _counts(arvados) == before


def test_non_admin_fails_before_any_write(
    arvados: ArvadosSession, old_cluster: OldCluster, standin: RunningStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regular user's token stops the sweep at discover, with a message saying an admin token is needed."""
    before = _counts(arvados)
    monkeypatch.setenv("ARVADOS_API_TOKEN", standin.user_token)
    with pytest.raises(ConfigurationError, match="admin token"):
        migrate_images()
    assert _counts(arvados) == before


@pytest.mark.engine
def test_engine_strategy_agrees_with_native(
    arvados: ArvadosSession, old_cluster: OldCluster, engine_env: str, tmp_path: Path
) -> None:
    """The engine strategy (legacy load + save) yields the native converter's image ID, verified by loading."""
    img = old_cluster.images["app"]
    report = migrate_images(pdhs=(img.collection.pdh,), strategy="engine", verify=True)
    (outcome,) = report.images
    native = upgrade_archive(old_cluster.archives["app"], tmp_path / "native.tar", img.repo_tags, img.v1_id)
    assert outcome.outcome == "migrated"
    assert outcome.new_id == native[0].id


def test_history_of_a_migration_answers_to_every_name(arvados: ArvadosSession, tmp_path: Path) -> None:
    """A migration is found by each tag, IMAGE TAG, the old v1 ID and the new ID (prefix); BYTES is the v2 size."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from tasks.history import read_history

    # A fresh image of its own: the session's Prefect server keeps the histories other tests wrote.
    app, _ = _seed(arvados, tmp_path, "hist", 301, ("hist/app:1.0", "hist/app:latest"), None, True)
    report = migrate_images(pdhs=(app.collection.pdh,))
    (outcome,) = report.images
    assert outcome.outcome == "migrated" and outcome.v2_bytes > 0
    (row,) = read_history("hist/app:1.0")
    assert list(row)[:2] == ["outcome", "action"]
    assert (row["outcome"], row["action"], row["image"]) == ("migrated", "migrate", "hist/app:1.0, hist/app:latest")
    assert (row["image_id"], row["v1_id"], row["v2_bytes"]) == (outcome.new_id, app.v1_id, outcome.v2_bytes)
    for query in (("hist/app:latest",), ("hist/app",), ("hist/app", "1.0"), (app.v1_id,), (app.v1_id[:12],)):
        assert read_history(*query) == [row], query
    assert read_history(outcome.new_id) == [row]
    assert read_history(outcome.new_id[:15]) == [row]
    assert read_history("hist/app", "2.0") == []
    assert report.table()[0]["outcome"] == "migrated" and next(iter(report.table()[0])) == "outcome"

    with get_client(sync_client=True) as client:
        (progress,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["migrate-images-progress"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
        versions = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=app.v1_id[:12])), limit=10
        )
    assert progress.description == "1 of 1 images finished (0 failed)"
    assert [v.description for v in versions] == ["migrate migrated: hist/app:1.0, hist/app:latest"]


@pytest.mark.engine
def test_native_verify_loads_what_keep_serves(
    arvados: ArvadosSession, old_cluster: OldCluster, engine_env: str, tmp_path: Path
) -> None:
    """With verify, the native strategy migrates after the new collection, read back from Keep, loads as its ID."""
    img = old_cluster.images["tool"]
    report = migrate_images(pdhs=(img.collection.pdh,), verify=True)
    (outcome,) = report.images
    native = upgrade_archive(old_cluster.archives["tool"], tmp_path / "native.tar", img.repo_tags, img.v1_id)
    assert (outcome.outcome, outcome.new_id) == ("migrated", native[0].id)


@pytest.mark.engine
def test_verify_refuses_a_collection_that_does_not_load_as_the_id(
    arvados: ArvadosSession, old_cluster: OldCluster, engine_env: str, tmp_path: Path
) -> None:
    """A collection already claiming the new ID but holding other bytes fails verification; nothing links to it."""
    img = old_cluster.images["base"]
    new_id = upgrade_archive(old_cluster.archives["base"], tmp_path / "v2.tar", img.repo_tags, img.v1_id)[0].id
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"these bytes are not an image\n" * 4096)
    planted = upload_tar(arvados, junk, f"{new_id}.tar", name="planted", owner_uuid=img.owner_uuid, properties={})
    create_links(arvados, [LinkSpec(HASH_LINK, new_id, planted.uuid, img.owner_uuid)])

    with pytest.raises(PartialFailureError) as info:
        migrate_images(pdhs=(img.collection.pdh,), verify=True)
    (failed,) = info.value.report.images
    assert failed.outcome == "failed"
    assert "does not load as" in failed.error and new_id in failed.error
    migrations = [["link_class", "=", MIGRATION_LINK], ["tail_uuid", "=", img.collection.pdh]]
    assert keyset(arvados, "links", migrations) == []
    assert keyset(arvados, "links", [["link_class", "=", REPO_TAG_LINK], ["head_uuid", "=", planted.uuid]]) == []
