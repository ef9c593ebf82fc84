"""The README's first command, `keepdocker demo`, as a user runs it: a sweep on the stand-in and the ephemeral API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from keepdocker.testing.env import private_env

pytestmark = pytest.mark.slow

KEEPDOCKER = str(Path(sys.executable).parent / "keepdocker")


def _demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KEEPDOCKER, "demo"], env=env, capture_output=True, text=True, timeout=900, check=False)


def test_demo_migrates_in_place_then_has_nothing_to_do(tmp_path: Path) -> None:
    """First run: 3 images migrated, most bytes reused in place, histories printed; second run: nothing to do."""
    env = private_env(tmp_path / "home")  # no PREFECT_API_URL: the ephemeral API, as on a fresh machine
    first = _demo(env)
    assert first.returncode == 0, first.stderr[-3000:]
    line = r"^3 migrated, 0 failed, (\d+) bytes; Keep: (\d+) bytes reused, (\d+) written$"
    totals = re.search(line, first.stdout, re.M)
    assert totals is not None, first.stdout[-3000:]
    size, reused, written = (int(g) for g in totals.groups())
    assert reused > size // 2 and written < size // 4  # the two bigger images were migrated in place
    for name in ("demo/base:2015", "demo/app:1.0"):
        assert f"history of {name}:" in first.stdout
        assert re.search(rf"^migrated\s+migrate\s+\S+\s+{re.escape(name)}", first.stdout, re.M), name

    again = _demo(env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "migrated by an earlier run" in again.stdout
