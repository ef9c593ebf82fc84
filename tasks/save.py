"""save: `docker save` an image into the content-addressed cache (verified, locked, saved once per image)."""

from __future__ import annotations

from prefect import task

from keepdocker.cache import TarCache
from keepdocker.engine import DockerEngine
from tasks.policy import IO_RETRY, ValidatedFileCache
from tasks.results import FileResult

__all__ = ["save"]


@task(
    name="save",
    task_run_name="save-{engine_id:.19}",
    cache_policy=ValidatedFileCache(),
    result_serializer="json",
    **IO_RETRY,
)
def save(engine_id: str) -> FileResult:
    """The image's `docker save` archive in the cache; concurrent saves of one image write it once."""
    with DockerEngine() as engine:
        entry = engine.save_cached(TarCache.from_env(), engine_id)
    return FileResult.of(entry.path, entry.sha256)
