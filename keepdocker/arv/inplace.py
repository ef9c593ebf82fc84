"""Migrate a v1 image in place: its v2 collection reuses the old collection's Keep blocks for every shared byte.

The old collection's tar is read once, straight from Keep through the SDK (no local copy; ``KeepFileReader`` fetches
the next block, with the SDK's md5 check, while the reader hashes this one), and planned by
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
import io
import os
import queue
import threading
import weakref
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import arvados
import arvados.collection
import arvados.keep

from keepdocker.arv.catalog import IMAGE_HASH_PROPERTY, REPO_TAG_PROPERTY
from keepdocker.arv.client import SDK_RETRIES, ArvadosSession, arvados_errors
from keepdocker.arv.push import Action, Existing, copy_into
from keepdocker.arv.transfer import CollectionRef, single_tar
from keepdocker.errors import ArvadosError, MalformedArchiveError
from keepdocker.images.plan import NewBytes, SourceRange, SpillRange, UpgradePlan, plan_upgrade
from keepdocker.images.tarscan import Compression, sniff_compression

__all__ = [
    "IN_PLACE",
    "MIN_REUSED_BYTES",
    "MIN_REUSED_FRACTION",
    "InPlacePlan",
    "KeepFileReader",
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


_keep_lock = threading.Lock()
_keep_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def keep_client(session: ArvadosSession) -> Any:
    """The session's KeepClient: a bounded in-memory block cache, no disk cache, no prefetch threads of its own.

    The old file is read by ``KeepFileReader``, which fetches one block ahead itself; the cache then only ever holds
    the block fetched last (one a reader holds anyway), whatever the image's size; nothing is cached on disk. One
    client per API client (it is thread-safe), with its Keep services listed once, in the calling thread: a read-ahead
    thread that listed them would first build an API client of its own.
    """
    with _keep_lock:
        keep = _keep_clients.get(session.api)
        if keep is None:
            cache = arvados.keep.KeepBlockCache(cache_max=BLOCK_CACHE_BYTES, disk_cache=False)
            keep = arvados.keep.KeepClient(
                api_client=session.api, block_cache=cache, num_retries=SDK_RETRIES, num_prefetch_threads=0
            )
            with arvados_errors("listing the Keep services"):
                keep.build_services_list()
            _keep_clients[session.api] = keep
        return keep


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


class _Fetch:
    """One run of the read-ahead thread: pieces from ``start`` on, at most ``HELD_PIECES`` held at a time."""

    def __init__(self, keep: Any, pieces: list[Piece], start: int) -> None:
        self.ready: queue.SimpleQueue[tuple[int, memoryview] | BaseException] = queue.SimpleQueue()
        self.tokens = threading.Semaphore(HELD_PIECES)
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(keep, pieces, start), name="keep-read-ahead", daemon=True
        )
        self.thread.start()

    def _run(self, keep: Any, pieces: list[Piece], start: int) -> None:
        try:
            for i in range(start, len(pieces)):
                self.tokens.acquire()
                if self.stop.is_set():
                    return
                piece = pieces[i]
                # The SDK checks the block's md5 and retries Keep's temporary failures; both release the GIL, so
                # this runs beside the reader's own hashing.
                block = keep.get(piece.locator, num_retries=SDK_RETRIES)
                end = piece.block_offset + piece.length
                if len(block) < end:
                    raise ArvadosError(f"block {piece.locator[:32]} holds {len(block)} bytes, the manifest uses {end}")
                self.ready.put((i, memoryview(block)[piece.block_offset : end]))
        except BaseException as exc:  # handed to the reader, which raises it in its own thread
            self.ready.put(exc)

    def close(self) -> None:
        """Stop after the fetch in flight (waited for, so no thread outlives the reader)."""
        self.stop.set()
        self.tokens.release()
        self.thread.join()


#: Pieces of the old file held at once: the one being read and the one fetched ahead (2 x 64 MiB at most).
HELD_PIECES = 2


class KeepFileReader(io.RawIOBase):
    """A file of an old collection read from Keep in file order, its next block fetched while this one is read.

    ``read`` returns bytes as a file does; ``seek`` is cheap forward and within the current piece, and restarts the
    read-ahead from the right piece when it goes further back. Use it as a context manager (the thread is stopped).
    """

    def __init__(self, keep: Any, pieces: list[Piece]) -> None:
        super().__init__()
        self._keep = keep
        self._pieces = pieces
        self._starts = [p.file_offset for p in pieces]
        self._size = pieces[-1].file_offset + pieces[-1].length if pieces else 0
        self._pos = 0
        self._index = -1  # the piece in _view when _held, else the one before the piece the fetch hands over next
        self._view = memoryview(b"")
        self._held = False
        self._fetch: _Fetch | None = None

    def readable(self) -> bool:
        """Always readable."""
        return True

    def seekable(self) -> bool:
        """Seeking is supported (backwards beyond the current piece by fetching again)."""
        return True

    def tell(self) -> int:
        """The current position in the file."""
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the position (nothing is fetched until the next read)."""
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to ``size`` bytes from the position (all the rest when negative); b"" at the end."""
        left = self._size - self._pos if size is None or size < 0 else min(size, self._size - self._pos)
        parts: list[bytes | memoryview] = []
        while left > 0:
            view, into = self._locate(self._pos)
            take = min(left, len(view) - into)
            part = view[into : into + take]
            # A read that goes on into the next piece copies this one's part first, so the block can be let go.
            parts.append(part if take == left else bytes(part))
            self._pos += take
            left -= take
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer: Any, /) -> int:
        """Read into ``buffer``; the number of bytes read."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _locate(self, pos: int) -> tuple[memoryview, int]:
        """The piece holding byte ``pos`` and the offset into it, taking pieces from the read-ahead."""
        i = bisect.bisect_right(self._starts, pos) - 1
        if self._fetch is None or i < self._index or (i == self._index and not self._held):
            self._restart(i)
        while not (self._held and self._index == i):
            self._take()
        return self._view, pos - self._pieces[i].file_offset

    def _take(self) -> None:
        fetch = self._fetch
        assert fetch is not None
        if self._held:
            self._view, self._held = memoryview(b""), False
            fetch.tokens.release()  # the piece read last is let go: the one after the next may be fetched
        got = fetch.ready.get()
        if isinstance(got, BaseException):
            self._stop()  # the thread has ended; a later read starts again from the piece it needs
            raise got
        self._index, self._view = got
        self._held = True

    def _restart(self, i: int) -> None:
        self._stop()
        self._fetch = _Fetch(self._keep, self._pieces, i)
        self._index = i - 1

    def _stop(self) -> None:
        if self._fetch is not None:
            self._fetch.close()
            self._fetch = None
        self._view, self._held = memoryview(b""), False

    def close(self) -> None:
        """Stop the read-ahead thread and let go of the blocks."""
        self._stop()
        super().close()


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
    with arvados_errors(f"reading {filename} of {pdh} from Keep"), KeepFileReader(
        keep, old_file_pieces(manifest, filename)
    ) as f:
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
    files = " ".join(f"{start}:{length}:{_escape(name)}" for start, length in segments)
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


def _escape(name: str) -> str:
    """A manifest file name: space, tab, newline and backslash are written as octal escapes."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in name)


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
