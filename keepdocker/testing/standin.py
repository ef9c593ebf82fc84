"""Run the Arvados stand-in as a real subprocess for tests and benchmarks, and talk to it without the SDK."""

from __future__ import annotations

import json
import os
import select
import shlex
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["REQUIRED_ENV", "RunningStandin", "parse_env_lines", "running_standin"]

REQUIRED_ENV = ("ARVADOS_API_HOST", "ARVADOS_API_TOKEN", "ARVADOS_API_HOST_INSECURE", "KEEPDOCKER_STANDIN_USER_TOKEN")
_LAST_LINE = "KEEPDOCKER_STANDIN_PID"
_INSECURE = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


def parse_env_lines(text: str) -> dict[str, str]:
    """Parse ``export NAME=VALUE`` lines (shell-quoted values) into a dict; other lines are ignored."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
    return env


@dataclass
class RunningStandin:
    """A stand-in subprocess: its published environment, data directory and process; restartable in place."""

    data_dir: Path
    extra_args: list[str]
    startup_timeout: float = 60.0
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def start(self, port: int = 0, keep_port: int = 0) -> dict[str, str]:
        """Start the server on this data directory and wait until it has printed its environment."""
        if self.process is not None:
            raise RuntimeError("the stand-in is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / f"{self.data_dir.name}.stderr.log", "ab")  # noqa: SIM115
        cmd = [
            str(Path(sys.executable).with_name("keepdocker")), "standin",
            "--data-dir", str(self.data_dir), "--port", str(port), "--keep-port", str(keep_port), *self.extra_args,
        ]
        try:
            self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        finally:
            log.close()
        assert self.process.stdout is not None
        out = b""
        deadline = time.monotonic() + self.startup_timeout
        while f"export {_LAST_LINE}=".encode() not in out or not out.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                self.stop()
                tail = self.log_tail()
                raise RuntimeError(f"the stand-in did not start (output {out!r}); stderr tail:\n{tail}")
            ready, _, _ = select.select([self.process.stdout], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                out += chunk
        self.env = parse_env_lines(out.decode())
        missing = [name for name in REQUIRED_ENV if name not in self.env]
        if missing:
            self.stop()
            raise RuntimeError(f"the stand-in did not publish {', '.join(missing)}")
        return self.env

    def stop(self, timeout: float = 15.0) -> int | None:
        """Send SIGTERM to the server's PID, wait for it (SIGKILL after ``timeout``); return its exit code."""
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def restart(self, same_ports: bool = True) -> dict[str, str]:
        """Stop and start again on the same data directory (by default on the same ports)."""
        api_port = int(self.env["ARVADOS_API_HOST"].rsplit(":", 1)[1]) if same_ports else 0
        keep_port = int(self.env["KEEPDOCKER_STANDIN_KEEP_PORT"]) if same_ports else 0
        code = self.stop()
        if code != 0:
            raise RuntimeError(f"the stand-in exited with {code} on SIGTERM")
        return self.start(api_port, keep_port)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's stderr log."""
        path = self.data_dir.parent / f"{self.data_dir.name}.stderr.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- clients --------------------------------------------------------------------------------------------------

    @property
    def admin_token(self) -> str:
        """The admin token."""
        return self.env["ARVADOS_API_TOKEN"]

    @property
    def user_token(self) -> str:
        """The regular (non-admin) user's token."""
        return self.env["KEEPDOCKER_STANDIN_USER_TOKEN"]

    @property
    def keep_url(self) -> str:
        """Root URL of the Keep service."""
        host = self.env["ARVADOS_API_HOST"].rsplit(":", 1)[0]
        return f"http://{host}:{self.env['KEEPDOCKER_STANDIN_KEEP_PORT']}/"

    def client_env(self, base: dict[str, str] | None = None, token: str | None = None) -> dict[str, str]:
        """``base`` (default: os.environ) plus the Arvados variables, optionally with another token."""
        env = dict(os.environ if base is None else base)
        env.update({k: v for k, v in self.env.items() if k in REQUIRED_ENV})
        if token is not None:
            env["ARVADOS_API_TOKEN"] = token
        return env

    def request(
        self, method: str, path: str, token: str | None = None, body: Any = None, query: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """One raw HTTPS API request (no retries): ``(status, decoded JSON body)``; token defaults to the admin's."""
        url = f"https://{self.env['ARVADOS_API_HOST']}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(
                {k: v if isinstance(v, str) else json.dumps(v) for k, v in query.items()}
            )
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=_INSECURE, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def keep_bytes(self) -> int:
        """Bytes in the stand-in's block store (every stored block, counted once)."""
        blocks = self.data_dir / "blocks"
        return sum(p.stat().st_size for p in blocks.rglob("*") if p.is_file() and p.parent.name != "tmp")

    def stats(self) -> dict[str, Any]:
        """Request counters, record counts and block count from ``/_standin/stats``."""
        status, payload = self.request("GET", "/_standin/stats")
        if status != 200:
            raise RuntimeError(f"/_standin/stats answered {status}: {payload}")
        return dict(payload)


@contextmanager
def running_standin(
    data_dir: Path,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 60.0,
    blob_signature_ttl: int | None = None,
) -> Iterator[RunningStandin]:
    """Run ``keepdocker standin`` on ``data_dir`` for the duration of the block; stop it by PID at the end.

    ``blob_signature_ttl`` (seconds) shortens how long block signatures stay valid, so tests can let them expire.
    """
    args = list(extra_args)
    if blob_signature_ttl is not None:
        args += ["--blob-signature-ttl", str(blob_signature_ttl)]
    standin = RunningStandin(data_dir=data_dir, extra_args=args, startup_timeout=startup_timeout)
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()
