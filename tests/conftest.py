"""Shared fixtures: a Docker engine (existing or private) and per-test isolated HOME/XDG directories."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keepdocker.testing.dockerd import engine_answers, private_engine

REPO_ROOT = Path(__file__).resolve().parent.parent


def _need_engine(reason: str) -> None:
    """Fail under CI (an engine must be had there), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"a Docker engine is required under CI: {reason}")
    pytest.skip(reason)


FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def moby_v1_archive() -> Path:
    """The real 2015 v1 archive (Docker 1.9 `docker save` of matthughes/library-centos:6-2015.03.20)."""
    return FIXTURES / "moby-emptyLayer-v1.tar"


@pytest.fixture(scope="session")
def arvados_methods() -> dict[str, Any]:
    """Path, HTTP method and parameters of the methods the SDK uses, as a real Arvados API server declares them."""
    doc: dict[str, Any] = json.loads((FIXTURES / "arvados-v1-methods.json").read_text())
    return doc


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """DOCKER_HOST of a usable engine: the one in the environment if it answers, else a private dockerd."""
    env_host = os.environ.get("DOCKER_HOST")
    if env_host and engine_answers(env_host):
        yield env_host
        return
    try:
        with private_engine() as engine:
            yield engine.host
    except RuntimeError as exc:
        _need_engine(str(exc))


@pytest.fixture()
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME and XDG cache/config so the SDK's discovery cache and resume caches never leak."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    return home
