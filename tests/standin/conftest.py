"""Fixtures for the stand-in tests: a fresh stand-in subprocess and an isolated environment for the SDK commands."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keepdocker.testing.standin import RunningStandin, running_standin

SDK_BIN = Path(sys.executable).parent


@pytest.fixture()
def standin(tmp_path: Path) -> Iterator[RunningStandin]:
    """A fresh stand-in subprocess on its own data directory, stopped by PID afterwards."""
    with running_standin(tmp_path / "standin-data") as running:
        yield running


@pytest.fixture()
def sdk_env(standin: RunningStandin, tmp_path: Path) -> dict[str, str]:
    """Environment for SDK subprocesses: the stand-in's variables and a private HOME/XDG (no cache leaks)."""
    home = tmp_path / "sdk-home"
    home.mkdir()
    env = standin.client_env()
    for name in ("CACHE_DIRECTORY", "ARVADOS_KEEP_SERVICES", "ARVADOS_KEEP_PROXY", "SSL_CERT_FILE"):
        env.pop(name, None)
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"))
    return env


RunSdk = Callable[..., "subprocess.CompletedProcess[str]"]


def _run_sdk(command: str, *args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SDK_BIN / command), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture()
def run_sdk() -> RunSdk:
    """Run an SDK command (arv-put, arv-get, ...) of the project environment: run_sdk(cmd, *args, env=...)."""
    return _run_sdk
