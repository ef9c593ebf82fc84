"""Screenshots of what an operator sees in the Prefect UI after a sweep: an image's history and the run's artifacts.

Headless Chromium (Debian `chromium`) loads the pages of a real `prefect server start` with the UI on. The PNGs go to
$KEEPDOCKER_SCREENSHOT_DIR (default: the test's temporary directory); look at them to check the history reads well.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from keepdocker.testing.prefect_procs import client_env, running_server
from keepdocker.testing.standin import running_standin

pytestmark = pytest.mark.slow

KEEPDOCKER = str(Path(sys.executable).parent / "keepdocker")


def screenshot(url: str, png: Path, profile: Path) -> None:
    """One headless Chromium screenshot of ``url`` (rendered for up to 30 s of virtual time)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None
    subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            "--virtual-time-budget=30000", f"--screenshot={png}", "--window-size=1400,1800", url,
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def test_history_and_sweep_artifacts_render(tmp_path: Path) -> None:
    """After a sweep, the history page of an image and the run's artifacts page render to non-empty PNGs."""
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required under CI (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    out = Path(os.environ.get("KEEPDOCKER_SCREENSHOT_DIR") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    with (
        running_server(tmp_path / "prefect", ui=True, startup_timeout=240) as server,
        running_standin(tmp_path / "standin", ["--sample-v1-images", "3"]) as standin,
    ):
        env = standin.client_env(client_env(tmp_path / "client-home", server.api_url))
        env.update(KEEPDOCKER_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path / "home"))
        done = subprocess.run([KEEPDOCKER, "migrate"], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        from tasks.history import history_key

        ui = server.api_url.removesuffix("/api")
        key = history_key("legacy/sample0:v1")
        request = urllib.request.Request(
            f"{server.api_url}/artifacts/filter",
            data=json.dumps({"artifacts": {"key": {"any_": [key]}}, "limit": 1}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            (artifact,) = json.loads(resp.read())
        pages = {
            "history-key.png": f"{ui}/artifacts/key/{key}",
            "history-version.png": f"{ui}/artifacts/artifact/{artifact['id']}",
            "artifacts.png": f"{ui}/artifacts",
            "sweep-run.png": f"{ui}/runs/flow-run/{artifact['flow_run_id']}?tab=Artifacts",
        }
        for name, url in pages.items():
            screenshot(url, out / name, tmp_path / f"profile-{name}")
            assert (out / name).stat().st_size > 20_000, name
    print(f"\nscreenshots in {out}")
