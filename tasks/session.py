"""Arvados credentials for tasks: the worker's environment, or a Prefect Secret block named in a parameter."""

from __future__ import annotations

import json
import threading
from typing import Any, cast

from prefect.blocks.system import Secret

from keepdocker.arv.client import ArvadosConfig, ArvadosSession, connect
from keepdocker.errors import ConfigurationError

__all__ = ["arvados_session"]

_lock = threading.Lock()
_sessions: dict[ArvadosConfig, ArvadosSession] = {}


def _config(credentials_block: str | None) -> ArvadosConfig:
    if not credentials_block:
        return ArvadosConfig.from_env()
    try:
        raw = cast("Secret[Any]", Secret.load(credentials_block)).get()
    except ValueError as exc:
        raise ConfigurationError(f"Secret block {credentials_block!r} not found: create it first") from exc
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        data = None  # never chain the decode error: it carries the secret's text
    if not isinstance(data, dict) or "ARVADOS_API_HOST" not in data or "ARVADOS_API_TOKEN" not in data:
        raise ConfigurationError(
            f"Secret block {credentials_block!r} must hold JSON with ARVADOS_API_HOST and ARVADOS_API_TOKEN"
        ) from None
    return ArvadosConfig.from_env({k: str(v) for k, v in data.items()})


def arvados_session(credentials_block: str | None = None) -> ArvadosSession:
    """One shared API client per credential set and process (the client is thread-safe)."""
    config = _config(credentials_block)
    with _lock:
        session = _sessions.get(config)
        if session is None:
            session = _sessions[config] = connect(config)
        return session
