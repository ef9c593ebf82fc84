"""The no-op push without Prefect: when Arvados already holds the image, with its links, for the target owner.

Asking Arvados and the engine costs a few requests; starting Prefect and a flow run costs seconds. A push that would
change nothing therefore prints the collection UUID (as arv-keepdocker does) and starts no flow run, so it leaves no
history row. Anything else -- a missing image, a copy elsewhere, a missing link -- goes to the push-image flow.
"""

from __future__ import annotations

from keepdocker.arv.catalog import list_images
from keepdocker.arv.client import ArvadosConfig, connect
from keepdocker.arv.push import already_pushed, check_image_format, resolve_owner
from keepdocker.engine import DockerEngine, MatchKind
from keepdocker.errors import ImageNotFoundError
from keepdocker.references import parse_reference

__all__ = ["ENGINE_TIMEOUT_SECONDS", "quick_push"]

# An engine that does not answer a query in this time is reported at once (the flow's retries would take ~50 s).
ENGINE_TIMEOUT_SECONDS = 5.0


def quick_push(
    image: str,
    tag: str | None,
    project_uuid: str | None = None,
    *,
    force_image_format: bool = False,
) -> str | None:
    """The collection UUID when the push would change nothing; None when the flow has work to do.

    Raises the push's own one-line errors early: no credentials, a cluster without v2, an unreachable engine,
    and an image neither in the engine nor in Arvados.
    """
    session = connect(ArvadosConfig.from_env())
    check_image_format(session, force_image_format)
    ref = parse_reference(image, tag)
    with DockerEngine(timeout=ENGINE_TIMEOUT_SECONDS) as engine:
        engine.ping()
        try:
            local = engine.resolve(ref)
        except ImageNotFoundError:
            if list_images(session, ref.repository or f"sha256:{ref.id_prefix}", ref.tag):
                return None  # the flow pushes the copy Arvados holds
            raise
        if engine.info().containerd_store:
            return None  # the engine's ID is not the config digest there: only a saved archive tells
    owner = resolve_owner(session, project_uuid)
    repo_tags = [] if local.matched_by is MatchKind.ID or ref.repo_tag is None else [ref.repo_tag]
    found = already_pushed(session, local.id, repo_tags, owner)
    return found.uuid if found is not None else None
