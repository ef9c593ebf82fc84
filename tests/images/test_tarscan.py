"""The streaming tar layer: Go-compatible header parsing, compression sniffing, diff IDs and layer checks."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keepdocker.errors import ArchiveLimitError, MalformedArchiveError
from keepdocker.images import limits
from keepdocker.images.docker_archive import tar_header
from keepdocker.images.tarscan import (
    Compression,
    EntryKind,
    LayerStream,
    OuterScanner,
    StreamBudget,
    _parse_header,
    name_hash,
    sniff_compression,
)
from keepdocker.testing.v1archives import (
    compress,
    gzip_bomb,
    layer_tar,
    pax_records,
    tar_end,
    tar_member,
)
from keepdocker.testing.v1archives import tar_header as raw_header

EMPTY_SHA = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
ZEROS_10240_SHA = "sha256:" + hashlib.sha256(bytes(10240)).hexdigest()


def stream(data: bytes, piece: int = 1 << 20) -> LayerStream:
    """A closed LayerStream fed ``data`` in pieces of ``piece`` bytes."""
    s = LayerStream("layer 'x'", StreamBudget())
    for i in range(0, len(data), piece):
        s.feed(data[i : i + piece])
    return s


def python_tar(fmt: int, names: list[str]) -> bytes:
    """A tar written by Python's tarfile in ``fmt``, one small file per name (a known-good third-party writer)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_third_party_tar_formats_are_read(fmt: int) -> None:
    """USTAR, GNU (long names via 'L') and PAX archives written by tarfile check out with their diff ID."""
    long = "d/" + "n" * 150 if fmt != tarfile.USTAR_FORMAT else "d/short"
    data = python_tar(fmt, ["a", long])
    facts = stream(data).close()
    assert facts.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert facts.size == len(data)
    assert len(facts.names) == 2


def test_layer_diff_id_is_independent_of_compression() -> None:
    """gzip, bzip2 and xz layers hash to the diff ID of their decompressed bytes, like Docker's DecompressStream."""
    raw = layer_tar(random.Random(1))
    want = "sha256:" + hashlib.sha256(raw).hexdigest()
    for how in ("none", "gzip", "bzip2", "xz"):
        facts = stream(compress(raw, how), piece=77).close()
        assert (facts.diff_id, facts.compression.value) == (want, how)


def test_concatenated_gzip_members_are_one_stream() -> None:
    """A multi-member gzip layer decompresses to the concatenation (Go's gzip reader is multistream)."""
    raw = layer_tar(random.Random(2))
    data = compress(raw[:1024], "gzip") + compress(raw[1024:], "gzip")
    assert stream(data).close().diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_trailing_bytes_after_tar_eof_count_in_diff_id() -> None:
    """Bytes after the two zero blocks are hashed (Docker drains them into the digest) but not parsed."""
    data = layer_tar(random.Random(3)) + b"trailing garbage that is not a tar header"
    assert stream(data).close().diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


def test_empty_layers_have_docker_diff_ids() -> None:
    """A 0-byte layer and 10240 zero bytes are valid empty layers with Docker's known diff IDs."""
    assert stream(b"").close().diff_id == EMPTY_SHA
    assert stream(bytes(10240)).close().diff_id == ZEROS_10240_SHA


def test_short_layer_is_refused() -> None:
    """A layer shorter than one header block is a truncated tar (Go: unexpected EOF)."""
    with pytest.raises(MalformedArchiveError, match="truncated"):
        stream(b"abc").close()


def test_trailing_garbage_after_gzip_is_refused() -> None:
    """Non-gzip bytes after a gzip member are refused, as Go's multistream reader fails on them."""
    with pytest.raises(MalformedArchiveError, match="gzip"):
        stream(compress(tar_end(), "gzip") + b"junk-after").close()


def test_zstd_is_sniffed() -> None:
    """The zstd magic is recognised (and refused by the layer reader with a clear message)."""
    assert sniff_compression(b"\x28\xb5\x2f\xfd\x00\x00") is Compression.ZSTD
    assert sniff_compression(b"\x1f\x8b\x09") is Compression.NONE


