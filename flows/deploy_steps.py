"""Steps of deployments/prefect.yaml: settings resolved once at deploy time, and the worker's checkout at run time.

Why steps and not `{{ $VAR }}` placeholders (measured with Prefect 3.9.1): `prefect deploy` resolves `{{ $VAR }}`
in a deployment's fields from its own environment and, when VAR is unset there, stores an empty string (a schedule
gets time zone "", a flow run KEEPDOCKER_CACHE_DIR="" overriding the worker's own). In pull steps the placeholder is
baked in at deploy time when the deploying shell has VAR, else kept and resolved in each flow run's process on the
worker ("" when unset there too). `settings` gives every value a validated default; `enter_checkout` needs no
variable at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from keepdocker.cache import default_cache_dir
from keepdocker.errors import ConfigurationError

__all__ = ["enter_checkout", "register_blocks", "settings"]

TIMEZONE_VAR = "KEEPDOCKER_NIGHTLY_TIMEZONE"
DEFAULT_TIMEZONE = "UTC"


def settings() -> dict[str, str]:
    """Build step, run by `prefect deploy`: the nightly time zone and the cache and results paths flow runs get.

    ``timezone``: $KEEPDOCKER_NIGHTLY_TIMEZONE (an IANA name), default UTC. ``cache_dir``: $KEEPDOCKER_CACHE_DIR,
    else the CLI's default cache directory of the deploying user. ``results_dir``: ``<cache_dir>/prefect-results``,
    where the CLI keeps Prefect's task cache records too, so CLI and deployment runs reuse each other's tars.
    """
    timezone = os.environ.get(TIMEZONE_VAR, "").strip() or DEFAULT_TIMEZONE
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"{TIMEZONE_VAR}={timezone!r} is not an IANA time zone: use a name such as Europe/Berlin or UTC"
        ) from None
    cache_dir = default_cache_dir().expanduser()
    if not cache_dir.is_absolute():
        raise ConfigurationError(f"KEEPDOCKER_CACHE_DIR={str(cache_dir)!r} must be an absolute path for deployments")
    return {
        "timezone": timezone,
        "cache_dir": str(cache_dir),
        "results_dir": str(cache_dir / "prefect-results"),
    }


def checkout_root() -> Path:
    """The checkout whose code this interpreter runs (the directory holding the `flows` package)."""
    return Path(__file__).resolve().parent.parent


def enter_checkout() -> dict[str, str]:
    """Pull step, run in each flow run's process on the worker: change into the checkout the worker runs.

    The process worker starts flow runs in a fresh temporary directory; the entrypoints (`flows/push.py:...`) are
    relative to the checkout, which is where this module was imported from (the project is installed editable).
    """
    root = checkout_root()
    if not (root / "flows" / "migrate.py").is_file():
        raise ConfigurationError(f"{root} holds no flows/migrate.py: run the worker from a keepdocker-flows checkout")
    os.chdir(root)
    return {"directory": str(root)}


def register_blocks() -> dict[str, str]:
    """Build step, run by `prefect deploy`: register the arvados-credentials block type with the server.

    Then the UI offers it under Blocks, and flow runs can name a saved one in their credentials_block parameter.
    """
    from tasks.credentials import ArvadosCredentials

    ArvadosCredentials.register_type_and_schema()
    return {"credentials_block_type": ArvadosCredentials.get_block_type_slug()}
