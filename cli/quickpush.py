"""Push work done before Prefect starts: the no-op answer, and `docker save` while Prefect imports.

Asking Arvados and the engine costs a few requests; importing Prefect and creating a flow run costs seconds. A push
that would change nothing therefore prints the collection UUID (as arv-keepdocker does) and starts no flow run, so it
leaves no history row. A push that must upload starts saving the image into the tar cache at once, in a thread,
while the main thread imports Prefect and starts the flow; the flow's save task then finds the finished cache entry
(one writer per image: it waits for this one); a --from-registry push fetches from the registry the same way.
Everything else -- a copy elsewhere, a missing link -- is the flow's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from keepdocker.arv.client import ArvadosConfig, connect
from keepdocker.arv.push import find_existing, present_for
from keepdocker.cache import TarCache
from keepdocker.engine import DockerEngine
from keepdocker.errors import KeepdockerError
from keepdocker.progress import meter
from keepdocker.push_plan import PushTarget, locate_image, registry_options
from keepdocker.registry import RegistryImage, fetch_to_cache

__all__ = ["ENGINE_TIMEOUT_SECONDS", "PreFetch", "PreSave", "QuickLook", "quick_look", "quick_look_registry"]

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


class PreSave:
    """`docker save` of one image into the tar cache in a background thread (the flow's save task reuses it).

    A failure here is not reported: the flow's save task saves again, with its retries and its own error line.
    """

    def __init__(self, engine_id: str) -> None:
        self.engine_id = engine_id
        self.error: KeepdockerError | OSError | None = None
        self._thread = threading.Thread(target=self._save, name="presave", daemon=True)

    def start(self) -> PreSave:
        """Start saving; returns self."""
        self._thread.start()
        return self

    def _save(self) -> None:
        progress = meter("save", self.engine_id[:19])
        try:
            with DockerEngine() as engine:
                entry = engine.save_cached(TarCache.from_env(), self.engine_id, progress=progress)
        except (KeepdockerError, OSError) as exc:
            self.error = exc  # kept for inspection; the flow's save task retries and reports
            return
        if entry.created:
            progress.finish(entry.size)

    def join(self) -> None:
        """Wait for the save to end (it always ends: the engine's stream has its own timeout)."""
        self._thread.join()


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


class PreFetch:
    """The registry image fetched into the tar cache in a background thread (the flow's fetch task reuses it).

    A failure here is not reported: the flow's fetch task fetches again, with its retries and its own error line.
    """

    def __init__(self, image: RegistryImage, target: PushTarget) -> None:
        self.image = image
        self.options = registry_options(target)
        self.error: KeepdockerError | OSError | None = None
        self._thread = threading.Thread(target=self._fetch, name="prefetch", daemon=True)

    def start(self) -> PreFetch:
        """Start fetching; returns self."""
        self._thread.start()
        return self

    def _fetch(self) -> None:
        try:
            fetch_to_cache(self.image, TarCache.from_env(), self.options)
        except (KeepdockerError, OSError) as exc:
            self.error = exc  # kept for inspection; the flow's fetch task retries and reports

    def join(self) -> None:
        """Wait for the fetch to end."""
        self._thread.join()
