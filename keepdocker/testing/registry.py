"""Run Debian's docker-registry on loopback for tests that push and pull images (no internet registry needed)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker

__all__ = ["free_port", "local_registry", "push_to_registry"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def local_registry(root: Path, startup_timeout: float = 20.0) -> Iterator[str]:
    """A registry on 127.0.0.1:<free port> storing under ``root``; yields ``host:port`` (dockerd trusts loopback)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed: apt-get install -y docker-registry")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {(root / 'registry.log').read_text()[-500:]}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def push_to_registry(docker_host: str, image: str, name: str, tag: str) -> None:
    """Tag ``image`` as ``name:tag`` in the engine and push it to the registry that ``name`` names."""
    client = docker.APIClient(base_url=docker_host, timeout=120)
    try:
        client.tag(image, name, tag)
        for event in client.push(name, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise RuntimeError(f"push of {name}:{tag} failed: {event['error']}")
    finally:
        client.close()
