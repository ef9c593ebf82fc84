"""Security: no token in logs, artifacts, results, the Prefect database, caches or argv; private dirs; no symlink."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from reliability_support import MakeStandin, PrefectServer, admin_session, run_cli, secret_part, standin_rows

from keepdocker.arv.transfer import download_tar
from keepdocker.cache import TarCache
from keepdocker.errors import CacheError
from keepdocker.images.upgrade import upgrade_archive
from keepdocker.testing.oldcluster import seed_v1_image
from keepdocker.testing.v1archives import ATTACKS, random_v1_archive


def files_containing(root: Path, needles: list[bytes]) -> list[str]:
    """Files under ``root`` (any size, binary too) that contain any of ``needles``."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [f"{path}: {n[:6]!r}..." for n in needles if n in data]
    return hits


class ArgvWatcher(threading.Thread):
    """Samples every process's command line while the CLI runs, collecting any that holds a needle."""

    def __init__(self, needles: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.needles = needles
        self.stop = threading.Event()
        self.samples = 0
        self.hits: list[str] = []

    def run(self) -> None:
        """Scan /proc/*/cmdline until stopped."""
        while not self.stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    argv = cmdline.read_bytes()
                except OSError:
                    continue
                if any(n in argv for n in self.needles):
                    self.hits.append(argv.replace(b"\0", b" ").decode(errors="replace")[:200])
            self.samples += 1
            self.stop.wait(0.05)


@pytest.mark.slow
def test_tokens_never_leak(
    make_standin: MakeStandin,
    base_env: dict[str, str],
    reliability_prefect: PrefectServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Push, migrate, failing and block-credential runs leave no token in output, artifacts, results, DB or argv."""
    standin = make_standin()
    session = admin_session(standin)
    seeded = random_v1_archive(61, layers=2)
    v1 = seeded.write(tmp_path / "v1.tar")
    seed_v1_image(session, v1, seeded.leaves[0], ("old/secret:1",))
    pushed = random_v1_archive(62, layers=2).write(tmp_path / "push.tar")
    evil = tmp_path / "evil.tar"
    evil.write_bytes(ATTACKS["parent_cycle"]().data)
    tokens = [standin.admin_token, standin.user_token]
    needles = sorted({t.encode() for t in tokens} | {secret_part(t).encode() for t in tokens})
    assert all(len(n) >= 20 for n in needles)

    env = standin.client_env(base_env)
    del env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"]  # the CLI's default: results beside the cache
    env["PREFECT_LOGGING_LEVEL"] = "DEBUG"  # the most talkative logs
    env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "DEBUG"  # and printed: the CLI silences Prefect's console
    cache_dir = Path(env["KEEPDOCKER_CACHE_DIR"])
    watcher = ArgvWatcher(needles)
    watcher.start()
    try:
        runs = [
            run_cli("push", "kd/secret:1", "--from-archive", str(pushed), env=env),
            run_cli("migrate", env=env),
            run_cli("push", "kd/evil:1", "--from-archive", str(evil), env=env),
            run_cli("migrate", env=standin.client_env(env, token=standin.user_token)),
        ]
    finally:
        watcher.stop.set()
        watcher.join()
    assert [r.returncode for r in runs] == [0, 0, 1, 1], [r.stderr[-1500:] for r in runs]
    assert watcher.samples > 10 and watcher.hits == []
    output = "".join(r.stdout + r.stderr for r in runs)
    assert output.count("\n") > 50  # DEBUG logs were captured
    assert [t for t in tokens if t in output or secret_part(t) in output] == []

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    # The admin token saved in an arvados-credentials block and used by a run that names it, with no token in the
    # environment: the block is stored encrypted, the run carries only its name.
    from flows.migrate import migrate_images
    from tasks.credentials import ArvadosCredentials

    for name in ("HOME", "KEEPDOCKER_CACHE_DIR", "XDG_CACHE_HOME"):
        if name in env:
            monkeypatch.setenv(name, env[name])
    for name in ("ARVADOS_API_HOST", "ARVADOS_API_TOKEN", "ARVADOS_API_HOST_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    block_settings = {
        PREFECT_API_URL: reliability_prefect.url,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(cache_dir / "prefect-results"),
    }
    with temporary_settings(block_settings):  # type: ignore[arg-type]
        ArvadosCredentials(
            host=env["ARVADOS_API_HOST"],
            token=standin.admin_token,  # type: ignore[arg-type]
            insecure=env.get("ARVADOS_API_HOST_INSECURE", "") in ("1", "true"),
        ).save("arvados-security", overwrite=True)
        planned = migrate_images(dry_run=True, credentials_block="arvados-security")
    assert planned.dry_run

    with temporary_settings({PREFECT_API_URL: reliability_prefect.url}), get_client(sync_client=True) as client:  # type: ignore[dict-item]
        artifacts = []
        while batch := client.read_artifacts(limit=200, offset=len(artifacts)):
            artifacts.extend(batch)
        flow_runs = client.read_flow_runs(limit=200)
    assert artifacts and flow_runs
    text = "".join(f"{a.key} {a.description} {a.data}" for a in artifacts)
    text += "".join(f"{r.parameters} {r.state.message if r.state else ''}" for r in flow_runs)
    assert [n for n in needles if n.decode() in text] == []

    results = cache_dir / "prefect-results"
    assert any(results.iterdir())
    assert files_containing(results, needles) == []
    assert files_containing(cache_dir, needles) == []
    assert files_containing(Path(env["HOME"]), needles) == []
    server_files = files_containing(reliability_prefect.home, needles)
    assert reliability_prefect.database.is_file() and server_files == []


def test_non_admin_migrate_stops_at_discover(make_standin: MakeStandin, base_env: dict[str, str]) -> None:
    """`keepdocker migrate` with a regular user's token exits 1 saying an admin token is needed; nothing written."""
    standin = make_standin()
    session = admin_session(standin)
    seeded = random_v1_archive(63, layers=1)
    path = seeded.write(Path(base_env["HOME"]) / "v1.tar")
    seed_v1_image(session, path, seeded.leaves[0], ("old/user:1",))
    before = (standin_rows(standin, "collections"), standin_rows(standin, "links"))
    writes = {k: v for k, v in standin.stats()["requests"].items() if k.startswith(("api POST", "api PUT", "keep PUT"))}
    done = run_cli("migrate", env=standin.client_env(base_env, token=standin.user_token))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("keepdocker migrate: error: migration needs an admin token"), last
    assert done.stdout == ""
    after = {k: v for k, v in standin.stats()["requests"].items() if k.startswith(("api POST", "api PUT", "keep PUT"))}
    assert after == writes
    assert (standin_rows(standin, "collections"), standin_rows(standin, "links")) == before


def test_cache_and_work_dirs_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cache and work directories are created 0700 and cached files 0600, whatever the umask."""
    from tasks.upgrade import upgraded_path

    old = os.umask(0)
    try:
        monkeypatch.setenv("KEEPDOCKER_CACHE_DIR", str(tmp_path / "deep" / "cache"))
        cache = TarCache.from_env()
        entry = cache.put_stream("keep-x", lambda sink: sink.write(b"data"))
        work = upgraded_path("0" * 64, [], None)
        generated = random_v1_archive(64, layers=1)
        out = tmp_path / "out"
        out.mkdir()
        upgrade_archive(generated.write(tmp_path / "v1.tar"), out / "v2.tar")
    finally:
        os.umask(old)
    for directory in (cache.root, work.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for path in (entry.path, entry.path.with_suffix(".json"), entry.path.with_suffix(".lock"), out / "v2.tar"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_outputs_never_follow_symlinks(tmp_path: Path) -> None:
    """A symlink planted at an output, a cache entry or its lock is replaced or refused, never written through."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    generated = random_v1_archive(65, layers=1)
    src = generated.write(tmp_path / "v1.tar")

    dst = tmp_path / "v2.tar"
    dst.symlink_to(victim)
    upgrade_archive(src, dst)
    assert not dst.is_symlink() and dst.stat().st_size > 0
    assert victim.read_bytes() == b"precious"

    cache = TarCache(tmp_path / "cache")
    (cache.root / "keep-a.data").symlink_to(victim)
    entry = cache.put_stream("keep-a", lambda sink: sink.write(b"new bytes"))
    assert entry.path.read_bytes() == b"new bytes" and not entry.path.is_symlink()
    assert victim.read_bytes() == b"precious"

    elsewhere = tmp_path / "created-elsewhere"
    (cache.root / "keep-b.lock").symlink_to(elsewhere)
    with pytest.raises(CacheError, match="symbolic link"):
        cache.put_stream("keep-b", lambda sink: sink.write(b"x"))
    assert not elsewhere.exists()


def test_download_never_follows_a_planted_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """download_tar writes through a fresh O_EXCL temporary, so symlinks at old predictable names are inert."""
    import keepdocker.arv.transfer as transfer

    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    dest = tmp_path / "image.tar"
    for pid in range(os.getpid() - 2, os.getpid() + 3):
        (tmp_path / f".image.tar.part-{pid}").symlink_to(victim)

    def fake_stream(session: object, locator: str, out: transfer.Writable, progress: object = None) -> tuple[str, int]:
        out.write(b"tar bytes")
        return "x.tar", 9

    monkeypatch.setattr(transfer, "stream_tar", fake_stream)
    got = download_tar(None, "pdh", dest)  # type: ignore[arg-type]
    assert got.size == 9 and dest.read_bytes() == b"tar bytes"
    assert victim.read_bytes() == b"precious"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
