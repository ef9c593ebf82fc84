"""Parse and validate Docker image references (names, tags, digests, image-ID prefixes) into Docker's familiar form.

Accepted forms, as ``docker`` and ``arv-keepdocker`` accept them::

    repo                      busybox, me/app              tag defaults to ``latest``
    repo:tag                  busybox:1.36
    registry[:port]/repo:tag  127.0.0.1:5000/x:y, registry.example/a/b:c
    registry:443/repo:tag     the explicit ``:443`` is stripped (arv-keepdocker does this, and ``docker pull``
                              lists the image without it afterwards)
    repo@sha256:<64 hex>      a repository digest, optionally after a tag
    sha256:<hex>              an image ID or a prefix of one
    <hex>                     a full 64-hex image ID, or a shorter string that is either a repository name or an ID
                              prefix: resolution tries the name first, then the prefix (as the engine does)

The familiar form is what ``docker images`` prints: ``docker.io/`` and ``library/`` dropped, the domain kept otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keepdocker.errors import UsageError

__all__ = ["DEFAULT_TAG", "DOMAIN_RE", "PATH_COMPONENT_RE", "TAG_RE", "ImageReference", "is_domain", "parse_reference"]

DEFAULT_TAG = "latest"
_DEFAULT_DOMAIN = "docker.io"
_LEGACY_DOMAINS = frozenset({"docker.io", "index.docker.io"})
_MAX_NAME = 255

TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)  # Go regexp \w is ASCII-only
PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
DOMAIN_RE = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_SHA256_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]+")
_ID_PREFIX = re.compile(r"sha256:([0-9a-fA-F]{1,64})")


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference: a familiar repository with a tag and/or digest, an image-ID prefix, or both.

    ``repository`` is None for pure ID references (``sha256:…`` or 64 hex); ``id_prefix`` (lower-case hex, no
    ``sha256:``) is set whenever the text can name an image ID. A bare short hex string sets both.
    """

    text: str
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    id_prefix: str | None = None

    @property
    def domain(self) -> str | None:
        """The registry ``host[:port]`` for names outside Docker Hub, else None."""
        if self.repository is None:
            return None
        first, sep, _ = self.repository.partition("/")
        return first if sep and is_domain(first) else None

    @property
    def is_id_only(self) -> bool:
        """True when the reference can only be an image ID (or prefix), never a name."""
        return self.repository is None

    @property
    def repo_tag(self) -> str | None:
        """``repository:tag`` as arv-keepdocker names its repo+tag links, or None for ID and digest-only references."""
        if self.repository is None or self.tag is None:
            return None
        return f"{self.repository}:{self.tag}"

    @property
    def pull_name(self) -> str:
        """The name ``docker pull`` takes: ``repository:tag``, ``repository@digest`` or both; IDs cannot be pulled."""
        if self.repository is None:
            raise UsageError(f"image reference {self.text!r}: an image ID cannot be pulled; give repository[:tag]")
        name = self.repository
        if self.tag is not None:
            name += f":{self.tag}"
        if self.digest is not None:
            name += f"@{self.digest}"
        return name

    def familiar(self) -> str:
        """The reference as ``docker images`` would show it (``sha256:<prefix>`` for ID-only references)."""
        if self.repository is None:
            return f"sha256:{self.id_prefix}"
        return self.pull_name


def parse_reference(image: str, tag: str | None = None) -> ImageReference:
    """Parse ``image`` (and an optional separate ``tag``, as in ``keepdocker push IMAGE TAG``); raise UsageError."""
    text = image.strip()
    if not text:
        raise UsageError("image reference is empty: give repository[:tag], registry:port/repository:tag or an image ID")
    if any(c.isspace() for c in text):
        raise UsageError(f"image reference {image!r} contains whitespace")
    if tag is not None and not TAG_RE.fullmatch(tag):
        raise UsageError(
            f"tag {tag!r} is invalid: up to 128 characters of letters, digits, '_', '.' and '-', not starting with '.'"
            " or '-'"
        )

    id_match = _ID_PREFIX.fullmatch(text)
    if id_match:
        if tag is not None:
            raise UsageError(f"image reference {text!r} is an image ID; it cannot take the tag argument {tag!r}")
        return ImageReference(text=text, id_prefix=id_match.group(1).lower())
    if text.startswith("sha256:"):
        raise UsageError(f"image ID {text!r} is invalid: 'sha256:' must be followed by 1 to 64 hexadecimal digits")
    if tag is None and len(text) == 64 and _HEX.fullmatch(text):
        return ImageReference(text=text, id_prefix=text)

    name, digest = _split_digest(text)
    name, own_tag = _split_tag(name, text)
    if own_tag is not None and tag is not None:
        raise UsageError(
            f"image reference {text!r} already includes the tag {own_tag!r}; drop the tag argument {tag!r}"
        )
    could_be_id = own_tag is None and tag is None and digest is None and _HEX.fullmatch(name) is not None
    tag = own_tag if own_tag is not None else tag
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    repository = _familiar_name(name, text)
    return ImageReference(
        text=text,
        repository=repository,
        tag=tag,
        digest=digest,
        id_prefix=name if could_be_id and len(name) <= 64 else None,
    )


