"""Start and stop a private Docker engine (dockerd) in a directory of its own, for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests

__all__ = ["PrivateEngine", "engine_answers", "private_engine"]


@dataclass(frozen=True)
class PrivateEngine:
    """A running private dockerd: its DOCKER_HOST URL, its directory and its process id."""

    host: str
    directory: Path
    pid: int


def engine_answers(host: str, timeout: float = 3.0) -> bool:
    """True when a Docker engine answers a ping at ``host``."""
    try:
        client = docker.DockerClient(base_url=host, timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        return False


@contextmanager
def private_engine(startup_timeout: float = 60.0) -> Iterator[PrivateEngine]:
    """Run dockerd (vfs, no network, no iptables) under a fresh temporary directory until the block exits."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise RuntimeError("dockerd is not installed: run `apt-get install -y docker.io`")
    if os.geteuid() != 0:
        raise RuntimeError("a private dockerd needs root; set DOCKER_HOST to a running engine instead")
    # A short path: the unix socket path must stay under 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="kdd-", dir="/tmp"))
    sock = directory / "docker.sock"
    log = open(directory / "dockerd.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            dockerd,
            "--host",
            f"unix://{sock}",
            "--data-root",
            str(directory / "root"),
            "--exec-root",
            str(directory / "exec"),
            "--pidfile",
            str(directory / "pid"),
            "--storage-driver",
            "vfs",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    host = f"unix://{sock}"
    try:
        deadline = time.monotonic() + startup_timeout
        while not (sock.exists() and engine_answers(host, timeout=2.0)):
            if proc.poll() is not None:
                tail = (directory / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"dockerd exited with {proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer within {startup_timeout:.0f}s; see {directory}/dockerd.log")
            time.sleep(0.2)
        yield PrivateEngine(host=host, directory=directory, pid=proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        # vfs leaves plain directories; containerd shims are children of dockerd's session.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
