"""The one exception tree of keepdocker: every error says what went wrong, what to do, and whether to retry.

    KeepdockerError                 base; ``temporary`` says whether retrying the same call can succeed
    ├── UsageError                  bad parameters or CLI arguments (names the field)           permanent
    ├── ConfigurationError          missing or unusable environment (host, token, admin rights)  permanent
    ├── ArchiveError                an image archive that cannot be read                         permanent
    │   ├── UnsafeArchiveError      an entry that would escape, link out, collide or bomb        permanent
    │   ├── MalformedArchiveError   broken JSON, missing files, wrong types, bad tar headers     permanent
    │   └── ArchiveLimitError       a declared or decompressed size beyond the fixed limits      permanent
    ├── ImageNotFoundError          no image (or more than one) matches a reference              permanent
    ├── EngineError                 the Docker engine failed an operation                        permanent
    │   └── EngineUnavailableError  the engine cannot be reached or went away mid-operation      temporary
    ├── VerificationError           stored bytes do not load as the image they should hold       permanent
    ├── ArvadosError                the Arvados API refused a request                            permanent
    │   ├── ArvadosPermissionError  the token may not read or write what was asked               permanent
    │   ├── ArvadosNotFoundError    the collection, link or project does not exist               permanent
    │   └── ArvadosUnavailableError the API or Keep answered 5xx, timed out, or is unreachable   temporary
    ├── RegistryError               an image registry refused a request or served unusable data  permanent
    │   └── RegistryUnavailableError the registry answered 5xx, timed out, or is unreachable     temporary
    ├── CacheError                  the local cache cannot hold or verify a file                 permanent
    │   ├── CacheFullError          the disk or the configured budget has no room                permanent
    │   └── CacheCorruptError       a cached file no longer matches its recorded digest          temporary
    └── PartialFailureError         some images of a sweep failed; each one's own error is reported permanent

Callers catch a branch or a leaf; retry policies look only at ``temporary``.
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "ArchiveLimitError",
    "ArvadosError",
    "ArvadosNotFoundError",
    "ArvadosPermissionError",
    "ArvadosUnavailableError",
    "CacheCorruptError",
    "CacheError",
    "CacheFullError",
    "ConfigurationError",
    "EngineError",
    "EngineUnavailableError",
    "ImageNotFoundError",
    "KeepdockerError",
    "MalformedArchiveError",
    "PartialFailureError",
    "RegistryError",
    "RegistryUnavailableError",
    "UnsafeArchiveError",
    "UsageError",
    "VerificationError",
    "is_temporary",
]


class KeepdockerError(Exception):
    """Base of every error keepdocker raises on purpose; the message is one actionable line."""

    temporary: bool = False

    def __init__(self, message: str, *, temporary: bool | None = None) -> None:
        super().__init__(message)
        if temporary is not None:
            self.temporary = temporary

    @property
    def message(self) -> str:
        """The one-line message, without the class name."""
        return str(self.args[0]) if self.args else ""


class UsageError(KeepdockerError):
    """A parameter or CLI argument is invalid; the message names the field and the accepted form."""


class ConfigurationError(KeepdockerError):
    """The environment cannot be used: no API host, no token, or a token without the rights the job needs."""


class ArchiveError(KeepdockerError):
    """An image archive cannot be read or converted."""


class UnsafeArchiveError(ArchiveError):
    """An archive entry breaks a safety rule: path escape, outside link, duplicate, special file, cycle."""


class MalformedArchiveError(ArchiveError):
    """An archive is structurally broken: bad JSON, wrong field types, missing files, bad tar headers."""


class ArchiveLimitError(ArchiveError):
    """An archive exceeds a fixed size, count or ratio limit (decompression bombs, huge declared sizes)."""


class ImageNotFoundError(KeepdockerError):
    """No image, or more than one, matches the reference given."""


class EngineError(KeepdockerError):
    """The Docker engine refused or failed an operation."""


class EngineUnavailableError(EngineError):
    """The Docker engine cannot be reached, or went away during an operation."""

    temporary = True


class VerificationError(KeepdockerError):
    """The bytes a collection serves do not load into the engine as the image ID recorded for them."""


class ArvadosError(KeepdockerError):
    """The Arvados API or Keep refused a request."""


class ArvadosPermissionError(ArvadosError):
    """The token may not read or write the object asked for."""


class ArvadosNotFoundError(ArvadosError):
    """The collection, link, user or project does not exist or is not readable."""


class ArvadosUnavailableError(ArvadosError):
    """The API server or Keep is unreachable, timed out, or answered a server error."""

    temporary = True


class RegistryError(KeepdockerError):
    """An image registry refused a request (credentials, certificate, protocol) or served unusable data."""


class RegistryUnavailableError(RegistryError):
    """The image registry is unreachable, timed out, or answered a server error."""

    temporary = True


class CacheError(KeepdockerError):
    """The local cache cannot store or verify a file."""


class CacheFullError(CacheError):
    """The cache disk, or its configured budget, has no room for the file."""


class CacheCorruptError(CacheError):
    """A cached file no longer matches the size or digest recorded when it was written."""

    temporary = True


class PartialFailureError(KeepdockerError):
    """Some images of a sweep failed (the others were done); ``report`` holds every image's outcome."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


def is_temporary(exc: BaseException) -> bool:
    """True when retrying the operation that raised ``exc`` can succeed."""
    if isinstance(exc, KeepdockerError):
        return exc.temporary
    return isinstance(exc, (ConnectionError, TimeoutError))
