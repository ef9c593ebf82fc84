"""Shared by the commands that run flows: Prefect defaults set before Prefect is imported, and result handling."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from cli.preflight import check_prefect_api
from keepdocker.cache import default_cache_dir
from keepdocker.errors import KeepdockerError


def prepare_prefect() -> None:
    """Defaults for a CLI run: results beside the tar cache, patient ephemeral start-up on small machines."""
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(default_cache_dir() / "prefect-results"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Failures reach the user as one line from the CLI shim and progress is drawn by cli.console; Prefect's own
    # console handler is silenced, but its loggers keep INFO, so a run's logs still reach the API (the UI's Logs
    # tab). PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL=INFO brings Prefect's console lines back.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    check_prefect_api()


def flow_parameters(request: Any) -> dict[str, Any]:
    """A core request (keepdocker.requests) as its flow's flat keyword parameters; unset options keep the defaults."""
    return {k: v for k, v in dataclasses.asdict(request).items() if v is not None}


def run_flow(flow_fn: Any, request: Any) -> tuple[bool, Any]:
    """Run a flow with a validated request and return (completed, result); a failure comes back as its exception."""
    state = flow_fn(**flow_parameters(request), return_state=True)
    result = state.result(raise_on_failure=False)
    if state.is_completed():
        return True, result
    if isinstance(result, KeepdockerError):
        return False, result
    if isinstance(result, BaseException):
        raise result
    raise KeepdockerError(f"flow ended in state {state.name}: {state.message}")
