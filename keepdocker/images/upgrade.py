"""Upgrade a v1 image archive to a deterministic Docker 1.10-24 archive: the v1 reader composed with the writer.

One pass over SRC: layers are decompressed, hashed, checked and written into a temporary file beside DST as they
arrive; configs, manifest.json and repositories follow at the end, then the file is renamed to DST. On any error the
temporary file is removed and DST is left untouched. A current (v2 or OCI) archive given as SRC is copied unchanged.

Which images become manifest entries: every image tagged in ``repositories`` or by the caller (``tags`` go to
``image``, or to the single leaf image); with no tags at all, one untagged entry per leaf image (a v1 layer no other
layer names as parent). Entries are ordered by image ID, tags sorted, so the output bytes depend only on SRC and the
arguments.
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
from keepdocker.images.docker_archive import (
    DockerArchiveWriter,
    copy_file,
    manifest_bytes,
    read_archive,
    repositories_bytes,
)
from keepdocker.images.model import Image, ManifestEntry, parse_tag_option
from keepdocker.images.v1 import NotV1ArchiveError, V1Archive, read_v1_archive

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


def upgrade(src: Path, dst: Path, tags: Sequence[str] = (), image: str | None = None) -> UpgradeResult:
    """Convert ``src`` into ``dst``; ``tags`` (REPO[:TAG]) apply to ``image`` (a v1 ID) or to the single leaf.

    Raises UsageError for bad arguments and ArchiveError subclasses for bad archives; DST is then not created.
    """
    src, dst = Path(src), Path(dst)
    wanted = sorted({parse_tag_option(t) for t in tags})
    if not src.is_file():
        raise UsageError(f"SRC {src}: not a readable file")
    if not dst.parent.is_dir():
        raise UsageError(f"DST {dst}: directory {dst.parent} does not exist")
    if dst.is_dir():
        raise UsageError(f"DST {dst}: is a directory; give a file name")
    temps: list[Path] = []
    writer: DockerArchiveWriter | None = None

    def new_temp() -> tuple[BinaryIO, Path]:
        fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
        temps.append(Path(name))
        return os.fdopen(fd, "w+b"), Path(name)

    try:
        f, _ = new_temp()
        with f:
            writer = DockerArchiveWriter(f)
            try:
                archive = read_v1_archive(src, writer)
            except NotV1ArchiveError:
                writer.abort()
                if wanted or image is not None:
                    raise UsageError(
                        f"SRC {src} is already a current archive; --tag and --image apply to v1 archives only"
                    ) from None
                images = read_archive(src)
                f.seek(0)
                f.truncate()
                copy_file(src, f)
                result = UpgradeResult([_entry(i) for i in images], already_current=True)
            else:
                selected = _select(archive, wanted, image)
                result = UpgradeResult([_entry(i) for i in selected], warnings=list(archive.warnings))
                _finish(writer, archive, selected, new_temp)
            writer.f.flush()
            if writer.f is not f:
                writer.f.close()
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
        if writer is not None:
            writer.abort()
        for t in temps:
            with contextlib.suppress(FileNotFoundError):
                t.unlink()


def _entry(image: Image) -> ManifestEntry:
    return ManifestEntry(id=image.id, tags=image.tags, created=image.created)


def _select(archive: V1Archive, wanted: list[str], image: str | None) -> list[Image]:
    """The images to list in manifest.json, with their final tags, ordered by image ID."""
    tags: dict[str, set[str]] = {v1: set(t) for v1, t in (archive.repositories or {}).items()}
    if image is not None or wanted:
        if image is not None:
            if image not in archive.images:
                raise UsageError(f"--image {image}: no such v1 layer directory in SRC")
            target = image
        elif len(archive.leaves) == 1:
            target = archive.leaves[0]
        else:
            raise UsageError(
                f"--tag: SRC has {len(archive.leaves)} leaf images; choose one with --image V1ID "
                f"({', '.join(leaf[:12] for leaf in archive.leaves)})"
            )
        for others in tags.values():  # a tag given by the caller moves to the chosen image
            others.difference_update(wanted)
        tags.setdefault(target, set()).update(wanted)
    if not any(tags.values()) and image is None:
        tags = {leaf: set() for leaf in archive.leaves}
    by_id: dict[str, tuple[Image, set[str]]] = {}
    for v1_id, names in tags.items():
        if not names and not (v1_id == image or v1_id in archive.leaves):
            continue
        img = archive.images[v1_id].image
        _, merged = by_id.setdefault(img.id, (img, set()))
        merged.update(names)
    return [
        Image(img.id, img.config, img.layers, tuple(sorted(names)), img.created, img.parent)
        for _, (img, names) in sorted(by_id.items())
    ]


def _finish(
    writer: DockerArchiveWriter,
    archive: V1Archive,
    selected: list[Image],
    new_temp: Callable[[], tuple[BinaryIO, Path]],
) -> None:
    """Drop unreferenced layers, then write the configs, manifest.json and repositories."""
    paths = archive.layer_paths
    used = {paths[layer.diff_id] for img in selected for layer in img.layers}
    unused = set(writer.spans) - used
    if unused:
        target, _ = new_temp()
        old = writer.f
        writer.drop_layers(unused, target)
        old.close()
    for img in selected:
        writer.add_file(f"{img.id.removeprefix('sha256:')}.json", img.config)
    entries = [(img.id, img.tags, [paths[layer.diff_id] for layer in img.layers]) for img in selected]
    writer.add_file("manifest.json", manifest_bytes(entries))
    tops = {tag: paths[img.layers[-1].diff_id].split("/", 1)[0] for img in selected for tag in img.tags}
    if tops:
        writer.add_file("repositories", repositories_bytes(tops))
    writer.close()
