"""upload: put an image tar into a collection of the target owner, unless Arvados already holds the image."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from keepdocker.arv.push import Action, find_existing, place_image
from keepdocker.errors import CacheCorruptError
from tasks.policy import IO_RETRY, image_lock
from tasks.progress import task_meter
from tasks.results import PlacedCollection, remove_quietly
from tasks.session import arvados_session

__all__ = ["upload"]


@task(name="upload", task_run_name="upload-{image_id:.19}", **IO_RETRY)
def upload(
    tar: str | None,
    image_id: str,
    owner_uuid: str,
    name: str,
    repo_tag: str | None,
    force: bool = False,
    created: str | None = None,
    credentials_block: str | None = None,
    tar_sha256: str = "",
) -> PlacedCollection:
    """The collection holding ``image_id`` for ``owner_uuid``: found, copied (no Keep traffic) or uploaded."""
    logger = get_run_logger()
    session = arvados_session(credentials_block)
    progress = task_meter("upload", image_id[:19])
    with image_lock(owner_uuid, image_id):
        existing = find_existing(session, image_id, owner_uuid)
        try:
            ref, action = place_image(
                session,
                existing,
                tar=Path(tar) if tar else None,
                name=name,
                repo_tag=repo_tag,
                force=force,
                progress=progress,
                expected_sha256=tar_sha256,
            )
        except CacheCorruptError as exc:
            # Retrying the upload cannot mend the file: drop it and let the flow save it again.
            remove_quietly(tar or "")
            raise CacheCorruptError(exc.message, temporary=False) from exc
    timestamp = existing.image_timestamp if action is not Action.UPLOADED and existing.image_timestamp else created
    logger.info("%s: %s collection %s (%s)", image_id[:19], action.value, ref.uuid, ref.pdh)
    return PlacedCollection(uuid=ref.uuid, pdh=ref.pdh, size=ref.size, action=action.value, image_timestamp=timestamp)
