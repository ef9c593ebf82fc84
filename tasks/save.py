"""save: `docker save` an image into the content-addressed cache (verified, locked, saved once per image)."""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

from keepdocker.cache import TarCache
from keepdocker.engine import DockerEngine
from tasks.policy import IO_RETRY, ValidatedFileCache
from tasks.progress import task_meter
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
    progress = task_meter("save", engine_id[:19])
    with DockerEngine() as engine:
        entry = engine.save_cached(TarCache.from_env(), engine_id, progress=progress)
    if entry.created:
        progress.finish(entry.size)
    else:
        get_run_logger().info("save %s: %.1f MiB reused from the cache", engine_id[:19], entry.size / (1 << 20))
    return FileResult.of(entry.path, entry.sha256)
