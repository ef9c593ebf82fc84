"""Checks made before Prefect is imported, so an unreachable Prefect API is one line within seconds."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

from keepdocker.errors import ConfigurationError

__all__ = ["API_TIMEOUT_SECONDS", "check_prefect_api"]

API_TIMEOUT_SECONDS = 3.0


def check_prefect_api() -> None:
    """With PREFECT_API_URL set, require its /health to answer within a few seconds; else one actionable error."""
    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not url:
        return
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=API_TIMEOUT_SECONDS) as resp:
            resp.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return  # a server that wants credentials: Prefect's client will send PREFECT_API_KEY
        raise ConfigurationError(
            f"the Prefect API at {url} answered {exc.code} to /health; check PREFECT_API_URL (it ends in /api)"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConfigurationError(
            f"cannot reach the Prefect API at {url} ({reason}); start the server (`uv run prefect server start`) "
            "or fix PREFECT_API_URL, or unset it to run on a temporary local API"
        ) from None
