"""The one image model shared by every archive reader and writer, and Docker's image-reference grammar for tags.

An ``Image`` is what ``docker load`` would create: its ID is ``sha256:`` + the sha256 of its config bytes, its layers
are the uncompressed diffs named by ``rootfs.diff_ids``. Readers produce images, writers consume them; formats never
leak into the model (``ArchiveFormat`` only says where an archive came from).
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from datetime import datetime

import ciso8601

from keepdocker.errors import UsageError
from keepdocker.references import DOMAIN_RE, PATH_COMPONENT_RE, TAG_RE, is_domain

__all__ = [
    "DIGEST_RE",
    "HEX64_RE",
    "ArchiveFormat",
    "Image",
    "Layer",
    "ManifestEntry",
    "ReferenceError",
    "config_created",
    "legacy_repository_tag",
    "normalize_repository",
    "normalize_tag",
    "parse_tag_option",
    "split_tag",
]

HEX64_RE = re.compile(r"[a-f0-9]{64}")
DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")


class ArchiveFormat(enum.Enum):
    """The layout of an image archive."""

    V1 = "v1"  # docker save <= 1.9: one directory per v1 layer, no manifest.json
    DOCKER = "docker"  # docker save 1.10-24: manifest.json, <id>.json, <dir>/layer.tar
    OCI = "oci"  # docker save 25+ / containerd: oci-layout, index.json, blobs/sha256/..., manifest.json


@dataclass(frozen=True)
class Layer:
    """One layer of an image: its diff ID, its stored size and the archive member holding it."""

    diff_id: str  # sha256:<hex> of the uncompressed tar stream
    size: int  # bytes of the member as stored in the archive (uncompressed size for v1-derived layers)
    path: str  # member path inside the archive it was read from or written to


@dataclass(frozen=True)
class Image:
    """An image as an engine stores it: ID, exact config bytes, layers, familiar tags, created time, parent ID."""

    id: str  # sha256:<hex> = sha256(config)
    config: bytes = field(repr=False)
    layers: tuple[Layer, ...]
    tags: tuple[str, ...] = ()  # familiar "name:tag" strings, sorted
    created: datetime | None = None
    parent: str | None = None  # parent image ID when known (v1 chains, manifest "Parent")


@dataclass(frozen=True)
class ManifestEntry:
    """One entry of a written manifest.json: the image ID, its tags and its created time."""

    id: str
    tags: tuple[str, ...]
    created: datetime | None


def config_created(config: bytes) -> datetime | None:
    """The ``created`` time of a config, or None when absent or unparseable (informational only, not the ID)."""
    try:
        doc = json.loads(config.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    value = doc.get("created") if isinstance(doc, dict) else None
    if not isinstance(value, str):
        return None
    try:
        parsed: datetime = ciso8601.parse_datetime(value)
    except ValueError:
        return None
    return parsed


# --- Docker's reference grammar (distribution/reference, as vendored by moby; shared with keepdocker.references) ----

_NAME_RE = re.compile(rf"(?:(?:{DOMAIN_RE.pattern})/)?{PATH_COMPONENT_RE.pattern}(?:/{PATH_COMPONENT_RE.pattern})*")
_MAX_NAME = 255
_DEFAULT_DOMAIN = "docker.io"


class ReferenceError(ValueError):
    """A repository name or tag that Docker's reference grammar refuses; the message says which rule."""


def normalize_repository(name: str) -> str:
    """The familiar form of a repository name (``docker.io/library/x`` -> ``x``), or ReferenceError.

    Mirrors ``reference.ParseNormalizedNamed`` followed by ``FamiliarName``; a name carrying a tag or digest is refused.
    """
    if HEX64_RE.fullmatch(name):
        raise ReferenceError(f"invalid repository name {name!r}: cannot specify 64-byte hexadecimal strings")
    return _familiar(name)


