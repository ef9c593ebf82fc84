"""Upgrade a v1 image archive to a deterministic Docker 1.10-24 archive: the plan, written into a file.

One pass over SRC plans the output (``plan.plan_upgrade``): layers are decompressed, hashed and checked as they
stream past; compressed layers are spilled, decompressed, into a temporary file beside DST. The plan is then written
into a temporary file beside DST (uncompressed layer payloads copied from SRC by the kernel, the rest from the spill
and from memory) and renamed to DST. On any error the temporary files are removed and DST is left untouched. A
current (v2 or OCI) archive given as SRC is copied unchanged. Which images become manifest entries: see
``plan.select_images``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from keepdocker.errors import CacheFullError, ConfigurationError, UsageError
from keepdocker.images.docker_archive import copy_file, read_archive
from keepdocker.images.model import Image, ManifestEntry, parse_tag_option
from keepdocker.images.plan import plan_upgrade, write_plan
from keepdocker.images.v1 import NotV1ArchiveError

__all__ = ["UpgradeResult", "upgrade", "upgrade_archive"]


@dataclass(frozen=True)
class UpgradeResult:
    """What an upgrade wrote: the manifest entries, whether SRC was already current, and reader warnings."""

    entries: list[ManifestEntry]
    already_current: bool = False
    warnings: list[str] = field(default_factory=list)


def upgrade_archive(src: Path, dst: Path, tags: Sequence[str] = (), image: str | None = None) -> list[ManifestEntry]:
    """Convert the v1 archive ``src`` into ``dst`` and return the manifest entries written (see ``upgrade``)."""
    return upgrade(src, dst, tags, image).entries


def upgrade(
    src: Path,
    dst: Path,
    tags: Sequence[str] = (),
    image: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> UpgradeResult:
    """Convert ``src`` into ``dst``; ``tags`` (REPO[:TAG]) apply to ``image`` (a v1 ID) or to the single leaf.

    ``progress(done, total)`` hears the bytes of ``dst`` written so far.

    Raises UsageError for bad arguments and ArchiveError subclasses for bad archives; DST is then not created.
    """
    src, dst = Path(src), Path(dst)
    for t in tags:
        parse_tag_option(t)
    if not src.is_file():
        raise UsageError(f"SRC {src}: not a readable file")
    if not dst.parent.is_dir():
        raise UsageError(f"DST {dst}: directory {dst.parent} does not exist")
    if dst.is_dir():
        raise UsageError(f"DST {dst}: is a directory; give a file name")
    temps: list[Path] = []

    def new_temp(kind: str) -> BinaryIO:
        fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=f".{kind}", dir=dst.parent)
        temps.append(Path(name))
        return os.fdopen(fd, "w+b")

    try:
        with new_temp("spill") as spill, open(src, "rb") as source, new_temp("partial") as out:
            try:
                plan = plan_upgrade(source, spill, tags, image, label=src.name)
            except NotV1ArchiveError:
                if tags or image is not None:
                    raise UsageError(
                        f"SRC {src} is already a current archive; --tag and --image apply to v1 archives only"
                    ) from None
                images = read_archive(src)
                copy_file(src, out)
                result = UpgradeResult([_entry(i) for i in images], already_current=True)
            else:
                spill.flush()
                write_plan(plan, source, spill, out, progress)
                result = UpgradeResult(plan.entries, warnings=list(plan.warnings))
        os.replace(temps[-1], dst)
        temps.pop()
        return result
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheFullError(f"no room to write {dst} while upgrading {src}: free disk space") from None
        raise ConfigurationError(
            f"I/O error upgrading {src} to {dst}: {exc.strerror or exc}; check the disk space and permissions"
        ) from None
    finally:
        for leftover in temps:
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _entry(image: Image) -> ManifestEntry:
    return ManifestEntry(id=image.id, tags=image.tags, created=image.created)
