"""Small JSON-serializable task results: what tasks hand each other (paths, digests, PDHs, UUIDs), never handles."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from keepdocker.cache import TarCache
from keepdocker.errors import CacheError

__all__ = ["FileResult", "PlacedCollection", "UpgradedArchive"]


class FileResult(BaseModel):
    """A local file a task produced: validated before reuse by its size and mtime."""

    model_config = ConfigDict(frozen=True)

    path: str
    size: int
    sha256: str = ""
    mtime_ns: int

    @classmethod
    def of(cls, path: Path, sha256: str = "") -> FileResult:
        """Describe ``path`` as it is now."""
        st = path.stat()
        return cls(path=str(path), size=st.st_size, sha256=sha256, mtime_ns=st.st_mtime_ns)


class UpgradedArchive(FileResult):
    """A v2 archive and the image it holds."""

    image_id: str
    tags: list[str]
    created: str | None = None


class PlacedCollection(BaseModel):
    """The collection an image lives in after upload (or reuse): UUID, PDH, bytes and what was done."""

    model_config = ConfigDict(frozen=True)

    uuid: str
    pdh: str
    size: int
    action: Literal["uploaded", "copied", "present"]
    image_timestamp: str | None = None


def remove_quietly(*paths: str) -> None:
    """Delete work files that are no longer needed (missing ones are fine).

    A file that is a tar-cache entry is dropped through the cache (sidecar and data, and only when no one holds
    it), so no orphaned sidecar is left counting against the cache budget.
    """
    for p in paths:
        path = Path(p)
        if path.suffix == ".data" and path.with_suffix(".json").is_file():
            with contextlib.suppress(CacheError, OSError):
                TarCache(path.parent).discard(path)
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
