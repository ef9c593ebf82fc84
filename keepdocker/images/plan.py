"""The upgrade as a plan: a v1 archive's Docker 1.10-24 equivalent described as extents, the one layout decision.

``plan_upgrade`` reads a v1 archive once (a path, or any readable binary file object such as a file opened from Keep
through the SDK), hashing every layer as it streams past, and returns an ``UpgradePlan``: the output archive as an
ordered list of extents, each either

* ``NewBytes``: bytes the converter makes (tar headers, configs, ``manifest.json``, ``repositories``, padding, the two
  EOF blocks), small and held in memory;
* ``SourceRange``: a byte range of the source archive (the payload of an uncompressed layer of an uncompressed
  archive: the v2 ``layer.tar`` is byte-identical to it);
* ``SpillRange``: a byte range of the *spill*, an append-only stream the caller provides, which receives the
  decompressed bytes of every layer that is not a source range (compressed layers, or any layer of an archive that is
  compressed as a whole). Memory stays bounded: the spill is a temporary file for ``keepdocker upgrade`` and Keep
  blocks for in-place migration.

The layout (the same as ever): distinct layers in archive order (identical layers stored once, layers no selected
image uses dropped), then ``<image id>.json`` per selected image by ID, ``manifest.json``, ``repositories`` when any
image is tagged, and two zero blocks. ``write_plan`` renders a plan into a file: that is ``keepdocker upgrade``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from keepdocker.errors import UsageError
from keepdocker.images import limits
from keepdocker.images.docker_archive import manifest_bytes, repositories_bytes, tar_header
from keepdocker.images.model import Image, ManifestEntry, parse_tag_option
from keepdocker.images.tarscan import BLOCK, Compression, LayerFacts, LayerStream
from keepdocker.images.v1 import V1Archive, read_v1_archive

__all__ = [
    "Extent",
    "NewBytes",
    "SourceRange",
    "Spill",
    "SpillRange",
    "UpgradePlan",
    "plan_upgrade",
    "select_images",
    "write_plan",
]


@dataclass(frozen=True)
class NewBytes:
    """Bytes the converter made."""

    data: bytes = field(repr=False)

    @property
    def length(self) -> int:
        """The extent's size in bytes."""
        return len(self.data)


@dataclass(frozen=True)
class SourceRange:
    """``length`` bytes of the source archive from ``offset`` (relative to where reading started)."""

    offset: int
    length: int


@dataclass(frozen=True)
class SpillRange:
    """``length`` bytes of the spill from ``offset``."""

    offset: int
    length: int


Extent = NewBytes | SourceRange | SpillRange


class Spill(Protocol):
    """An append-only byte sink; ``tell`` is the number of bytes written so far."""

    def write(self, data: bytes, /) -> object:
        """Append ``data``."""
        ...

    def tell(self) -> int:
        """Bytes written so far."""
        ...


@dataclass(frozen=True)
class UpgradePlan:
    """A v1 archive's upgrade: the output as extents, the images it lists, and what the reader warned about."""

    extents: tuple[Extent, ...]
    images: tuple[Image, ...]  # the manifest entries' images, with their final tags, by ID
    compression: Compression  # of the source archive as a whole
    warnings: tuple[str, ...] = ()

    @property
    def entries(self) -> list[ManifestEntry]:
        """The manifest entries written."""
        return [ManifestEntry(id=i.id, tags=i.tags, created=i.created) for i in self.images]

    @property
    def size(self) -> int:
        """Bytes of the output archive."""
        return sum(e.length for e in self.extents)

    @property
    def reused_bytes(self) -> int:
        """Output bytes that are byte ranges of the source."""
        return sum(e.length for e in self.extents if isinstance(e, SourceRange))

    @property
    def spilled_bytes(self) -> int:
        """Output bytes taken from the spill (decompressed layers)."""
        return sum(e.length for e in self.extents if isinstance(e, SpillRange))

    @property
    def new_bytes(self) -> int:
        """Output bytes the converter made (headers, configs, manifest, padding, EOF)."""
        return sum(e.length for e in self.extents if isinstance(e, NewBytes))


class _Layers:
    """Collects where each distinct layer's payload is, as the v1 reader streams the layers (``LayerOutput``)."""

    def __init__(self, spill: Spill | None) -> None:
        self.spill = spill
        self.payloads: dict[str, SourceRange | SpillRange] = {}  # member path, first-seen order
        self._offset: int | None = None
        self._stream: LayerStream | None = None
        self._spill_start = 0

    def start_layer(self, source_offset: int | None, stream: LayerStream) -> Callable[[bytes], object] | None:
        """Begin a layer whose stored bytes start at ``source_offset`` of the source (None: not addressable)."""
        self._offset, self._stream = source_offset, stream
        spill = self.spill
        if spill is None:
            return None
        self._spill_start = spill.tell()

        def sink(data: bytes) -> None:
            # An uncompressed layer of a plain archive is a source range: its bytes need not go anywhere.
            if source_offset is None or stream.compression is not Compression.NONE:
                spill.write(data)

        return sink

    def finish_layer(self, facts: LayerFacts) -> str:
        """Record the layer's payload; returns the member path that holds it (identical layers share one)."""
        path = f"{facts.diff_id.removeprefix('sha256:')}/layer.tar"
        if path not in self.payloads:
            if self._offset is not None and facts.compression is Compression.NONE:
                self.payloads[path] = SourceRange(self._offset, facts.size)
            else:
                self.payloads[path] = SpillRange(self._spill_start, facts.size)
        return path


