"""Screenshots of what an operator sees in the Prefect UI: an image's history, a sweep's artifacts, a run form.

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

from keepdocker.testing.prefect_procs import client_env, run_prefect, running_server
from keepdocker.testing.standin import running_standin

pytestmark = pytest.mark.slow

KEEPDOCKER = str(Path(sys.executable).parent / "keepdocker")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _chromium(*args: str, profile: Path) -> str:
    """Run headless Chromium on one page (rendered for up to 30 s of virtual time); its stdout."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium is not None
    done = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            "--virtual-time-budget=30000", "--window-size=1400,1800", *args,
        ],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.stdout


def screenshot(url: str, png: Path, profile: Path) -> None:
    """One headless Chromium screenshot of ``url``."""
    _chromium(f"--screenshot={png}", url, profile=profile)


def rendered_text(url: str, profile: Path) -> str:
    """The page's DOM after headless Chromium ran its scripts (``--dump-dom``)."""
    return _chromium("--dump-dom", url, profile=profile)


def _need_chromium() -> None:
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required under CI (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")


def test_run_form_shows_plain_titled_fields(tmp_path: Path) -> None:
    """The custom-run form of migrate-images/adhoc shows each parameter as a plain field under its readable title."""
    _need_chromium()
    out = Path(os.environ.get("KEEPDOCKER_SCREENSHOT_DIR") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    with running_server(tmp_path / "prefect", ui=True, startup_timeout=240) as server:
        env = client_env(tmp_path / "client-home", server.api_url)
        env.update(KEEPDOCKER_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path / "home"))
        pool = run_prefect(["work-pool", "create", "keepdocker", "--type", "process", "--overwrite"], env)
        assert pool.returncode == 0, pool.stderr
        deployed = run_prefect(
            ["--no-prompt", "deploy", "--name", "migrate-images/adhoc", "--prefect-file", "deployments/prefect.yaml"],
            env,
            cwd=REPO_ROOT,
        )
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        with urllib.request.urlopen(f"{server.api_url}/deployments/name/migrate-images/adhoc", timeout=30) as resp:
            deployment = json.loads(resp.read())
        url = f"{server.api_url.removesuffix('/api')}/deployments/deployment/{deployment['id']}/run"
        screenshot(url, out / "run-form.png", tmp_path / "profile-png")
        text = rendered_text(url, tmp_path / "profile-dom")
    for title in ("Dry run", "Concurrency", "Converter", "Verify", "Fan out", "Arvados credentials block"):
        assert title in text, title
    assert "dry_run" not in text.replace('"dry_run"', ""), "a parameter shown by its name, not its title"
    print(f"\nrun form in {out / 'run-form.png'}")


def test_history_and_sweep_artifacts_render(tmp_path: Path) -> None:
    """After a sweep, the history page of an image and the run's artifacts page render to non-empty PNGs."""
    _need_chromium()
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
