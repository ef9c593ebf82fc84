"""Faults survived with real processes: 503s and latency, SIGKILLed flows, a restarted stand-in, a full cache."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from reliability_support import (
    MakeStandin,
    PrefectServer,
    admin_session,
    catalog_state,
    injected,
    kill_group,
    run_cli,
    standin_rows,
    start_cli,
    task_runs_since,
    wait_for,
    wait_until_idle,
)

from keepdocker.arv.catalog import HASH_LINK, MIGRATION_LINK, keyset
from keepdocker.cache import TarCache, Verification
from keepdocker.testing.oldcluster import SeededImage, seed_v1_image
from keepdocker.testing.standin import RunningStandin
from keepdocker.testing.v1archives import random_v1_archive, write_large_v1_archive


def record_figures(name: str, figures: dict[str, object]) -> None:
    """Print the measured figures (run with -s to see them); also merge them into $KEEPDOCKER_FIGURES if set."""
    print(f"\nFIGURES {name}: {json.dumps(figures, sort_keys=True)}")
    target = os.environ.get("KEEPDOCKER_FIGURES")
    if not target:
        return
    data: dict[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(Path(target).read_text())
    data[name] = figures
    Path(target).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def seed_small(standin: RunningStandin, tmp: Path, seeds: range, tags: bool = True) -> list[SeededImage]:
    """Seed one small v1 image per seed (tagged old/img-N:1 when ``tags``)."""
    session = admin_session(standin)
    out = []
    for s in seeds:
        generated = random_v1_archive(s, layers=2, files=2, max_file_size=4096)
        path = generated.write(tmp / f"v1-{s}.tar")
        out.append(seed_v1_image(session, path, generated.leaves[0], (f"old/img-{s}:1",) if tags else ()))
    return out


def cache_is_clean(cache_dir: Path) -> list[str]:
    """Problems in a cache directory: leftover temporaries, or entries that fail a full re-hash."""
    problems = [str(p) for p in cache_dir.rglob("*") if p.name.startswith(".tmp#") or p.name.endswith(".partial")]
    if cache_dir.is_dir():
        cache = TarCache(cache_dir, verification=Verification.FULL)
        for entry in cache.entries():
            if cache.get(entry.key) is None:
                problems.append(f"invalid entry {entry.key}")
    return problems


def same_as_undisturbed(
    standin: RunningStandin,
    make_standin: MakeStandin,
    base_env: dict[str, str],
    tmp_path: Path,
    args: tuple[str, ...],
    seed: Callable[[RunningStandin], object] | None = None,
) -> None:
    """``keepdocker ARGS`` run once, undisturbed, on a fresh stand-in seeded alike leaves the same catalog."""
    reference = make_standin(name="reference")
    if seed is not None:
        seed(reference)
    ref_env = reference.client_env({**base_env, "KEEPDOCKER_CACHE_DIR": str(tmp_path / "ref-cache")})
    undisturbed = run_cli(*args, env=ref_env)
    assert undisturbed.returncode == 0, undisturbed.stderr[-2000:]
    assert catalog_state(admin_session(standin)) == catalog_state(admin_session(reference))


def migration_links(session: object, pdh: str) -> list[dict[str, object]]:
    """Migration links whose tail is the old image's PDH."""
    return keyset(session, "links", [["link_class", "=", MIGRATION_LINK], ["tail_uuid", "=", pdh]])  # type: ignore[arg-type]