def plan_upgrade(
    source: Path | BinaryIO,
    spill: Spill | None,
    tags: Sequence[str] = (),
    image: str | None = None,
    *,
    label: str | None = None,
) -> UpgradePlan:
    """Read the v1 archive ``source`` once and plan its upgrade (``tags`` REPO[:TAG] go to ``image`` or the leaf).

    ``spill`` receives the decompressed bytes of layers that cannot be source ranges; without one, only the layout
    of a plan is meaningful for such layers (its spill ranges point nowhere). Raises UsageError for bad arguments,
    NotV1ArchiveError for a current archive, and ArchiveError subclasses for bad archives.
    """
    wanted = sorted({parse_tag_option(t) for t in tags})
    layers = _Layers(spill)
    archive = read_v1_archive(source, layers, label=label)
    selected = select_images(archive, wanted, image)
    return UpgradePlan(
        extents=tuple(_layout(archive, selected, layers.payloads)),
        images=tuple(selected),
        compression=archive.compression,
        warnings=tuple(archive.warnings),
    )


def _member(name: str, payload: bytes) -> list[Extent]:
    return [NewBytes(tar_header(name, len(payload)) + payload + bytes(-len(payload) % BLOCK))]


def _layout(
    archive: V1Archive, selected: list[Image], payloads: dict[str, SourceRange | SpillRange]
) -> list[Extent]:
    paths = archive.layer_paths
    used = {paths[layer.diff_id] for img in selected for layer in img.layers}
    out: list[Extent] = []
    for path, payload in payloads.items():
        if path in used:
            out.append(NewBytes(tar_header(path, payload.length)))
            out.append(payload)
            if payload.length % BLOCK:
                out.append(NewBytes(bytes(-payload.length % BLOCK)))
    for img in selected:
        out += _member(f"{img.id.removeprefix('sha256:')}.json", img.config)
    entries = [(img.id, img.tags, [paths[layer.diff_id] for layer in img.layers]) for img in selected]
    out += _member("manifest.json", manifest_bytes(entries))
    tops = {tag: paths[img.layers[-1].diff_id].split("/", 1)[0] for img in selected for tag in img.tags}
    if tops:
        out += _member("repositories", repositories_bytes(tops))
    out.append(NewBytes(bytes(2 * BLOCK)))
    return _merge_new(out)


def _merge_new(extents: list[Extent]) -> list[Extent]:
    """Adjacent NewBytes joined into one extent."""
    merged: list[Extent] = []
    for e in extents:
        last = merged[-1] if merged else None
        if isinstance(e, NewBytes) and isinstance(last, NewBytes):
            merged[-1] = NewBytes(last.data + e.data)
        else:
            merged.append(e)
    return merged


def select_images(archive: V1Archive, wanted: list[str], image: str | None) -> list[Image]:
    """The images to list in manifest.json, with their final tags, ordered by image ID.

    Every image tagged in ``repositories`` or by the caller (``wanted`` goes to ``image``, or to the single leaf
    image); with no tags at all, one untagged entry per leaf image (a v1 layer no other layer names as parent).
    """
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


# --- rendering into a file -------------------------------------------------------------------------------------------


def write_plan(
    plan: UpgradePlan,
    source: BinaryIO | None,
    spill: BinaryIO | None,
    out: BinaryIO,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write the plan's bytes to ``out``: new bytes as they are, ranges copied from ``source`` and ``spill``.

    Ranges are copied by the kernel (``copy_file_range``) when both ends are files, else through a bounded buffer.
    ``progress(done, total)`` hears the bytes written after each extent.
    """
    total = sum(len(e.data) if isinstance(e, NewBytes) else e.length for e in plan.extents)
    done = 0
    out.flush()
    for extent in plan.extents:
        if isinstance(extent, NewBytes):
            out.write(extent.data)
            done += len(extent.data)
        else:
            f = source if isinstance(extent, SourceRange) else spill
            if f is None:
                raise ValueError(f"{extent} needs a {'source' if isinstance(extent, SourceRange) else 'spill'} file")
            out.flush()
            _copy_range(f, extent.offset, extent.length, out)
            done += extent.length
        if progress is not None:
            progress(done, total)
    out.flush()


def _copy_range(src: BinaryIO, offset: int, length: int, out: BinaryIO) -> None:
    try:
        src_fd, out_fd = src.fileno(), out.fileno()
    except (AttributeError, OSError, ValueError):
        src_fd = out_fd = -1
    if src_fd >= 0 and hasattr(os, "copy_file_range"):
        try:
            pos, done = offset, 0
            while done < length:
                n = os.copy_file_range(src_fd, out_fd, min(length - done, 1 << 30), pos)
                if n == 0:
                    raise OSError(errno.EIO, "short source while writing the upgraded archive")
                pos += n
                done += n
            out.seek(0, os.SEEK_END)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP) or done:
                raise
    src.seek(offset)
    left = length
    while left:
        piece = src.read(min(limits.CHUNK_BYTES, left))
        if not piece:
            raise OSError(errno.EIO, "short source while writing the upgraded archive")
        out.write(piece)
        left -= len(piece)
