"""The process helpers: SIGINT restored for started programs, and stopping leaves nothing running."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from keepdocker.testing.prefect_procs import _alive, _spawn, descendants, stop_process


def _wait_for(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} not written")


def test_started_program_gets_sigint_back_even_when_ignored_here(tmp_path: Path) -> None:
    """A program started while SIGINT is ignored (as under `cmd &`) still has Python's default SIGINT handler."""
    out = tmp_path / "sig.txt"
    script = f"import signal, time; open({str(out)!r}, 'w').write(repr(signal.getsignal(signal.SIGINT)) + '\\n'); "
    script += "time.sleep(60)"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = _spawn("probe", [sys.executable, "-c", script], dict(os.environ), tmp_path / "probe.log", None)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert "default_int_handler" in _wait_for(out)
    finally:
        code = stop_process(proc.process, timeout=5)
    assert code == -signal.SIGTERM


def test_stop_ends_descendants_in_their_own_sessions(tmp_path: Path) -> None:
    """Stopping a process also stops what it started in another session (a worker's flow runs), by PID."""
    pidfile = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); "
        f"open({str(pidfile)!r}, 'w').write(str(c.pid) + '\\n'); time.sleep(60)"
    )
    proc = _spawn("parent", [sys.executable, "-c", script], dict(os.environ), tmp_path / "p.log", None)
    child = int(_wait_for(pidfile))
    assert descendants(proc.pid) == [child]
    stop_process(proc.process, timeout=5)
    assert not _alive(proc.pid)
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
