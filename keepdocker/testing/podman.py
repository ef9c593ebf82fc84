"""Run a private rootful podman API service (vfs storage, own socket) as a Docker-compatible engine for tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from keepdocker.testing.dockerd import engine_answers

__all__ = ["podman_service"]


@contextmanager
def podman_service(insecure_registries: Sequence[str] = (), startup_timeout: float = 60.0) -> Iterator[str]:
    """Serve podman's Docker-compatible API on a private unix socket until the block exits; yields DOCKER_HOST.

    ``insecure_registries`` (``host:port``) may be pulled from over plain HTTP: podman, unlike dockerd, does not
    trust loopback registries by default, so they go into a private registries.conf.
    """
    podman = shutil.which("podman")
    if podman is None:
        raise RuntimeError("podman is not installed: apt-get install -y podman")
    if os.geteuid() != 0:
        raise RuntimeError("the podman test service runs rootful: run as root")
    directory = Path(tempfile.mkdtemp(prefix="kdp-", dir="/tmp"))  # short: unix socket paths max 108 bytes
    sock = directory / "podman.sock"
    conf = directory / "registries.conf"
    conf.write_text(
        'unqualified-search-registries = ["docker.io"]\n'
        + "".join(f'[[registry]]\nlocation = "{r}"\ninsecure = true\n' for r in insecure_registries)
    )
    env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf)}
    log = open(directory / "podman.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            podman,
            "--root",
            str(directory / "root"),
            "--runroot",
            str(directory / "run"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "system",
            "service",
            "--time",
            "0",
            f"unix://{sock}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    host = f"unix://{sock}"
    try:
        deadline = time.monotonic() + startup_timeout
        while not (sock.exists() and engine_answers(host)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman service did not start: {(directory / 'podman.log').read_text()[-500:]}")
            time.sleep(0.2)
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        with suppress(OSError):
            shutil.rmtree(directory)
