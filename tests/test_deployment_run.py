"""`keepdocker deployment-run`: parameters read as `prefect deployment run` reads them; no API is one line, fast."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.commands.deployment_run import first_line, parse_params
from keepdocker.errors import UsageError
from keepdocker.testing.prefect_procs import free_port

KEEPDOCKER = str(Path(sys.executable).parent / "keepdocker")


def test_params_are_json_when_they_parse() -> None:
    """true, numbers and lists become JSON values; anything else stays text; later keys win."""
    params = parse_params(
        ["dry_run=true", "concurrency=3", 'pdhs=["a+1"]', "image=busybox:1.36", "tag=1.0", "x=1", "x="]
    )
    assert params == {
        "dry_run": True,
        "concurrency": 3,
        "pdhs": ["a+1"],
        "image": "busybox:1.36",
        "tag": 1.0,
        "x": "",
    }


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
    assert line.startswith(f"keepdocker deployment-run: error: cannot reach the Prefect API at {url}: ")
    # Importing Prefect alone takes seconds on a loaded machine; beyond that, no retrying of the refused connection.
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import prefect.settings, httpx"], env=env, check=True, timeout=120)
    assert seconds - (time.monotonic() - started) < 10


def test_bad_deployment_name_is_a_usage_error(tmp_path: Path) -> None:
    """A name without FLOW/ is refused before any API call (exit 2)."""
    done, _ = _run(dict(os.environ, HOME=str(tmp_path)), "push-image", "--param", "image=busybox")
    assert done.returncode == 2 and "name the deployment as FLOW/DEPLOYMENT" in done.stderr
