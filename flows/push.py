"""Flow push-image: put one Docker image into Arvados as arv-keepdocker does, from an engine, archive or registry."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path

from prefect import flow
from prefect.logging import get_run_logger
from pydantic import BaseModel

from flows.params import (
    AllowHttp,
    CollectionName,
    CredentialsBlock,
    Force,
    ForceImageFormat,
    FromArchive,
    FromRegistry,
    Image,
    Platform,
    ProjectUuid,
    Pull,
    RegistryCa,
    Tag,
    optional,
)
from flows.states import completed, failed
from keepdocker.arv.push import UploadRequest
from keepdocker.errors import CacheCorruptError, KeepdockerError, MalformedArchiveError
from keepdocker.push_plan import PushPlan, archive_identity
from keepdocker.registry import DEFAULT_PLATFORM
from keepdocker.requests import PushRequest
from tasks.discover import discover_push
from tasks.fetch import fetch_from_registry
from tasks.history import history_row, record_history
from tasks.link import link_image
from tasks.pull import pull_image
from tasks.results import PlacedCollection, remove_quietly
from tasks.save import save
from tasks.upgrade import upgrade
from tasks.upload import upload

__all__ = ["PushResult", "push_image"]


class PushResult(BaseModel):
    """Where the image now lives in Arvados and what the push did (uploaded, copied or present)."""

    collection_uuid: str
    pdh: str
    image_id: str
    tags: list[str]
    action: str
    links_created: int
    bytes: int
    seconds: float


def _fingerprint(path: str) -> str:
    """Identifies a local file by path, size and mtime (keys its upgraded copy without reading it twice)."""
    st = os.stat(path)
    return hashlib.sha256(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()


def _history_names(plan: PushPlan | None) -> list[str]:
    """The names the user gave (or the archive carried), once they resolved to an image (else: the ID alone)."""
    if plan is None:
        return []
    return list(plan.tags) or ([plan.repo_tag] if plan.repo_tag else [])


def _from_archive(request: PushRequest, plan: PushPlan, work_files: list[str]) -> tuple[str, str, str | None, PushPlan]:
    """The archive to upload for --from-archive (v1 upgraded on the way): path, image ID, created, updated plan."""
    path = request.from_archive or ""
    if plan.archive_format != "v1":
        return path, plan.image_id or "", plan.created, plan
    v2 = upgrade(path, _fingerprint(path), [plan.repo_tag] if plan.repo_tag else [])
    work_files.append(v2.path)
    image_id, created = archive_identity(Path(v2.path))
    if request.image is None and v2.tags:  # no name given: the tags the v1 archive carries
        plan = replace(plan, repo_tag=v2.tags[0], tags=tuple(v2.tags))
    return v2.path, image_id, created, plan


def _save_and_upload(
    request: PushRequest, plan: PushPlan, work_files: list[str]
) -> tuple[PlacedCollection, str, PushPlan]:
    """Save or fetch (when Arvados lacks the image) and place it; a damaged cache entry is written once more."""
    logger = get_run_logger()
    image_id, created = plan.image_id or "", plan.created
    tar, tar_sha256 = None, ""
    if plan.source == "archive":
        tar, image_id, created, plan = _from_archive(request, plan, work_files)
    for attempt in (1, 2):
        if plan.source == "registry" and (request.force or not plan.in_arvados):
            fetched = fetch_from_registry(
                plan.registry_ref or "", image_id, request.platform, request.allow_http, request.registry_ca
            )
            tar, tar_sha256 = fetched.path, fetched.sha256
            work_files.append(fetched.path)
            archive_id, created = archive_identity(Path(fetched.path))
            if archive_id != image_id:
                raise MalformedArchiveError(f"{fetched.path}: holds {archive_id}, not the fetched {image_id}")
        if plan.source == "engine" and (request.force or not plan.in_arvados):
            saved = save(plan.engine_id or "")
            tar, tar_sha256 = saved.path, saved.sha256
            work_files.append(saved.path)
            archive_id, created = archive_identity(Path(saved.path))
            if image_id and archive_id != image_id:
                logger.warning(
                    "engine ID %s is not the archive's config digest %s: using the latter", image_id, archive_id
                )
            image_id = archive_id
        try:
            placed = upload(
                UploadRequest(
                    image_id=image_id,
                    owner_uuid=plan.owner_uuid,
                    name=request.name,
                    repo_tag=plan.repo_tag,
                    tar=Path(tar) if tar else None,
                    tar_sha256=tar_sha256,
                    created=created,
                    force=request.force,
                ),
                request.credentials_block,
            )
            return placed, image_id, plan
        except CacheCorruptError:
            if attempt == 2 or not tar_sha256:
                raise
            logger.warning("the archive of %s was damaged in the cache; writing it again", image_id[:19])
    raise AssertionError("unreachable")


@flow(name="push-image")
def push_image(
    image: Image = "",
    tag: Tag = "",
    project_uuid: ProjectUuid = "",
    name: CollectionName = "",
    force: Force = False,
    pull: Pull = False,
    force_image_format: ForceImageFormat = False,
    from_archive: FromArchive = "",
    from_registry: FromRegistry = False,
    platform: Platform = DEFAULT_PLATFORM,
    allow_http: AllowHttp = False,
    registry_ca: RegistryCa = "",
    credentials_block: CredentialsBlock = "",
) -> PushResult:
    """Push an image into Arvados; the run's state message names the collection, or the reason it failed."""
    try:
        request = PushRequest(
            image=optional(image),
            tag=optional(tag),
            project_uuid=optional(project_uuid),
            name=name or None,
            force=force,
            pull=pull,
            force_image_format=force_image_format,
            from_archive=optional(from_archive),
            from_registry=from_registry,
            platform=platform,
            allow_http=allow_http,
            registry_ca=optional(registry_ca),
            credentials_block=optional(credentials_block),
        )
    except KeepdockerError as exc:
        return failed(exc, PushResult)
    try:
        result = push(request)
    except KeepdockerError as exc:
        get_run_logger().error("push of %s failed: %s", request.image or request.from_archive, exc.message)
        return failed(exc, PushResult)
    label = result.tags[0] if result.tags else result.image_id[:19]
    return completed(result, f"{result.collection_uuid} {result.action}: {label} ({result.pdh})")


