"""link: the docker_image_hash, docker_image_repo+tag and docker_image_migration links, never duplicated."""

from __future__ import annotations

from prefect import task

from keepdocker.arv.migration import V1Image, ensure_migration_links
from keepdocker.arv.push import ensure_links
from tasks.policy import IO_RETRY, image_lock
from tasks.session import arvados_session

__all__ = ["link_image", "link_migration"]


@task(name="link", task_run_name="link-{image_id:.19}", **IO_RETRY)
def link_image(
    collection_uuid: str,
    image_id: str,
    repo_tags: list[str],
    owner_uuid: str,
    image_timestamp: str | None,
    credentials_block: str | None = None,
) -> int:
    """Create the image's missing hash and repo+tag links on the collection; return how many were created."""
    session = arvados_session(credentials_block)
    with image_lock(owner_uuid, image_id):
        return len(ensure_links(session, collection_uuid, image_id, repo_tags, owner_uuid, image_timestamp))


@task(name="link-migration", task_run_name="link-migration-{image.pdh}", **IO_RETRY)
def link_migration(
    image: V1Image, new_id: str, collection_uuid: str, new_pdh: str, credentials_block: str | None = None
) -> int:
    """Carry the old image's links over to the v2 collection, then add the migration link; return links created."""
    session = arvados_session(credentials_block)
    with image_lock(image.owner_uuid, new_id):
        return len(ensure_migration_links(session, image, new_id, collection_uuid, new_pdh))
