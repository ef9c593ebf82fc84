"""discover: what there is to do, found in Arvados (and the Docker engine) before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger
from pydantic import BaseModel

from keepdocker.arv.catalog import list_images
from keepdocker.arv.migration import V1Image, discover_v1_images, require_admin
from keepdocker.arv.push import check_image_format, find_existing, resolve_owner
from keepdocker.engine import DockerEngine, MatchKind
from keepdocker.errors import ImageNotFoundError, UsageError
from keepdocker.images.docker_archive import detect_format
from keepdocker.images.model import ArchiveFormat
from keepdocker.images.validate import read_loadable_archive
from keepdocker.options import field
from keepdocker.references import parse_reference
from keepdocker.requests import PushRequest
from tasks.policy import IO_RETRY
from tasks.session import arvados_session

__all__ = ["PushPlan", "discover_push", "discover_v1"]


@task(name="discover-v1-images", **IO_RETRY)
def discover_v1(
    project_uuid: str | None = None,
    pdhs: list[str] | None = None,
    limit: int | None = None,
    credentials_block: str | None = None,
) -> list[V1Image]:
    """Every v1 image without a trusted migration link (admin token required, checked first)."""
    session = arvados_session(credentials_block)
    admin = require_admin(session)
    images = discover_v1_images(session, project_uuid=project_uuid, pdhs=pdhs or None, limit=limit)
    get_run_logger().info("%s: %d v1 image(s) to migrate", admin, len(images))
    return images


class PushPlan(BaseModel):
    """What discover found for a push: which image, under which name, for which owner, and where it is."""

    source: str  # "engine" | "archive" | "arvados"
    owner_uuid: str
    repo_tag: str | None
    engine_id: str | None = None  # the engine's ID of the local image
    image_id: str | None = None  # the config digest, when known before saving
    archive_format: str | None = None  # v1 | docker | oci, for --from-archive
    created: str | None = None  # the config's raw `created`, when known
    in_arvados: bool = False  # a readable copy exists: no save or upload needed


def raw_created(config: bytes) -> str | None:
    """The config's `created` string as stored (what arv-keepdocker records as image_timestamp)."""
    try:
        value = json.loads(config).get("created")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


@task(name="discover", **IO_RETRY)
def discover_push(request: PushRequest) -> PushPlan:
    """Resolve the image (engine, archive, or Arvados when absent locally) and see whether Arvados has it."""
    logger = get_run_logger()
    session = arvados_session(request.credentials_block)
    check_image_format(session, request.force_image_format)
    ref = parse_reference(request.image, request.tag)
    owner = resolve_owner(session, request.project_uuid)
    plan = PushPlan(source="engine", owner_uuid=owner, repo_tag=ref.repo_tag)
    if request.from_archive:
        path = Path(request.from_archive)
        fmt = detect_format(path)
        plan = plan.model_copy(update={"source": "archive", "archive_format": fmt.value})
        if fmt is not ArchiveFormat.V1:
            images = read_loadable_archive(path)  # no publishing what no engine loads
            if len(images) != 1:
                ids = ", ".join(i.id for i in images)
                raise UsageError(
                    f"{field('from_archive')} {path}: holds {len(images)} images ({ids}); push one per archive"
                )
            plan = plan.model_copy(update={"image_id": images[0].id, "created": raw_created(images[0].config)})
    else:
        try:
            with DockerEngine() as engine:
                local = engine.resolve(ref)
                trusted = not engine.info().containerd_store
        except ImageNotFoundError:
            listed = list_images(session, ref.repository or f"sha256:{ref.id_prefix}", ref.tag)
            if not listed:
                raise
            logger.info("%s is not in the local engine; using the copy already in Arvados", request.image)
            plan = plan.model_copy(update={"source": "arvados", "image_id": listed[0].image_id})
        else:
            repo_tag = None if local.matched_by is MatchKind.ID else ref.repo_tag
            # Docker 29's containerd store reports the manifest digest as .Id: only the saved archive tells then.
            plan = plan.model_copy(
                update={"engine_id": local.id, "repo_tag": repo_tag, "image_id": local.id if trusted else None}
            )
    if plan.image_id:
        existing = find_existing(session, plan.image_id, owner)
        plan = plan.model_copy(update={"in_arvados": bool(existing.collections)})
    logger.info("push plan: %s", plan.model_dump_json())
    return plan
