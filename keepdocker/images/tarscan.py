"""Safe streaming tar reading: outer-archive scanning and layer checking, with our own header parser.

Python's ``tarfile`` has a history of CVEs on exactly this path (negative offsets, huge PAX headers, unbounded
pre-allocation, streaming-EOF loops), so archives are parsed here with a small header parser that follows
Go's ``archive/tar`` reader (the one Docker uses): the same checksum rule (unsigned or signed sum), octal and
base-256 numbers, USTAR prefixes, PAX ``x``/``g`` records and GNU ``L``/``K`` long names, the same EOF rule (two zero
blocks, or end of stream on a block boundary) and the same header-only types. Declared sizes are never used to
allocate: data is streamed in ``CHUNK_BYTES`` pieces and only metadata (JSON, PAX, long names) is held, under caps.

One state machine, ``_TarParser``, reads the tar format (headers, extended headers, end of archive) for two
consumers:

* ``OuterScanner`` reads an image archive (plain, gzip, bzip2 or xz, by magic) once, entry by entry, cleaning names
  and refusing absolute or ``..`` names, special files, duplicates, escaping links and link cycles.
* ``LayerStream`` is fed a layer's stored bytes: it sniffs the compression, decompresses with bounded output,
  hashes every decompressed byte (the diff ID includes bytes after the tar EOF, as Docker's drain does), forwards the
  bytes to an optional sink and checks the tar the way Docker's apply would fail, without extracting anything.
"""

from __future__ import annotations

import bz2
import enum
import hashlib
import lzma
import os
import posixpath
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from keepdocker.errors import ArchiveLimitError, MalformedArchiveError, UnsafeArchiveError
from keepdocker.images import limits

__all__ = [
    "BLOCK",
    "Compression",
    "Decoder",
    "EntryKind",
    "LayerFacts",
    "LayerStream",
    "OuterEntry",
    "OuterScanner",
    "StreamBudget",
    "quote_name",
    "sniff_compression",
]

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)


