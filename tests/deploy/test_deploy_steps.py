"""The deployment steps: deploy-time settings with validated defaults, and the worker's checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.deploy_steps import enter_checkout, settings
from keepdocker.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_settings_default_to_utc_and_the_cli_cache(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without variables the nightly zone is UTC and flow runs use the CLI's cache and results directories."""
    monkeypatch.delenv("KEEPDOCKER_NIGHTLY_TIMEZONE", raising=False)
    monkeypatch.delenv("KEEPDOCKER_CACHE_DIR", raising=False)
    got = settings()
    cache = isolated_home / ".cache" / "keepdocker"
    assert got == {"timezone": "UTC", "cache_dir": str(cache), "results_dir": str(cache / "prefect-results")}


def test_settings_follow_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KEEPDOCKER_NIGHTLY_TIMEZONE and KEEPDOCKER_CACHE_DIR set at deploy time are what the deployment carries."""
    monkeypatch.setenv("KEEPDOCKER_NIGHTLY_TIMEZONE", " Europe/Berlin ")
    monkeypatch.setenv("KEEPDOCKER_CACHE_DIR", str(tmp_path / "c"))
    got = settings()
    assert got == {
        "timezone": "Europe/Berlin",
        "cache_dir": str(tmp_path / "c"),
        "results_dir": str(tmp_path / "c" / "prefect-results"),
    }


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../etc/passwd"])
def test_bad_timezone_fails_the_deploy(zone: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown time zone stops `prefect deploy` with a message naming the variable."""
    monkeypatch.setenv("KEEPDOCKER_NIGHTLY_TIMEZONE", zone)
    with pytest.raises(ConfigurationError, match="KEEPDOCKER_NIGHTLY_TIMEZONE"):
        settings()


def test_relative_cache_dir_fails_the_deploy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative KEEPDOCKER_CACHE_DIR is refused: flow runs start in another directory."""
    monkeypatch.setenv("KEEPDOCKER_CACHE_DIR", "cache")
    with pytest.raises(ConfigurationError, match="absolute"):
        settings()


def test_enter_checkout_changes_into_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pull step moves a flow run from its temporary directory into the checkout holding the entrypoints."""
    monkeypatch.chdir(tmp_path)
    assert enter_checkout() == {"directory": str(REPO_ROOT)}
    assert Path(os.getcwd()) == REPO_ROOT
