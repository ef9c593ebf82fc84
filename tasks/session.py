"""Arvados credentials for tasks: the worker's environment, or an arvados-credentials block named in a parameter."""

from __future__ import annotations

import threading
from typing import cast

from keepdocker.arv.client import ArvadosConfig, ArvadosSession, connect
from keepdocker.errors import ConfigurationError
from tasks.credentials import ArvadosCredentials

__all__ = ["arvados_session"]

_lock = threading.Lock()
_sessions: dict[ArvadosConfig, ArvadosSession] = {}


def _config(credentials_block: str | None) -> ArvadosConfig:
    if not credentials_block:
        return ArvadosConfig.from_env()
    try:
        block = cast(ArvadosCredentials, ArvadosCredentials.load(credentials_block))
    except ValueError:
        # Raised for a missing document and for one whose data does not fit the type: neither message is chained,
        # since pydantic's would quote the stored values.
        raise ConfigurationError(
            f"arvados-credentials block {credentials_block!r} not found or incomplete: create it in the UI (Blocks) "
            "or with ArvadosCredentials(host=..., token=...).save(name)"
        ) from None
    return block.config()


def arvados_session(credentials_block: str | None = None) -> ArvadosSession:
    """One shared API client per credential set and process (the client is thread-safe)."""
    config = _config(credentials_block)
    with _lock:
        session = _sessions.get(config)
        if session is None:
            session = _sessions[config] = connect(config)
        return session
