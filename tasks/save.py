"""save: `docker save` an image into the content-addressed cache (verified, locked, saved once per image).

With ``stage``, the same bytes stream into Keep blocks while they are saved, so the upload that follows is only a
collection record: saving and uploading overlap instead of running one after the other.
"""

from __future__ import annotations

from prefect import task

from keepdocker.arv.transfer import KeepStager
from keepdocker.cache import CacheSink, TarCache, Tee
from keepdocker.engine import DockerEngine
from tasks.policy import IO_RETRY, ValidatedFileCache
from tasks.results import FileResult, SavedTar
from tasks.session import arvados_session

__all__ = ["save"]


@task(
    name="save",
    task_run_name="save-{engine_id:.19}",
    cache_policy=ValidatedFileCache(),
    result_serializer="json",
    **IO_RETRY,
)
def save(engine_id: str, stage: bool = False, credentials_block: str | None = None) -> SavedTar:
    """The image's `docker save` archive in the cache; concurrent saves of one image write it once."""
    stager = KeepStager(arvados_session(credentials_block)) if stage else None
    with DockerEngine() as engine:
        saver = engine.saver([engine_id])

        def fill(sink: CacheSink) -> None:
            saver(Tee(sink, stager) if stager is not None else sink)

        entry = TarCache.from_env().put_stream(engine_id, fill)
    # An entry another run saved earlier streamed nothing into this stager: the upload then reads the file.
    staged = stager.finish() if stager is not None and entry.created else ""
    base = FileResult.of(entry.path, entry.sha256)
    return SavedTar(**base.model_dump(), staged_manifest=staged)
