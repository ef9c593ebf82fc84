"""Find v1 images still stored in Arvados and record their v2 equivalents the way the API server follows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from keepdocker.arv.catalog import (
    HASH_LINK,
    MIGRATION_LINK,
    MIGRATION_LINK_NAME,
    REPO_TAG_LINK,
    LinkSpec,
    create_links,
    image_links_on,
    keyset,
    keyset_in,
    link_sort_key,
    listed_in,
    missing_links,
)
from keepdocker.arv.client import ArvadosSession, arvados_errors
from keepdocker.arv.transfer import single_tar
from keepdocker.errors import ArvadosError, ConfigurationError

__all__ = [
    "ImageLink",
    "V1Image",
    "discover_v1_images",
    "ensure_migration_links",
    "is_v1_id",
    "migrated_pdhs",
    "require_admin",
]

HEX = set("0123456789abcdef")
# `like` with 64 underscores matches names of exactly 64 characters: v1 IDs, never `sha256:`-prefixed v2 IDs.
V1_NAME_PATTERN = "_" * 64
_LINK_FIELDS = ["uuid", "created_at", "head_uuid", "link_class", "name", "owner_uuid", "properties"]
_COLLECTION_FIELDS = ["uuid", "created_at", "owner_uuid", "portable_data_hash", "manifest_text"]


def is_v1_id(name: str) -> bool:
    """A v1 image ID: 64 lowercase hex digits, no `sha256:` prefix."""
    return len(name) == 64 and set(name) <= HEX


@dataclass(frozen=True)
class ImageLink:
    """An existing docker image link to carry over to the v2 copy: its name, owner and image_timestamp."""

    link_class: str
    name: str
    owner_uuid: str
    image_timestamp: str | None


@dataclass(frozen=True)
class V1Image:
    """One v1 image to migrate, identified by its collection's portable data hash."""

    pdh: str
    collection_uuid: str
    owner_uuid: str
    v1_id: str
    tar_name: str
    size: int
    links: tuple[ImageLink, ...]

    @property
    def repo_tags(self) -> list[str]:
        """The distinct `repo:tag` names the image is known by."""
        return sorted({link.name for link in self.links if link.link_class == REPO_TAG_LINK})

    @property
    def image_timestamp(self) -> str | None:
        """The most preferred image_timestamp of the old hash links."""
        for link in self.links:
            if link.link_class == HASH_LINK and link.image_timestamp:
                return link.image_timestamp
        return None


def require_admin(session: ArvadosSession) -> str:
    """The current user's UUID; raises ConfigurationError unless the token is an admin's."""
    with arvados_errors("reading the current user"):
        user = session.api.users().current().execute()
    if not user.get("is_admin"):
        raise ConfigurationError(
            f"migration needs an admin token (migration links are owned by the system user); "
            f"{user.get('uuid', 'this user')} is not an admin"
        )
    return str(user["uuid"])


def migrated_pdhs(session: ArvadosSession, pdhs: Iterable[str] | None = None) -> set[str]:
    """Old PDHs that already have a migration link the API server trusts (owned by the system user).

    With ``pdhs``, only those are looked up (by tail_uuid), so the cost follows their number, not the cluster's.
    """
    trusted = [["link_class", "=", MIGRATION_LINK], ["owner_uuid", "=", session.system_user_uuid]]
    select = ["uuid", "tail_uuid", "created_at"]
    if pdhs is None:
        links = keyset(session, "links", trusted, select=select)
    else:
        links = listed_in(session, "links", "tail_uuid", pdhs, trusted, select=select)
    return {str(link["tail_uuid"]) for link in links}


def discover_v1_images(
    session: ArvadosSession,
    project_uuid: str | None = None,
    pdhs: list[str] | None = None,
    limit: int | None = None,
) -> list[V1Image]:
    """Every readable v1 image without a trusted migration link, in a fixed order, with batched queries.

    With ``pdhs``, every query is filtered by them (migration links by tail_uuid, collections by
    portable_data_hash, links by head_uuid): a few requests per call whatever the cluster holds, which keeps a
    fanned-out sweep (one call per image) linear in its images.
    """
    scope = [["owner_uuid", "=", project_uuid]] if project_uuid else []
    if pdhs is None:
        hash_links, by_uuid, repo_links = _cluster_v1_records(session, scope)
    else:
        hash_links, by_uuid, repo_links = _v1_records_of(session, scope, pdhs)
    hash_links = sorted((lk for lk in hash_links if is_v1_id(str(lk["name"]))), key=_keyset_order)
    hash_links.sort(key=link_sort_key, reverse=True)
    if not hash_links or not by_uuid:
        return []
    repo_links = sorted(repo_links, key=_keyset_order)
    links_by_head: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for link in [*hash_links, *sorted(repo_links, key=link_sort_key, reverse=True)]:
        if link["head_uuid"] in by_uuid:
            links_by_head[link["head_uuid"]].append(link)

    images: dict[str, V1Image] = {}
    group_links: dict[str, list[ImageLink]] = defaultdict(list)
    for link in hash_links:  # most preferred first: the first collection seen for a PDH is the one to migrate
        coll = by_uuid.get(link["head_uuid"])
        if coll is None:
            continue
        pdh = str(coll["portable_data_hash"])
        for lk in links_by_head.pop(coll["uuid"], []):
            group_links[pdh].append(
                ImageLink(
                    link_class=str(lk["link_class"]),
                    name=str(lk["name"]),
                    owner_uuid=str(lk["owner_uuid"]),
                    image_timestamp=(lk.get("properties") or {}).get("image_timestamp"),
                )
            )
        if pdh in images:
            continue
        try:
            tar_name, size = single_tar(str(coll["manifest_text"]))
        except ArvadosError:
            tar_name, size = "", 0
        images[pdh] = V1Image(
            pdh=pdh,
            collection_uuid=str(coll["uuid"]),
            owner_uuid=str(coll["owner_uuid"]),
            v1_id=str(link["name"]),
            tar_name=tar_name,
            size=size,
            links=(),
        )
    ordered = [replace(img, links=tuple(dict.fromkeys(group_links[pdh]))) for pdh, img in images.items()]
    return ordered[:limit] if limit is not None else ordered


