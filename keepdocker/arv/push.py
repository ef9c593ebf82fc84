"""Put one image into Arvados as arv-keepdocker does: find an existing copy, copy it, or upload; then link."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keepdocker.arv.catalog import (
    HASH_LINK,
    IMAGE_HASH_PROPERTY,
    REPO_TAG_LINK,
    REPO_TAG_PROPERTY,
    LinkSpec,
    collection_name,
    create_links,
    find_collections,
    image_links_on,
    keyset,
    link_sort_key,
    missing_links,
)
from keepdocker.arv.client import ArvadosSession, arvados_errors
from keepdocker.arv.transfer import CollectionRef, single_tar, upload_tar
from keepdocker.errors import ArvadosError, ConfigurationError, ImageNotFoundError
from keepdocker.options import setting
from keepdocker.progress import Progress

__all__ = [
    "Action",
    "Existing",
    "Placed",
    "UploadRequest",
    "check_image_format",
    "copy_into",
    "ensure_links",
    "find_existing",
    "place",
    "place_image",
    "present_for",
    "resolve_owner",
    "upload_image",
]


class Action(enum.Enum):
    """What a push did."""

    PRESENT = "present"  # a copy owned by the target already existed
    COPIED = "copied"  # an existing copy elsewhere was copied into the target (no Keep traffic)
    UPLOADED = "uploaded"  # the tar was uploaded to Keep


@dataclass(frozen=True)
class Existing:
    """What Arvados already holds for one image ID, as seen by the caller."""

    image_id: str
    owner_uuid: str
    hash_links: tuple[dict[str, Any], ...]
    collections: tuple[dict[str, Any], ...]

    @property
    def owned(self) -> dict[str, Any] | None:
        """A readable copy owned by the target owner, if any (the most preferred one)."""
        mine = [c for c in self.collections if c["owner_uuid"] == self.owner_uuid]
        return mine[0] if mine else None

    @property
    def source(self) -> dict[str, Any] | None:
        """The most preferred readable copy anywhere (to copy from)."""
        return self.collections[0] if self.collections else None

    @property
    def image_timestamp(self) -> str | None:
        """The image_timestamp recorded on the most preferred hash link."""
        for link in self.hash_links:
            ts = (link.get("properties") or {}).get("image_timestamp")
            if ts:
                return str(ts)
        return None


def check_image_format(session: ArvadosSession, force: bool) -> None:
    """Refuse to store v2 images on a cluster that does not list v2 in dockerImageFormats (unless forced)."""
    formats = session.docker_image_formats
    if "v2" in formats or force:
        return
    said = f"supports only {formats}" if formats else "does not say which image formats it supports"
    raise ConfigurationError(f"the cluster {said}; set {setting('force_image_format')} to store a v2 image anyway")


def resolve_owner(session: ArvadosSession, project_uuid: str | None) -> str:
    """The owner for new records: the project when given (it must exist), else the current user."""
    if project_uuid:
        resource = "users" if "-tpzed-" in project_uuid else "groups"
        with arvados_errors(f"reading project {project_uuid}"):
            getattr(session.api, resource)().get(uuid=project_uuid).execute()
        return project_uuid
    with arvados_errors("reading the current user"):
        return str(session.api.users().current().execute()["uuid"])


def find_existing(session: ArvadosSession, image_id: str, owner_uuid: str) -> Existing:
    """Readable collections holding ``image_id``: through hash links, or marked by a crashed earlier upload."""
    links = sorted(
        keyset(session, "links", [["link_class", "=", HASH_LINK], ["name", "=", image_id]]),
        key=link_sort_key,
        reverse=True,
    )
    heads = [link["head_uuid"] for link in links]
    by_uuid = {c["uuid"]: c for c in find_collections(session, heads, manifest=True)}
    marked = keyset(
        session,
        "collections",
        [["owner_uuid", "=", owner_uuid], [f"properties.{IMAGE_HASH_PROPERTY}", "=", image_id]],
        select=["uuid", "owner_uuid", "name", "portable_data_hash", "properties", "created_at", "manifest_text"],
    )
    ordered = [by_uuid[h] for h in dict.fromkeys(heads) if h in by_uuid]
    ordered += [c for c in marked if c["uuid"] not in by_uuid and _holds(c, image_id)]
    return Existing(image_id=image_id, owner_uuid=owner_uuid, hash_links=tuple(links), collections=tuple(ordered))


def _holds(collection: dict[str, Any], image_id: str) -> bool:
    try:
        name, _ = single_tar(str(collection.get("manifest_text") or ""))
    except ArvadosError:
        return False
    return name == f"{image_id}.tar"


def copy_into(
    session: ArvadosSession, source: dict[str, Any], owner_uuid: str, name: str, repo_tag: str | None, image_id: str
) -> CollectionRef:
    """A new collection owned by ``owner_uuid`` with the source's (signed) manifest: no Keep traffic."""
    body = {
        "manifest_text": source["manifest_text"],
        "name": name,
        "owner_uuid": owner_uuid,
        "properties": {REPO_TAG_PROPERTY: repo_tag, IMAGE_HASH_PROPERTY: image_id},
    }
    with arvados_errors(f"copying collection {source['uuid']} into {owner_uuid}"):
        rec = session.api.collections().create(body=body, ensure_unique_name=True).execute()
    return _ref({**rec, "manifest_text": source["manifest_text"]})


