"""The Docker engine killed and restarted during `docker save`: the push retries and never reuses the partial tar."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_support import (
    MakeStandin,
    PrefectServer,
    admin_session,
    kill_group,
    start_cli,
    task_runs_since,
    wait_for,
)

from keepdocker.arv.catalog import HASH_LINK, keyset
from keepdocker.cache import TarCache, Verification
from keepdocker.images.docker_archive import read_archive
from keepdocker.testing.dockerd import PrivateEngine, engine_answers, private_engine
from keepdocker.testing.images import build_image


@contextlib.contextmanager
def own_engine() -> Iterator[PrivateEngine]:
    """A private dockerd for this test alone (it is killed), or a skip (a failure under CI) when none can start."""
    try:
        with private_engine() as engine:
            yield engine
    except RuntimeError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"a private Docker engine is required under CI: {exc}")
        pytest.skip(str(exc))


def restart_dockerd(engine: PrivateEngine) -> subprocess.Popen[bytes]:
    """SIGKILL dockerd and its containerd, start a new dockerd on the same socket and data root; return it."""
    os.killpg(engine.pid, signal.SIGKILL)  # dockerd and its containerd, as a crash or OOM kill would
    wait_for("dockerd to go away", lambda: not engine_answers(engine.host, timeout=0.5), timeout=30)
    for stale in ("pid", "docker.sock", "exec/containerd/containerd.pid"):  # a dead PID may linger as a zombie
        with contextlib.suppress(FileNotFoundError):
            (engine.directory / stale).unlink()
    d = engine.directory
    log = open(d / "dockerd-restarted.log", "wb")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(
        [
            str(shutil.which("dockerd")),
            "--host", engine.host, "--data-root", str(d / "root"), "--exec-root", str(d / "exec"),
            "--pidfile", str(d / "pid"), "--storage-driver", "vfs",
            "--iptables=false", "--ip6tables=false", "--bridge=none",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    log.close()
    wait_for("the restarted dockerd", lambda: engine_answers(engine.host, timeout=1.0), timeout=90, interval=0.3)
    return proc


@pytest.mark.engine
@pytest.mark.slow
def test_engine_killed_during_save_push_retries_and_succeeds(
    make_standin: MakeStandin, base_env: dict[str, str], reliability_prefect: PrefectServer, tmp_path: Path
) -> None:
    """dockerd dies mid-save: the partial cache file is dropped, the save is done again, the upload is a full tar."""
    started = time.time()
    with own_engine() as engine:
        image_id = build_image(engine.host, "kd/restart", "v1", seed=31, payload_bytes=160 << 20)
        standin = make_standin()
        cache_dir = tmp_path / "cache"
        env = standin.client_env({**base_env, "DOCKER_HOST": engine.host, "KEEPDOCKER_RETRY_DELAY": "3"})
        restarted: subprocess.Popen[bytes] | None = None
        proc = start_cli("push", "kd/restart:v1", env=env, out_dir=tmp_path / "push")
        try:

            def partial_size() -> int:
                sizes = [p.stat().st_size for p in cache_dir.glob(".tmp#*")] if cache_dir.is_dir() else []
                return max(sizes, default=0)

            wait_for("a partial save", lambda: partial_size() > (8 << 20) or proc.poll() is not None, timeout=300)
            assert proc.poll() is None, (tmp_path / "push" / "stderr").read_text()[-2000:]
            partial = partial_size()
            restarted = restart_dockerd(engine)
            code = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                kill_group(proc)
            if restarted is not None and restarted.poll() is None:
                os.killpg(restarted.pid, signal.SIGTERM)
                restarted.wait(timeout=60)
        stderr = (tmp_path / "push" / "stderr").read_text()
        assert code == 0, stderr[-3000:]

    session = admin_session(standin)
    (coll,) = keyset(session, "collections", [])
    assert (tmp_path / "push" / "stdout").read_text().strip() == coll["uuid"]
    (link,) = keyset(session, "links", [["link_class", "=", HASH_LINK]])
    assert link["name"] == image_id and link["head_uuid"] == coll["uuid"]

    import arvados.collection

    reader = arvados.collection.CollectionReader(coll["uuid"], api_client=session.api)
    uploaded = tmp_path / "uploaded.tar"
    digest = hashlib.sha256()
    with reader.open(f"{image_id}.tar", "rb") as src, uploaded.open("wb") as out:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    assert uploaded.stat().st_size > partial
    assert [i.id for i in read_archive(uploaded)] == [image_id]
    assert not list(cache_dir.glob(".tmp#*"))
    cache = TarCache(cache_dir, verification=Verification.FULL)
    assert all(cache.get(e.key) is not None for e in cache.entries())
    saves = [n for name, n, _ in task_runs_since(reliability_prefect.url, started) if name.startswith("save")]
    # The save was done again after the kill: `keepdocker push` starts it in the background before Prefect imports,
    # so the kill cuts either that save (the save task then saves anew) or the task's own (its retry saves anew).
    # Either way exactly one save finished, and it wrote the whole archive.
    finished = [line for line in stderr.splitlines() if line.startswith("save ") and line.endswith(" done")]
    assert saves and len(finished) == 1, (saves, finished)
    assert f"{uploaded.stat().st_size / (1 << 20):.1f} of" in finished[0], finished
    print(f"\nFIGURES engine_restart: partial={partial} final={uploaded.stat().st_size} save_runs={saves}")
