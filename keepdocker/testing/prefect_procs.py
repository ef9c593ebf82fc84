"""Start and stop a real `prefect server start` and process workers by PID, for end-to-end tests and labs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PrefectProcess",
    "client_env",
    "descendants",
    "free_port",
    "prefect_bin",
    "run_prefect",
    "running_server",
    "start_server",
    "start_worker",
    "stop_process",
    "wait_healthy",
]

# Run the real program with SIGINT back at its default: a child of a non-interactive shell or of a process that
# ignores SIGINT inherits SIG_IGN across exec, and a Prefect worker then ignores its graceful shutdown signal.
_RESTORE_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


@dataclass
class PrefectProcess:
    """One started Prefect process (server or worker): its PID, log file and, for a server, its API URL."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    api_url: str = ""

    @property
    def pid(self) -> int:
        """The process ID."""
        return self.process.pid

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the process's combined stdout/stderr log."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, timeout: float = 20.0) -> int | None:
        """Stop the process by PID (see `stop_process`); its exit code, or None when it was already reaped."""
        return stop_process(self.process, timeout)


def prefect_bin() -> str:
    """The `prefect` executable beside this interpreter (the project's virtualenv)."""
    candidate = Path(sys.executable).parent / "prefect"
    if not candidate.exists():
        raise RuntimeError(f"no prefect executable at {candidate}: run `uv sync` first")
    return str(candidate)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_env(home: Path, api_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default os.environ) without PREFECT_* settings, plus a private PREFECT_HOME and this server's API.

    The ephemeral server is disabled, so a client that loses the URL fails at once instead of starting its own.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLI_PROMPT": "false",
        }
    )
    return env


def descendants(pid: int) -> list[int]:
    """PIDs of the process's living descendants (Linux /proc), e.g. flow runs a worker started in their own sessions."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """True while the PID runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> int | None:
    """SIGTERM the PID and wait (SIGKILL its process group after ``timeout``); then stop descendants it left behind.

    A worker's flow runs live in sessions of their own: any still running when the worker is gone get SIGTERM by
    PID, then SIGKILL after a few seconds.
    """
    left = descendants(process.pid) if process.poll() is None else []
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    left = [pid for pid in left if _alive(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while (left := [pid for pid in left if _alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.1)
    return process.returncode


def wait_healthy(api_url: str, timeout: float = 120.0, process: subprocess.Popen[bytes] | None = None) -> float:
    """Poll ``<api_url>/health`` until it answers 200; the seconds it took. Fails early if ``process`` exits."""
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with {process.returncode} before answering {api_url}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the Prefect server at {api_url} did not answer /health within {timeout:.0f} s")
        time.sleep(0.25)


def _spawn(name: str, argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path | None) -> PrefectProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", _RESTORE_SIGINT, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    return PrefectProcess(name=name, process=process, log=log)


def start_server(
    home: Path,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    ui: bool = False,
    scheduler: bool = True,
    startup_timeout: float = 180.0,
) -> PrefectProcess:
    """`prefect server start` on SQLite in ``home`` on 127.0.0.1:``port`` (free if None); returns once healthy.

    The port goes through PREFECT_SERVER_API_HOST/PORT, not --port, so the UI advertises the right API URL.
    ``scheduler=False`` keeps the server from creating scheduled runs (deployments still carry their schedules).
    """
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    server_env = client_env(home, api_url, env)
    del server_env["PREFECT_API_URL"]
    server_env.update(
        {
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true" if scheduler else "false",
        }
    )
    proc = _spawn("server", [prefect_bin(), "server", "start"], server_env, log or home / "server.log", None)
    proc.api_url = api_url
    try:
        wait_healthy(api_url, startup_timeout, proc.process)
    except BaseException:
        proc.stop()
        raise RuntimeError(f"{proc.name} failed to start; log tail:\n{proc.log_tail()}") from None
    return proc


def start_worker(
    pool: str,
    name: str,
    env: Mapping[str, str],
    *,
    log: Path,
    cwd: Path | None = None,
    limit: int | None = None,
    query_seconds: float = 1.0,
    startup_timeout: float = 60.0,
) -> PrefectProcess:
    """`prefect worker start --pool POOL --name NAME` with SIGINT restored; returns once it reports it started.

    ``env`` must already point at the server (see `client_env`); it is what flow runs inherit.
    """
    worker_env = dict(env)
    worker_env["PREFECT_WORKER_QUERY_SECONDS"] = str(query_seconds)
    argv = [prefect_bin(), "worker", "start", "--pool", pool, "--name", name, "--type", "process"]
    if limit is not None:
        argv += ["--limit", str(limit)]
    log.parent.mkdir(parents=True, exist_ok=True)
    offset = log.stat().st_size if log.exists() else 0
    proc = _spawn(f"worker {name}", argv, worker_env, log, cwd)
    deadline = time.monotonic() + startup_timeout
    while True:
        with open(log, "rb") as f:
            f.seek(offset)
            if b"started!" in f.read():
                return proc
        if proc.process.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"{proc.name} did not start; log tail:\n{proc.log_tail()}")
        time.sleep(0.25)


@contextmanager
def running_server(home: Path, **kwargs: Any) -> Iterator[PrefectProcess]:
    """A Prefect server for the duration of the block (see `start_server`), stopped by PID at the end."""
    server = start_server(home, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def run_prefect(
    args: Sequence[str], env: Mapping[str, str], *, cwd: Path | None = None, timeout: float = 600.0
) -> subprocess.CompletedProcess[str]:
    """Run one `prefect ...` CLI command to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [prefect_bin(), *args], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