def upload_image(
    session: ArvadosSession,
    tar: Path,
    image_id: str,
    *,
    name: str,
    owner_uuid: str,
    repo_tag: str | None,
    progress: Progress | None = None,
    expected_sha256: str = "",
) -> CollectionRef:
    """Upload the saved tar as `<image id>.tar` into a new collection owned by ``owner_uuid``."""
    return upload_tar(
        session,
        tar,
        f"{image_id}.tar",
        name=name,
        owner_uuid=owner_uuid,
        properties={REPO_TAG_PROPERTY: repo_tag, IMAGE_HASH_PROPERTY: image_id},
        progress=progress,
        expected_sha256=expected_sha256,
    )


def ensure_links(
    session: ArvadosSession,
    collection_uuid: str,
    image_id: str,
    repo_tags: list[str],
    owner_uuid: str,
    image_timestamp: str | None,
) -> list[dict[str, Any]]:
    """Create the hash and repo+tag links on the collection that do not exist yet; return those created."""
    props = {"image_timestamp": image_timestamp} if image_timestamp else {}
    wanted = [LinkSpec(HASH_LINK, image_id, collection_uuid, owner_uuid, properties=props)]
    wanted += [LinkSpec(REPO_TAG_LINK, rt, collection_uuid, owner_uuid, properties=props) for rt in repo_tags]
    return create_links(session, missing_links(wanted, image_links_on(session, collection_uuid), owner_uuid))


def present_for(session: ArvadosSession, existing: Existing, repo_tags: list[str]) -> CollectionRef | None:
    """The owner's collection when it already holds the image and all its links: a push would change nothing."""
    owned = existing.owned
    if owned is None:
        return None
    uuid, owner = str(owned["uuid"]), existing.owner_uuid
    wanted = [LinkSpec(HASH_LINK, existing.image_id, uuid, owner)]
    wanted += [LinkSpec(REPO_TAG_LINK, rt, uuid, owner) for rt in repo_tags]
    if missing_links(wanted, image_links_on(session, uuid), owner):
        return None
    return _ref(owned)


def _ref(collection: dict[str, Any]) -> CollectionRef:
    _, size = single_tar(str(collection.get("manifest_text") or ""))
    return CollectionRef(uuid=str(collection["uuid"]), pdh=str(collection["portable_data_hash"]), size=size)


def place_image(
    session: ArvadosSession,
    existing: Existing,
    *,
    tar: Path | None,
    name: str,
    repo_tag: str | None,
    force: bool = False,
    progress: Progress | None = None,
    expected_sha256: str = "",
) -> tuple[CollectionRef, Action]:
    """Reuse the owner's copy, copy another readable one, or upload ``tar``: the collection the image lives in."""
    if not force:
        if existing.owned is not None:
            return _ref(existing.owned), Action.PRESENT
        if existing.source is not None:
            copied = copy_into(session, existing.source, existing.owner_uuid, name, repo_tag, existing.image_id)
            return copied, Action.COPIED
    if tar is None:
        raise ImageNotFoundError(f"image {existing.image_id} has no local archive and no readable copy in Arvados")
    ref = upload_image(
        session,
        tar,
        existing.image_id,
        name=name,
        owner_uuid=existing.owner_uuid,
        repo_tag=repo_tag,
        progress=progress,
        expected_sha256=expected_sha256,
    )
    return ref, Action.UPLOADED


@dataclass(frozen=True)
class UploadRequest:
    """Put one image's tar (or a copy Arvados already holds) into a collection of ``owner_uuid``."""

    image_id: str  # the config digest, sha256:<hex>
    owner_uuid: str
    repo_tag: str | None  # recorded on a new collection; None for an ID-only push
    name: str | None = None  # the name of a new collection; None: arv-keepdocker's
    tar: Path | None = None  # the local archive; None when only a copy in Arvados can be placed
    tar_sha256: str = ""  # the tar's recorded digest, checked while uploading ("" for files made in this run)
    created: str | None = None  # the config's raw `created`, the image_timestamp of a fresh upload
    force: bool = False  # upload even when a readable copy exists


@dataclass(frozen=True)
class Placed:
    """Where the image lives after placing it, what was done, and the image_timestamp its links should carry."""

    ref: CollectionRef
    action: Action
    image_timestamp: str | None


def place(session: ArvadosSession, request: UploadRequest, progress: Progress | None = None) -> Placed:
    """Reuse, copy or upload (see ``place_image``); reused copies keep the image_timestamp already recorded."""
    existing = find_existing(session, request.image_id, request.owner_uuid)
    ref, action = place_image(
        session,
        existing,
        tar=request.tar,
        name=request.name or collection_name(request.image_id, request.repo_tag),
        repo_tag=request.repo_tag,
        force=request.force,
        progress=progress,
        expected_sha256=request.tar_sha256,
    )
    timestamp = request.created
    if action is not Action.UPLOADED and existing.image_timestamp:
        timestamp = existing.image_timestamp
    return Placed(ref, action, timestamp)
