"""upgrade: convert a v1 archive to a deterministic v2 archive, engine-free (or through an engine as a cross-check)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect import task

from keepdocker.cache import default_cache_dir
from keepdocker.engine import DockerEngine
from keepdocker.engine_upgrade import upgrade_with_engine as engine_upgrade
from keepdocker.errors import MalformedArchiveError
from keepdocker.images.docker_archive import read_single_image
from keepdocker.images.upgrade import upgrade as upgrade_file
from tasks.policy import IO_RETRY, ValidatedFileCache
from tasks.progress import task_meter
from tasks.results import FileResult, UpgradedArchive

__all__ = ["upgrade", "upgrade_with_engine", "upgraded_path"]


def upgraded_path(src_key: str, tags: list[str], image: str | None) -> Path:
    """Where the v2 archive for this input goes: a name fixed by the source digest, tags and image choice."""
    variant = hashlib.sha256(json.dumps([sorted(tags), image]).encode()).hexdigest()[:12]
    directory = default_cache_dir() / "upgraded"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory / f"{src_key[:32]}-{variant}.tar"


@task(
    name="upgrade",
    task_run_name="upgrade-{src_key:.12}",
    cache_policy=ValidatedFileCache(),
    result_serializer="json",
)
def upgrade(src: str, src_key: str, tags: list[str], image: str | None = None) -> UpgradedArchive:
    """The v2 archive of ``src`` (one manifest entry for ``image``, tagged ``tags``); refusals are permanent."""
    dst = upgraded_path(src_key, tags, image)
    progress = task_meter("convert", image[:12] if image else Path(src).name)
    entries = upgrade_file(Path(src), dst, tags=tags, image=image, progress=progress).entries
    if len(entries) != 1:
        ids = ", ".join(e.id for e in entries)
        raise MalformedArchiveError(f"{src}: expected one image, the archive holds {len(entries)} ({ids})")
    entry = entries[0]
    created = entry.created.isoformat() if entry.created else None
    base = FileResult.of(dst)
    return UpgradedArchive(**base.model_dump(), image_id=entry.id, tags=list(entry.tags), created=created)


@task(
    name="upgrade-engine",
    task_run_name="upgrade-engine-{src_key:.12}",
    cache_policy=ValidatedFileCache(),
    result_serializer="json",
    **IO_RETRY,
)
def upgrade_with_engine(src: str, src_key: str, tags: list[str], image: str | None = None) -> UpgradedArchive:
    """The v2 archive an engine's legacy load + save makes of ``src`` (needs Docker <= 28, graphdriver store)."""
    if not image:
        raise MalformedArchiveError(f"{src}: the engine strategy needs the v1 image ID to load")
    dst = upgraded_path(src_key, tags, f"engine:{image}")
    with DockerEngine() as engine:
        saved = engine_upgrade(engine, Path(src), dst, image)
    made = read_single_image(saved.path, hint="the engine should have saved one")
    config_created = made.created.isoformat() if made.created else None
    base = FileResult.of(saved.path, saved.sha256)
    return UpgradedArchive(**base.model_dump(), image_id=made.id, tags=list(tags), created=config_created)
