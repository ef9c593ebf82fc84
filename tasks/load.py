"""load: verify a stored image by streaming its collection from Keep into a Docker engine and comparing the ID."""

from __future__ import annotations

from prefect import task

from keepdocker.engine import DockerEngine
from keepdocker.verify import verify_collection_loads
from tasks.policy import IO_RETRY
from tasks.session import arvados_session

__all__ = ["verify_collection"]


@task(name="verify", task_run_name="verify-{pdh}", **IO_RETRY)
def verify_collection(pdh: str, image_id: str, credentials_block: str | None = None) -> None:
    """Load what Arvados serves for ``pdh`` into the engine ($DOCKER_HOST); VerificationError unless ``image_id``."""
    with DockerEngine() as engine:
        verify_collection_loads(arvados_session(credentials_block), pdh, image_id, engine)
