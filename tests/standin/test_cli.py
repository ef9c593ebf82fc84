"""`keepdocker standin` prints its environment (stdout and --env-file), defaults its data dir, stops on signals."""

from __future__ import annotations

import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keepdocker.testing.standin import REQUIRED_ENV, parse_env_lines, running_standin


def test_env_file_matches_stdout(tmp_path: Path) -> None:
    """--env-file receives exactly the export lines printed on stdout, including the four required variables."""
    env_file = tmp_path / "env" / "standin.env"
    with running_standin(tmp_path / "data", ["--env-file", str(env_file)]) as standin:
        from_file = parse_env_lines(env_file.read_text())
        assert from_file == standin.env
        assert all(from_file[name] for name in REQUIRED_ENV)
        assert from_file["ARVADOS_API_HOST_INSECURE"] == "1"
        assert from_file["ARVADOS_API_TOKEN"] != from_file["KEEPDOCKER_STANDIN_USER_TOKEN"]
        assert from_file["ARVADOS_API_TOKEN"].startswith("v2/zzzzz-gj3su-")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_default_data_dir_and_clean_exit_on_signal(tmp_path: Path, signum: int) -> None:
    """Without --data-dir the data goes under $XDG_DATA_HOME/keepdocker/standin; SIGTERM and SIGINT exit 0."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cli.main import main; main()", "standin"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        out = b""
        deadline = time.monotonic() + 60
        while b"KEEPDOCKER_STANDIN_PID=" not in out and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                out += os.read(proc.stdout.fileno(), 65536)
        published = parse_env_lines(out.decode())
        assert published["KEEPDOCKER_STANDIN_DATA_DIR"] == str(tmp_path / "xdg" / "keepdocker" / "standin")
        assert (tmp_path / "xdg" / "keepdocker" / "standin" / "standin.sqlite3").exists()
        proc.send_signal(signum)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    """A failure rate outside [0, 1] or a malformed cluster id is refused before anything starts."""
    base = [sys.executable, "-c", "from cli.main import main; main()", "standin", "--data-dir", str(tmp_path)]
    rate = subprocess.run([*base, "--api-failure-rate", "1.5"], capture_output=True, text=True, timeout=60)
    assert rate.returncode == 2 and "between 0 and 1" in rate.stderr
    cluster = subprocess.run([*base, "--cluster-id", "ZZ"], capture_output=True, text=True, timeout=60)
    assert cluster.returncode == 2 and "--cluster-id" in cluster.stderr


def test_certificate_verifies_and_persists(tmp_path: Path) -> None:
    """The published CA file verifies the API's TLS for 127.0.0.1, and the same certificate is reused on restart."""
    with running_standin(tmp_path / "data") as standin:
        ca_file = Path(standin.env["KEEPDOCKER_STANDIN_CA_FILE"])
        first = ca_file.read_bytes()
        host, port = standin.env["ARVADOS_API_HOST"].rsplit(":", 1)
        context = ssl.create_default_context(cafile=str(ca_file))
        with socket.create_connection((host, int(port)), timeout=10) as raw, context.wrap_socket(
            raw, server_hostname=host
        ) as tls:
            assert tls.version() is not None
        standin.restart()
        assert Path(standin.env["KEEPDOCKER_STANDIN_CA_FILE"]).read_bytes() == first


def test_sample_v1_images_are_stored_once(tmp_path: Path) -> None:
    """--sample-v1-images N stores N v1 images an old cluster would hold (found by discovery), and only once."""
    from keepdocker.arv.client import ArvadosConfig, connect
    from keepdocker.arv.migration import discover_v1_images

    for _ in range(2):  # the second start of the same data dir adds nothing
        with running_standin(tmp_path / "data", ["--sample-v1-images", "4"]) as standin:
            session = connect(ArvadosConfig.from_env(standin.env))
            images = discover_v1_images(session)
            assert sorted(t for i in images for t in i.repo_tags) == [
                "legacy/sample0:latest", "legacy/sample0:v1", "legacy/sample1:v1", "legacy/sample2:v1",
                "legacy/sample3:latest", "legacy/sample3:v1",
            ]  # fmt: skip
