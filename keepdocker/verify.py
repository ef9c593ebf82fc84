"""Verify what Arvados serves: stream a collection's image tar from Keep into ``docker load`` and check its ID."""

from __future__ import annotations

from collections.abc import Iterator

import arvados.collection

from keepdocker.arv.client import ArvadosSession, arvados_errors
from keepdocker.arv.transfer import CHUNK, single_tar
from keepdocker.engine import DockerEngine, LoadResult
from keepdocker.errors import ArvadosError, EngineError, VerificationError

__all__ = ["collection_tar_chunks", "verify_collection_loads"]


def collection_tar_chunks(session: ArvadosSession, locator: str) -> Iterator[bytes]:
    """The single tar of collection ``locator`` (UUID or PDH) read from Keep chunk by chunk, never stored locally.

    Keep failures are raised as keepdocker errors from inside the iteration; a short read raises ArvadosError.
    """
    doing = f"reading collection {locator} from Keep"
    with arvados_errors(doing):
        reader = arvados.collection.CollectionReader(locator, api_client=session.api, num_retries=4)
        filename, total = single_tar(reader.manifest_text())
        src = reader.open(filename, "rb")
    done = 0
    try:
        while True:
            with arvados_errors(doing):
                chunk = src.read(CHUNK * 8)
            if not chunk:
                break
            done += len(chunk)
            yield chunk
    finally:
        src.close()
    if done != total:
        raise ArvadosError(f"{doing}: got {done} bytes of {filename}, the manifest says {total}")


def verify_collection_loads(
    session: ArvadosSession, locator: str, expected_id: str, engine: DockerEngine, time_limit: float | None = None
) -> LoadResult:
    """Load the tar Arvados serves for ``locator`` into ``engine``; VerificationError unless it is ``expected_id``.

    The bytes go from Keep straight into the engine: this checks the stored collection, not a local file.
    """
    action = f"loading collection {locator} from Keep"
    try:
        loaded = engine.load_stream(collection_tar_chunks(session, locator), action, time_limit)
    except EngineError as exc:
        if exc.temporary:
            raise
        raise VerificationError(
            f"collection {locator} does not load as {expected_id}: {exc.message}; do not use it, and re-run the "
            "migration of this image"
        ) from exc
    if expected_id not in loaded.image_ids:
        got = ", ".join(loaded.image_ids) or "nothing"
        raise VerificationError(
            f"collection {locator} loads as {got} in the Docker engine at {engine.host}, not the expected "
            f"{expected_id}: its bytes are not that image; do not use it, and re-run the migration of this image"
        )
    return loaded