_Records = tuple[list[dict[str, Any]], dict[str, dict[str, Any]], list[dict[str, Any]]]


def _keyset_order(record: dict[str, Any]) -> tuple[str, str]:
    """The listing order (created_at, uuid), whatever batches the records came in."""
    return str(record["created_at"]), str(record["uuid"])


def _cluster_v1_records(session: ArvadosSession, scope: list[list[Any]]) -> _Records:
    """Hash links, their unmigrated collections (by UUID) and those collections' repo+tag links, cluster-wide."""
    hash_links = keyset(
        session, "links", [["link_class", "=", HASH_LINK], ["name", "like", V1_NAME_PATTERN]], select=_LINK_FIELDS
    )
    hash_links = [lk for lk in hash_links if is_v1_id(str(lk["name"]))]
    if not hash_links:
        return [], {}, []
    collections = keyset_in(
        session, "collections", "uuid", (lk["head_uuid"] for lk in hash_links), scope, select=_COLLECTION_FIELDS
    )
    done = migrated_pdhs(session)
    by_uuid = {c["uuid"]: c for c in collections if c["portable_data_hash"] not in done}
    if not by_uuid:
        return hash_links, {}, []
    repo_links = keyset_in(
        session, "links", "head_uuid", by_uuid, [["link_class", "=", REPO_TAG_LINK]], select=_LINK_FIELDS
    )
    return hash_links, by_uuid, repo_links


def _v1_records_of(session: ArvadosSession, scope: list[list[Any]], pdhs: list[str]) -> _Records:
    """The same records for these PDHs only: three requests per 500 PDHs, independent of the cluster's size."""
    done = migrated_pdhs(session, pdhs)
    todo = [p for p in dict.fromkeys(pdhs) if p not in done]
    if not todo:
        return [], {}, []
    collections = listed_in(session, "collections", "portable_data_hash", todo, scope, select=_COLLECTION_FIELDS)
    by_uuid = {c["uuid"]: c for c in collections}
    if not by_uuid:
        return [], {}, []
    links = listed_in(
        session, "links", "head_uuid", by_uuid, [["link_class", "in", [HASH_LINK, REPO_TAG_LINK]]], select=_LINK_FIELDS
    )
    hash_links = [lk for lk in links if lk["link_class"] == HASH_LINK]
    return hash_links, by_uuid, [lk for lk in links if lk["link_class"] == REPO_TAG_LINK]


def ensure_migration_links(
    session: ArvadosSession,
    image: V1Image,
    new_id: str,
    new_collection_uuid: str,
    new_pdh: str,
) -> list[dict[str, Any]]:
    """The v2 image's hash and repo+tag links (same owners and timestamps as the old ones), then the migration link.

    The migration link comes last, so its presence means the image is fully migrated.
    """
    wanted: list[LinkSpec] = []
    for link in image.links:
        props = {"image_timestamp": link.image_timestamp} if link.image_timestamp else {}
        name = new_id if link.link_class == HASH_LINK else link.name
        wanted.append(LinkSpec(link.link_class, name, new_collection_uuid, link.owner_uuid, properties=props))
    existing = image_links_on(session, new_collection_uuid)
    created = create_links(session, missing_links(wanted, existing, image.owner_uuid))
    migration = LinkSpec(MIGRATION_LINK, MIGRATION_LINK_NAME, new_pdh, session.system_user_uuid, tail_uuid=image.pdh)
    have = keyset(
        session,
        "links",
        [["link_class", "=", MIGRATION_LINK], ["tail_uuid", "=", image.pdh], ["head_uuid", "=", new_pdh]],
    )
    created += create_links(session, missing_links([migration], have, session.system_user_uuid))
    return created
