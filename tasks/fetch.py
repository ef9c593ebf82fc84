"""fetch: copy an image from its registry into the tar cache as a crunch-run archive, with no Docker engine."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from keepdocker.cache import TarCache
from keepdocker.registry import RegistryImage, RegistryOptions, fetch_to_cache
from tasks.policy import IO_RETRY, ValidatedFileCache
from tasks.results import FileResult

__all__ = ["fetch_from_registry"]


@task(
    name="fetch",
    task_run_name="fetch-{image_id:.19}",
    cache_policy=ValidatedFileCache(),
    result_serializer="json",
    **IO_RETRY,
)
def fetch_from_registry(
    pinned: str,
    image_id: str,
    platform: str,
    allow_http: bool = False,
    registry_ca: str | None = None,
) -> FileResult:
    """The archive of ``pinned`` (repository@manifest digest) in the cache; fetched once per image ID."""
    image = RegistryImage.pinned_to(pinned, image_id, platform)
    options = RegistryOptions(
        platform=platform, allow_http=allow_http, ca_file=Path(registry_ca) if registry_ca else None
    )
    entry = fetch_to_cache(image, TarCache.from_env(), options)
    return FileResult.of(entry.path, entry.sha256)
