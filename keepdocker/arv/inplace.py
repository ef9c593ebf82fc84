"""Migrate a v1 image in place: its v2 collection reuses the old collection's Keep blocks for every shared byte.

The old collection's tar is read once, straight from Keep through the SDK (no local copy), and planned by
``images.plan.plan_upgrade``: the uncompressed layer payloads of a v1 archive are byte-identical to the v2 archive's
``layer.tar`` members, so they become segments of the new file over the old collection's blocks (signed for this
token by ``collections.get``). Only the new bytes go to Keep: tar headers, configs, ``manifest.json``,
``repositories``, padding and the EOF blocks, plus the decompressed bytes of layers stored compressed (those are
streamed into Keep blocks as they are decompressed, so memory stays bounded). The new collection has one file
``<image id>.tar``; its stream lists the old blocks actually used (in order of first use), then the new blocks.

Falls back (the caller then runs the download, upgrade, upload path) when the archive is compressed as a whole, or
when sharing would save little: fewer than ``MIN_REUSED_BYTES`` reused, or reused bytes below
``MIN_REUSED_FRACTION`` of the output.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import arvados
import arvados.collection
import arvados.keep

from keepdocker.arv.catalog import IMAGE_HASH_PROPERTY, REPO_TAG_PROPERTY
from keepdocker.arv.client import SDK_RETRIES, ArvadosSession, arvados_errors
from keepdocker.arv.push import Action, Existing, copy_into
from keepdocker.arv.transfer import CollectionRef, manifest_name, single_tar
from keepdocker.errors import ArvadosError, MalformedArchiveError
from keepdocker.images.plan import NewBytes, SourceRange, SpillRange, UpgradePlan, plan_upgrade
from keepdocker.images.tarscan import Compression, sniff_compression

__all__ = [
    "IN_PLACE",
    "MIN_REUSED_BYTES",
    "MIN_REUSED_FRACTION",
    "InPlacePlan",
    "KeepSpill",
    "Piece",
    "keep_client",
    "old_file_pieces",
    "place_in_place",
    "plan_in_place",
]

MIB = 1 << 20
#: Below this many reused bytes an in-place migration is not worth its fragmentation: the whole file is written.
MIN_REUSED_BYTES = 1 * MIB
#: Below this share of reused bytes in the output the whole file is written too.
MIN_REUSED_FRACTION = 0.5
#: What a migration that made a collection over the old blocks reports as its action.
IN_PLACE = "in place"
#: Size of the new blocks written for decompressed layers (Keep's limit is 64 MiB; smaller keeps memory low).
SPILL_BLOCK_BYTES = 16 * MIB
#: The SDK's in-memory block cache while reading the old image (its floor is 64 MiB, one full block); no disk cache.
BLOCK_CACHE_BYTES = 64 * MIB


def keep_client(session: ArvadosSession) -> Any:
    """A KeepClient with a bounded in-memory block cache, no disk cache and one prefetch thread.

    Reading a 64 MiB-block file then holds at most the cached block, the one being read and one prefetched block,
    whatever the image's size; nothing is cached on disk.
    """
    cache = arvados.keep.KeepBlockCache(cache_max=BLOCK_CACHE_BYTES, disk_cache=False)
    return arvados.keep.KeepClient(
        api_client=session.api, block_cache=cache, num_retries=SDK_RETRIES, num_prefetch_threads=1
    )


class KeepSpill:
    """An append-only stream stored as new Keep blocks of ``block_bytes`` (the last one shorter)."""

    def __init__(self, keep: Any, copies: int = 2, block_bytes: int = SPILL_BLOCK_BYTES) -> None:
        self.keep = keep
        self.copies = copies
        self.block_bytes = block_bytes
        self.blocks: list[tuple[str, int]] = []  # signed locator, size
        self._buf = bytearray()
        self._size = 0

    def write(self, data: bytes, /) -> int:
        """Append ``data``; full blocks are put into Keep at once."""
        self._buf += data
        self._size += len(data)
        while len(self._buf) >= self.block_bytes:
            self._put(bytes(self._buf[: self.block_bytes]))
            del self._buf[: self.block_bytes]
        return len(data)

    def tell(self) -> int:
        """Bytes written so far."""
        return self._size

    def close(self) -> list[tuple[str, int]]:
        """Put what is buffered; returns every block written, in stream order."""
        if self._buf:
            self._put(bytes(self._buf))
            self._buf = bytearray()
        return self.blocks

    def _put(self, data: bytes) -> None:
        with arvados_errors("writing a new block to Keep"):
            locator = self.keep.put(data, copies=self.copies, num_retries=SDK_RETRIES)
        self.blocks.append((str(locator), len(data)))


@dataclass(frozen=True)
class Piece:
    """Part of the old file: ``length`` bytes at ``file_offset`` are ``block_offset`` onward in ``locator``."""

    file_offset: int
    locator: str
    block_offset: int
    length: int


def old_file_pieces(manifest_text: str, filename: str) -> list[Piece]:
    """The old file as pieces of (signed) blocks, in file order, from the collection's manifest."""
    coll = arvados.collection.Collection(manifest_text)
    f = coll.find(filename)
    if f is None or not hasattr(f, "segments"):
        raise ArvadosError(f"{filename} is not a file of the collection")
    return [Piece(r.range_start, str(r.locator), r.segment_offset, r.range_size) for r in f.segments()]


