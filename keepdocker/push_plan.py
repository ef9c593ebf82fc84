"""What a push will do, decided before anything is written: where the image comes from, its ID, its owner.

The image comes from a saved archive (``--from-archive``), from its registry with no engine (``--from-registry``:
only the manifest and config are read here), else from the local Docker engine, else (the engine lacks it) from the
copy Arvados already holds, as arv-keepdocker falls back. The engine's own image ID is trusted only
from a graphdriver store: Docker 29's containerd store reports the manifest digest there, not the config digest
crunch-run looks up, so then only the saved archive tells the ID.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

from keepdocker.arv.catalog import list_images
from keepdocker.arv.client import ArvadosSession
from keepdocker.arv.push import check_image_format, find_existing, resolve_owner
from keepdocker.engine import DockerEngine, MatchKind
from keepdocker.errors import ImageNotFoundError, UsageError
from keepdocker.images.docker_archive import detect_format, only_image, read_single_image
from keepdocker.images.model import ArchiveFormat
from keepdocker.images.validate import read_loadable_archive
from keepdocker.references import ImageReference, parse_reference
from keepdocker.registry import DEFAULT_PLATFORM, RegistryOptions, resolve_image

__all__ = [
    "PushPlan",
    "PushSource",
    "PushTarget",
    "archive_identity",
    "locate_image",
    "plan_push",
    "raw_created",
    "registry_options",
]


class PushSource(Protocol):
    """The fields of a push request that decide the plan (a validated request of the CLI or a flow has them)."""

    @property
    def image(self) -> str | None: ...  # repo, repo:tag, registry:port/repo:tag or an ID prefix; None: the archive's

    @property
    def tag(self) -> str | None: ...

    @property
    def project_uuid(self) -> str | None: ...  # owner of new records; None: the token's user

    @property
    def force_image_format(self) -> bool: ...  # store v2 even if the cluster does not list it

    @property
    def from_archive(self) -> str | None: ...  # a saved archive to push instead of asking an engine

    @property
    def from_registry(self) -> bool: ...  # read the image from its registry instead of asking an engine

    @property
    def platform(self) -> str: ...  # os/arch[/variant] to take from a multi-platform image (from_registry)

    @property
    def allow_http(self) -> bool: ...  # plain HTTP allowed for a non-loopback registry (from_registry)

    @property
    def registry_ca(self) -> str | None: ...  # PEM file of CAs for the registry's TLS (from_registry)


@dataclass(frozen=True)
class PushTarget:
    """A plain PushSource, for callers that hold the fields rather than a validated request."""

    image: str | None
    tag: str | None = None
    project_uuid: str | None = None
    force_image_format: bool = False
    from_archive: str | None = None
    from_registry: bool = False
    platform: str = DEFAULT_PLATFORM
    allow_http: bool = False
    registry_ca: str | None = None


@dataclass(frozen=True)
class PushPlan:
    """What discover found for a push: which image, under which name, for which owner, and where it is."""

    source: Literal["engine", "archive", "registry", "arvados"]
    owner_uuid: str
    repo_tag: str | None
    tags: tuple[str, ...] = ()  # every tag to link (repo_tag first); a nameless archive push may carry several
    registry_ref: str | None = None  # repository@manifest digest, for from_registry
    engine_id: str | None = None  # the engine's ID of the local image
    image_id: str | None = None  # the config digest, when known before saving
    archive_format: str | None = None  # v1 | docker | oci, for --from-archive
    created: str | None = None  # the config's raw `created`, when known
    in_arvados: bool = False  # a readable copy exists: no save or upload needed


def raw_created(config: bytes) -> str | None:
    """The config's `created` string as stored (what arv-keepdocker records as image_timestamp)."""
    try:
        value = json.loads(config).get("created")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def archive_identity(path: Path) -> tuple[str, str | None]:
    """The config digest and raw `created` of the single image of an archive this push saved or converted."""
    image = read_single_image(path, hint="a pushed archive must hold one")
    return image.id, raw_created(image.config)


def plan_push(session: ArvadosSession, request: PushSource, *, engine_timeout: float = 60.0) -> PushPlan:
    """Resolve the image (archive, engine, or Arvados when the engine lacks it) and see whether Arvados has it."""
    plan = locate_image(session, request, engine_timeout=engine_timeout)
    if plan.image_id:
        plan = replace(plan, in_arvados=bool(find_existing(session, plan.image_id, plan.owner_uuid).collections))
    return plan


def registry_options(request: PushSource) -> RegistryOptions:
    """How to reach the registry for a from_registry push (credentials: the user's Docker config)."""
    return RegistryOptions(
        platform=request.platform,
        allow_http=request.allow_http,
        ca_file=Path(request.registry_ca) if request.registry_ca else None,
    )


def locate_image(session: ArvadosSession, request: PushSource, *, engine_timeout: float = 60.0) -> PushPlan:
    """The plan without asking whether Arvados holds the image (``in_arvados`` stays False)."""
    check_image_format(session, request.force_image_format)
    ref = parse_reference(request.image, request.tag) if request.image is not None else None
    owner = resolve_owner(session, request.project_uuid)
    if request.from_archive:
        return _from_archive(Path(request.from_archive), owner, ref.repo_tag if ref is not None else None, ref is None)
    if ref is None:
        raise UsageError("IMAGE is required unless --from-archive is given")
    if request.from_registry:
        found = resolve_image(ref.text, request.tag, registry_options(request))
        tags = (found.repo_tag,) if found.repo_tag else ()
        return PushPlan(
            source="registry",
            owner_uuid=owner,
            repo_tag=found.repo_tag,
            tags=tags,
            registry_ref=found.pinned,
            image_id=found.image_id,
        )
    return _from_engine(session, ref, owner, engine_timeout)


def _from_archive(path: Path, owner: str, repo_tag: str | None, own_tags: bool) -> PushPlan:
    """The plan for an archive; ``own_tags``: no name was given, so the tags the archive carries are linked."""
    fmt = detect_format(path)
    plan = PushPlan(
        source="archive",
        owner_uuid=owner,
        repo_tag=repo_tag,
        tags=(repo_tag,) if repo_tag else (),
        archive_format=fmt.value,
    )
    if fmt is ArchiveFormat.V1:  # its ID (and, without a name, its tags) are known once it has been upgraded
        return plan
    # A user's archive is published as it is: refuse what no engine would load, and more than one image.
    image = only_image(read_loadable_archive(path), path, error=UsageError, hint="push one per archive")
    plan = replace(plan, image_id=image.id, created=raw_created(image.config))
    if own_tags and image.tags:
        plan = replace(plan, repo_tag=image.tags[0], tags=image.tags)
    return plan


def _from_engine(session: ArvadosSession, ref: ImageReference, owner: str, timeout: float) -> PushPlan:
    try:
        with DockerEngine(timeout=timeout) as engine:
            local = engine.resolve(ref)
            trusted = not engine.info().containerd_store
    except ImageNotFoundError:
        listed = list_images(session, ref.repository or f"sha256:{ref.id_prefix}", ref.tag)
        if not listed:
            raise
        tags = (ref.repo_tag,) if ref.repo_tag else ()
        return PushPlan(
            source="arvados", owner_uuid=owner, repo_tag=ref.repo_tag, tags=tags, image_id=listed[0].image_id
        )
    repo_tag = None if local.matched_by is MatchKind.ID else ref.repo_tag
    return PushPlan(
        source="engine",
        owner_uuid=owner,
        repo_tag=repo_tag,
        tags=(repo_tag,) if repo_tag else (),
        engine_id=local.id,
        image_id=local.id if trusted else None,
    )
