"""pull: refresh a local image from its registry (always pulls, unlike arv-keepdocker's pull-when-absent)."""

from __future__ import annotations

from prefect import task

from keepdocker.engine import DockerEngine
from keepdocker.references import parse_reference
from tasks.policy import IO_RETRY

__all__ = ["pull_image"]


@task(name="pull", task_run_name="pull-{image}", **IO_RETRY)
def pull_image(image: str, tag: str | None = None) -> str:
    """Pull ``image[:tag]`` into the engine and return its image ID."""
    with DockerEngine() as engine:
        return engine.pull(parse_reference(image, tag)).id
