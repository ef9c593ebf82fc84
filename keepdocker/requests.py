"""Typed requests for push and migration: validated on construction, before any work, naming the bad option.

Flows build them from their flat parameters, the CLI from its arguments; the core and the tasks take them as
they are. Empty optional values are ``None``. Errors are :class:`UsageError` lines that name the option as the
caller spells it (see :mod:`keepdocker.options`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from keepdocker.errors import UsageError
from keepdocker.options import field, setting
from keepdocker.references import parse_reference
from keepdocker.registry import DEFAULT_PLATFORM

__all__ = [
    "CREDENTIALS_BLOCK_PATTERN",
    "MAX_CONCURRENCY",
    "MAX_LIMIT",
    "MAX_NAME",
    "MAX_PDHS",
    "PDH_PATTERN",
    "PLATFORM_PATTERN",
    "PROJECT_PATTERN",
    "MigrateImageRequest",
    "MigrateRequest",
    "PushRequest",
    "Strategy",
]

PDH_PATTERN = r"^[0-9a-f]{32}\+[0-9]+$"
PLATFORM_PATTERN = r"^[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_]+)?$"
PROJECT_PATTERN = r"^[0-9a-z]{5}-(j7d0g|tpzed)-[0-9a-z]{15}$"
# Prefect block document names: lower-case letters, digits and dashes.
CREDENTIALS_BLOCK_PATTERN = r"^[a-z0-9-]+$"
MAX_LIMIT = 1_000_000
MAX_CONCURRENCY = 32
MAX_PDHS = 10_000
MAX_NAME = 250

# native: the engine-free converter; engine: docker load + save in a Docker <= 28 engine.
Strategy = Literal["native", "engine"]
STRATEGIES: tuple[Strategy, ...] = ("native", "engine")


def _bad(name: str, problem: str) -> UsageError:
    return UsageError(f"{field(name)}: {problem}")


def _check_project(project_uuid: str | None) -> None:
    if project_uuid is not None and not re.fullmatch(PROJECT_PATTERN, project_uuid):
        raise _bad(
            "project_uuid", f"{project_uuid!r} is not a project or user UUID (zzzzz-j7d0g-... or zzzzz-tpzed-...)"
        )


def _check_credentials(name: str | None) -> None:
    if name is not None and not re.fullmatch(CREDENTIALS_BLOCK_PATTERN, name):
        raise _bad("credentials_block", f"{name!r} is not a block name (lower-case letters, digits and dashes)")


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise _bad("strategy", f"{strategy!r} is not one of {', '.join(STRATEGIES)}")


def _check_pdh(name: str, pdh: str) -> None:
    if not re.fullmatch(PDH_PATTERN, pdh):
        raise _bad(name, f"{pdh!r} is not a portable data hash (32 hex digits, '+', size)")


@dataclass(frozen=True)
class PushRequest:
    """Put one Docker image into Arvados, as `arv-keepdocker IMAGE [TAG]` does."""

    image: str | None = None  # None only with from_archive: the archive's own image and tags
    tag: str | None = None
    project_uuid: str | None = None  # owner of the collection and links; None: the token's user
    name: str | None = None  # collection name; None: arv-keepdocker's
    force: bool = False  # upload even when Arvados already holds the image
    pull: bool = False  # pull from the registry first
    force_image_format: bool = False  # store v2 even if the cluster does not list it
    from_archive: str | None = None  # push this saved archive instead of asking an engine
    from_registry: bool = False  # fetch from the registry with no engine (skopeo)
    platform: str = DEFAULT_PLATFORM  # with from_registry: os/arch[/variant] of a multi-platform image
    allow_http: bool = False  # with from_registry: a plain-HTTP registry is allowed
    registry_ca: str | None = None  # with from_registry: PEM file of CAs for the registry's TLS
    credentials_block: str | None = None  # Arvados credentials block; None: the environment

    def __post_init__(self) -> None:
        """Refuse bad references, tags, UUIDs, names and contradictory options."""
        if self.image is None:
            if self.from_archive is None:
                raise _bad("image", f"give the image to push (it may be left out only with {field('from_archive')})")
            if self.tag is not None:
                raise _bad("tag", "a tag needs an image name; without one the archive's own tags are used")
        else:
            self._check_image(self.image)
        _check_project(self.project_uuid)
        if self.name is not None and not 1 <= len(self.name) <= MAX_NAME:
            raise _bad("name", f"a collection name has 1 to {MAX_NAME} characters")
        if self.from_archive is not None and not self.from_archive.strip():
            raise _bad("from_archive", "give the path of a saved archive")
        if self.from_archive is not None and self.pull:
            raise UsageError(
                f"{setting('pull')} and {field('from_archive')} exclude each other: an archive needs no engine"
            )
        if self.from_registry and (self.pull or self.from_archive is not None):
            raise UsageError(
                f"{setting('from_registry')} excludes {field('pull')} and {field('from_archive')}: "
                "it reads the registry, not an engine"
            )
        if not re.fullmatch(PLATFORM_PATTERN, self.platform):
            raise _bad("platform", f"{self.platform!r} is not os/arch[/variant], e.g. linux/amd64")
        if not self.from_registry and (self.allow_http or self.registry_ca or self.platform != DEFAULT_PLATFORM):
            raise UsageError(
                f"{field('platform')}, {field('allow_http')} and {field('registry_ca')} apply to "
                f"{setting('from_registry')} only"
            )
        _check_credentials(self.credentials_block)

    def _check_image(self, image: str) -> None:
        image = image.strip()
        if not image or len(image) > 512:
            raise _bad("image", "give repository[:tag], registry:port/repository:tag or an image ID (1-512 characters)")
        try:
            parse_reference(image)
        except UsageError as exc:
            raise _bad("image", exc.message) from None
        object.__setattr__(self, "image", image)
        try:
            ref = parse_reference(image, self.tag)
        except UsageError as exc:
            raise _bad("tag", exc.message) from None
        if self.from_registry and ref.repository is None:
            raise _bad("image", f"{setting('from_registry')} needs repository[:tag] or repository@digest, not an ID")


@dataclass(frozen=True)
class MigrateRequest:
    """Find v1 images in Arvados and add their v2 equivalents plus the migration links."""

    dry_run: bool = False  # only list what would be migrated
    project_uuid: str | None = None  # only images whose collection this project owns
    pdhs: tuple[str, ...] = ()  # only these old collection PDHs; empty: all
    limit: int | None = None  # at most this many images; None: all
    concurrency: int = 2  # images migrated at the same time
    strategy: Strategy = "native"
    verify: bool = False  # load each v2 archive into an engine and check its ID
    fan_out: bool = False  # one migrate-image flow run per image
    credentials_block: str | None = None

    def __post_init__(self) -> None:
        """Refuse bad PDHs, UUIDs, limits, concurrency and strategies."""
        object.__setattr__(self, "pdhs", tuple(self.pdhs))
        if len(self.pdhs) > MAX_PDHS:
            raise _bad("pdhs", f"at most {MAX_PDHS} PDHs per sweep")
        for pdh in self.pdhs:
            _check_pdh("pdhs", pdh)
        _check_project(self.project_uuid)
        if self.limit is not None and not 1 <= self.limit <= MAX_LIMIT:
            raise _bad("limit", f"{self.limit} is out of range: migrate 1 to {MAX_LIMIT} images per sweep")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise _bad("concurrency", f"{self.concurrency} is out of range: 1 to {MAX_CONCURRENCY} images at a time")
        _check_strategy(self.strategy)
        _check_credentials(self.credentials_block)


@dataclass(frozen=True)
class MigrateImageRequest:
    """Migrate the one v1 image stored in the collection with this PDH (the unit a fanned-out sweep runs)."""

    pdh: str
    strategy: Strategy = "native"
    verify: bool = False
    credentials_block: str | None = None

    def __post_init__(self) -> None:
        """Refuse a malformed PDH or strategy."""
        _check_pdh("pdh", self.pdh)
        _check_strategy(self.strategy)
        _check_credentials(self.credentials_block)
