"""discover: what there is to do, found in Arvados (and the Docker engine) before anything is written."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from keepdocker.arv.migration import V1Image, discover_v1_images, require_admin
from tasks.policy import IO_RETRY
from tasks.session import arvados_session

__all__ = ["discover_v1"]


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