@pytest.mark.slow
def test_sweep_and_pushes_survive_503s_and_latency(
    make_standin: MakeStandin, base_env: dict[str, str], reliability_prefect: PrefectServer, tmp_path: Path
) -> None:
    """Keep 503s 30%, API 503s 10%, 20 ms latency: a 10-image sweep and 3 pushes complete with no duplicate."""
    standin = make_standin()
    seeded = seed_small(standin, tmp_path, range(301, 311))
    archives = []
    for s in range(401, 404):
        generated = random_v1_archive(s, layers=2, files=2, max_file_size=4096)
        archives.append(generated.write(tmp_path / f"push-{s}.tar"))
    standin.extra_args = [
        "--api-failure-rate",
        "0.1",
        "--keep-failure-rate",
        "0.3",
        "--latency-ms",
        "20",
        "--seed",
        "7",
    ]
    standin.restart()
    env = standin.client_env(base_env)
    started = time.time()
    t0 = time.monotonic()
    procs = [start_cli("migrate", "--concurrency", "2", env=env, out_dir=tmp_path / "out-migrate")]
    procs += [
        start_cli("push", f"kd/push-{n}:1", "--from-archive", str(a), env=env, out_dir=tmp_path / f"out-push-{n}")
        for n, a in enumerate(archives)
    ]
    codes = [p.wait(timeout=900) for p in procs]
    seconds = round(time.monotonic() - t0, 1)
    errors = [(tmp_path / d / "stderr").read_text()[-1500:] for d in ("out-migrate", "out-push-0")]
    assert codes == [0, 0, 0, 0], errors
    faults = injected(standin.stats())
    standin.extra_args = []
    standin.restart()  # check the result without injected faults

    session = admin_session(standin)
    for image in seeded:
        (link,) = migration_links(session, image.collection.pdh)
        assert link["owner_uuid"] == session.system_user_uuid
        new_colls = keyset(session, "collections", [["portable_data_hash", "=", link["head_uuid"]]])
        assert len(new_colls) == 1, image.repo_tags
        hashes = keyset(session, "links", [["link_class", "=", HASH_LINK], ["head_uuid", "=", new_colls[0]["uuid"]]])
        assert len(hashes) == 1
    assert standin_rows(standin, "collections") == 10 + 10 + 3
    assert standin_rows(standin, "links", f"link_class = '{HASH_LINK}'") == 10 + 10 + 3
    pushed = [(tmp_path / f"out-push-{n}" / "stdout").read_text().strip() for n in range(3)]
    assert len(set(pushed)) == 3 and all(p.startswith("zzzzz-4zz18-") for p in pushed)

    runs = task_runs_since(reliability_prefect.url, started)
    task_retries = Counter()
    for name, run_count, _ in runs:
        task_retries[name.split("-")[0]] += max(0, run_count - 1)
    assert faults["keep injected 503"] > 0 and faults["api injected 503"] > 0
    record_figures(
        "sweep_503",
        {
            "seconds": seconds,
            "keep_503": faults["keep injected 503"],
            "api_503": faults["api injected 503"],
            "task_runs": len(runs),
            "task_retries": sum(task_retries.values()),
            "task_retries_by_task": dict(task_retries),
        },
    )


def _large_v1(tmp: Path, total: int, gzipped: bool = False) -> tuple[Path, str]:
    path = tmp / "large-v1.tar"
    leaves = write_large_v1_archive(path, total, layers=2, seed=5)
    if gzipped:  # compressed as a whole: the native strategy takes the whole-file (download) path
        packed = tmp / "large-v1.tar.gz"
        with open(path, "rb") as src, gzip.GzipFile(packed, "wb", compresslevel=1, mtime=0) as out:
            shutil.copyfileobj(src, out, 1 << 20)
        path.unlink()
        path = packed
    return path, leaves[-1]


