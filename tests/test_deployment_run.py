"""`keepdocker deployment-run`: parameters read as `prefect deployment run` reads them; no API is one line, fast."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.commands.deployment_run import first_line, parse_params, typed_params
from keepdocker.errors import UsageError
from keepdocker.testing.prefect_procs import free_port

KEEPDOCKER = str(Path(sys.executable).parent / "keepdocker")


SCHEMA = {
    "properties": {
        "tag": {"type": "string"},
        "image": {"type": "string"},
        "dry_run": {"type": "boolean"},
        "concurrency": {"type": "integer"},
        "pdhs": {"type": "array", "items": {"type": "string"}},
    }
}


def test_text_parameters_keep_what_was_typed() -> None:
    """tag=1.10 stays the text '1.10' (prefect's --param would send 1.1); other types read JSON; later keys win."""
    raw = parse_params(["tag=1.10", "image=busybox:1.36", "dry_run=true", "concurrency=3", 'pdhs=["a+1"]', "tag=007"])
    params = typed_params(raw, SCHEMA, "migrate-images/adhoc")
    assert params == {"tag": "007", "image": "busybox:1.36", "dry_run": True, "concurrency": 3, "pdhs": ["a+1"]}
    assert typed_params({"concurrency": "many"}, SCHEMA, "x/y") == {"concurrency": "many"}  # the server refuses it


def test_unknown_parameters_are_named() -> None:
    """A parameter the deployment does not take is refused, listing the ones it does."""
    with pytest.raises(UsageError, match="x/y has no parameter request; it takes tag, image, dry_run"):
        typed_params({"request": "{}"}, SCHEMA, "x/y")


@pytest.mark.parametrize("item", ["image", "=busybox"])
def test_param_without_key_and_value_is_refused(item: str) -> None:
    """A --param that is not KEY=VALUE is a usage error showing the form."""
    with pytest.raises(UsageError, match="give KEY=VALUE"):
        parse_params([item])


def test_first_line_of_a_state_message() -> None:
    """Multi-line state messages are cut to their first non-empty line."""
    assert first_line("\n  reason here \ntraceback...") == "reason here"
    assert first_line(None) == ""


def _run(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([KEEPDOCKER, "deployment-run", *args], env=env, capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - started


def test_no_api_is_one_line(tmp_path: Path) -> None:
    """Without PREFECT_API_URL, or with nothing listening there, exit 1 with one line, within seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(HOME=str(tmp_path), PREFECT_HOME=str(tmp_path / "prefect"))
    done, _ = _run(env, "push-image/ci", "--param", "image=busybox")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "keepdocker deployment-run: error: PREFECT_API_URL is not set: point it at the Prefect server that holds the "
        "deployment"
    ]
    url = f"http://127.0.0.1:{free_port()}/api"
    done, seconds = _run(dict(env, PREFECT_API_URL=url), "push-image/ci", "--param", "image=busybox")
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"keepdocker deployment-run: error: cannot reach the Prefect API at {url}")
    # Importing Prefect alone takes seconds on a loaded machine; beyond that, no retrying of the refused connection.
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import prefect.settings, httpx"], env=env, check=True, timeout=120)
    assert seconds - (time.monotonic() - started) < 10


def test_bad_deployment_name_is_a_usage_error(tmp_path: Path) -> None:
    """A name without FLOW/ is refused before any API call (exit 2)."""
    done, _ = _run(dict(os.environ, HOME=str(tmp_path)), "push-image", "--param", "image=busybox")
    assert done.returncode == 2 and "name the deployment as FLOW/DEPLOYMENT" in done.stderr
