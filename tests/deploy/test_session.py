"""Credentials for flow runs: the worker's environment, or an arvados-credentials block named by a parameter."""

from __future__ import annotations

import traceback
from typing import Any

import pytest

from keepdocker.errors import ConfigurationError
from tasks import session
from tasks.credentials import ArvadosCredentials

TOKEN = "v2/zzzzz-gj3su-000000000000000/s3cr3tt0k3nvalue"


def _with_block(monkeypatch: pytest.MonkeyPatch, data: dict[str, Any]) -> None:
    """Blocks load as a server would hand them back: the named document's data validated into the block type."""

    def load(name: str) -> ArvadosCredentials:
        if name != "arv":
            raise ValueError(f"Unable to find block document named {name} for block type arvados-credentials")
        return ArvadosCredentials.model_validate(data)

    monkeypatch.setattr(ArvadosCredentials, "load", load)


@pytest.mark.parametrize("insecure", [False, True])
def test_block_values_win_over_the_environment(insecure: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A named block's host, token and insecure flag are used, whatever the worker's environment holds."""
    _with_block(monkeypatch, {"host": "h.example:443", "token": TOKEN, "insecure": insecure})
    monkeypatch.setenv("ARVADOS_API_HOST", "env.example")
    monkeypatch.setenv("ARVADOS_API_TOKEN", "env-token")
    monkeypatch.setenv("ARVADOS_API_HOST_INSECURE", "true")
    config = session._config("arv")
    assert (config.host, config.token, config.insecure) == ("h.example:443", TOKEN, insecure)
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
    _with_block(monkeypatch, {})
    with pytest.raises(ConfigurationError, match="block 'nope' not found or incomplete: create it"):
        session._config("nope")


@pytest.mark.parametrize("data", [{"token": TOKEN}, {"host": f"bad host {TOKEN}", "token": TOKEN}])
def test_incomplete_block_never_shows_its_content(data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A stored block that does not validate fails with a message, and no chained error, that holds no token."""
    _with_block(monkeypatch, data)
    with pytest.raises(ConfigurationError, match="not found or incomplete") as info:
        session._config("arv")
    rendered = "".join(traceback.format_exception(info.value))
    assert TOKEN not in rendered
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_block_token_is_masked() -> None:
    """The block's repr, its dict dump and its JSON dump show the token masked."""
    block = ArvadosCredentials(host="h.example", token=TOKEN)  # type: ignore[arg-type]
    assert TOKEN not in repr(block) and TOKEN not in str(block.model_dump()) and TOKEN not in block.model_dump_json()
    assert block.config().token == TOKEN