@pytest.mark.slow
def test_push_killed_during_upload_then_rerun(
    make_standin: MakeStandin, base_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL while Keep blocks are being written: no collection yet; the re-run matches an undisturbed push."""
    archive, _ = _large_v1(tmp_path, 140 << 20)
    standin = make_standin("--latency-ms", "1500")
    env = standin.client_env(base_env)
    blocks = standin.data_dir / "blocks"
    before = sum(1 for p in blocks.rglob("*") if p.is_file() and p.parent.name != "tmp")
    proc = start_cli("push", "kd/big:1", "--from-archive", str(archive), env=env, out_dir=tmp_path / "run1")
    try:
        wait_for(
            "a first Keep block",
            lambda: (
                sum(1 for p in blocks.rglob("*") if p.is_file() and p.parent.name != "tmp") > before
                or proc.poll() is not None
            ),
            timeout=300,
            interval=0.02,
        )
    finally:
        kill_group(proc)
    assert proc.returncode == -9, (tmp_path / "run1" / "stderr").read_text()[-2000:]
    wait_until_idle(standin)  # requests already sent are still served
    assert standin_rows(standin, "collections") == 0, "the kill came after the upload finished"

    again = run_cli("push", "kd/big:1", "--from-archive", str(archive), env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert cache_is_clean(Path(env["KEEPDOCKER_CACHE_DIR"])) == []

    same_as_undisturbed(standin, make_standin, base_env, tmp_path, ("push", "kd/big:1", "--from-archive", str(archive)))


@pytest.mark.slow
def test_push_killed_between_upload_and_links_then_rerun(
    make_standin: MakeStandin, base_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL right after the collection is created: the re-run finds it by its marker; no second collection."""
    generated = random_v1_archive(21, layers=2)
    archive = generated.write(tmp_path / "small.tar")
    standin = make_standin("--latency-ms", "1000")
    env = standin.client_env(base_env)
    proc = start_cli("push", "kd/link:1", "--from-archive", str(archive), env=env, out_dir=tmp_path / "run1")
    try:
        wait_for("the collection", lambda: standin_rows(standin, "collections") > 0, timeout=300, interval=0.02)
    finally:
        kill_group(proc)
    wait_until_idle(standin)
    assert standin_rows(standin, "links") == 0, "the kill came after linking"
    again = run_cli("push", "kd/link:1", "--from-archive", str(archive), env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert standin_rows(standin, "collections") == 1
    (coll,) = keyset(admin_session(standin), "collections", [])
    assert again.stdout.strip() == coll["uuid"]

    args = ("push", "kd/link:1", "--from-archive", str(archive))
    same_as_undisturbed(standin, make_standin, base_env, tmp_path, args)


@pytest.mark.slow
def test_migrate_in_place_killed_while_reading_creating_and_linking_then_rerun(
    make_standin: MakeStandin, base_env: dict[str, str], tmp_path: Path
) -> None:
    """In place: kills while the old image is read from Keep, right after the new collection exists, and mid-linking;
    the last re-run finds its collection by its marker and equals an undisturbed run (no duplicate)."""
    archive, leaf = _large_v1(tmp_path, 140 << 20)

    def seed(standin: RunningStandin) -> None:
        seed_v1_image(admin_session(standin), archive, leaf, ("old/big:1", "old/big:latest"))

    standin = make_standin()
    seed(standin)
    seeded_links = standin_rows(standin, "links")
    standin.extra_args = ["--latency-ms", "1000"]
    standin.restart()
    env = standin.client_env(base_env)

    def keep_gets() -> int:
        return int(standin.stats()["requests"].get("keep GET", 0))

    # 1: killed while the old image's blocks are being read (nothing created yet).
    proc = start_cli("migrate", "--concurrency", "1", env=env, out_dir=tmp_path / "run1")
    try:
        wait_for("a Keep read", lambda: keep_gets() > 0 or proc.poll() is not None, timeout=300)
    finally:
        kill_group(proc)
    wait_until_idle(standin)  # requests already sent are still served
    assert standin_rows(standin, "collections") == 1, "the kill came after the collection was created"

    # 2: killed once the new collection exists, before its links.
    proc = start_cli("migrate", "--concurrency", "1", env=env, out_dir=tmp_path / "run2")
    try:
        wait_for(
            "the new collection",
            lambda: standin_rows(standin, "collections") > 1 or proc.poll() is not None,
            timeout=600,
            interval=0.02,
        )
    finally:
        kill_group(proc)
    wait_until_idle(standin)  # requests already sent are still served
    assert standin_rows(standin, "collections") == 2
    assert standin_rows(standin, "links", f"link_class = '{MIGRATION_LINK}'") == 0, "the kill came after linking"

    # 3: killed between the first carried-over link and the migration link.
    links_before = max(standin_rows(standin, "links"), seeded_links)
    proc = start_cli("migrate", "--concurrency", "1", env=env, out_dir=tmp_path / "run3")
    try:
        wait_for(
            "a first new link",
            lambda: standin_rows(standin, "links") > links_before or proc.poll() is not None,
            timeout=600,
            interval=0.02,
        )
    finally:
        kill_group(proc)
    wait_until_idle(standin)  # requests already sent are still served
    assert standin_rows(standin, "links", f"link_class = '{MIGRATION_LINK}'") == 0, "the kill came after linking"

    final = run_cli("migrate", "--concurrency", "1", env=env)
    assert final.returncode == 0, final.stderr[-2000:]
    assert standin_rows(standin, "collections") == 2
    assert standin_rows(standin, "links", f"link_class = '{MIGRATION_LINK}'") == 1
    same_as_undisturbed(standin, make_standin, base_env, tmp_path, ("migrate", "--concurrency", "1"), seed)


@pytest.mark.slow
def test_migrate_killed_in_download_upload_and_linking_then_rerun(
    make_standin: MakeStandin, base_env: dict[str, str], tmp_path: Path
) -> None:
    """Whole-file path (an archive compressed as a whole): kills mid-download (partial cache file), mid-upload,
    mid-linking; the last re-run equals an undisturbed one."""
    archive, leaf = _large_v1(tmp_path, 140 << 20, gzipped=True)

    def seed(standin: RunningStandin) -> None:
        seed_v1_image(admin_session(standin), archive, leaf, ("old/big:1", "old/big:latest"))

    standin = make_standin()
    seed(standin)
    seeded_links = standin_rows(standin, "links")
    standin.extra_args = ["--latency-ms", "1000"]
    standin.restart()
    env = standin.client_env(base_env)
    cache_dir = Path(env["KEEPDOCKER_CACHE_DIR"])
    blocks = standin.data_dir / "blocks"

    def block_count() -> int:
        return sum(1 for p in blocks.rglob("*") if p.is_file() and p.parent.name != "tmp")

    def partial_download() -> bool:
        return any(p.stat().st_size > 0 for p in cache_dir.glob(".tmp#keep-*")) if cache_dir.is_dir() else False

    # 1: killed while the big image's tar is being downloaded into the cache.
    proc = start_cli("migrate", "--concurrency", "1", env=env, out_dir=tmp_path / "run1")
    try:
        wait_for("a partial download", lambda: partial_download() or proc.poll() is not None, timeout=300)
    finally:
        kill_group(proc)
    partials = list(cache_dir.glob(".tmp#keep-*"))
    assert partials, "the kill came after the download"

    # 2: killed while the converted tar is being uploaded (a first new block is in Keep, no new collection yet).
    blocks_before = block_count()
    proc = start_cli("migrate", "--concurrency", "1", env=env, out_dir=tmp_path / "run2")
    try:
        wait_for("a new Keep block", lambda: block_count() > blocks_before or proc.poll() is not None, timeout=300)
    finally:
        kill_group(proc)
    wait_until_idle(standin)
    assert standin_rows(standin, "collections") == 1, "the kill came after the upload"
    assert not [p for p in partials if p.exists()], "the stale partial download is still there"

    # 3: killed between the first carried-over link and the migration link.
    proc = start_cli("migrate", "--concurrency", "1", env=env, out_dir=tmp_path / "run3")
    try:
        wait_for(
            "a first new link",
            lambda: standin_rows(standin, "links") > seeded_links or proc.poll() is not None,
            timeout=600,
            interval=0.02,
        )
    finally:
        kill_group(proc)
    wait_until_idle(standin)
    assert standin_rows(standin, "links", f"link_class = '{MIGRATION_LINK}'") == 0, "the kill came after linking"

    final = run_cli("migrate", "--concurrency", "1", env=env)
    assert final.returncode == 0, final.stderr[-2000:]
    assert cache_is_clean(cache_dir) == []
    assert standin_rows(standin, "collections") == 2
    assert standin_rows(standin, "links", f"link_class = '{MIGRATION_LINK}'") == 1
    same_as_undisturbed(standin, make_standin, base_env, tmp_path, ("migrate", "--concurrency", "1"), seed)


@pytest.mark.slow
def test_standin_restart_mid_sweep_resumes(
    make_standin: MakeStandin, base_env: dict[str, str], reliability_prefect: PrefectServer, tmp_path: Path
) -> None:
    """The stand-in is restarted (same ports and data) during a sweep: retries carry every image through."""
    started = time.time()
    standin = make_standin()
    seeded = seed_small(standin, tmp_path, range(501, 505))
    standin.extra_args = ["--latency-ms", "200"]
    standin.restart()
    env = standin.client_env({**base_env, "KEEPDOCKER_RETRY_DELAY": "1"})
    proc = start_cli("migrate", "--concurrency", "1", env=env, out_dir=tmp_path / "run")
    try:
        wait_for(
            "the first migration link",
            lambda: standin_rows(standin, "links", f"link_class = '{MIGRATION_LINK}'") > 0 or proc.poll() is not None,
            timeout=300,
            interval=0.02,
        )
        assert proc.poll() is None, "the sweep ended before the restart"
        t0 = time.monotonic()
        standin.restart()
        down = time.monotonic() - t0
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    stderr = (tmp_path / "run" / "stderr").read_text()
    assert code == 0, stderr[-2000:]
    session = admin_session(standin)
    for image in seeded:
        assert len(migration_links(session, image.collection.pdh)) == 1
    assert standin_rows(standin, "collections") == 8
    retries = sum(max(0, n - 1) for _, n, _ in task_runs_since(reliability_prefect.url, started))
    record_figures("standin_restart", {"down_seconds": round(down, 2), "images": len(seeded), "task_retries": retries})


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=False)
    return done.returncode == 0


def _need_tmpfs(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"tmpfs mount needed under CI: {reason}")
    pytest.skip(reason)


@pytest.mark.parametrize("room", ["tmpfs-1m", "tmpfs-5m", "budget-1m"])
def test_full_cache_fails_clearly_and_leaves_nothing(
    make_standin: MakeStandin, base_env: dict[str, str], tmp_path: Path, room: str
) -> None:
    """No room for the tar (disk or budget): the image fails with a one-line reason, no partial file, no link.

    The archive is gzipped as a whole, so the sweep takes the whole-file path, the one that needs the cache (an
    uncompressed archive is migrated in place and needs no room: see the next test).
    """
    standin = make_standin()
    plain = tmp_path / "v1-plain.tar"
    leaves = write_large_v1_archive(plain, 3 << 20, layers=1, seed=9)
    archive = tmp_path / "v1.tar"
    with open(plain, "rb") as src, gzip.GzipFile(archive, "wb", compresslevel=1, mtime=0) as out:
        shutil.copyfileobj(src, out, 1 << 20)
    session = admin_session(standin)
    image = seed_v1_image(session, archive, leaves[-1], ("old/full:1",))
    cache_dir = tmp_path / "small-cache"
    env = standin.client_env(base_env)
    env["KEEPDOCKER_CACHE_DIR"] = str(cache_dir)
    mounted = False
    if room.startswith("tmpfs"):
        mounted = _mount_tmpfs(cache_dir, room.split("-")[1])
        if not mounted:
            _need_tmpfs(f"cannot mount a tmpfs at {cache_dir}")
    else:
        env["KEEPDOCKER_CACHE_BUDGET"] = "1M"
    try:
        before = (standin_rows(standin, "collections"), standin_rows(standin, "links"))
        done = run_cli("migrate", env=env)
        leftovers = sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("*") if p.is_file())
        assert cache_is_clean(cache_dir) == []
    finally:
        if mounted:
            subprocess.run(["umount", str(cache_dir)], check=True)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "1 failed" in done.stdout
    (row,) = [line for line in done.stdout.splitlines() if image.collection.pdh in line]
    assert "failed:" in row and ("space" in row or "budget" in row), row
    assert "cannot reach" not in row, row  # a full local disk is not a server fault (and is not retried)
    print(f"\nFIGURES cache_full[{room}]: {row.split('failed: ', 1)[1]}")
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("keepdocker migrate: error: 1 of 1 image(s) failed"), last
    assert not [p for p in leftovers if ".tmp#" in p or p.endswith(".partial")], leftovers
    assert (standin_rows(standin, "collections"), standin_rows(standin, "links")) == before


def test_in_place_migration_needs_no_cache_room(
    make_standin: MakeStandin, base_env: dict[str, str], tmp_path: Path
) -> None:
    """With a cache budget far below the image's size, an uncompressed v1 image is still migrated, in place."""
    standin = make_standin()
    archive = tmp_path / "v1.tar"
    leaves = write_large_v1_archive(archive, 3 << 20, layers=1, seed=9)
    image = seed_v1_image(admin_session(standin), archive, leaves[-1], ("old/roomless:1",))
    cache_dir = tmp_path / "small-cache"
    env = {**standin.client_env(base_env), "KEEPDOCKER_CACHE_DIR": str(cache_dir), "KEEPDOCKER_CACHE_BUDGET": "1M"}
    done = run_cli("migrate", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 migrated, 0 failed" in done.stdout
    assert len(migration_links(admin_session(standin), image.collection.pdh)) == 1
    reused = re.search(r"Keep: (\d+) bytes reused, (\d+) written", done.stdout)
    assert reused is not None and int(reused.group(1)) >= 3 << 20 and int(reused.group(2)) < 64 << 10, done.stdout
    assert sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file()) < 1 << 20
