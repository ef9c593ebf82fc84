"""A local cache of large files keyed by content identity (image ID, PDH): atomic, verified, locked and budgeted.

Layout of the cache directory (created 0700; files 0600)::

    <name>.data         the cached bytes (e.g. a ``docker save`` archive)
    <name>.json         sidecar record written after the data: key, size, sha256, mtime_ns of the data file
    <name>.lock         per-key lock file (``fcntl.flock``); never deleted, so lock identity never changes
    .tmp#<name>#<rnd>   a write in progress; renamed into place only after it is complete and fsynced

``<name>`` is the key percent-encoded (``sha256:ab`` -> ``sha256%3Aab``), or a hash of it for very long keys.

Rules:

* **Atomic.** Bytes go to a temporary file in the same directory, are fsynced, then renamed over ``<name>.data``;
  the sidecar is written (also by rename) only after that. Any error, including CacheFullError and
  KeyboardInterrupt, removes the temporary file, so a partial file is never visible under the entry's name.
* **Verified before reuse.** An entry is valid when its sidecar parses, names the same key, and the data file is a
  regular file whose size equals the recorded size. In the default CHEAP mode the data file's ``mtime_ns`` must
  also equal the one recorded at write time: truncation, appends and rewrites are caught without reading the file.
  Reading a multi-GB tar at every reuse would double the I/O of the consumer, which hashes the bytes anyway as it
  uploads and can compare with the recorded sha256 (``check`` does that in one pass, raising CacheCorruptError).
  FULL mode re-hashes on every lookup, for callers who want that. An invalid entry is removed (when no one holds
  its lock) and treated as a miss.
* **One writer per key.** ``put_stream`` takes an exclusive lock on the key, so concurrent writers (threads or
  processes) of the same key produce it once: the first writes, the others wait and then reuse the verified entry.
  ``pinned`` holds a shared lock for as long as the caller uses the file; eviction skips locked entries.
* **Budget.** With ``budget_bytes``, the sum of entry sizes stays under it: least-recently-used entries (by the
  sidecar's mtime, touched at each hit) of other keys are evicted as the new file grows. When the budget (or, on
  ENOSPC, the disk) cannot make room, the write stops with CacheFullError and nothing is left behind. Writes in
  progress for other keys are not counted (the budget is a target, not a hard quota under concurrency).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import queue
import re
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import quote

from keepdocker.errors import CacheCorruptError, CacheError, CacheFullError, UsageError

__all__ = [
    "CacheSink",
    "CachedFile",
    "TarCache",
    "Verification",
    "default_cache_dir",
    "parse_size",
]

_SIDECAR_FORMAT = 1
_SIDECAR_MAX = 64 * 1024
_BUFFER = 1024 * 1024
_QUEUED_BUFFERS = 4  # full buffers waiting for the writer thread (memory: about 5 MiB per write in progress)
_HASH_CHUNK = 4 * 1024 * 1024
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class Verification(Enum):
    """How much an entry is checked before reuse."""

    CHEAP = "cheap"  # sidecar + size + mtime_ns (no read of the data)
    FULL = "full"  # CHEAP plus a full sha256 of the data


@dataclass(frozen=True)
class CachedFile:
    """A verified cache entry: where it is, its size and sha256, and whether this call wrote it."""

    key: str
    path: Path
    size: int
    sha256: str
    created: bool = False


def default_cache_dir() -> Path:
    """$KEEPDOCKER_CACHE_DIR, else $CACHE_DIRECTORY (systemd; first of a list), else $XDG_CACHE_HOME or ~/.cache."""
    explicit = os.environ.get("KEEPDOCKER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    systemd = os.environ.get("CACHE_DIRECTORY")
    if systemd:
        return Path(systemd.split(":")[0])
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "keepdocker"


_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse a byte count such as ``1048576``, ``500M`` or ``20GiB`` (binary units); raise UsageError."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise UsageError(f"cache budget {text!r} is not a size: give bytes, or a number with K, M, G or T")
    return int(m.group(1)) << (10 * "_KMGT".index(m.group(2).upper() or "_"))


class CacheSink:
    """The writable handed to a fill callable: hashes, counts, enforces the budget, and writes in the background.

    Full 1 MiB buffers go to a writer thread through a short queue, so receiving the next bytes (from the engine, a
    registry, Keep) overlaps writing the last ones to disk instead of waiting for it. An error of the writer (the
    disk is full and eviction cannot help) is raised by the next ``write`` and by ``finish``.
    """

    def __init__(self, fd: int, on_grow: Callable[[int], None], on_no_space: Callable[[], bool]) -> None:
        self._fd = fd
        self._on_grow = on_grow
        self._on_no_space = on_no_space
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._written = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED_BUFFERS)
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def bytes_written(self) -> int:
        """Bytes accepted so far (buffered or on disk)."""
        return self._written

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Accept ``data``: hash it and hand it to the writer in large blocks."""
        n = len(data)
        if not n:
            return 0
        self._raise_writer_error()
        self._on_grow(self._written + n)
        self._hash.update(data)
        self._buffer += data
        self._written += n
        if len(self._buffer) >= _BUFFER:
            self._hand_off()
        return n

    def finish(self) -> None:
        """Write out everything accepted and wait for the writer; raises its error, if any."""
        self._hand_off()
        self.stop()
        self._raise_writer_error()

    def stop(self) -> None:
        """End the writer thread once it has taken every buffer handed to it; safe to call more than once."""
        writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)  # the writer takes every buffer, even after an error, so this never waits long
            writer.join()

    def hexdigest(self) -> str:
        """The sha256 of everything written."""
        return self._hash.hexdigest()

    def _hand_off(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="cache-writer", daemon=True)
            self._writer.start()
        self._raise_writer_error()
        data, self._buffer = bytes(self._buffer), bytearray()
        self._queue.put(data)

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _write_loop(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep taking buffers, so neither _hand_off nor stop waits on a failed writer
            try:
                self._write_all(data)
            except BaseException as exc:  # handed to the filling thread
                self._error = exc

    def _write_all(self, data: bytes) -> None:
        """Write ``data`` to the file, evicting other entries on ENOSPC while that frees room."""
        view = memoryview(data)
        offset = 0
        try:
            while offset < len(view):
                try:
                    offset += os.write(self._fd, view[offset:])
                except OSError as exc:
                    if exc.errno not in _NO_SPACE or not self._on_no_space():
                        raise
        finally:
            view.release()


class TarCache:
    """A directory of verified files keyed by a string (see the module docstring for the guarantees)."""

    def __init__(
        self,
        root: Path | str | None = None,
        budget_bytes: int | None = None,
        verification: Verification = Verification.CHEAP,
    ) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        if budget_bytes is not None and budget_bytes < 0:
            raise UsageError(f"cache budget must be a positive number of bytes, not {budget_bytes}")
        self.budget_bytes = budget_bytes
        self.verification = verification
        self._ensure_root()

    @classmethod
    def from_env(cls) -> TarCache:
        """The default directory, with a budget from $KEEPDOCKER_CACHE_BUDGET (e.g. ``50G``) when set."""
        budget = os.environ.get("KEEPDOCKER_CACHE_BUDGET")
        return cls(budget_bytes=parse_size(budget) if budget else None)

    # -- public API ---------------------------------------------------------------------------------------------

    def get(self, key: str) -> CachedFile | None:
        """The verified entry for ``key``, or None; an invalid entry is removed unless someone holds its lock."""
        entry = self._verified(key)
        if entry is None:
            with self._locked(key, fcntl.LOCK_EX, blocking=False) as got, contextlib.suppress(OSError):
                if got:
                    self._remove_files(key)
            return None
        self._touch(key)
        return entry

    def put_stream(self, key: str, fill: Callable[[CacheSink], object], size_hint: int | None = None) -> CachedFile:
        """Return the entry for ``key``, calling ``fill(sink)`` to write it only if no valid one exists.

        Concurrent callers for one key serialize on its lock: one writes, the others reuse its result.
        ``size_hint`` (expected bytes) lets room be made before writing starts.
        """
        with self._locked(key, fcntl.LOCK_EX):
            existing = self._verified(key)
            if existing is not None:
                self._touch(key)
                return existing
            self._remove_files(key)
            return self._write(key, fill, size_hint)

    @contextlib.contextmanager
    def pinned(
        self, key: str, fill: Callable[[CacheSink], object] | None = None, size_hint: int | None = None
    ) -> Iterator[CachedFile | None]:
        """Yield the entry for ``key`` (written first with ``fill`` if given) while holding it against eviction.

        Yields None when there is no valid entry and no ``fill``.
        """
        for _ in range(5):
            created = False
            if fill is not None:
                created = self.put_stream(key, fill, size_hint).created
            with self._locked(key, fcntl.LOCK_SH):
                entry = self._verified(key)
                if entry is None and fill is not None:
                    continue  # evicted or corrupted between the write and the shared lock: write again
                if entry is not None:
                    self._touch(key)
                    entry = CachedFile(entry.key, entry.path, entry.size, entry.sha256, created)
                yield entry
                return
        raise CacheError(f"cache entry {key!r} in {self.root} vanished repeatedly after being written; check the disk")

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Hold the exclusive lock of ``key`` (across threads and processes) for a critical section of the caller."""
        with self._locked(key, fcntl.LOCK_EX):
            yield

    def check(self, entry: CachedFile) -> None:
        """Re-hash the entry's file and raise CacheCorruptError (and drop the entry) if it no longer matches."""
        actual_size, digest = _hash_file(entry.path)
        if (actual_size, digest) != (entry.size, entry.sha256):
            self.invalidate(entry.key)
            raise CacheCorruptError(
                f"cached file {entry.path} for {entry.key!r} changed since it was written "
                f"({actual_size} bytes, sha256 {digest[:12]} instead of {entry.size}, {entry.sha256[:12]}); "
                "it was removed, retry to write it again"
            )

    def invalidate(self, key: str) -> bool:
        """Remove the entry for ``key`` unless someone holds it; True when nothing of it remains."""
        with self._locked(key, fcntl.LOCK_EX, blocking=False) as got:
            if got:
                self._remove_files(key)
            return got

    def discard(self, path: Path | str) -> bool:
        """Drop the entry whose data file is ``path`` (sidecar first, then data) unless someone holds it.

        For callers that only kept the path of a finished work file: deleting the data file alone would leave an
        orphaned sidecar that still counts against the budget. Returns False when ``path`` is not an entry of this
        cache (nothing is removed) or when the entry is in use.
        """
        path = Path(path)
        if path.parent != self.root or path.suffix != ".data":
            return False
        record = _read_sidecar(path.with_suffix(".json"))
        if record is None or self._paths(record.key)[0] != path:
            return False
        return self.invalidate(record.key)

    def entries(self) -> list[CachedFile]:
        """Entries with a readable sidecar, least recently used first (not re-verified)."""
        found: list[tuple[int, CachedFile]] = []
        for sidecar in self.root.glob("*.json"):
            if sidecar.name.startswith("."):
                continue  # a sidecar being written
            record = _read_sidecar(sidecar)
            if record is None:
                continue
            with contextlib.suppress(OSError):
                used = sidecar.stat().st_mtime_ns
                name = sidecar.name[: -len(".json")]
                found.append((used, CachedFile(record.key, self.root / f"{name}.data", record.size, record.sha256)))
        found.sort(key=lambda item: item[0])
        return [entry for _, entry in found]

    def usage(self, exclude: str | None = None) -> int:
        """Bytes held by entries (other than ``exclude``)."""
        return sum(e.size for e in self.entries() if e.key != exclude)

    # -- internals ----------------------------------------------------------------------------------------------

    def _ensure_root(self) -> None:
        try:
            if not self.root.is_dir():
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(self.root, 0o700)
        except OSError as exc:
            raise CacheError(
                f"cannot create the cache directory {self.root}: {exc.strerror}; set KEEPDOCKER_CACHE_DIR to a "
                "writable directory"
            ) from exc

    def _name(self, key: str) -> str:
        if not key or not isinstance(key, str):
            raise UsageError("cache key must be a non-empty string (an image ID or a PDH)")
        name = quote(key, safe="+-_")
        if len(name) > 180 or name.startswith("."):
            name = "h-" + hashlib.sha256(key.encode()).hexdigest()
        return name

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        name = self._name(key)
        return self.root / f"{name}.data", self.root / f"{name}.json", self.root / f"{name}.lock"

    @contextlib.contextmanager
    def _locked(self, key: str, mode: int, blocking: bool = True) -> Iterator[bool]:
        """Hold ``mode`` (LOCK_EX/LOCK_SH) on the key's lock file; yield False if non-blocking and busy."""
        lock_path = self._paths(key)[2]
        try:  # O_NOFOLLOW: a symlink planted as a lock file must not make us create or open a file elsewhere
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise CacheError(
                f"cache lock file {lock_path} is a symbolic link; remove it (the cache directory should be private)"
            ) from exc
        try:
            try:
                fcntl.flock(fd, mode | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _verified(self, key: str) -> CachedFile | None:
        data, sidecar, _ = self._paths(key)
        record = _read_sidecar(sidecar)
        if record is None or record.key != key:
            return None
        try:
            st = data.stat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size != record.size:
            return None
        if st.st_mtime_ns != record.mtime_ns:
            return None
        if self.verification is Verification.FULL and _hash_file(data) != (record.size, record.sha256):
            return None
        return CachedFile(key=key, path=data, size=record.size, sha256=record.sha256)

    def _touch(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self._paths(key)[1])

    def _remove_files(self, key: str) -> None:
        """Remove the entry's sidecar, data and stale temporaries (caller holds the exclusive lock)."""
        data, sidecar, _ = self._paths(key)
        for path in (sidecar, data, *self.root.glob(f".tmp#{_glob_escape(self._name(key))}#*")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _write(self, key: str, fill: Callable[[CacheSink], object], size_hint: int | None) -> CachedFile:
        data, sidecar, _ = self._paths(key)
        name = self._name(key)
        others = self.usage(exclude=key) if self.budget_bytes is not None else 0
        if size_hint is not None:
            others = self._make_room(key, size_hint, others)

        def on_grow(total: int) -> None:
            nonlocal others
            if self.budget_bytes is not None and others + total > self.budget_bytes:
                others = self._make_room(key, total, others)

        def on_no_space() -> bool:
            return self._evict_lru(key) > 0

        fd, tmp_name = tempfile.mkstemp(prefix=f".tmp#{name}#", dir=self.root)
        tmp = Path(tmp_name)
        sidecar_tmp: Path | None = None
        try:
            try:
                sink = CacheSink(fd, on_grow, on_no_space)
                try:
                    fill(sink)
                    sink.finish()
                finally:
                    sink.stop()  # the writer thread never outlives the file descriptor
                os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if st.st_size != sink.bytes_written:
                raise CacheError(f"cache write of {key!r} lost bytes ({st.st_size} of {sink.bytes_written}) in {tmp}")
            record = _Record(key=key, size=st.st_size, sha256=sink.hexdigest(), mtime_ns=st.st_mtime_ns)
            os.replace(tmp, data)
            sfd, sidecar_name = tempfile.mkstemp(prefix=f".tmp#{name}#", suffix=".json", dir=self.root)
            sidecar_tmp = Path(sidecar_name)
            with os.fdopen(sfd, "w") as f:
                json.dump({"format": _SIDECAR_FORMAT, **dataclasses.asdict(record)}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(sidecar_tmp, sidecar)
            _fsync_dir(self.root)
        except BaseException as exc:
            for path in (tmp, data, sidecar_tmp):
                if path is not None:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
                raise CacheFullError(
                    f"no space left in the cache directory {self.root} while writing {key!r}; free disk space, "
                    "lower other use, or set KEEPDOCKER_CACHE_DIR to a larger disk"
                ) from exc
            raise
        return CachedFile(key=key, path=data, size=record.size, sha256=record.sha256, created=True)

    def _make_room(self, key: str, needed: int, others: int) -> int:
        """Evict LRU entries of other keys until ``needed`` fits the budget; return the new usage of others."""
        if self.budget_bytes is None:
            return others
        if needed > self.budget_bytes:
            raise CacheFullError(
                f"{key!r} needs at least {needed} bytes, more than the whole cache budget of {self.budget_bytes} "
                "bytes; raise KEEPDOCKER_CACHE_BUDGET"
            )
        others = self.usage(exclude=key)
        for entry in self.entries():
            if others + needed <= self.budget_bytes:
                break
            if entry.key != key and self._evict(entry.key):
                others -= entry.size
        if others + needed > self.budget_bytes:
            raise CacheFullError(
                f"cache budget of {self.budget_bytes} bytes cannot hold {key!r} ({needed} bytes so far): "
                f"{others} bytes are held by entries in use; retry later or raise KEEPDOCKER_CACHE_BUDGET"
            )
        return others

    def _evict_lru(self, key: str) -> int:
        """Evict the least recently used other entry that no one holds; return the bytes freed (0 if none)."""
        for entry in self.entries():
            if entry.key != key and self._evict(entry.key):
                return max(entry.size, 1)
        return 0

    def _evict(self, key: str) -> bool:
        return self.invalidate(key)


def _glob_escape(name: str) -> str:
    """Escape glob metacharacters (percent-encoded names have none, hashed ones neither; this is a safeguard)."""
    return re.sub(r"([*?\[])", r"[\1]", name)


@dataclass(frozen=True)
class _Record:
    """A parsed sidecar."""

    key: str
    size: int
    sha256: str
    mtime_ns: int


def _read_sidecar(path: Path) -> _Record | None:
    """The sidecar record if it is present, small, and well typed; else None."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_SIDECAR_MAX + 1)
    except OSError:
        return None
    if len(raw) > _SIDECAR_MAX:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("format") != _SIDECAR_FORMAT:
        return None
    key, size, digest, mtime_ns = (record.get(f) for f in ("key", "size", "sha256", "mtime_ns"))
    if not isinstance(key, str) or not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        return None
    if not _natural(size) or not _natural(mtime_ns):
        return None
    assert isinstance(size, int) and isinstance(mtime_ns, int)
    return _Record(key=key, size=size, sha256=digest, mtime_ns=mtime_ns)


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