@dataclass(frozen=True)
class InPlacePlan:
    """The outcome of reading one old image: the new collection's manifest, or why the whole file must be written.

    ``manifest_text`` holds signed locators: it stays inside the process (never a task result).
    """

    image_id: str
    created: str | None
    size: int  # bytes of the v2 tar
    reused_bytes: int  # of those, bytes that are ranges of the old blocks
    written_bytes: int  # bytes put into Keep for this image (new bytes and decompressed layers)
    manifest_text: str = ""
    fallback: str = ""  # why the whole-file path is needed ("" when in place)


def plan_in_place(session: ArvadosSession, pdh: str, tags: list[str], v1_id: str) -> InPlacePlan:
    """Read the v1 image ``pdh`` from Keep once, plan its v2 tar and put the new bytes into Keep.

    Raises ArchiveError subclasses (permanent) for a bad archive, before any collection exists.
    """
    with arvados_errors(f"reading collection {pdh}"):
        record = session.api.collections().get(uuid=pdh).execute()
    manifest = str(record.get("manifest_text") or "")
    filename, _ = single_tar(manifest)
    keep = keep_client(session)
    with arvados_errors(f"reading {filename} of {pdh} from Keep"):
        reader = arvados.collection.CollectionReader(
            manifest, api_client=session.api, keep_client=keep, num_retries=SDK_RETRIES
        )
        with reader.open(filename, "rb") as f:
            head = f.read(8)
            if sniff_compression(head) is not Compression.NONE:
                return InPlacePlan("", None, 0, 0, 0, fallback="the archive is compressed as a whole")
            f.seek(0)
            copies = int(session.api._rootDesc.get("defaultCollectionReplication", 2) or 2)
            spill = KeepSpill(keep, copies)
            plan = plan_upgrade(cast(BinaryIO, f), spill, tags, v1_id, label=f"{pdh}/{filename}")
    if len(plan.images) != 1:
        ids = ", ".join(i.id for i in plan.images)
        raise MalformedArchiveError(f"{pdh}: expected one image, the archive holds {len(plan.images)} ({ids})")
    image = plan.images[0]
    created = image.created.isoformat() if image.created else None
    reused = plan.reused_bytes
    if reused < MIN_REUSED_BYTES or reused < MIN_REUSED_FRACTION * plan.size:
        why = f"only {reused} of {plan.size} bytes would be shared (in place needs >= 1 MiB and >= 50%)"
        return InPlacePlan(image.id, created, plan.size, 0, 0, fallback=why)
    new_at = _append_new_bytes(plan, spill)
    blocks = spill.close()
    # Signed again just before the create: reading a large image may outlast the first signatures.
    with arvados_errors(f"reading collection {pdh}"):
        fresh = str(session.api.collections().get(uuid=pdh).execute().get("manifest_text") or "")
    text = _manifest(f"{image.id}.tar", plan, new_at, blocks, old_file_pieces(fresh, filename))
    return InPlacePlan(image.id, created, plan.size, reused, spill.tell(), manifest_text=text)


