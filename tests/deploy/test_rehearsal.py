"""The README's rehearsal script, extracted from the README and run as written; its Prefect commands are the guide's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from keepdocker.testing.env import private_env
from keepdocker.testing.prefect_procs import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
MARKER = "<!-- rehearsal -->"


def rehearsal_script(text: str) -> str:
    """The bash block right after the rehearsal marker."""
    after = text.split(MARKER, 1)[1]
    match = re.match(r"\s*```bash\n(.*?)\n```", after, re.S)
    assert match, "the rehearsal marker must be followed by a ```bash block"
    return match.group(1)


def commands(script: str) -> list[str]:
    """The script's `uv run prefect …` commands: continuation lines joined, env assignments, redirections and a
    trailing `&` dropped, whitespace collapsed."""
    joined = script.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        at = line.find("uv run prefect ")
        if at < 0 or line.lstrip().startswith("#"):
            continue
        cmd = re.sub(r"\s+[0-9]?>\S+|\s+2>&1|\s*&\s*$|\s+#.*$", "", line[at:])
        out.append(" ".join(cmd.split()))
    return out


def test_rehearsal_commands_are_the_guides() -> None:
    """Every `uv run prefect …` line of the rehearsal appears, as written, in the operator guide above it."""
    text = README.read_text()
    guide = text.split("## Operations", 1)[1].split(MARKER, 1)[0]
    guide_commands = " \n ".join(" ".join(line.split()) for line in guide.replace("\\\n", " ").splitlines())
    script_commands = commands(rehearsal_script(text))
    assert len(script_commands) >= 6, script_commands
    missing = [c for c in script_commands if c not in guide_commands]
    assert missing == [], f"rehearsal commands not in the guide: {missing}"


@pytest.mark.slow
@pytest.mark.engine
def test_rehearsal_script_runs_as_written(tmp_path: Path) -> None:
    """The block runs to exit 0: server, pool, deploy, worker, dry run, sweep, history, push, no-op, CI push."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the rehearsal needs root and dockerd under CI")
        pytest.skip("the rehearsal needs root and dockerd")
    env = private_env(tmp_path / "home")
    # A short directory: dockerd's unix socket path must stay under 108 bytes.
    rdir = Path(subprocess.check_output(["mktemp", "-d", "/tmp/kdr-XXXXXX"], text=True).strip())
    env.update(REHEARSAL_DIR=str(rdir), REHEARSAL_PORT=str(free_port()))
    script = rehearsal_script(README.read_text())
    try:
        done = subprocess.run(
            ["bash", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        logs = "".join(
            f"\n--- {name}\n{(rdir / name).read_text(errors='replace')[-3000:]}"
            for name in ("server.log", "worker.log")
            if (rdir / name).exists()
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:] + logs
        out = done.stdout
        assert len(re.findall(r"finished .*in 'Completed'", out)) == 2, out  # the dry run and the sweep
        assert re.search(r"^migrated\s+migrate\s.*legacy/sample0:latest, legacy/sample0:v1 ", out, re.M), out
        uuids = re.findall(r"^[0-9a-z]{5}-4zz18-[0-9a-z]{15}$", out, re.M)
        assert len(uuids) == 2 and uuids[0] == uuids[1], out  # the push and its no-op repeat
        assert re.search(r"^uploaded\s+push\s.*rehearsal/hello:1", out, re.M), out
        assert re.search(r"^[0-9a-z]{5}-4zz18-[0-9a-z]{15} uploaded: rehearsal/hello:2", out, re.M), out  # CI
    finally:
        shutil.rmtree(rdir, ignore_errors=True)
