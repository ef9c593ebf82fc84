"""The local file cache: atomic verified entries, per-key locking, LRU budget and disk-full handling."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keepdocker.cache import CachedFile, CacheSink, TarCache, Verification, default_cache_dir, parse_size
from keepdocker.errors import CacheCorruptError, CacheFullError, UsageError


def _filler(data: bytes, chunk: int = 4096, calls: list[str] | None = None) -> Callable[[CacheSink], None]:
    """A fill callable writing ``data`` in chunks and recording each call."""

    def fill(sink: CacheSink) -> None:
        if calls is not None:
            calls.append("fill")
        for i in range(0, len(data), chunk):
            sink.write(data[i : i + chunk])

    return fill


def _visible(root: Path) -> list[str]:
    """Names in the cache directory other than lock files."""
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock"))


def test_put_then_get_records_size_and_digest(tmp_path: Path) -> None:
    """A written entry is found again with the size and sha256 of its bytes, in a 0700 directory, files 0600."""
    cache = TarCache(tmp_path / "c")
    data = os.urandom(3 * 1024 * 1024 + 7)
    put = cache.put_stream("sha256:" + "ab" * 32, _filler(data, chunk=100_000))
    assert put.created and put.size == len(data) and put.sha256 == hashlib.sha256(data).hexdigest()
    assert put.path.read_bytes() == data
    got = cache.get("sha256:" + "ab" * 32)
    assert got == CachedFile(put.key, put.path, put.size, put.sha256, created=False)
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700
    assert stat.S_IMODE(put.path.stat().st_mode) == 0o600
    assert cache.get("sha256:" + "cd" * 32) is None


def test_second_put_reuses_without_filling(tmp_path: Path) -> None:
    """put_stream of an existing valid key returns the entry and does not call fill again."""
    cache = TarCache(tmp_path)
    calls: list[str] = []
    first = cache.put_stream("k", _filler(b"x" * 10, calls=calls))
    second = cache.put_stream("k", _filler(b"y" * 10, calls=calls))
    assert calls == ["fill"] and not second.created and second.sha256 == first.sha256


def test_default_directory_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """KEEPDOCKER_CACHE_DIR wins, then CACHE_DIRECTORY (first entry), then XDG_CACHE_HOME/keepdocker, then HOME."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("KEEPDOCKER_CACHE_DIR", "CACHE_DIRECTORY", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "keepdocker"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "keepdocker"
    monkeypatch.setenv("CACHE_DIRECTORY", f"{tmp_path}/sd:{tmp_path}/other")
    assert default_cache_dir() == tmp_path / "sd"
    monkeypatch.setenv("KEEPDOCKER_CACHE_DIR", str(tmp_path / "kd"))
    assert default_cache_dir() == tmp_path / "kd"
    assert TarCache().root == tmp_path / "kd" and (tmp_path / "kd").is_dir()


def test_failed_fill_leaves_nothing(tmp_path: Path) -> None:
    """When fill raises midway, the error propagates and neither data, sidecar nor temporary file remains."""
    cache = TarCache(tmp_path)

    def broken(sink: CacheSink) -> None:
        sink.write(os.urandom(2 * 1024 * 1024))
        raise ConnectionResetError("engine went away")

    with pytest.raises(ConnectionResetError):
        cache.put_stream("k", broken)
    assert _visible(tmp_path) == []
    assert cache.get("k") is None


