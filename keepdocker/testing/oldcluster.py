"""Seed Arvados with v1 images stored the way a pre-Docker-1.10 cluster stored them (for tests, demo, benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from keepdocker.arv.catalog import HASH_LINK, REPO_TAG_LINK, LinkSpec, collection_name, create_links
from keepdocker.arv.client import ArvadosSession
from keepdocker.arv.transfer import CollectionRef, upload_tar

__all__ = ["SeededImage", "seed_v1_image"]


@dataclass(frozen=True)
class SeededImage:
    """A v1 image as an old cluster holds it: the collection and the names it is known by."""

    v1_id: str
    repo_tags: tuple[str, ...]
    owner_uuid: str
    collection: CollectionRef


def seed_v1_image(
    session: ArvadosSession,
    archive: Path,
    v1_id: str,
    repo_tags: tuple[str, ...] = (),
    owner_uuid: str | None = None,
    image_timestamp: str = "2015-11-20T10:00:00.000000000Z",
) -> SeededImage:
    """Upload ``archive`` as `<v1 id>.tar` with a docker_image_hash link and one repo+tag link per name."""
    owner = owner_uuid or str(session.api.users().current().execute()["uuid"])
    ref = upload_tar(
        session,
        archive,
        f"{v1_id}.tar",
        name=collection_name(v1_id, repo_tags[0] if repo_tags else None),
        owner_uuid=owner,
        properties={},
    )
    props = {"image_timestamp": image_timestamp}
    links = [LinkSpec(HASH_LINK, v1_id, ref.uuid, owner, properties=props)]
    links += [LinkSpec(REPO_TAG_LINK, name, ref.uuid, owner, properties=props) for name in repo_tags]
    create_links(session, links)
    return SeededImage(v1_id=v1_id, repo_tags=repo_tags, owner_uuid=owner, collection=ref)
