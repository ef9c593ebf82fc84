"""upload: put an image tar into a collection of the target owner, unless Arvados already holds the image."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from keepdocker.arv.push import UploadRequest, place
from keepdocker.errors import CacheCorruptError
from tasks.policy import IO_RETRY, image_lock
from tasks.progress import task_meter
from tasks.results import PlacedCollection, remove_quietly
from tasks.session import arvados_session

__all__ = ["upload"]


@task(name="upload", task_run_name="upload-{request.image_id:.19}", **IO_RETRY)
def upload(request: UploadRequest, credentials_block: str | None = None) -> PlacedCollection:
    """The collection holding the image for its owner: found, copied (no Keep traffic) or uploaded."""
    logger = get_run_logger()
    progress = task_meter("upload", request.image_id[:19])
    with image_lock(request.owner_uuid, request.image_id):
        try:
            placed = place(arvados_session(credentials_block), request, progress)
        except CacheCorruptError as exc:
            if request.tar is not None:  # retrying cannot mend the file: drop it and let the flow save it again
                remove_quietly(str(request.tar))
            raise CacheCorruptError(exc.message, temporary=False) from exc
    ref, timestamp = placed.ref, placed.image_timestamp
    how = " (its blocks were stored in Keep while it was saved)" if ref.staged else ""
    logger.info("%s: %s collection %s (%s)%s", request.image_id[:19], placed.action.value, ref.uuid, ref.pdh, how)
    return PlacedCollection(
        uuid=ref.uuid, pdh=ref.pdh, size=ref.size, action=placed.action.value, image_timestamp=timestamp
    )
