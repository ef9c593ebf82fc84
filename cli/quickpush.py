"""Push work done before Prefect starts: the no-op answer, and `docker save` while Prefect imports.

Asking Arvados and the engine costs a few requests; importing Prefect and creating a flow run costs seconds. A push
that would change nothing therefore prints the collection UUID (as arv-keepdocker does) and starts no flow run, so it
leaves no history row. A push that must upload starts saving the image into the tar cache at once, in a thread,
while the main thread imports Prefect and starts the flow, and puts the saved bytes into Keep blocks as they stream
(``keepdocker.arv.staging``); the flow's save task then finds the finished cache entry (one writer per image: it
waits for this one) and its upload task only creates the collection. A --from-registry push fetches from the
registry the same way (without the Keep overlap).
Everything else -- a copy elsewhere, a missing link -- is the flow's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from keepdocker.arv.client import ArvadosConfig, connect
from keepdocker.arv.push import find_existing, present_for
from keepdocker.arv.staging import StagingUpload
from keepdocker.cache import TarCache
from keepdocker.engine import DockerEngine
from keepdocker.errors import KeepdockerError
from keepdocker.progress import meter
from keepdocker.push_plan import PushTarget, locate_image, registry_options
from keepdocker.registry import RegistryImage, fetch_to_cache

__all__ = [
    "ENGINE_TIMEOUT_SECONDS",
    "Background",
    "QuickLook",
    "pre_fetch",
    "pre_save",
    "quick_look",
    "quick_look_registry",
]

# An engine that does not answer a query in this time is reported at once (the flow's retries would take ~50 s).
ENGINE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class QuickLook:
    """What Arvados and the engine say before any flow: the UUID of a no-op push, or the image to save."""

    present_uuid: str | None = None  # the owner's collection when the push would change nothing
    save_id: str | None = None  # the engine's image ID when no readable copy exists anywhere (an upload is coming)
    fetch: RegistryImage | None = None  # for --from-registry: the image to fetch, when no readable copy exists


def quick_look(
    image: str,
    tag: str | None,
    project_uuid: str | None = None,
    *,
    force_image_format: bool = False,
) -> QuickLook:
    """Look the push up without Prefect; raises the push's own one-line errors early.

    Those are: no credentials, a cluster without v2, an unreachable engine, and an image neither in the engine nor
    in Arvados.
    """
    session = connect(ArvadosConfig.from_env())
    target = PushTarget(image, tag, project_uuid, force_image_format)
    plan = locate_image(session, target, engine_timeout=ENGINE_TIMEOUT_SECONDS)
    if plan.source != "engine" or plan.image_id is None:
        return QuickLook()  # the flow pushes the copy Arvados holds, or learns the ID from a save (containerd store)
    existing = find_existing(session, plan.image_id, plan.owner_uuid)
    found = present_for(session, existing, [plan.repo_tag] if plan.repo_tag else [])
    if found is not None:
        return QuickLook(present_uuid=found.uuid)
    return QuickLook(save_id=None if existing.collections else plan.engine_id)


class Background:
    """One piece of push work in a daemon thread while Prefect imports; the flow's task reuses its cache entry.

    A failure here is not reported: the flow's task does the work again, with its retries and its own error line.
    """

    def __init__(self, name: str, work: Callable[[], object]) -> None:
        self.error: KeepdockerError | OSError | None = None
        self._work = work
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Background:
        """Start the work; returns self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._work()
        except (KeepdockerError, OSError) as exc:
            self.error = exc  # kept for inspection; the flow's task retries and reports

    def join(self) -> None:
        """Wait for the work to end (a save always ends: the engine's stream has its own timeout)."""
        self._thread.join()


def pre_save(engine_id: str) -> Background:
    """`docker save` of one image into the tar cache, in the background, its blocks put into Keep as they stream.

    The flow's upload then finds the blocks (``keepdocker.arv.staging``) and only creates the collection, so the
    save and the upload overlap instead of following each other as in arv-keepdocker.
    """

    def save() -> None:
        progress = meter("save", engine_id[:19])
        staging = StagingUpload(connect(ArvadosConfig.from_env()))
        with DockerEngine() as engine:
            entry = TarCache.from_env().put_stream(engine_id, staging.tee(engine.saver([engine_id], progress=progress)))
        if entry.created:
            progress.finish(entry.size)

    return Background("presave", save)


def quick_look_registry(target: PushTarget) -> QuickLook:
    """For --from-registry: the no-op answer from the registry's manifest and config (no layers, no engine).

    Raises the push's one-line registry errors (no such tag, refused credentials, untrusted certificate) before
    Prefect starts.
    """
    session = connect(ArvadosConfig.from_env())
    plan = locate_image(session, target)
    assert plan.image_id is not None and plan.registry_ref is not None  # a registry plan knows both
    existing = find_existing(session, plan.image_id, plan.owner_uuid)
    found = present_for(session, existing, list(plan.tags))
    if found is not None:
        return QuickLook(present_uuid=found.uuid)
    if existing.collections:
        return QuickLook()
    return QuickLook(fetch=RegistryImage.pinned_to(plan.registry_ref, plan.image_id, target.platform))


def pre_fetch(image: RegistryImage, target: PushTarget) -> Background:
    """The registry image fetched into the tar cache, in the background."""
    options = registry_options(target)
    return Background("prefetch", lambda: fetch_to_cache(image, TarCache.from_env(), options))