def quote_name(name: str) -> str:
    """An entry name quoted for a one-line message (control characters and odd bytes escaped)."""
    return repr(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


# --- compression ----------------------------------------------------------------------------------------------------


class Compression(enum.Enum):
    """How a stream is compressed, decided by magic bytes exactly like Docker's ``DecompressStream``."""

    NONE = "none"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"


_MAGIC_LEN = 6


def sniff_compression(head: bytes) -> Compression:
    """The compression of a stream from its first bytes (anything unrecognised is a plain tar)."""
    if head.startswith(b"\x1f\x8b\x08"):
        return Compression.GZIP
    if head.startswith(b"BZh"):
        return Compression.BZIP2
    if head.startswith(b"\xfd7zXZ\x00"):
        return Compression.XZ
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return Compression.ZSTD
    return Compression.NONE


#: Memory an xz stream may ask for (xz -9 needs about 65 MiB); beyond it the stream is refused as a bomb.
_XZ_MEMLIMIT = 96 * limits.MIB


class _Decoder:
    """Incremental multi-member decompression with output bounded to CHUNK_BYTES per piece."""

    def __init__(self, kind: Compression, where: str) -> None:
        self.kind = kind
        self.where = where
        self._d = self._new()
        self._fed = False  # the current member has received input
        self._xz_padding = 0

    def _new(self) -> zlib._Decompress | bz2.BZ2Decompressor | lzma.LZMADecompressor:
        if self.kind is Compression.GZIP:
            return zlib.decompressobj(31)
        if self.kind is Compression.BZIP2:
            return bz2.BZ2Decompressor()
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decompress ``data``; yields decompressed pieces of at most CHUNK_BYTES."""
        try:
            yield from self._feed(data)
        except lzma.LZMAError as exc:
            if "memory" in str(exc).lower():
                raise ArchiveLimitError(
                    f"{self.where}: xz stream needs more than {_XZ_MEMLIMIT // limits.MIB} MiB to decompress"
                ) from None
            raise MalformedArchiveError(f"{self.where}: invalid xz data ({exc})") from None
        except (zlib.error, OSError, EOFError, ValueError) as exc:
            raise MalformedArchiveError(f"{self.where}: invalid {self.kind.value} data ({exc})") from None

    def _feed(self, data: bytes) -> Iterator[bytes]:
        chunk = limits.CHUNK_BYTES
        while True:
            if self.kind is Compression.XZ and not self._fed and data:
                stripped = data.lstrip(b"\x00")
                self._xz_padding += len(data) - len(stripped)
                data = stripped
            if data:
                self._fed = True
            d = self._d
            if not isinstance(d, bz2.BZ2Decompressor | lzma.LZMADecompressor):
                out = d.decompress(data, chunk)
                more = bool(d.unconsumed_tail) or len(out) == chunk
                data = d.unconsumed_tail
            else:
                if not data and d.needs_input:
                    return
                out = d.decompress(data, chunk)
                data = b""
                more = not d.needs_input
            if out:
                yield out
            if d.eof:
                rest = d.unused_data
                self._d = self._new()
                self._fed = False
                if self.kind is Compression.XZ and rest:
                    if self._xz_padding % 4:
                        raise MalformedArchiveError(f"{self.where}: invalid xz stream padding")
                    self._xz_padding = 0
                data = rest
                if not data:
                    return
                continue
            if not more and not data:
                return

    def finish(self) -> None:
        """Check that the stream ended on a complete member (a truncated stream is refused)."""
        if self._fed and not self._d.eof:
            raise MalformedArchiveError(f"{self.where}: truncated {self.kind.value} stream (unexpected end of data)")
        if self.kind is Compression.XZ and self._xz_padding % 4:
            raise MalformedArchiveError(f"{self.where}: invalid xz stream padding")


#: Public name of the incremental decompressor (registry blobs are decoded with it too).
Decoder = _Decoder


class StreamBudget:
    """Archive-wide counters: decompressed bytes and remembered layer names, against the fixed limits."""

    def __init__(self) -> None:
        self.decompressed = 0
        self.layer_members = 0

    def add_bytes(self, n: int, where: str) -> None:
        """Count decompressed bytes; refuse once the whole archive exceeds MAX_ARCHIVE_BYTES."""
        self.decompressed += n
        if self.decompressed > limits.MAX_ARCHIVE_BYTES:
            raise ArchiveLimitError(
                f"{where}: the archive decompresses to more than {limits.MAX_ARCHIVE_BYTES // limits.GIB} GiB"
            )

    def add_members(self, n: int, where: str) -> None:
        """Count layer entries remembered for hardlink checks."""
        self.layer_members += n
        if self.layer_members > limits.MAX_TOTAL_LAYER_MEMBERS:
            raise ArchiveLimitError(
                f"{where}: the layers hold more than {limits.MAX_TOTAL_LAYER_MEMBERS} entries in total"
            )


def _check_ratio(where: str, produced: int, consumed: int, cap: int) -> None:
    """Refuse decompressed output beyond ``cap`` bytes or beyond MAX_RATIO times the input."""
    if produced > cap:
        raise ArchiveLimitError(f"{where}: decompresses to more than {cap // limits.GIB} GiB")
    if produced > limits.RATIO_FREE_BYTES and produced > limits.MAX_RATIO * max(consumed, 1):
        raise ArchiveLimitError(f"{where}: decompression ratio above {limits.MAX_RATIO}:1 (a decompression bomb?)")


# --- header parsing (Go archive/tar semantics) ---------------------------------------------------------------------


class _BadHeader(Exception):
    """A header block that Go's reader would refuse with ErrHeader."""


def _parse_string(b: bytes) -> bytes:
    nul = b.find(b"\x00")
    return b if nul < 0 else b[:nul]


_OCTAL = frozenset(b"01234567")


def _parse_octal(b: bytes) -> int:
    b = _parse_string(b.strip(b" \x00"))
    if not b:
        return 0
    if not _OCTAL.issuperset(b):
        raise _BadHeader("bad octal number")
    value = int(b, 8)
    if value >= 1 << 64:
        raise _BadHeader("octal number overflows")
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_numeric(b: bytes) -> int:
    if b and b[0] & 0x80:
        inv = 0xFF if b[0] & 0x40 else 0
        x = 0
        for i, c in enumerate(b):
            c ^= inv
            if i == 0:
                c &= 0x7F
            if x >> 56:
                raise _BadHeader("base-256 number overflows")
            x = (x << 8) | c
        if x >> 63:
            raise _BadHeader("base-256 number overflows")
        return ~x if inv else x
    return _parse_octal(b)


@dataclass
class _Header:
    name: bytes
    linkname: bytes
    typeflag: bytes
    size: int


def _parse_header(blk: bytes) -> _Header:
    """Parse one 512-byte header block like Go's ``readHeader`` (no PAX/GNU merging here)."""
    try:
        declared = _parse_octal(blk[148:156])
    except _BadHeader:
        raise _BadHeader("bad checksum field") from None
    # Checksum over the block with the checksum field read as spaces: unsigned or signed sum.
    unsigned = sum(blk[:148]) + 8 * 32 + sum(blk[156:])
    if declared != unsigned:
        high = sum(1 for c in blk[:148] if c >= 128) + sum(1 for c in blk[156:] if c >= 128)
        if declared != unsigned - 256 * high:
            raise _BadHeader("checksum mismatch")
    magic, version, trailer = blk[257:263], blk[263:265], blk[508:512]
    for lo, hi in ((100, 108), (108, 116), (116, 124), (136, 148)):
        _parse_numeric(blk[lo:hi])
    size = _parse_numeric(blk[124:136])
    name = _parse_string(blk[0:100])
    prefix = b""
    if magic == b"ustar\x00" or (magic == b"ustar " and version == b" \x00"):
        _parse_numeric(blk[329:337])
        _parse_numeric(blk[337:345])
        if magic == b"ustar\x00":
            prefix = _parse_string(blk[345:476] if trailer == b"tar\x00" else blk[345:500])
    if prefix:
        name = prefix + b"/" + name
    if size < 0:
        raise _BadHeader("negative size")
    return _Header(name=name, linkname=_parse_string(blk[157:257]), typeflag=blk[156:157], size=size)


_PAX_NUL_FREE = frozenset({b"path", b"linkpath", b"uname", b"gname"})


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    """Parse PAX records ``"%d %s=%s\\n"`` like Go's ``parsePAX``; refuses malformed records."""
    records: dict[bytes, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        space = data.find(b" ", pos, min(end, pos + 21))
        if space <= pos or not data[pos:space].isdigit():
            raise _BadHeader("bad PAX record length")
        n = int(data[pos:space])
        if n <= space - pos or pos + n > end or data[pos + n - 1] != 0x0A:
            raise _BadHeader("bad PAX record")
        key, sep, value = data[space + 1 : pos + n - 1].partition(b"=")
        if not sep or not key or b"\x00" in key or (key in _PAX_NUL_FREE and b"\x00" in value):
            raise _BadHeader("bad PAX record")
        records[key] = value
        pos += n
    for key in (b"size", b"uid", b"gid"):
        if key in records and not records[key].lstrip(b"-+").isdigit():
            raise _BadHeader(f"bad PAX {key.decode()} record")
    for key in (b"mtime", b"atime", b"ctime"):
        if key in records:
            secs, _, frac = records[key].partition(b".")
            if not secs.lstrip(b"-+").isdigit() or (frac and not frac.isdigit()):
                raise _BadHeader(f"bad PAX {key.decode()} record")
    if b"size" in records and int(records[b"size"]) < 0:
        raise _BadHeader("negative PAX size")
    return records


_HEADER_ONLY = frozenset(b"123456")  # link, symlink, char, block, dir, fifo: Go reads no data for these
_META = frozenset(b"xgLK")
_LAYER_TYPES = frozenset(b"0\x00123456")  # what Docker's createTarFile handles (plus 'g', ignored)


def _decode(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def _escapes(cleaned: str) -> bool:
    return cleaned == ".." or cleaned.startswith("../")


# --- layer checking -------------------------------------------------------------------------------------------------


@dataclass
class LayerFacts:
    """What streaming one layer established: diff ID, decompressed size, compression, names for hardlink checks."""

    diff_id: str
    size: int
    compression: Compression
    names: array[int] = field(repr=False)  # sorted hashes of the non-directory entries
    unresolved_links: list[tuple[str, str]] = field(default_factory=list)  # (entry, target) not found in the layer

    def has_name(self, name_hash: int) -> bool:
        """True when this layer holds a non-directory entry whose cleaned name hashes to ``name_hash``."""
        names = self.names
        lo, hi = 0, len(names)
        while lo < hi:
            mid = (lo + hi) // 2
            if names[mid] < name_hash:
                lo = mid + 1
            else:
                hi = mid
        return lo < len(names) and names[lo] == name_hash


def name_hash(cleaned: str) -> int:
    """The in-memory key of a cleaned layer entry name (hardlink targets are compared by it)."""
    return hash(cleaned)


class _Mode(enum.Enum):
    HEADER = 1
    DATA = 2
    SPECIAL = 3
    ZERO1 = 4
    DONE = 5


_Fail = Callable[[str | None, str, type[Exception]], Exception]


class _TarParser:
    """Go's ``archive/tar`` reader as one push state machine, shared by the layer checker and the outer scanner.

    It is fed the tar stream's bytes in pieces of any size: it reads header blocks, collects PAX ``x``/``g`` records
    and GNU ``L``/``K`` long names (capped), stops at two zero blocks, and calls ``on_entry(name, link, typeflag,
    size)`` for every real entry with the PAX/GNU values merged in, as Go's ``Next`` returns it. A PAX global header
    is reported to ``on_global(name)``: Go returns it as an entry of its own. The entry's data (and padding) is then
    skipped in ``feed``; a reader that consumes the data itself (the outer scanner) calls ``data_consumed``
    instead of feeding it. ``need`` tells a pull reader how many bytes the current block or extended header still
    lacks. Errors are made by ``fail(entry name or None, rule, exception class)``.
    """

    def __init__(
        self,
        fail: _Fail,
        on_entry: Callable[[bytes, bytes, bytes, int], None],
        on_global: Callable[[bytes], None] | None = None,
    ) -> None:
        self.fail = fail
        self.on_entry = on_entry
        self.on_global = on_global
        self.mode = _Mode.HEADER
        self.buf = bytearray()
        self.skip = 0  # data + padding bytes still to skip
        self.data_len = 0  # data bytes of the entry reported last (0 for header-only types)
        self.special_type = b""
        self.special_size = 0
        self.special_pad = 0
        self.pax: dict[bytes, bytes] = {}
        self.long_name: bytes | None = None
        self.long_link: bytes | None = None
        self.members = 0

    def feed(self, data: bytes | memoryview) -> None:
        """Consume the next bytes of the tar stream."""
        mv = memoryview(data)
        pos, n = 0, len(mv)
        while pos < n:
            mode = self.mode
            if mode is _Mode.DATA:
                k = min(self.skip, n - pos)
                self.skip -= k
                pos += k
                if not self.skip:
                    self.mode = _Mode.HEADER
            elif mode is _Mode.DONE:
                return
            elif mode is _Mode.SPECIAL:
                want = self.special_size - len(self.buf)
                k = min(want, n - pos)
                self.buf += mv[pos : pos + k]
                pos += k
                if len(self.buf) == self.special_size:
                    self._special_done()
            else:
                if not self.buf and n - pos >= BLOCK:
                    blk = bytes(mv[pos : pos + BLOCK])
                    pos += BLOCK
                else:
                    k = min(BLOCK - len(self.buf), n - pos)
                    self.buf += mv[pos : pos + k]
                    pos += k
                    if len(self.buf) < BLOCK:
                        return
                    blk = bytes(self.buf)
                    self.buf.clear()
                self._block(blk)

    def need(self) -> int:
        """Bytes that complete the current header block, extended header or skip (0 once the stream has ended)."""
        if self.mode is _Mode.DONE:
            return 0
        if self.mode is _Mode.DATA:
            return self.skip
        if self.mode is _Mode.SPECIAL:
            return self.special_size - len(self.buf)
        return BLOCK - len(self.buf)

    def data_consumed(self) -> None:
        """The entry reported last has had its data and padding consumed by the caller, not fed here."""
        self.skip = 0
        self.mode = _Mode.HEADER

    def _block(self, blk: bytes) -> None:
        if blk == _ZERO_BLOCK:
            self.mode = _Mode.DONE if self.mode is _Mode.ZERO1 else _Mode.ZERO1
            return
        if self.mode is _Mode.ZERO1:
            raise self.fail(
                None,
                "invalid tar header: a zero block followed by data (Docker: archive/tar: invalid tar header)",
                MalformedArchiveError,
            )
        try:
            hdr = _parse_header(blk)
        except _BadHeader as exc:
            raise self.fail(
                None, f"invalid tar header ({exc}) after {self.members} entries", MalformedArchiveError
            ) from None
        t = hdr.typeflag
        if t and t[0] in _META:
            if hdr.size > limits.MAX_SPECIAL_BYTES:
                raise self.fail(
                    _decode(hdr.name),
                    f"{'PAX' if t in (b'x', b'g') else 'GNU long-name'} header of {hdr.size} bytes exceeds the "
                    f"{limits.MAX_SPECIAL_BYTES}-byte limit for an extended header",
                    ArchiveLimitError,
                )
            if t == b"g" and self.on_global is not None:
                self.on_global(hdr.name)
            self.special_type = t
            self.special_size = hdr.size
            self.special_pad = -hdr.size % BLOCK
            self.mode = _Mode.SPECIAL
            if hdr.size == 0:
                self._special_done()
            return
        pax, self.pax = self.pax, {}
        raw_name = pax.get(b"path", self.long_name if self.long_name is not None else hdr.name)
        raw_link = pax.get(b"linkpath", self.long_link if self.long_link is not None else hdr.linkname)
        self.long_name = self.long_link = None
        size = int(pax[b"size"]) if b"size" in pax else hdr.size
        t = t or b"\x00"
        self.members += 1
        self.on_entry(raw_name, raw_link, t, size)
        self.data_len = data_len = 0 if t[0] in _HEADER_ONLY else size
        self.skip = data_len + (-data_len % BLOCK)
        self.mode = _Mode.DATA if self.skip else _Mode.HEADER

    def _special_done(self) -> None:
        data = bytes(self.buf)
        self.buf.clear()
        t = self.special_type
        if t in (b"x", b"g"):
            try:
                records = _parse_pax(data)
            except _BadHeader as exc:
                raise self.fail(None, f"invalid tar header ({exc})", MalformedArchiveError) from None
            if t == b"x":
                self.pax = records
        elif t == b"L":
            self.long_name = _parse_string(data)
        else:
            self.long_link = _parse_string(data)
        self.skip = self.special_pad
        self.mode = _Mode.DATA if self.skip else _Mode.HEADER

    def finish(self) -> None:
        """Check the stream ended where Go's reader accepts an end (a truncated entry is refused)."""
        if self.mode is _Mode.DONE:
            return
        if self.buf or self.mode in (_Mode.DATA, _Mode.SPECIAL):
            raise self.fail(
                None, "truncated tar stream (unexpected end of data inside an entry)", MalformedArchiveError
            )


class _LayerChecker:
    """Checks a layer tar stream (fed to its parser) the way Docker's layer store and ``UnpackLayer`` would fail."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.parser = _TarParser(self._fail, self._entry, self._global)
        # Every entry's cleaned name, global headers included: tar-split, which Docker's layer store runs on every
        # layer it registers (legacy and current loads alike), refuses a layer naming one path twice ("duplicates
        # of file paths not supported"), comparing names after Go's filepath.Clean. Kept as 64-bit hashes: a false
        # duplicate needs a collision, about n^2 / 2^65 for n entries (3e-8 at a million).
        self.seen: set[int] = set()
        self.not_files: set[int] = set()  # the directories, whiteouts and global headers among them
        self.unresolved: list[tuple[str, str]] = []

    def _fail(self, entry: str | None, rule: str, exc: type[Exception] = MalformedArchiveError) -> Exception:
        where = f"{self.where} entry {quote_name(entry)}" if entry is not None else self.where
        return exc(f"{where}: {rule}")

    def _global(self, raw_name: bytes) -> None:
        self.not_files.add(self._add_name(posixpath.normpath(_decode(raw_name))))

    def _entry(self, raw_name: bytes, raw_link: bytes, t: bytes, size: int) -> None:
        name = _decode(raw_name)
        if self.parser.members > limits.MAX_LAYER_MEMBERS:
            raise self._fail(name, f"more than {limits.MAX_LAYER_MEMBERS} entries in one layer", ArchiveLimitError)
        if len(raw_name) > limits.MAX_NAME_BYTES or len(raw_link) > limits.MAX_NAME_BYTES:
            raise self._fail(name, f"name or link target longer than {limits.MAX_NAME_BYTES} bytes", ArchiveLimitError)
        if t[0] not in _LAYER_TYPES:
            raise self._fail(name, f"unsupported tar entry type {t!r} (Docker's apply refuses it)")
        if size > limits.MAX_LAYER_BYTES:
            raise self._fail(name, f"declared size {size} exceeds {limits.MAX_LAYER_BYTES} bytes", ArchiveLimitError)
        if name.startswith("/"):
            raise self._fail(
                name, "absolute entry name (refused; Docker would strip the leading '/')", UnsafeArchiveError
            )
        cleaned = posixpath.normpath(name)
        if _escapes(cleaned):
            raise self._fail(name, "entry name escapes the layer root with '..'", UnsafeArchiveError)
        if cleaned == "." and t != b"5":
            raise self._fail(name, "a non-directory entry names the layer root")
        if t == b"1":
            link = _decode(raw_link)
            if link.startswith("/"):
                raise self._fail(name, f"hardlink target {quote_name(link)} is absolute", UnsafeArchiveError)
            target = posixpath.normpath(link)
            if _escapes(target) or target == ".":
                raise self._fail(name, f"hardlink target {quote_name(link)} escapes the layer root", UnsafeArchiveError)
            key = name_hash(target)
            if key not in self.seen or key in self.not_files:
                self.unresolved.append((cleaned, target))
        key = self._add_name(cleaned)
        if t == b"5" or posixpath.basename(cleaned).startswith(".wh."):
            self.not_files.add(key)

    def _add_name(self, cleaned: str) -> int:
        key = name_hash(cleaned)
        if key in self.seen:
            raise self._fail(
                cleaned,
                "the layer names this path twice (after cleaning the names); Docker refuses it: duplicates of file "
                "paths not supported",
            )
        self.seen.add(key)
        return key

    def file_names(self) -> array[int]:
        """Sorted hashes of the non-directory, non-whiteout entries (possible hardlink targets)."""
        return array("q", sorted(self.seen - self.not_files))


class LayerStream:
    """Streams one stored layer: sniff compression, decompress, hash, forward to ``sink`` and check the tar."""

    def __init__(self, where: str, budget: StreamBudget, sink: Callable[[bytes], object] | None = None) -> None:
        self.where = where
        self.budget = budget
        self.sink = sink
        self.head = b""
        self.compression: Compression | None = None
        self.decoder: _Decoder | None = None
        self.hash = hashlib.sha256()
        self.consumed = 0
        self.produced = 0
        self.checker = _LayerChecker(where)
        self.parser = self.checker.parser

    def feed(self, data: bytes) -> None:
        """Consume the next stored bytes of the layer."""
        if not data:
            return
        self.consumed += len(data)
        if self.compression is None:
            self.head += data
            if len(self.head) < _MAGIC_LEN:
                return
            data, self.head = self.head, b""
            self._start(data)
        if self.decoder is None:
            self._out(data)
        else:
            for piece in self.decoder.feed(data):
                self._out(piece)
                _check_ratio(self.where, self.produced, self.consumed, limits.MAX_LAYER_BYTES)

    def _start(self, head: bytes) -> None:
        self.compression = sniff_compression(head)
        if self.compression is Compression.ZSTD:
            raise MalformedArchiveError(f"{self.where}: zstd-compressed layers are not supported by legacy load")
        if self.compression is not Compression.NONE:
            self.decoder = _Decoder(self.compression, self.where)

    def _out(self, data: bytes) -> None:
        self.produced += len(data)
        if self.produced > limits.MAX_LAYER_BYTES:
            raise ArchiveLimitError(f"{self.where}: layer larger than {limits.MAX_LAYER_BYTES // limits.GIB} GiB")
        self.budget.add_bytes(len(data), self.where)
        self.hash.update(data)
        if self.sink is not None:
            self.sink(data)
        self.parser.feed(data)

    def close(self) -> LayerFacts:
        """Finish the stream and return the layer's facts; refuses truncated or invalid data."""
        if self.compression is None:
            head, self.head = self.head, b""
            self._start(head)
            if head:
                if self.decoder is None:
                    self._out(head)
                else:
                    for piece in self.decoder.feed(head):
                        self._out(piece)
        if self.decoder is not None:
            self.decoder.finish()
        self.parser.finish()
        names = self.checker.file_names()
        self.budget.add_members(len(names), self.where)
        self.checker.seen = set()
        self.checker.not_files = set()
        return LayerFacts(
            diff_id="sha256:" + self.hash.hexdigest(),
            size=self.produced,
            compression=self.compression or Compression.NONE,
            names=names,
            unresolved_links=self.checker.unresolved,
        )


# --- outer archive scanning -------------------------------------------------------------------------------------------


class EntryKind(enum.Enum):
    """The kinds of outer-archive entries that are accepted."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"


@dataclass(frozen=True)
class OuterEntry:
    """One accepted outer entry: cleaned name, kind, data size, and for links the root-relative cleaned target."""

    name: str
    kind: EntryKind
    size: int
    link: str | None = None


class _Source:
    """A byte source: the archive itself, or its decompressed stream (gzip/bzip2/xz, by magic).

    ``f`` is any readable binary file object (a local file, a file read from Keep through the SDK); it is read
    forward from its current position. ``pos`` counts the bytes of the tar stream consumed so far: for a plain
    archive that is the offset in ``f`` relative to where reading started.
    """

    def __init__(self, label: str, f: BinaryIO) -> None:
        self.label = label
        self.f = f
        self._seekable = _seekable(f)
        self._base = f.tell() if self._seekable else 0
        self._end: int | None = None
        head = f.read(_MAGIC_LEN)
        self.compression = sniff_compression(head)
        if self.compression is Compression.ZSTD:
            raise MalformedArchiveError(f"{label}: zstd-compressed archives are not supported")
        self.decoder = _Decoder(self.compression, label) if self.compression is not Compression.NONE else None
        self._pieces: Iterator[bytes] | None = None
        self._buf = head  # the sniffed bytes are replayed first (the file need not seek back)
        self._bufpos = 0
        if self.decoder is not None:
            self._buf = b""
            self._pieces = self.decoder.feed(head)
            self.consumed = len(head)
        else:
            self.consumed = 0
        self.produced = 0
        self.pos = 0
        self._eof = False

    def _refill(self) -> bool:
        assert self.decoder is not None
        while True:
            if self._pieces is not None:
                for piece in self._pieces:
                    self.produced += len(piece)
                    _check_ratio(self.label, self.produced, self.consumed, limits.MAX_ARCHIVE_BYTES)
                    self._buf, self._bufpos = piece, 0
                    return True
                self._pieces = None
            if self._eof:
                return False
            raw = self.f.read(limits.CHUNK_BYTES)
            if not raw:
                self._eof = True
                self.decoder.finish()
                return False
            self.consumed += len(raw)
            self._pieces = self.decoder.feed(raw)

    def _read_buffered(self, n: int) -> bytes:
        out: list[bytes] = []
        while n > 0:
            avail = len(self._buf) - self._bufpos
            if not avail:
                if self.decoder is None or not self._refill():
                    break
                continue
            k = min(avail, n)
            out.append(self._buf[self._bufpos : self._bufpos + k])
            self._bufpos += k
            n -= k
        return b"".join(out)

    def _read_file(self, n: int) -> bytes:
        data = self.f.read(n)
        while data and len(data) < n:  # a file object may return short reads before its end
            more = self.f.read(n - len(data))
            if not more:
                break
            data += more
        return data

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the stream)."""
        if self.decoder is not None or self._bufpos < len(self._buf):
            data = self._read_buffered(n)
            if self.decoder is None and len(data) < n:
                data += self._read_file(n - len(data))
        else:
            data = self._read_file(n)
        self.pos += len(data)
        return data

    def skip(self, n: int) -> int:
        """Skip ``n`` bytes; returns how many could be skipped."""
        if self.decoder is None and self._seekable and self._bufpos >= len(self._buf):
            if self._end is None:
                here = self.f.tell()
                self._end = self.f.seek(0, os.SEEK_END)
                self.f.seek(here)
            here = self._base + self.pos
            target = min(here + n, self._end)
            self.f.seek(target)
            self.pos += target - here
            return target - here
        done = 0
        while done < n:
            got = len(self.read(min(limits.CHUNK_BYTES, n - done)))
            if not got:
                break
            done += got
        return done


def _seekable(f: BinaryIO) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class OuterScanner:
    """One sequential pass over an image archive, yielding safe, cleaned entries and building a name index.

    The archive is a path, or any readable binary file object (read forward once from its current position and
    left open; e.g. a file opened from Keep through the SDK); ``label`` names it in messages. Iterate ``entries()``;
    inside the loop the current entry's data may be read with ``read_data`` or ``iter_data``, and ``data_offset``
    is where that data starts in the tar stream (for an uncompressed archive: the byte offset in the file, relative
    to where reading started); unread data is skipped. After the loop, ``index`` maps every cleaned name to its entry
    and ``resolve`` follows links within the archive.
    """

    def __init__(self, source: Path | BinaryIO, label: str | None = None) -> None:
        self.source = source
        self.path: Path | None = source if isinstance(source, Path) else None
        if label is None:
            label = source.name if isinstance(source, Path) else str(getattr(source, "name", "archive"))
        self._label = label
        self.index: dict[str, OuterEntry] = {}
        self._remaining = 0
        self._pad = 0
        self._src: _Source | None = None
        self.compression = Compression.NONE
        self.data_offset = 0
        self.end_offset = 0  # after the pass: tar-stream bytes consumed (through the EOF marker)

    @property
    def label(self) -> str:
        """The archive name used in messages."""
        return self._label

    def _fail(self, name: str | None, rule: str, exc: type[Exception] = MalformedArchiveError) -> Exception:
        where = f"archive entry {quote_name(name)}" if name is not None else f"archive {quote_name(self.label)}"
        return exc(f"{where}: {rule}")

    def entries(self) -> Iterator[OuterEntry]:
        """Yield each accepted entry in archive order, then check links (escape, cycles) over the whole index."""
        f: BinaryIO
        if isinstance(self.source, Path):
            try:
                f = open(self.source, "rb")  # noqa: SIM115 - closed in finally
            except OSError as exc:
                raise MalformedArchiveError(f"cannot open archive {self.source}: {exc.strerror}") from None
            owned = True
        else:
            f, owned = self.source, False
        try:
            src = self._src = _Source(self.label, f)
            self.compression = src.compression
            yield from self._scan(src)
            self.end_offset = src.pos
        finally:
            self._src = None
            if owned:
                f.close()
        self._check_links()

    def _scan(self, src: _Source) -> Iterator[OuterEntry]:
        found: list[OuterEntry | None] = []

        def on_entry(raw_name: bytes, raw_link: bytes, t: bytes, size: int) -> None:
            found.append(self._accept(raw_name, raw_link, t, size, parser.members))

        parser = _TarParser(self._fail, on_entry)
        while True:
            if found:  # an entry's header was just parsed: its data is read by the consumer or skipped here
                entry = found.pop()
                self._remaining = parser.data_len
                self._pad = parser.skip - parser.data_len if parser.mode is _Mode.DATA else 0
                self.data_offset = src.pos
                if entry is not None:
                    yield entry
                if self._remaining and src.skip(self._remaining) < self._remaining:
                    raise self._fail(entry.name if entry else None, "truncated tar stream (entry data cut short)")
                if self._pad and src.skip(self._pad) < self._pad:
                    raise self._fail(entry.name if entry else None, "truncated tar stream (padding cut short)")
                self._remaining = self._pad = 0
                parser.data_consumed()
            need = parser.need()
            if not need:
                # Bytes after the EOF marker are ignored, as Docker's Untar does; but Docker copies the whole
                # decompressed stream to its unpacker, so the compressed stream must still end cleanly: padding
                # or garbage after a gzip or bzip2 member, or xz padding not a multiple of 4, fails its load.
                if src.decoder is not None:
                    while src.skip(limits.CHUNK_BYTES):
                        pass
                return
            chunk = src.read(need)
            if not chunk:
                parser.finish()
                return
            parser.feed(chunk)

    def _accept(self, raw_name: bytes, raw_link: bytes, t: bytes, size: int, members: int) -> OuterEntry | None:
        name = _decode(raw_name)
        if members > limits.MAX_OUTER_MEMBERS:
            raise self._fail(name, f"more than {limits.MAX_OUTER_MEMBERS} entries in the archive", ArchiveLimitError)
        if len(raw_name) > limits.MAX_NAME_BYTES or len(raw_link) > limits.MAX_NAME_BYTES:
            raise self._fail(name, f"name or link target longer than {limits.MAX_NAME_BYTES} bytes", ArchiveLimitError)
        if name.startswith("/"):
            raise self._fail(
                name, "absolute entry name (Docker would clamp it into the archive; refused)", UnsafeArchiveError
            )
        if ".." in name.split("/"):
            raise self._fail(
                name, "entry name contains '..' (Docker would clamp it into the archive; refused)", UnsafeArchiveError
            )
        if "\x00" in name or not name:
            raise self._fail(name, "empty entry name")
        kinds = {
            b"0": EntryKind.FILE,
            b"\x00": EntryKind.FILE,
            b"5": EntryKind.DIR,
            b"2": EntryKind.SYMLINK,
            b"1": EntryKind.HARDLINK,
        }
        kind = kinds.get(t)
        if kind is None:
            what = {b"3": "character device", b"4": "block device", b"6": "FIFO"}.get(t, f"type {t!r}")
            raise self._fail(name, f"{what} entries are not allowed in an image archive", UnsafeArchiveError)
        if size > limits.MAX_ARCHIVE_BYTES:
            raise self._fail(name, f"declared size {size} exceeds the archive limit", ArchiveLimitError)
        cleaned = posixpath.normpath(name)
        if cleaned == ".":
            if kind is EntryKind.DIR:
                return None
            raise self._fail(name, "a non-directory entry names the archive root")
        link: str | None = None
        if kind in (EntryKind.SYMLINK, EntryKind.HARDLINK):
            target = _decode(raw_link)
            if not target:
                raise self._fail(name, "link with an empty target")
            if target.startswith("/"):
                raise self._fail(name, f"link target {quote_name(target)} is absolute", UnsafeArchiveError)
            base = posixpath.dirname(cleaned) if kind is EntryKind.SYMLINK else ""
            link = posixpath.normpath(posixpath.join(base, target))
            if _escapes(link) or link == ".":
                raise self._fail(name, f"link target {quote_name(target)} leaves the archive root", UnsafeArchiveError)
            if kind is EntryKind.HARDLINK:
                prior = self.index.get(link)
                if prior is None or prior.kind is EntryKind.DIR:
                    raise self._fail(name, f"hardlink target {quote_name(target)} is not an earlier file entry")
        if cleaned in self.index:
            raise self._fail(name, "duplicate entry (another entry has the same cleaned name)", UnsafeArchiveError)
        entry = OuterEntry(name=cleaned, kind=kind, size=size if kind is EntryKind.FILE else 0, link=link)
        self.index[cleaned] = entry
        return entry

    def iter_data(self) -> Iterator[bytes]:
        """The current entry's data in pieces of at most CHUNK_BYTES."""
        src = self._src
        assert src is not None
        while self._remaining:
            piece = src.read(min(limits.CHUNK_BYTES, self._remaining))
            if not piece:
                raise self._fail(None, "truncated tar stream (entry data cut short)")
            self._remaining -= len(piece)
            yield piece

    def read_data(self, cap: int, name: str) -> bytes:
        """The current entry's whole data, refused with ArchiveLimitError beyond ``cap`` bytes."""
        if self._remaining > cap:
            raise self._fail(
                name, f"{self._remaining} bytes exceeds the {cap}-byte limit for this file", ArchiveLimitError
            )
        return b"".join(self.iter_data())

    def resolve(self, name: str) -> OuterEntry | None:
        """Follow links from ``name`` to a non-link entry (None when absent); refuses cycles and long chains."""
        seen: list[str] = []
        entry = self.index.get(name)
        while entry is not None and entry.link is not None:
            if entry.name in seen:
                raise self._fail(seen[0], "link cycle: " + " -> ".join([*seen, entry.name]), UnsafeArchiveError)
            seen.append(entry.name)
            if len(seen) > limits.MAX_LINK_HOPS:
                raise self._fail(seen[0], f"more than {limits.MAX_LINK_HOPS} link hops", ArchiveLimitError)
            entry = self.index.get(entry.link)
        return entry

    def _check_links(self) -> None:
        """Refuse link cycles and entries placed under a non-directory anywhere in the archive."""
        for entry in self.index.values():
            if entry.link is not None:
                self.resolve(entry.name)
            parent = posixpath.dirname(entry.name)
            while parent:
                above = self.index.get(parent)
                if above is not None and above.kind is not EntryKind.DIR:
                    raise self._fail(entry.name, f"lies under {quote_name(parent)}, which is not a directory")
                parent = posixpath.dirname(parent)
