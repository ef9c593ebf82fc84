"""Credentials for deployment runs: the worker's environment, or a Secret block named by a parameter."""

from __future__ import annotations

import traceback
from typing import Any

import pytest

from keepdocker.errors import ConfigurationError
from tasks import session

TOKEN = "v2/zzzzz-gj3su-000000000000000/s3cr3tt0k3nvalue"


class _FakeSecret:
    def __init__(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


def _with_secret(monkeypatch: pytest.MonkeyPatch, value: Any) -> None:
    def load(name: str) -> _FakeSecret:
        if name != "arv":
            raise ValueError(f"Unable to find block document named {name}")
        return _FakeSecret(value)

    monkeypatch.setattr(session.Secret, "load", load)


@pytest.mark.parametrize("insecure", [None, "true"])
def test_block_values_win_over_the_environment(insecure: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A named block's host, token and insecure flag are used, whatever the worker's environment holds."""
    data = {"ARVADOS_API_HOST": "h.example:443", "ARVADOS_API_TOKEN": TOKEN}
    if insecure is not None:
        data["ARVADOS_API_HOST_INSECURE"] = insecure
    _with_secret(monkeypatch, data)
    monkeypatch.setenv("ARVADOS_API_HOST", "env.example")
    monkeypatch.setenv("ARVADOS_API_TOKEN", "env-token")
    monkeypatch.setenv("ARVADOS_API_HOST_INSECURE", "true")
    config = session._config("arv")
    assert (config.host, config.token, config.insecure) == ("h.example:443", TOKEN, insecure is not None)
    assert TOKEN not in repr(config)


def test_environment_without_a_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without credentials_block the worker's ARVADOS_* variables are used."""
    monkeypatch.setenv("ARVADOS_API_HOST", "env.example")
    monkeypatch.setenv("ARVADOS_API_TOKEN", "env-token")
    monkeypatch.delenv("ARVADOS_API_HOST_INSECURE", raising=False)
    config = session._config(None)
    assert (config.host, config.token, config.insecure) == ("env.example", "env-token", False)


def test_missing_block_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block that does not exist fails with its name and what to do."""
    _with_secret(monkeypatch, {})
    with pytest.raises(ConfigurationError, match="'nope' not found: create it"):
        session._config("nope")


@pytest.mark.parametrize("value", [f"token={TOKEN}", f'{{"ARVADOS_API_TOKEN": "{TOKEN}"}}', [TOKEN]])
def test_malformed_block_never_shows_its_content(value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block without host and token JSON fails with a message, and no chained error, that holds no token."""
    _with_secret(monkeypatch, value)
    with pytest.raises(ConfigurationError, match="must hold JSON") as info:
        session._config("arv")
    rendered = "".join(traceback.format_exception(info.value))
    assert TOKEN not in rendered
    assert info.value.__cause__ is None and info.value.__suppress_context__
