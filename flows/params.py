"""Typed flow parameters: validated before any work, rendered as forms in the Prefect UI."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from keepdocker.errors import UsageError
from keepdocker.references import parse_reference
from keepdocker.registry import DEFAULT_PLATFORM

__all__ = ["PDH_PATTERN", "UUID_PATTERN", "MigrateImageRequest", "MigrateRequest", "PushRequest"]

UUID_PATTERN = r"^[0-9a-z]{5}-[0-9a-z]{5}-[0-9a-z]{15}$"
PDH_PATTERN = r"^[0-9a-f]{32}\+[0-9]+$"
PROJECT_PATTERN = r"^[0-9a-z]{5}-(j7d0g|tpzed)-[0-9a-z]{15}$"

# Every flow takes its Arvados credentials the same way: the worker's environment, or a named Secret block.
CredentialsBlock = Annotated[
    str | None,
    Field(
        pattern=r"^[a-z0-9-]+$",
        description="Name of a Secret block holding ARVADOS_API_HOST/TOKEN JSON; default: the worker's environment.",
    ),
]


class PushRequest(BaseModel):
    """Put one Docker image into Arvados, as `arv-keepdocker IMAGE [TAG]` does."""

    model_config = ConfigDict(extra="forbid", title="Push an image")

    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Image to push: repo, repo:tag, registry:port/repo:tag, or an image ID (prefix). Optional with "
        "from_archive: the archive's own image is pushed under the tags it carries.",
        examples=["busybox:1.36"],
    )
    tag: str | None = Field(
        default=None, max_length=128, description="Tag, when not part of `image` (defaults to latest)."
    )
    project_uuid: str | None = Field(
        default=None,
        pattern=PROJECT_PATTERN,
        description="Project (or user) that owns the collection and links; default: the token's user.",
    )
    name: str | None = Field(
        default=None, min_length=1, max_length=250, description="Collection name (default: arv-keepdocker's)."
    )
    force: bool = Field(default=False, description="Upload even when Arvados already holds the image.")
    pull: bool = Field(default=False, description="Pull the image from its registry first (always refreshes).")
    force_image_format: bool = Field(
        default=False, description="Store the image even if the cluster does not list v2 in dockerImageFormats."
    )
    from_archive: str | None = Field(
        default=None,
        min_length=1,
        description="Push this saved archive (v1, v2 or OCI layout) instead of asking a Docker engine.",
    )
    from_registry: bool = Field(
        default=False,
        description="Fetch the image straight from its registry (no Docker engine): skopeo on the worker, "
        "credentials from the worker's Docker config ($DOCKER_CONFIG or ~/.docker/config.json).",
    )
    platform: str = Field(
        default=DEFAULT_PLATFORM,
        pattern=r"^[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_]+)?$",
        description="With from_registry: the platform to take from a multi-platform image (os/arch[/variant]).",
    )
    allow_http: bool = Field(
        default=False,
        description="With from_registry: allow a plain-HTTP (unencrypted) registry; loopback needs no opt-in.",
    )
    registry_ca: str | None = Field(
        default=None,
        min_length=1,
        description="With from_registry: a PEM file on the worker with the CA(s) to trust for the registry's TLS.",
    )
    credentials_block: CredentialsBlock = None

    @field_validator("image")
    @classmethod
    def _image_parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parse_reference(value)
        except UsageError as exc:
            raise ValueError(exc.message) from exc
        return value.strip()

    @model_validator(mode="after")
    def _tag_fits(self) -> PushRequest:
        if self.image is None:
            if self.from_archive is None:
                raise ValueError("image is required unless from_archive is given")
            if self.tag is not None:
                raise ValueError("tag needs an image name; without one the archive's own tags are used")
        else:
            try:
                ref = parse_reference(self.image, self.tag)
            except UsageError as exc:
                raise ValueError(exc.message) from exc
            if self.from_registry and ref.repository is None:
                raise ValueError("from_registry needs repository[:tag] or repository@digest, not an image ID")
        if self.from_archive is not None and self.pull:
            raise ValueError("pull and from_archive exclude each other: an archive needs no engine")
        if self.from_registry and (self.pull or self.from_archive is not None):
            raise ValueError("from_registry excludes pull and from_archive: it reads the registry, not an engine")
        if not self.from_registry and (self.allow_http or self.registry_ca or self.platform != DEFAULT_PLATFORM):
            raise ValueError("platform, allow_http and registry_ca apply to from_registry only")
        return self


class MigrateRequest(BaseModel):
    """Find v1 images in Arvados and add their v2 equivalents plus the migration links."""

    model_config = ConfigDict(extra="forbid", title="Migrate v1 images")

    dry_run: bool = Field(default=False, description="Only list what would be migrated; write nothing.")
    project_uuid: str | None = Field(
        default=None, pattern=PROJECT_PATTERN, description="Only images whose collection this project owns."
    )
    pdhs: list[str] = Field(
        default_factory=list, max_length=10000, description="Only these old collection PDHs (md5+size)."
    )
    limit: int | None = Field(default=None, ge=1, le=1_000_000, description="Migrate at most this many images.")
    concurrency: int = Field(default=2, ge=1, le=32, description="Images migrated at the same time.")
    strategy: Literal["native", "engine"] = Field(
        default="native",
        description="native: the engine-free converter; engine: docker load + save in a Docker <= 28 engine.",
    )
    verify: bool = Field(
        default=False, description="Load each new collection, read from Keep, into Docker; check its ID."
    )
    fan_out: bool = Field(
        default=False,
        description="Run each image as its own flow run (migrate-image deployment) so many workers share a sweep.",
    )
    credentials_block: CredentialsBlock = None

    @field_validator("pdhs")
    @classmethod
    def _pdhs_valid(cls, value: list[str]) -> list[str]:
        for i, pdh in enumerate(value):
            if not re.fullmatch(PDH_PATTERN, pdh):
                raise ValueError(f"pdhs[{i}] = {pdh!r} is not a portable data hash (32 hex digits + size)")
        return value


class MigrateImageRequest(BaseModel):
    """Migrate the one v1 image stored in the collection with this PDH (the unit a fanned-out sweep runs)."""

    model_config = ConfigDict(extra="forbid", title="Migrate one v1 image")

    pdh: str = Field(pattern=PDH_PATTERN, description="Portable data hash of the v1 image's collection.")
    strategy: Literal["native", "engine"] = Field(default="native", description="Converter to use.")
    verify: bool = Field(
        default=False, description="Load the new collection, read from Keep, into Docker; check its ID."
    )
    credentials_block: CredentialsBlock = None
