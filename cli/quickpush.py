"""The no-op push without Prefect: when Arvados already holds the image, with its links, for the target owner.

Asking Arvados and the engine costs a few requests; starting Prefect and a flow run costs seconds. A push that would
change nothing therefore prints the collection UUID (as arv-keepdocker does) and starts no flow run, so it leaves no
history row. Anything else -- a missing image, a copy elsewhere, a missing link -- goes to the push-image flow.
"""

from __future__ import annotations

from keepdocker.arv.client import ArvadosConfig, connect
from keepdocker.arv.push import already_pushed
from keepdocker.push_plan import PushTarget, locate_image

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
    target = PushTarget(image, tag, project_uuid, force_image_format)
    plan = locate_image(session, target, engine_timeout=ENGINE_TIMEOUT_SECONDS)
    if plan.source != "engine" or plan.image_id is None:
        return None  # the flow pushes the copy Arvados holds, or learns the ID from a save (containerd store)
    found = already_pushed(session, plan.image_id, [plan.repo_tag] if plan.repo_tag else [], plan.owner_uuid)
    return found.uuid if found is not None else None
