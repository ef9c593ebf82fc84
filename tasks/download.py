"""download: fetch a collection's image tar from Keep into the local cache, keyed by its PDH."""

from __future__ import annotations

from prefect import task

from keepdocker.arv.transfer import stream_tar
from keepdocker.cache import CacheSink, TarCache
from tasks.policy import IO_RETRY, ValidatedFileCache
from tasks.progress import task_meter
from tasks.results import FileResult
from tasks.session import arvados_session

__all__ = ["download"]


@task(
    name="download",
    task_run_name="download-{pdh}",
    cache_policy=ValidatedFileCache(),
    result_serializer="json",
    **IO_RETRY,
)
def download(pdh: str, credentials_block: str | None = None) -> FileResult:
    """The collection's single tar, in the cache (written once, verified, reused across retries and runs)."""
    session = arvados_session(credentials_block)

    progress = task_meter("download", pdh)

    def fill(sink: CacheSink) -> None:
        stream_tar(session, pdh, sink, progress)

    entry = TarCache.from_env().put_stream(f"keep-{pdh}", fill)
    return FileResult.of(entry.path, entry.sha256)
