"""Fixtures for flow tests: one Prefect test server per session, a fresh stand-in and cache per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Retry delays are fixed when the task modules are imported: keep them short for the whole test session.
os.environ.setdefault("KEEPDOCKER_RETRY_DELAY", "0.2")

from keepdocker.arv.client import ArvadosConfig, ArvadosSession, connect
from keepdocker.testing.standin import RunningStandin, running_standin


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One session-scoped Prefect test server with isolated result storage; yields its API URL."""
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with (
        temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(storage)}),
        prefect_test_harness(server_startup_timeout=120),
    ):
        from prefect.settings import PREFECT_API_URL

        yield str(PREFECT_API_URL.value())


@pytest.fixture()
def standin(tmp_path: Path) -> Iterator[RunningStandin]:
    """A fresh stand-in subprocess for one test."""
    with running_standin(tmp_path / "standin") as running:
        yield running


@pytest.fixture()
def arvados(standin: RunningStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ArvadosSession:
    """The stand-in's credentials in the environment, a private cache and HOME; an admin session."""
    for name, value in standin.client_env({}).items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("KEEPDOCKER_CACHE_DIR", str(tmp_path / "cache"))
    return connect(ArvadosConfig.from_env())


@pytest.fixture()
def engine_env(docker_host: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """DOCKER_HOST set to the test engine."""
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    return docker_host
