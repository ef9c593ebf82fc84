"""migrate-in-place: the v2 collection of a v1 image over the old image's Keep blocks (read once, new bytes only)."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict

from keepdocker.arv.catalog import collection_name
from keepdocker.arv.inplace import place_in_place, plan_in_place
from keepdocker.arv.push import find_existing
from tasks.policy import IO_RETRY, image_lock
from tasks.session import arvados_session

__all__ = ["MovedInPlace", "migrate_in_place"]


class MovedInPlace(BaseModel):
    """The v2 collection made over the old blocks (or found), with the bytes shared and written; or why not."""

    model_config = ConfigDict(frozen=True)

    image_id: str = ""
    created: str | None = None
    uuid: str = ""
    pdh: str = ""
    action: str = ""
    size: int = 0
    reused_bytes: int = 0
    written_bytes: int = 0
    fallback: str = ""  # non-empty: the whole-file path must be used, and why


@task(name="migrate-in-place", task_run_name="in-place-{pdh}", **IO_RETRY)
def migrate_in_place(
    pdh: str, tags: list[str], v1_id: str, owner_uuid: str, credentials_block: str | None = None
) -> MovedInPlace:
    """Read the v1 image from Keep once and create its v2 collection over the old blocks; refusals are permanent."""
    session = arvados_session(credentials_block)
    plan = plan_in_place(session, pdh, tags, v1_id)
    if plan.fallback:
        get_run_logger().info("%s: whole-file path: %s", pdh, plan.fallback)
        return MovedInPlace(image_id=plan.image_id, size=plan.size, fallback=plan.fallback)
    first_tag = tags[0] if tags else None
    with image_lock(owner_uuid, plan.image_id):
        existing = find_existing(session, plan.image_id, owner_uuid)
        name = collection_name(plan.image_id, first_tag)
        ref, action = place_in_place(session, plan, existing, name=name, repo_tag=first_tag)
    get_run_logger().info(
        "%s: %s %s: %d bytes shared, %d written", plan.image_id[:19], action, ref.uuid, plan.reused_bytes,
        plan.written_bytes,
    )
    return MovedInPlace(
        image_id=plan.image_id, created=plan.created, uuid=ref.uuid, pdh=ref.pdh, action=action, size=plan.size,
        reused_bytes=plan.reused_bytes, written_bytes=plan.written_bytes,
    )