def _split_digest(text: str) -> tuple[str, str | None]:
    """Split ``name@digest``; validate the digest."""
    if "@" not in text:
        return text, None
    name, _, digest = text.partition("@")
    if not _DIGEST.fullmatch(digest):
        raise UsageError(f"image reference {text!r}: digest {digest!r} is invalid; expected sha256:<64 hex digits>")
    if digest.startswith("sha256:") and not _SHA256_DIGEST.fullmatch(digest):
        raise UsageError(f"image reference {text!r}: digest {digest!r} must be sha256: and 64 lower-case hex digits")
    return name, digest


def _split_tag(name: str, text: str) -> tuple[str, str | None]:
    """Split ``name:tag`` at the last colon after the last slash (a ``host:port`` colon is not a tag)."""
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon <= last_slash:
        return name, None
    tag = name[colon + 1 :]
    if not TAG_RE.fullmatch(tag):
        raise UsageError(
            f"image reference {text!r}: tag {tag!r} is invalid; up to 128 letters, digits, '_', '.' or '-',"
            " not starting with '.' or '-'"
        )
    return name[:colon], tag


def is_domain(first: str) -> bool:
    """Docker's rule: the first path part is a registry when it has '.' or ':', is localhost, or has capitals."""
    return "." in first or ":" in first or first == "localhost" or first.lower() != first


def _familiar_name(name: str, text: str) -> str:
    """Validate a repository name and return Docker's familiar spelling of it."""
    if not name:
        raise UsageError(f"image reference {text!r} has no repository name")
    first, sep, rest = name.partition("/")
    domain: str | None = None
    path = name
    if sep and is_domain(first):
        domain, path = first, rest
        if not DOMAIN_RE.fullmatch(domain):
            raise UsageError(f"image reference {text!r}: registry {domain!r} is not a valid host[:port]")
        if domain.endswith(":443"):
            domain = domain[: -len(":443")]
        if domain.lower() in _LEGACY_DOMAINS:
            domain = _DEFAULT_DOMAIN
    if not path:
        raise UsageError(f"image reference {text!r} has a registry but no repository path")
    for component in path.split("/"):
        if not component:
            raise UsageError(f"image reference {text!r}: empty path component (doubled or trailing '/')")
        if component.lower() != component and PATH_COMPONENT_RE.fullmatch(component.lower()):
            raise UsageError(f"image reference {text!r}: repository component {component!r} must be lower-case")
        if not PATH_COMPONENT_RE.fullmatch(component):
            raise UsageError(
                f"image reference {text!r}: repository component {component!r} is invalid; use lower-case letters,"
                " digits and single '.', '_', '__' or '-' separators between them"
            )
    if domain is None or domain == _DEFAULT_DOMAIN:
        if path.startswith("library/") and path.count("/") == 1:
            path = path[len("library/") :]
        familiar = path
        canonical = f"{_DEFAULT_DOMAIN}/{path if '/' in path else 'library/' + path}"
    else:
        familiar = canonical = f"{domain}/{path}"
    if len(canonical) > _MAX_NAME:
        raise UsageError(f"image reference {text!r}: repository name longer than {_MAX_NAME} characters")
    if len(path) == 64 and _HEX.fullmatch(path):
        raise UsageError(f"image reference {text!r}: a 64-hex string is an image ID and cannot be used with a tag")
    return familiar