def _familiar(name: str) -> str:
    slash = name.find("/")
    first = name[:slash] if slash >= 0 else ""
    if slash < 0 or not is_domain(first):
        domain, remainder = _DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, name[slash + 1 :]
    if domain == "index.docker.io":
        domain = _DEFAULT_DOMAIN
    if domain == _DEFAULT_DOMAIN and "/" not in remainder:
        remainder = "library/" + remainder
    if remainder.lower() != remainder:
        raise ReferenceError(f"invalid repository name {name!r}: repository name must be lowercase")
    full = f"{domain}/{remainder}"
    if not _NAME_RE.fullmatch(full):
        raise ReferenceError(f"invalid repository name {name!r}: not a valid reference name")
    if len(full) > _MAX_NAME:
        raise ReferenceError(f"invalid repository name {name!r}: longer than {_MAX_NAME} characters")
    if domain == _DEFAULT_DOMAIN:
        familiar = remainder
        if familiar.startswith("library/") and familiar.count("/") == 1:
            familiar = familiar[len("library/") :]
        return familiar
    return full


def normalize_tag(name: str, tag: str) -> str:
    """``familiar-name:tag`` for a repository and tag, or ReferenceError (tag grammar ``[\\w][\\w.-]{0,127}``)."""
    familiar = normalize_repository(name)
    if not TAG_RE.fullmatch(tag):
        raise ReferenceError(f"invalid tag {tag!r} for {name!r}: must match [\\w][\\w.-]{{0,127}}")
    return f"{familiar}:{tag}"


#: What ``go-digest`` accepts after the ``@`` of a reference: the grammar, then a known algorithm and its length.
_REF_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}


def legacy_repository_tag(key: str, tag: str) -> str | None:
    """The tag Docker's legacy load gives for ``{key: {tag: id}}`` in a v1 ``repositories`` file, or None for none.

    The key is parsed like ``reference.ParseNormalizedNamed``, so it may carry a tag and a digest
    (``name[:tag][@digest]``); ``reference.WithTag`` then replaces any tag with ``tag``. A key with a digest makes a
    digest reference, which the reference store refuses to tag; legacy load ignores that error, so such an entry
    tags nothing (None). Anything ParseNormalizedNamed or WithTag refuses fails the load: ReferenceError.
    """
    if HEX64_RE.fullmatch(key):
        raise ReferenceError(f"invalid repository name {key!r}: cannot specify 64-byte hexadecimal strings")
    name, at, digest = key.partition("@")
    if at:
        algorithm, _, encoded = digest.partition(":")
        if not _REF_DIGEST_RE.fullmatch(digest):
            raise ReferenceError(f"invalid reference {key!r}: bad digest {digest!r}")
        if algorithm not in _DIGEST_HEX:
            raise ReferenceError(f"invalid reference {key!r}: unsupported digest algorithm {algorithm!r}")
        if len(encoded) != _DIGEST_HEX[algorithm] or encoded.lower() != encoded:
            raise ReferenceError(f"invalid reference {key!r}: invalid checksum digest {digest!r}")
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, own_tag = name[:colon], name[colon + 1 :]
        if not TAG_RE.fullmatch(own_tag):
            raise ReferenceError(f"invalid reference {key!r}: invalid tag {own_tag!r}")
    familiar = _familiar(name)
    if not TAG_RE.fullmatch(tag):
        raise ReferenceError(f"invalid tag {tag!r} for {key!r}: must match [\\w][\\w.-]{{0,127}}")
    return None if at else f"{familiar}:{tag}"


def parse_tag_option(ref: str) -> str:
    """Parse a ``REPO[:TAG]`` given by a user into ``familiar-name:tag`` (TAG defaults to ``latest``), or UsageError."""
    if "@" in ref:
        raise UsageError(f"--tag {ref!r}: a digest reference cannot name a tag; use REPO:TAG")
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    name, tag = (ref[:colon], ref[colon + 1 :]) if colon > slash else (ref, "latest")
    try:
        return normalize_tag(name, tag)
    except ReferenceError as exc:
        raise UsageError(f"--tag {ref!r}: {exc}; use REPO:TAG with a lowercase repository name") from None


def split_tag(familiar_tag: str) -> tuple[str, str]:
    """Split a normalized ``name:tag`` into name and tag."""
    colon = familiar_tag.rfind(":")
    return familiar_tag[:colon], familiar_tag[colon + 1 :]