def test_signed_checksum_and_base256_size_are_accepted() -> None:
    """Go accepts a signed-sum checksum and base-256 sizes; so does our parser."""
    h = bytearray(tar_member("é-name", b"xy")[:512])
    h[148:156] = b" " * 8
    signed = sum(b if b < 128 else b - 256 for b in h)
    h[148:156] = b"%06o\x00 " % signed
    assert _parse_header(bytes(h)).size == 2
    big = tar_header("big/layer.tar", 9 << 30)
    assert _parse_header(big).size == 9 << 30
    info = tarfile.TarInfo.frombuf(big, "utf-8", "surrogateescape")
    assert info.size == 9 << 30


def test_gzip_bomb_hits_the_layer_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gzip layer inflating past MAX_LAYER_BYTES is refused with ArchiveLimitError, in bounded memory."""
    monkeypatch.setattr(limits, "MAX_LAYER_BYTES", 8 << 20)
    with pytest.raises(ArchiveLimitError, match="layer"):
        stream(gzip_bomb(32 << 20)).close()


@settings(max_examples=40, deadline=None)
@given(piece=st.integers(min_value=1, max_value=700), seed=st.integers(0, 1000), how=st.sampled_from(["none", "gzip"]))
def test_feeding_granularity_does_not_matter(piece: int, seed: int, how: str) -> None:
    """Any split of the stored bytes into pieces yields the same facts as one whole feed."""
    data = compress(layer_tar(random.Random(seed)), how)
    whole, split = stream(data).close(), stream(data, piece).close()
    assert (split.diff_id, split.size, list(split.names)) == (whole.diff_id, whole.size, list(whole.names))


def test_outer_scanner_cleans_names_and_indexes_links(tmp_path: Path) -> None:
    """Outer entries come out with cleaned names; symlinks resolve within the archive."""
    data = (
        tar_member("./a/", typeflag=b"5")
        + tar_member("./a//json", b"{}")
        + tar_member("b/layer.tar", typeflag=b"2", linkname="../a/json")
        + tar_end()
    )
    path = tmp_path / "x.tar"
    path.write_bytes(compress(data, "xz"))
    scanner = OuterScanner(path)
    names = [(e.name, e.kind) for e in scanner.entries()]
    assert names == [("a", EntryKind.DIR), ("a/json", EntryKind.FILE), ("b/layer.tar", EntryKind.SYMLINK)]
    resolved = scanner.resolve("b/layer.tar")
    assert resolved is not None and resolved.name == "a/json"
    assert scanner.compression is Compression.XZ


class _Trickle(io.RawIOBase):
    """A non-seekable reader returning at most 700 bytes per call (like a socket)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), 700, len(self.data) - self.pos)
        b[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


@pytest.mark.parametrize("kind", ["seekable", "trickle", "xz"])
def test_outer_scanner_reads_file_objects_and_reports_data_offsets(kind: str) -> None:
    """A file object (seekable at an offset, short-reading and unseekable, or compressed) scans like a path, and
    ``data_offset`` points at each entry's data in the tar stream."""
    data = tar_member("a/json", b"{}") + tar_member("a/layer.tar", b"x" * 1500) + tar_member("b", b"yz") + tar_end()
    source: io.IOBase
    if kind == "seekable":
        source = io.BytesIO(b"PREFIX" + data)
        source.seek(6)
    elif kind == "trickle":
        source = _Trickle(data)
    else:
        source = io.BytesIO(compress(data, "xz"))
    scanner = OuterScanner(source, label="from-keep.tar")  # type: ignore[arg-type]
    seen = {}
    for entry in scanner.entries():
        seen[entry.name] = (scanner.data_offset, b"".join(scanner.iter_data()) if entry.name == "b" else b"")
    assert scanner.label == "from-keep.tar"
    assert seen["a/json"][0] == 512
    assert seen["a/layer.tar"][0] == 512 * 3
    assert seen["b"] == (512 * 3 + 1536 + 512, b"yz")
    assert data[seen["a/layer.tar"][0] : seen["a/layer.tar"][0] + 1500] == b"x" * 1500
    assert scanner.end_offset == len(data)
    assert scanner.compression is (Compression.XZ if kind == "xz" else Compression.NONE)
    assert not source.closed  # the caller's file object is left open


@pytest.mark.parametrize(
    "members",
    [
        [("a", b"0"), ("a", b"0")],
        [("d/", b"5"), ("./d", b"5")],
        [("a", b"0"), ("./a", b"0")],
        [("x/", b"5"), ("x/../a", b"0"), ("a", b"0")],
        [("./", b"5"), (".", b"5")],
        [(".wh.a", b"0"), (".wh.a", b"0")],
        [("a", b"0"), ("h", b"1"), ("h", b"1")],
    ],
    ids=["file", "dir-dotslash", "file-dotslash", "dotdot", "root", "whiteout", "hardlink"],
)
def test_layer_naming_a_path_twice_is_refused(members: list[tuple[str, bytes]]) -> None:
    """Two entries with one cleaned name are refused, whatever their types (tar-split: duplicates of file paths)."""
    data = b"".join(tar_member(n, b"x" if t == b"0" else b"", typeflag=t, linkname="a") for n, t in members)
    with pytest.raises(MalformedArchiveError, match="names this path twice"):
        stream(data + tar_end(), piece=100).close()


def test_global_headers_count_as_entries_and_extended_headers_do_not() -> None:
    """A PAX global header is an entry of its own name; the name of an 'x' header block is not an entry."""
    body = pax_records({"comment": "x"})
    block = raw_header("a", len(body), typeflag=b"x") + body + bytes(-len(body) % 512)
    facts = stream(block + tar_member("b", b"1") + tar_member("a", b"2") + tar_end()).close()
    assert facts.has_name(name_hash("a")) and facts.has_name(name_hash("b"))
    with pytest.raises(MalformedArchiveError, match="names this path twice"):
        stream(_global("a") + tar_member("a") + tar_end()).close()


def _global(name: str) -> bytes:
    body = pax_records({"comment": "x"})
    return raw_header(name, len(body), typeflag=b"g") + body + bytes(-len(body) % 512)


def test_hardlink_targets_exclude_directories_and_whiteouts() -> None:
    """Only non-directory, non-whiteout entries are hardlink targets (the names kept for parent layers too)."""
    data = (
        tar_member("d/", typeflag=b"5")
        + tar_member(".wh.x")
        + tar_member("f", b"1")
        + tar_member("h", typeflag=b"1", linkname="d")
    )
    facts = stream(data + tar_end()).close()
    assert facts.unresolved_links == [("h", "d")]
    assert facts.has_name(name_hash("f")) and facts.has_name(name_hash("h"))
    assert not facts.has_name(name_hash("d")) and not facts.has_name(name_hash(".wh.x"))


@pytest.mark.parametrize(
    ("tail", "how", "accepted"),
    [
        (bytes(1024), "gzip", False),
        (b"garbage!", "gzip", False),
        (compress(b"more", "gzip"), "gzip", True),
        (bytes(64), "bzip2", False),
        (compress(b"more", "bzip2"), "bzip2", True),
        (bytes(3), "xz", False),
        (bytes(8), "xz", True),
        (b"junk", "xz", False),
    ],
)
def test_outer_compressed_stream_must_end_cleanly(tmp_path: Path, tail: bytes, how: str, accepted: bool) -> None:
    """Bytes after the last compressed member of an outer archive are read and refused as Docker's load does."""
    path = tmp_path / "a.tar"
    path.write_bytes(compress(tar_member("f", b"1") + tar_end() + bytes(8192), how) + tail)
    scanner = OuterScanner(path)
    if accepted:
        assert [e.name for e in scanner.entries()] == ["f"]
    else:
        with pytest.raises(MalformedArchiveError):
            list(scanner.entries())


def test_plain_outer_archive_ignores_bytes_after_the_end_marker(tmp_path: Path) -> None:
    """An uncompressed archive's bytes after its end-of-archive marker are ignored, as Docker's untar does."""
    path = tmp_path / "a.tar"
    path.write_bytes(tar_member("f", b"1") + tar_end() + b"garbage!" * 100)
    assert [e.name for e in OuterScanner(path).entries()] == ["f"]
