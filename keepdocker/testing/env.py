"""Environments for keepdocker subprocesses in tests: a private HOME and none of the caller's outside settings."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_env"]

# Settings that would point a subprocess at the caller's cluster, Prefect server, engine or cache.
_OUTSIDE_PREFIXES = ("ARVADOS_", "PREFECT_", "KEEPDOCKER_")
_OUTSIDE_NAMES = ("DOCKER_HOST", "CACHE_DIRECTORY")


def private_env(home: Path) -> dict[str, str]:
    """This process's environment minus Arvados, Prefect, keepdocker and engine settings, with HOME at ``home``.

    ``home`` is created; XDG cache and config directories are the default ones under it.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OUTSIDE_PREFIXES) and k not in _OUTSIDE_NAMES}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"))
    return env