def _append_new_bytes(plan: UpgradePlan, spill: KeepSpill) -> dict[int, int]:
    """Write every NewBytes extent after the spilled layers; returns extent index -> offset in the new stream."""
    at: dict[int, int] = {}
    for i, extent in enumerate(plan.extents):
        if isinstance(extent, NewBytes):
            at[i] = spill.tell()
            spill.write(extent.data)
    return at


def _manifest(
    name: str, plan: UpgradePlan, new_at: dict[int, int], new_blocks: list[tuple[str, int]], old: list[Piece]
) -> str:
    """One stream: the old blocks used (order of first use), then the new blocks; the file as merged segments."""
    starts = [p.file_offset for p in old]
    old_pos: dict[str, int] = {}  # locator -> its position in the new stream (before the new blocks)
    old_order: list[str] = []
    ranges: list[tuple[str | None, int, int]] = []  # (old locator or None for the new stream, offset, length)
    for i, extent in enumerate(plan.extents):
        if isinstance(extent, NewBytes):
            ranges.append((None, new_at[i], extent.length))
        elif isinstance(extent, SpillRange):
            ranges.append((None, extent.offset, extent.length))
        else:
            ranges += _old_ranges(extent, old, starts)
    sizes = {}
    for locator, _, _ in ranges:
        if locator is not None and locator not in old_pos:
            old_order.append(locator)
            old_pos[locator] = 0
            sizes[locator] = int(locator.split("+")[1])
    pos = 0
    for locator in old_order:
        old_pos[locator] = pos
        pos += sizes[locator]
    new_base = pos
    segments: list[list[int]] = []
    for locator, offset, length in ranges:
        if not length:
            continue
        start = (old_pos[locator] if locator is not None else new_base) + offset
        if segments and segments[-1][0] + segments[-1][1] == start:
            segments[-1][1] += length
        else:
            segments.append([start, length])
    locators = old_order + [loc for loc, _ in new_blocks]
    files = " ".join(f"{start}:{length}:{manifest_name(name)}" for start, length in segments)
    return f". {' '.join(locators)} {files}\n"


def _old_ranges(extent: SourceRange, old: list[Piece], starts: list[int]) -> list[tuple[str | None, int, int]]:
    """A range of the old file as (locator, offset in block, length) pieces."""
    out: list[tuple[str | None, int, int]] = []
    pos, end = extent.offset, extent.offset + extent.length
    i = bisect.bisect_right(starts, pos) - 1
    while pos < end:
        if i < 0 or i >= len(old):
            raise ArvadosError(f"byte {pos} of the old file lies outside its manifest segments")
        piece = old[i]
        into = pos - piece.file_offset
        take = min(piece.length - into, end - pos)
        if take <= 0:
            raise ArvadosError(f"byte {pos} of the old file lies outside its manifest segments")
        out.append((piece.locator, piece.block_offset + into, take))
        pos += take
        i += 1
    return out


def place_in_place(
    session: ArvadosSession, plan: InPlacePlan, existing: Existing, *, name: str, repo_tag: str | None
) -> tuple[CollectionRef, str]:
    """The owner's copy if it exists, else a copy of another readable one, else a new collection from the plan.

    The new collection carries ``docker-image-hash`` from the start, so a run killed before linking finds it.
    """
    if existing.owned is not None:
        owned = existing.owned
        _, size = single_tar(str(owned.get("manifest_text") or ""))
        return CollectionRef(str(owned["uuid"]), str(owned["portable_data_hash"]), size), Action.PRESENT.value
    if existing.source is not None:
        copied = copy_into(session, existing.source, existing.owner_uuid, name, repo_tag, plan.image_id)
        return copied, Action.COPIED.value
    body = {
        "manifest_text": plan.manifest_text,
        "name": name,
        "owner_uuid": existing.owner_uuid,
        "properties": {REPO_TAG_PROPERTY: repo_tag, IMAGE_HASH_PROPERTY: plan.image_id},
    }
    with arvados_errors(f"creating the v2 collection of {plan.image_id} in {existing.owner_uuid}"):
        rec = session.api.collections().create(body=body, ensure_unique_name=True).execute()
    if not rec.get("uuid"):
        raise ArvadosError(f"creating the collection of {plan.image_id}: the server returned no UUID")
    return CollectionRef(str(rec["uuid"]), str(rec["portable_data_hash"]), plan.size), IN_PLACE
