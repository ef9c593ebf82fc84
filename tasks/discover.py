"""discover: what there is to do, found in Arvados (and the Docker engine) before anything is written."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from keepdocker.arv.migration import V1Image, discover_v1_images, require_admin
from keepdocker.push_plan import PushPlan, PushSource, plan_push
from tasks.policy import IO_RETRY
from tasks.session import arvados_session

__all__ = ["discover_push", "discover_v1"]


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


@task(name="discover", **IO_RETRY)
def discover_push(request: PushSource, credentials_block: str | None) -> PushPlan:
    """Resolve the image (engine, archive, registry, or Arvados when absent locally); does Arvados have it?"""
    logger = get_run_logger()
    plan = plan_push(arvados_session(credentials_block), request)
    if plan.source == "arvados":
        logger.info("%s is not in the local engine; using the copy already in Arvados", request.image)
    elif plan.source == "registry":
        logger.info("%s is %s in its registry (%s)", request.image, plan.registry_ref, request.platform)
    logger.info("push plan: %s", plan)
    return plan