@pytest.mark.parametrize("damage", ["truncate", "append", "rewrite", "no-sidecar", "bad-sidecar", "other-key"])
def test_damaged_entry_is_not_reused(tmp_path: Path, damage: str) -> None:
    """A truncated, appended, rewritten, sidecar-less or mismatched entry is a miss and is removed."""
    cache = TarCache(tmp_path)
    entry = cache.put_stream("k", _filler(os.urandom(10_000)))
    sidecar = entry.path.with_suffix(".json")
    if damage == "truncate":
        os.truncate(entry.path, 9_999)
    elif damage == "append":
        with open(entry.path, "ab") as f:
            f.write(b"{}")
    elif damage == "rewrite":
        before = entry.path.stat()
        entry.path.write_bytes(os.urandom(10_000))
        # A rewrite a moment later has a later mtime; set it, as the clock may not have ticked since the put.
        os.utime(entry.path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    elif damage == "no-sidecar":
        sidecar.unlink()
    elif damage == "bad-sidecar":
        sidecar.write_text('{"format": 1, "key": "k", "size": "10000"}')
    else:
        sidecar.write_text(sidecar.read_text().replace('"k"', '"other"'))
    assert cache.get("k") is None
    assert _visible(tmp_path) == []
    calls: list[str] = []
    again = cache.put_stream("k", _filler(b"fresh", calls=calls))
    assert calls == ["fill"] and again.path.read_bytes() == b"fresh"


def test_same_size_same_mtime_corruption_needs_full_mode(tmp_path: Path) -> None:
    """A byte flip that keeps size and mtime passes the cheap check, but FULL mode and check() catch it."""
    cheap = TarCache(tmp_path)
    entry = cheap.put_stream("k", _filler(b"a" * 5000))
    st = entry.path.stat()
    with open(entry.path, "r+b") as f:
        f.seek(100)
        f.write(b"b")
    os.utime(entry.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cheap.get("k") is not None
    assert TarCache(tmp_path, verification=Verification.FULL).get("k") is None
    entry = cheap.put_stream("k", _filler(b"a" * 5000))
    with open(entry.path, "r+b") as f:
        f.write(b"c")
    os.utime(entry.path, ns=(st.st_atime_ns, entry.path.stat().st_mtime_ns))
    with pytest.raises(CacheCorruptError, match="changed since it was written") as info:
        cheap.check(CachedFile(entry.key, entry.path, entry.size, entry.sha256))
    assert info.value.temporary
    assert cheap.get("k") is None


def test_stale_temporary_files_are_cleaned(tmp_path: Path) -> None:
    """A temporary file left by a crashed writer of the key is removed by the next writer; others are kept."""
    cache = TarCache(tmp_path)
    (tmp_path / ".tmp#k#crashed").write_bytes(b"partial")
    (tmp_path / ".tmp#k.other#busy").write_bytes(b"someone else")
    cache.put_stream("k", _filler(b"ok"))
    assert not (tmp_path / ".tmp#k#crashed").exists()
    assert (tmp_path / ".tmp#k.other#busy").exists()


def test_keys_map_to_distinct_files(tmp_path: Path) -> None:
    """Keys that differ only by escaping, or are very long, get separate entries."""
    cache = TarCache(tmp_path)
    keys = ["sha256:ab", "sha256%3Aab", "sha256_ab", "x" * 500, "x" * 501, ".hidden", "a/b", "d41d8cd9+0"]
    for i, key in enumerate(keys):
        cache.put_stream(key, _filler(str(i).encode()))
    for i, key in enumerate(keys):
        got = cache.get(key)
        assert got is not None and got.path.read_bytes() == str(i).encode() and got.path.parent == tmp_path
    with pytest.raises(UsageError):
        cache.get("")


def test_concurrent_threads_write_once(tmp_path: Path) -> None:
    """Eight threads asking for one key: fill runs once, every thread gets the same verified entry."""
    cache = TarCache(tmp_path)
    calls: list[str] = []
    data = os.urandom(256 * 1024)

    def slow_fill(sink: CacheSink) -> None:
        calls.append("fill")
        time.sleep(0.2)
        sink.write(data)

    results: list[CachedFile] = []

    def worker() -> None:
        results.append(TarCache(tmp_path).put_stream("img", slow_fill))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["fill"]
    assert len(results) == 8 and {r.sha256 for r in results} == {hashlib.sha256(data).hexdigest()}
    assert sum(r.created for r in results) == 1
    assert cache.get("img") is not None


def _process_writer(root: str, marker: str, start: float) -> None:
    """Child process body: wait for a common start, then put one key, noting each fill in ``marker``."""

    def fill(sink: CacheSink) -> None:
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.3)
        sink.write(b"z" * 100_000)

    time.sleep(max(0.0, start - time.time()))
    TarCache(root).put_stream("shared", fill)


def test_concurrent_processes_write_once(tmp_path: Path) -> None:
    """Three processes asking for one key at the same moment: exactly one fills it."""
    marker = tmp_path / "fills"
    start = time.time() + 0.5
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_process_writer, args=(str(tmp_path / "c"), str(marker), start)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(marker.read_text().splitlines()) == 1
    got = TarCache(tmp_path / "c").get("shared")
    assert got is not None and got.size == 100_000


def _last_used(cache: TarCache, key: str, second: int) -> None:
    """Set when ``key`` was last used (its sidecar's mtime, the order of eviction) to ``second`` after the epoch."""
    (entry,) = [e for e in cache.entries() if e.key == key]
    os.utime(entry.path.with_suffix(".json"), ns=(second * 10**9, second * 10**9))


def test_budget_evicts_least_recently_used(tmp_path: Path) -> None:
    """Over budget, the least recently used entry goes first; a recent get protects an old entry."""
    cache = TarCache(tmp_path, budget_bytes=3000)
    for second, key in enumerate(("a", "b", "c"), start=1000):
        cache.put_stream(key, _filler(b"x" * 1000))
        _last_used(cache, key, second)
    assert cache.get("a") is not None
    assert [e.key for e in cache.entries()] == ["b", "c", "a"]  # the hit made a the most recently used
    cache.put_stream("d", _filler(b"y" * 1000))
    _last_used(cache, "a", 1003)
    _last_used(cache, "d", 1004)
    assert [e.key for e in cache.entries()] == ["c", "a", "d"]
    assert cache.get("b") is None
    cache.put_stream("e", _filler(b"y" * 1500))
    assert {e.key for e in cache.entries()} == {"d", "e"}
    assert cache.usage() <= 3000


def test_pinned_entries_are_never_evicted(tmp_path: Path) -> None:
    """An entry held with pinned() survives budget pressure; if only pinned entries remain, the write fails cleanly."""
    cache = TarCache(tmp_path, budget_bytes=2500)
    with cache.pinned("a", _filler(b"a" * 1000)) as a:
        assert a is not None and a.created
        cache.put_stream("b", _filler(b"b" * 1000))
        _last_used(cache, "a", 1000)
        _last_used(cache, "b", 1001)
        cache.put_stream("c", _filler(b"c" * 1000))  # evicts b, not the older but pinned a
        assert {e.key for e in cache.entries()} == {"a", "c"}
        with cache.pinned("c") as c, pytest.raises(CacheFullError, match="held by entries in use"):
            assert c is not None and not c.created
            cache.put_stream("d", _filler(b"d" * 1000))
    assert {e.key for e in cache.entries()} == {"a", "c"}
    assert _visible(tmp_path) == sorted(["a.data", "a.json", "c.data", "c.json"])
    with cache.pinned("missing") as nothing:
        assert nothing is None


def test_file_larger_than_budget_fails_with_nothing_left(tmp_path: Path) -> None:
    """A file that can never fit the budget stops with CacheFullError as soon as it crosses it, leaving nothing."""
    cache = TarCache(tmp_path, budget_bytes=10_000)
    written: list[int] = []

    def big(sink: CacheSink) -> None:
        for _ in range(100):
            sink.write(b"q" * 1000)
            written.append(sink.bytes_written)

    with pytest.raises(CacheFullError, match="more than the whole cache budget"):
        cache.put_stream("big", big)
    assert max(written) <= 10_000
    assert _visible(tmp_path) == []
    with pytest.raises(CacheFullError):
        cache.put_stream("hinted", _filler(b""), size_hint=20_000)


@pytest.fixture()
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (skipped when mounting is not permitted)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_evicts_then_fails_cleanly(tiny_tmpfs: Path) -> None:
    """On ENOSPC old entries are evicted to make room; when nothing is left to evict, CacheFullError, no partial."""
    cache = TarCache(tiny_tmpfs / "cache")
    cache.put_stream("old", _filler(b"o" * 600_000, chunk=64 * 1024))
    new = cache.put_stream("new", _filler(b"n" * 600_000, chunk=64 * 1024))
    assert new.size == 600_000 and cache.get("old") is None and cache.get("new") is not None
    with cache.pinned("new"), pytest.raises(CacheFullError, match="no space left"):
        cache.put_stream("huge", _filler(b"h" * 2_000_000, chunk=64 * 1024))
    assert _visible(tiny_tmpfs / "cache") == ["new.data", "new.json"]


def test_parse_size() -> None:
    """Budget sizes accept plain bytes and binary K/M/G/T suffixes; junk is a usage error."""
    assert parse_size("1048576") == 1 << 20
    assert parse_size("500M") == 500 << 20
    assert parse_size("2GiB") == 2 << 30
    assert parse_size(" 3k ") == 3072
    with pytest.raises(UsageError, match="not a size"):
        parse_size("lots")
