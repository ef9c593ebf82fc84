"""Fixtures for the reliability tests: a dedicated Prefect server, stand-ins with fault flags, CLI envs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_support import MakeStandin, PrefectServer, prefect_server

from keepdocker.testing.env import private_env
from keepdocker.testing.standin import RunningStandin


@pytest.fixture(scope="session")
def reliability_prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A `prefect server start` of our own (its sqlite file is searched by the token test)."""
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as server:
        yield server


@pytest.fixture()
def make_standin(tmp_path: Path) -> Iterator[MakeStandin]:
    """Start stand-ins with extra flags (``make_standin("--latency-ms", "50")``); all are stopped afterwards."""
    started: list[RunningStandin] = []

    def make(*args: str, name: str = "standin") -> RunningStandin:
        standin = RunningStandin(data_dir=tmp_path / name, extra_args=list(args))
        standin.start()
        started.append(standin)
        return standin

    yield make
    for standin in started:
        standin.stop()


@pytest.fixture()
def base_env(tmp_path: Path, reliability_prefect: PrefectServer) -> dict[str, str]:
    """Environment for CLI subprocesses: private HOME and cache, our Prefect server, short retry delays, no engine."""
    env = private_env(tmp_path / "home")
    env.update(
        KEEPDOCKER_CACHE_DIR=str(tmp_path / "cache"),
        KEEPDOCKER_RETRY_DELAY="0.5",
        PREFECT_API_URL=reliability_prefect.url,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(tmp_path / "results"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock",
    )
    return env
