"""Connect to the Arvados API with the real SDK and translate its failures into keepdocker's error tree."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import arvados
import arvados.errors
import googleapiclient.errors

from keepdocker.errors import (
    ArvadosError,
    ArvadosNotFoundError,
    ArvadosPermissionError,
    ArvadosUnavailableError,
    ConfigurationError,
    KeepdockerError,
)

__all__ = ["ArvadosConfig", "ArvadosSession", "arvados_errors", "connect"]

# The SDK retries 5xx/408/409/423/429 itself with rand()*2**n backoff; keep that short and let the
# flow's task retries (which follow each error's temporary mark) do the patient part.
SDK_RETRIES = 4
# A full local disk while streaming from Keep is not a server fault (and retrying will not help).
LOCAL_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class ArvadosConfig:
    """Where and as whom to talk to Arvados; the token never appears in repr() or logs."""

    host: str
    token: str = field(repr=False)
    insecure: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ArvadosConfig:
        """Read ARVADOS_API_HOST, ARVADOS_API_TOKEN and ARVADOS_API_HOST_INSECURE."""
        env = os.environ if env is None else env
        host = env.get("ARVADOS_API_HOST", "").strip()
        token = env.get("ARVADOS_API_TOKEN", "").strip()
        missing = [name for name, value in (("ARVADOS_API_HOST", host), ("ARVADOS_API_TOKEN", token)) if not value]
        if missing:
            raise ConfigurationError(
                f"{' and '.join(missing)} not set: export them (or run `keepdocker standin` for a local stand-in)"
            )
        insecure = env.get("ARVADOS_API_HOST_INSECURE", "").strip().lower() in {"1", "true", "yes", "on"}
        return cls(host=host, token=token, insecure=insecure)


@dataclass
class ArvadosSession:
    """An API client plus what the discovery document says about the cluster."""

    api: Any
    config: ArvadosConfig

    @property
    def uuid_prefix(self) -> str:
        """The cluster ID (first five characters of every UUID)."""
        return str(self.api._rootDesc.get("uuidPrefix", ""))

    @property
    def docker_image_formats(self) -> list[str]:
        """The server's dockerImageFormats (empty when it does not say)."""
        return [str(f) for f in self.api._rootDesc.get("dockerImageFormats", []) or []]

    @property
    def system_user_uuid(self) -> str:
        """The cluster's system user, owner of trusted migration links."""
        return f"{self.uuid_prefix}-tpzed-000000000000000"


def connect(config: ArvadosConfig | None = None, *, retries: int = SDK_RETRIES) -> ArvadosSession:
    """Build a thread-safe API client (fetches the discovery document once)."""
    config = config or ArvadosConfig.from_env()
    with arvados_errors(f"connecting to Arvados at {config.host}"):
        api = arvados.api("v1", host=config.host, token=config.token, insecure=config.insecure, num_retries=retries)
    return ArvadosSession(api=api, config=config)


def _status(exc: BaseException) -> int | None:
    resp = getattr(exc, "resp", None)
    status = getattr(resp, "status", None)
    return int(status) if status is not None else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, googleapiclient.errors.HttpError):
        try:
            return str(exc._get_reason()).strip() or str(exc)
        except (AttributeError, KeyError, TypeError, ValueError):  # a body it cannot parse: the whole error
            return str(exc)
    return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__


@contextmanager
def arvados_errors(doing: str) -> Iterator[None]:
    """Translate SDK, HTTP and socket failures raised while ``doing`` into keepdocker errors."""
    try:
        yield
    except KeepdockerError:
        raise
    except arvados.errors.NotFoundError as exc:
        raise ArvadosNotFoundError(f"{doing}: not found in Keep ({_reason(exc)})") from exc
    except (arvados.errors.KeepReadError, arvados.errors.KeepWriteError) as exc:
        raise ArvadosUnavailableError(f"{doing}: Keep failed after retries ({_reason(exc)})") from exc
    except googleapiclient.errors.HttpError as exc:
        status = _status(exc)
        reason = _reason(exc)
        if status in (401, 403):
            raise ArvadosPermissionError(f"{doing}: permission denied ({reason}); check the token's rights") from exc
        if status == 404:
            raise ArvadosNotFoundError(f"{doing}: not found ({reason})") from exc
        if status is not None and (status >= 500 or status in (408, 409, 423, 429)):
            raise ArvadosUnavailableError(f"{doing}: server answered {status} ({reason}); retry later") from exc
        raise ArvadosError(f"{doing}: refused with HTTP {status} ({reason})") from exc
    except OSError as exc:
        if exc.errno in LOCAL_DISK_FULL:
            raise  # the local disk, not the server: the cache turns this into CacheFullError (permanent)
        raise ArvadosUnavailableError(f"{doing}: cannot reach the server ({_reason(exc)})") from exc