def push(request: PushRequest) -> PushResult:
    """Push ``request.image`` into Arvados; returns the collection, PDH, image ID and the action taken."""
    started = time.monotonic()
    plan: PushPlan | None = None
    image_id = ""
    work_files: list[str] = []
    try:
        if request.pull:
            pull_image(request.image or "", request.tag)
        plan = discover_push(request, request.credentials_block)
        image_id = plan.image_id or ""
        placed, image_id, plan = _save_and_upload(request, plan, work_files)
        tags = list(plan.tags)
        links = link_image(
            placed.uuid, image_id, tags, plan.owner_uuid, placed.image_timestamp, request.credentials_block
        )
        remove_quietly(*work_files)
    except Exception as exc:
        # Only an image that resolved gets a history: a name that never matched anything is not an image.
        if plan is not None and (image_id or plan.repo_tag):
            message = exc.message if isinstance(exc, KeepdockerError) else f"{type(exc).__name__}: {exc}"
            names = _history_names(plan)
            record_history(
                names,
                history_row(
                    "push",
                    "failed",
                    ", ".join(names) or image_id,
                    reason=message,
                    image_id=image_id,
                    seconds=time.monotonic() - started,
                ),
            )
        raise
    result = PushResult(
        collection_uuid=placed.uuid,
        pdh=placed.pdh,
        image_id=image_id,
        tags=tags,
        action=placed.action,
        links_created=links,
        bytes=placed.size,
        seconds=round(time.monotonic() - started, 2),
    )
    names = _history_names(plan)
    record_history(
        names,
        history_row(
            "push",
            placed.action,
            ", ".join(names) or image_id,
            image_id=image_id,
            collection=placed.uuid,
            pdh=placed.pdh,
            size=placed.size,
            seconds=result.seconds,
        ),
    )
    get_run_logger().info("%s %s: collection %s (%s)", placed.action, image_id[:19], placed.uuid, placed.pdh)
    return result
