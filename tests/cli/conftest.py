"""Fixtures for CLI tests: one `prefect server start` per session, a stand-in and a private env per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keepdocker.testing.env import private_env
from keepdocker.testing.prefect_procs import running_server
from keepdocker.testing.standin import RunningStandin, running_standin


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server of this session; yields its API URL."""
    with running_server(tmp_path_factory.mktemp("prefect-home"), startup_timeout=240) as server:
        yield server.api_url


@pytest.fixture()
def standin(tmp_path: Path) -> Iterator[RunningStandin]:
    """A fresh stand-in subprocess for one test."""
    with running_standin(tmp_path / "standin") as running:
        yield running


@pytest.fixture()
def cli_env(tmp_path: Path, prefect_api: str, standin: RunningStandin, docker_host: str) -> dict[str, str]:
    """Environment for `keepdocker` subprocesses: our server, the stand-in, the engine, a private HOME and cache."""
    base = private_env(tmp_path / "home")
    base.update(
        KEEPDOCKER_CACHE_DIR=str(tmp_path / "cache"),
        KEEPDOCKER_RETRY_DELAY="0.5",
        PREFECT_API_URL=prefect_api,
        PREFECT_SERVER_EPHEMERAL_ENABLED="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DOCKER_HOST=docker_host,
    )
    return standin.client_env(base)
