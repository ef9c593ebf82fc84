"""The block directory: blocks stored by md5 under two-level fan-out, written atomically while hashing."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, BinaryIO

__all__ = ["MAX_BLOCK_SIZE", "BlockHashMismatch", "BlockStore", "BlockTruncated"]

MAX_BLOCK_SIZE = 64 * 1024 * 1024
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = 4 * 1024 * 1024
_WRITERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="block-writer")


def _write_all(out: io.RawIOBase, data: memoryview) -> None:
    """Write every byte of ``data`` (raw files may write short)."""
    while data:
        written = out.write(data)
        data = data[written or 0 :]


class BlockHashMismatch(ValueError):
    """The bytes received do not hash to the md5 named in the request."""


class BlockTruncated(ValueError):
    """The client sent fewer bytes than it announced."""


class BlockStore:
    """Blocks as files ``<dir>/<md5[:3]>/<md5>``; writes go to a temporary file and are renamed into place."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._tmp = directory / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)

    @staticmethod
    def valid_md5(md5: str) -> bool:
        """True for 32 lowercase hex digits."""
        return _MD5_RE.match(md5) is not None

    def path(self, md5: str) -> Path:
        """Where the block with this md5 lives (whether or not it exists)."""
        return self.directory / md5[:3] / md5

    def size(self, md5: str) -> int | None:
        """The stored block's size, or None when the block is absent."""
        try:
            return self.path(md5).stat().st_size
        except FileNotFoundError:
            return None

    def open(self, md5: str) -> BinaryIO:
        """Open a stored block for reading (FileNotFoundError when absent)."""
        return open(self.path(md5), "rb")

    def write_stream(self, md5: str, source: IO[bytes] | io.BufferedIOBase, length: int) -> None:
        """Read exactly ``length`` bytes from ``source``, hash them, and store them as block ``md5``.

        Raises BlockTruncated if the source ends early and BlockHashMismatch if the digest differs; no partial
        file is left behind on any error. A block that already exists is hashed but not rewritten.
        """
        digest = hashlib.md5()
        # Two buffers: while one chunk is written (in a pool thread) the next is received and hashed here;
        # hashlib and file writes release the GIL, so hashing and writing overlap on two cores.
        size = min(_CHUNK, max(length, 1))
        views = [memoryview(bytearray(size)), memoryview(bytearray(size))]
        target = self.path(md5)
        exists = target.exists()
        fd, tmp_name = (None, None) if exists else tempfile.mkstemp(dir=self._tmp, prefix=md5 + ".")
        try:
            out = os.fdopen(fd, "wb", buffering=0) if fd is not None else None
            pending: Future[int | None] | None = None
            try:
                remaining, turn = length, 0
                while remaining:
                    view = views[turn]
                    turn ^= 1
                    n = source.readinto(view[: min(remaining, size)])  # type: ignore[union-attr]
                    if not n:
                        raise BlockTruncated(f"request body ended after {length - remaining} of {length} bytes")
                    if pending is not None:
                        pending.result()
                        pending = None
                    if out is not None:
                        pending = _WRITERS.submit(_write_all, out, view[:n])
                    digest.update(view[:n])
                    remaining -= n
                if pending is not None:
                    pending.result()
                    pending = None
            finally:
                if pending is not None:  # an error is on its way out: let the last write end, keep that error
                    with contextlib.suppress(OSError, ValueError):
                        pending.result()
                if out is not None:
                    out.close()
            if digest.hexdigest() != md5:
                raise BlockHashMismatch(f"content hash {digest.hexdigest()} did not match specified locator {md5}")
            if tmp_name is not None:
                target.parent.mkdir(exist_ok=True)
                os.replace(tmp_name, target)
                tmp_name = None
        finally:
            if tmp_name is not None:
                os.unlink(tmp_name)

    def put_bytes(self, data: bytes) -> str:
        """Store a small block given in memory; return its md5 (used by seeding)."""
        md5 = hashlib.md5(data).hexdigest()
        target = self.path(md5)
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix=md5 + ".")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(tmp_name, target)
            except BaseException:
                os.unlink(tmp_name)
                raise
        return md5

    def count(self) -> int:
        """Number of stored blocks."""
        return sum(1 for d in self.directory.iterdir() if d.name != "tmp" and d.is_dir() for _ in d.iterdir())
