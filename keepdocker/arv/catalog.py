"""The Docker image catalog in Arvados: image links and collections, listed, planned and written idempotently."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import arvados.util
import ciso8601

from keepdocker.arv.client import ArvadosSession, arvados_errors

__all__ = [
    "HASH_LINK",
    "IMAGE_HASH_PROPERTY",
    "MIGRATION_LINK",
    "MIGRATION_LINK_NAME",
    "REPO_TAG_LINK",
    "REPO_TAG_PROPERTY",
    "ImageListing",
    "LinkSpec",
    "collection_name",
    "create_links",
    "find_collections",
    "image_links_on",
    "keyset",
    "keyset_in",
    "link_sort_key",
    "list_images",
    "listed_in",
    "missing_links",
]

HASH_LINK = "docker_image_hash"
REPO_TAG_LINK = "docker_image_repo+tag"
MIGRATION_LINK = "docker_image_migration"
MIGRATION_LINK_NAME = "migrate_1.9_1.10"
REPO_TAG_PROPERTY = "docker-image-repo-tag"
# Set atomically in the create call, so a re-run after a crash between upload and linking finds the upload.
IMAGE_HASH_PROPERTY = "docker-image-hash"

EARLIEST = dt.datetime.min
# Arvados limits how many values one `in` filter may carry in practice (request size); batch above this.
IN_BATCH = 500
# The most records one list request asks for (the API server's default MaxItemsPerResponse).
PAGE_LIMIT = 1000


def keyset(session: ArvadosSession, resource: str, filters: list[list[Any]], **kw: Any) -> list[dict[str, Any]]:
    """Every record of ``resource`` matching ``filters``, by keyset paging (1000 per request)."""
    fn = getattr(session.api, resource)().list
    with arvados_errors(f"listing {resource}"):
        return list(arvados.util.keyset_list_all(fn, filters=filters, num_retries=2, **kw))


def keyset_in(
    session: ArvadosSession, resource: str, attr: str, values: Iterable[str], filters: list[list[Any]], **kw: Any
) -> list[dict[str, Any]]:
    """Like keyset() with an ``[attr, "in", values]`` filter, batched so no request grows without bound."""
    unique = sorted(set(values))
    out: list[dict[str, Any]] = []
    for start in range(0, len(unique), IN_BATCH):
        batch = unique[start : start + IN_BATCH]
        out.extend(keyset(session, resource, [[attr, "in", batch], *filters], **kw))
    return out


def listed_in(
    session: ArvadosSession, resource: str, attr: str, values: Iterable[str], filters: list[list[Any]], **kw: Any
) -> list[dict[str, Any]]:
    """Like keyset_in(), in one request per batch when the server's count says that page holds every match.

    For lookups expected to match a handful of records (one PDH's collections and links). Results come in keyset
    order (created_at, uuid); a page the server cut short (fewer items than ``items_available``) falls back to
    keyset paging, so nothing is ever missed.
    """
    fn = getattr(session.api, resource)().list
    if "select" in kw:  # the keys of the order, as keyset paging adds them
        kw["select"] = list(dict.fromkeys([*kw["select"], "uuid", "created_at"]))
    unique = sorted(set(values))
    out: list[dict[str, Any]] = []
    for start in range(0, len(unique), IN_BATCH):
        batch_filters = [[attr, "in", unique[start : start + IN_BATCH]], *filters]
        with arvados_errors(f"listing {resource}"):
            page = fn(
                filters=batch_filters, order=["created_at asc", "uuid asc"], limit=PAGE_LIMIT, count="exact", **kw
            ).execute(num_retries=2)
        items, available = page.get("items") or [], page.get("items_available")
        if isinstance(available, int) and len(items) >= available:
            out.extend(items)
        else:
            out.extend(keyset(session, resource, batch_filters, **kw))
    return out


def link_sort_key(link: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    """The API server's preference order for image links: image_timestamp, then created_at (later wins)."""
    try:
        image_ts = ciso8601.parse_datetime_as_naive(str(link["properties"]["image_timestamp"]))
    except (KeyError, TypeError, ValueError):
        image_ts = EARLIEST
    try:
        created = ciso8601.parse_datetime_as_naive(str(link.get("created_at", "")))
    except ValueError:
        created = EARLIEST
    return (image_ts, created)


@dataclass(frozen=True)
class ImageListing:
    """One row of `keepdocker images` (the same rows and order as `arv-keepdocker images`)."""

    collection_uuid: str
    image_id: str
    repo: str
    tag: str
    timestamp: dt.datetime


def _sorted_links(links: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(links, key=link_sort_key, reverse=True)


def list_images(
    session: ArvadosSession, image: str | None = None, tag: str | None = None, project_uuid: str | None = None
) -> list[ImageListing]:
    """Images known to Arvados matching ``image[:tag]`` (all when None), most preferred first."""
    project = [["owner_uuid", "=", project_uuid]] if project_uuid else []
    repo_links: list[dict[str, Any]] | None = None
    hash_links: list[dict[str, Any]] | None = None
    heads: list[str] | None = None
    if image:
        name = f"{image}:{tag or 'latest'}"
        found = _sorted_links(
            keyset(session, "links", [["link_class", "=", REPO_TAG_LINK], ["name", "=", name], *project])
        )
        if found:
            repo_links = found
        else:
            hash_links = _sorted_links(
                keyset(session, "links", [["link_class", "=", HASH_LINK], ["name", "ilike", image + "%"], *project])
            )
            found = hash_links
        heads = [link["head_uuid"] for link in found]
    if hash_links is None:
        hash_links = _sorted_links(_links_on(session, HASH_LINK, heads, project))
    hash_by_head = {link["head_uuid"]: link for link in reversed(hash_links)}
    if repo_links is None:
        repo_links = _sorted_links(_links_on(session, REPO_TAG_LINK, heads, project))

    rows: list[tuple[tuple[dt.datetime, dt.datetime], ImageListing]] = []
    seen: dict[str, set[str]] = defaultdict(set)
    for link in repo_links:
        head = link["head_uuid"]
        if link["name"] in seen[head]:
            continue
        seen[head].add(link["name"])
        image_id = hash_by_head[head]["name"] if head in hash_by_head else "<unknown>"
        repo, _, tg = str(link["name"]).rpartition(":")
        rows.append((link_sort_key(link), _listing(link, image_id, repo or str(link["name"]), tg)))
    start = len(rows)
    for head, link in hash_by_head.items():
        if not seen[head]:
            rows.append((link_sort_key(link), _listing(link, link["name"], "<none>", "<none>")))
    if len(rows) > start:
        rows.sort(key=lambda r: r[0], reverse=True)
    readable = {
        c["uuid"]
        for c in keyset_in(
            session, "collections", "uuid", (r.collection_uuid for _, r in rows), project, select=["uuid"]
        )
    }
    return [row for _, row in rows if row.collection_uuid in readable]


def _links_on(
    session: ArvadosSession, link_class: str, heads: list[str] | None, project: list[list[Any]]
) -> list[dict[str, Any]]:
    if heads is None:
        return keyset(session, "links", [["link_class", "=", link_class], *project])
    return keyset_in(session, "links", "head_uuid", heads, [["link_class", "=", link_class], *project])


def _listing(link: dict[str, Any], image_id: str, repo: str, tag: str) -> ImageListing:
    image_ts, created = link_sort_key(link)
    return ImageListing(
        collection_uuid=str(link["head_uuid"]),
        image_id=str(image_id),
        repo=repo,
        tag=tag,
        timestamp=image_ts if image_ts is not EARLIEST else created,
    )


def collection_name(image_id: str, repo_tag: str | None) -> str:
    """arv-keepdocker's collection name: `Docker image <repo:tag with / as space> <id[:12]>`."""
    if repo_tag:
        return f"Docker image {repo_tag.replace('/', ' ')} {image_id[:12]}"
    return f"Docker image {image_id[:12]}"


def find_collections(session: ArvadosSession, uuids: Iterable[str], *, manifest: bool = False) -> list[dict[str, Any]]:
    """The readable, untrashed collections among ``uuids`` (with their signed manifests when asked)."""
    select = ["uuid", "owner_uuid", "name", "portable_data_hash", "properties", "created_at"]
    if manifest:
        select.append("manifest_text")
    return keyset_in(session, "collections", "uuid", uuids, [], select=select)


@dataclass(frozen=True)
class LinkSpec:
    """A link that should exist: compared on class, name, head, tail and owner."""

    link_class: str
    name: str
    head_uuid: str
    owner_uuid: str | None = None
    tail_uuid: str | None = None
    properties: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def body(self) -> dict[str, Any]:
        """The links.create body."""
        body: dict[str, Any] = {
            "link_class": self.link_class,
            "name": self.name,
            "head_uuid": self.head_uuid,
            "properties": self.properties,
        }
        if self.owner_uuid:
            body["owner_uuid"] = self.owner_uuid
        if self.tail_uuid:
            body["tail_uuid"] = self.tail_uuid
        return body


def missing_links(wanted: Sequence[LinkSpec], existing: Iterable[dict[str, Any]], default_owner: str) -> list[LinkSpec]:
    """The wanted links that no existing link already provides (pure; `already exists` counts as done)."""
    have = {
        (e["link_class"], e["name"], e["head_uuid"], e.get("owner_uuid"), e.get("tail_uuid") or None) for e in existing
    }
    out: list[LinkSpec] = []
    for spec in wanted:
        key = (spec.link_class, spec.name, spec.head_uuid, spec.owner_uuid or default_owner, spec.tail_uuid)
        if key not in have and spec not in out:
            out.append(spec)
    return out


def image_links_on(session: ArvadosSession, collection_uuid: str) -> list[dict[str, Any]]:
    """The hash and repo+tag links whose head is ``collection_uuid``."""
    return keyset(
        session,
        "links",
        [["head_uuid", "=", collection_uuid], ["link_class", "in", [HASH_LINK, REPO_TAG_LINK]]],
    )


def create_links(session: ArvadosSession, specs: Sequence[LinkSpec]) -> list[dict[str, Any]]:
    """Create each link (callers pass only the missing ones)."""
    created = []
    for spec in specs:
        with arvados_errors(f"creating {spec.link_class} link {spec.name!r} on {spec.head_uuid}"):
            created.append(session.api.links().create(body=spec.body()).execute())
    return created
