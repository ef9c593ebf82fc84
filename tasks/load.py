"""load: verify an archive by loading it into a Docker engine and comparing the engine's ID with ours."""

from __future__ import annotations

from prefect import task

from keepdocker.engine import DockerEngine
from keepdocker.errors import EngineError
from tasks.policy import IO_RETRY

__all__ = ["verify_load"]


@task(name="load", task_run_name="load-{image_id:.19}", **IO_RETRY)
def verify_load(path: str, image_id: str) -> None:
    """Load ``path`` and require the engine to report ``image_id`` (the config digest we computed)."""
    with DockerEngine() as engine:
        loaded = engine.load(path)
    if image_id not in loaded.image_ids:
        raise EngineError(
            f"{path}: the engine at {engine.host} loaded {', '.join(loaded.image_ids) or 'nothing'}, "
            f"not the computed {image_id}: do not upload this archive"
        )
