"""Flat flow parameters: one typed keyword per option, each a plain field with a title, description and bounds.

Why flat: Prefect merges a run's parameters into the deployment's defaults one top-level key at a time, so
`--param concurrency=1` on a dry-run deployment keeps `dry_run: true`; with one nested object it replaced the
whole object. Why these spellings (measured with Prefect 3.9.1): the parameter schema Prefect builds from a flow
signature sets each field's ``title`` to the parameter name and its ``description`` from the docstring, but applies
a field's ``json_schema_extra`` last, so the readable title and the description travel there. Constraints
(``ge``, ``max_length``, ``pattern``) stay ordinary pydantic constraints: the server checks them when a run is
created (deployments enforce their schema) and Prefect checks them again when the flow starts. Optional strings
are ``""`` rather than ``None``: the UI renders them as plain text boxes instead of a type switch. The flows turn
these values into the core's validated requests (:mod:`keepdocker.requests`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from keepdocker.requests import (
    CREDENTIALS_BLOCK_PATTERN,
    MAX_CONCURRENCY,
    MAX_LIMIT,
    MAX_NAME,
    MAX_PDHS,
    PDH_PATTERN,
    PLATFORM_PATTERN,
    PROJECT_PATTERN,
    Strategy,
)

__all__ = [
    "AllowHttp",
    "CollectionName",
    "Concurrency",
    "CredentialsBlock",
    "DryRun",
    "FanOut",
    "Force",
    "ForceImageFormat",
    "FromArchive",
    "FromRegistry",
    "Image",
    "Limit",
    "MigrateProject",
    "OldPdh",
    "OldPdhs",
    "Platform",
    "ProjectUuid",
    "Pull",
    "RegistryCa",
    "StrategyChoice",
    "Tag",
    "Verify",
    "optional",
]


def _param(title: str, description: str, **constraints: Any) -> Any:
    """A parameter's field: title and description as the UI shows them, plus pydantic constraints."""
    return Field(json_schema_extra={"title": title, "description": description}, **constraints)


def _or_empty(pattern: str) -> str:
    """``pattern`` (anchored) or the empty string, for optional text parameters."""
    return f"^$|{pattern}"


def optional(value: str) -> str | None:
    """An optional text parameter as the core takes it: ``None`` when left empty."""
    return value.strip() or None


Image = Annotated[
    str,
    _param(
        "Image",
        "Image to push: repository, repository:tag, registry:port/repository:tag, or an image ID (prefix). "
        "Empty only with a saved archive: the archive's own image, under the tags it carries.",
        max_length=512,
        examples=["busybox:1.36"],
    ),
]
Tag = Annotated[
    str, _param("Tag", "Tag, when not part of Image. Empty: the image's own tag, else latest.", max_length=128)
]
ProjectUuid = Annotated[
    str,
    _param(
        "Owner project",
        "UUID of the project (or user) that owns the new collection and links. Empty: the token's user.",
        pattern=_or_empty(PROJECT_PATTERN),
    ),
]
CollectionName = Annotated[
    str,
    _param("Collection name", "Name of a new collection. Empty: the name arv-keepdocker gives.", max_length=MAX_NAME),
]
Force = Annotated[bool, _param("Upload again", "Upload even when Arvados already holds the image.")]
Pull = Annotated[bool, _param("Pull first", "Pull the image from its registry first (always refreshes it).")]
ForceImageFormat = Annotated[
    bool,
    _param(
        "Ignore the cluster's formats", "Store the image even if the cluster does not list v2 in dockerImageFormats."
    ),
]
FromArchive = Annotated[
    str,
    _param(
        "Saved archive",
        "Path, on the worker, of a saved archive (v1, v2 or OCI layout) to push instead of asking a Docker engine.",
        max_length=4096,
    ),
]
FromRegistry = Annotated[
    bool,
    _param(
        "Fetch from the registry",
        "Fetch the image straight from its registry, with no Docker engine (skopeo on the worker; registry "
        "credentials from the worker's Docker config).",
    ),
]
Platform = Annotated[
    str,
    _param(
        "Platform",
        "With Fetch from the registry: the platform to take from a multi-platform image (os/arch[/variant]).",
        pattern=PLATFORM_PATTERN,
    ),
]
AllowHttp = Annotated[
    bool,
    _param(
        "Allow plain HTTP", "With Fetch from the registry: allow an unencrypted registry (loopback needs no opt-in)."
    ),
]
RegistryCa = Annotated[
    str,
    _param(
        "Registry CA file",
        "With Fetch from the registry: path, on the worker, of a PEM file with the CA(s) the registry's TLS uses.",
        max_length=4096,
    ),
]
CredentialsBlock = Annotated[
    str,
    _param(
        "Arvados credentials block",
        "Name of an arvados-credentials block (API host, token, insecure flag). Empty: the worker's environment.",
        pattern=_or_empty(CREDENTIALS_BLOCK_PATTERN),
        max_length=100,
    ),
]
DryRun = Annotated[bool, _param("Dry run", "Only list what would be migrated; write nothing.")]
OldPdh = Annotated[
    str,
    _param(
        "Old collection PDH",
        "Portable data hash (32 hex digits + size) of the v1 image's collection.",
        pattern=PDH_PATTERN,
    ),
]
OldPdhs = Annotated[
    tuple[Annotated[str, Field(pattern=PDH_PATTERN)], ...],
    _param(
        "Only these old PDHs",
        "Portable data hashes of the v1 collections to migrate. Empty: every v1 image.",
        max_length=MAX_PDHS,
    ),
]
Limit = Annotated[
    int, _param("Limit", f"Migrate at most this many images (1 to {MAX_LIMIT}). 0: no limit.", ge=0, le=MAX_LIMIT)
]
Concurrency = Annotated[
    int, _param("Concurrency", f"Images migrated at the same time (1 to {MAX_CONCURRENCY}).", ge=1, le=MAX_CONCURRENCY)
]
StrategyChoice = Annotated[
    Strategy,
    _param("Converter", "native: the engine-free converter. engine: docker load + save in a Docker <= 28 engine."),
]
Verify = Annotated[
    bool,
    _param("Verify", "Load each new collection, read back from Keep, into a Docker engine and check its image ID."),
]
FanOut = Annotated[
    bool,
    _param("Fan out", "Run each image as its own flow run (migrate-image/fanout) so several workers share the sweep."),
]
MigrateProject = Annotated[
    str,
    _param(
        "Project",
        "Only images whose collection this project (or user) UUID owns. Empty: the whole cluster.",
        pattern=_or_empty(PROJECT_PATTERN),
    ),
]
