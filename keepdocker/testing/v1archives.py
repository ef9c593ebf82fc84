"""Seeded generators of small v1 (docker save <= 1.9) archives, builders for every archive attack, and a fuzz driver.

In the shape of go-containerregistry's ``pkg/v1/random``: ``random_v1_archive(seed, ...)`` makes a believable archive
(Docker 1.9-style layer jsons, some with pre-1.8.3 ``docker_version`` to take the fallback path; plain, gzip, bzip2
or xz layers; 0-byte layers; identical layers stored as a symlink to another ``layer.tar``; branches with several
leaves; optional ``repositories``; optional outer compression). ``ATTACKS`` maps a name to a builder of a hostile or
broken archive and the error class it must raise. ``run_fuzz(count, seed)`` mutates generated archives and checks
that upgrading them ends only in success or the project's own errors (for a long run from a script or benchmark).

Every archive is built in memory with our own tar writer (``tar_member``), because attacks need headers Python's
``tarfile`` refuses to write. The large-archive writer for benchmarks streams to disk instead.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import random
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from keepdocker.errors import (
    ArchiveError,
    ArchiveLimitError,
    KeepdockerError,
    MalformedArchiveError,
    UnsafeArchiveError,
)

__all__ = [
    "ATTACKS",
    "Attack",
    "FuzzReport",
    "GeneratedV1",
    "V1Builder",
    "compress",
    "layer_json",
    "layer_tar",
    "mutate",
    "pax_records",
    "random_v1_archive",
    "run_fuzz",
    "tar_member",
    "write_large_v1_archive",
]

BLOCK = 512
COMPRESSIONS = ("none", "gzip", "bzip2", "xz")


# --- raw tar writing -------------------------------------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\x00" % (width - 1, value)


def tar_header(
    name: bytes | str,
    size: int = 0,
    *,
    typeflag: bytes = b"0",
    linkname: bytes | str = b"",
    mode: int = 0o644,
    mtime: int = 1_400_000_000,
    size_field: bytes | None = None,
    magic: bytes = b"ustar\x0000",
    checksum: bytes | None = None,
) -> bytes:
    """One 512-byte header; ``size_field``/``checksum`` override the encoded bytes (for attacks)."""
    raw_name = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
    raw_link = linkname.encode("utf-8", "surrogateescape") if isinstance(linkname, str) else linkname
    h = bytearray(BLOCK)
    h[0 : min(100, len(raw_name))] = raw_name[:100]
    h[100:108] = _octal(mode, 8)
    h[108:116] = _octal(0, 8)
    h[116:124] = _octal(0, 8)
    h[124:136] = size_field if size_field is not None else _octal(size, 12)
    h[136:148] = _octal(mtime, 12)
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[157 : 157 + min(100, len(raw_link))] = raw_link[:100]
    h[257:265] = magic
    h[148:156] = checksum if checksum is not None else b"%06o\x00 " % sum(h)
    return bytes(h)


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def pax_records(records: dict[str, str]) -> bytes:
    """The body of a PAX extended header holding ``records``."""
    body = b""
    for key, value in records.items():
        rec = f" {key}={value}\n".encode("utf-8", "surrogateescape")
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n += 1
        body += str(n).encode() + rec
    return body


def tar_member(
    name: str,
    data: bytes = b"",
    *,
    typeflag: bytes = b"0",
    linkname: str = "",
    mode: int | None = None,
) -> bytes:
    """Header (+ PAX header for long names) + padded data for one member."""
    if mode is None:
        mode = 0o755 if typeflag == b"5" else 0o644
    out = b""
    raw_name = name.encode("utf-8", "surrogateescape")
    if len(raw_name) > 100 or len(linkname.encode("utf-8", "surrogateescape")) > 100:
        records = {"path": name}
        if linkname:
            records["linkpath"] = linkname
        body = pax_records(records)
        out += tar_header("PaxHeaders/x", len(body), typeflag=b"x") + _pad(body)
    size = len(data) if typeflag in (b"0", b"\x00", b"7") else 0
    out += tar_header(name, size, typeflag=typeflag, linkname=linkname, mode=mode) + _pad(data if size else b"")
    return out


def tar_end() -> bytes:
    """The end-of-archive marker."""
    return bytes(2 * BLOCK)


def compress(data: bytes, how: str) -> bytes:
    """``data`` compressed with ``none``, ``gzip``, ``bzip2`` or ``xz`` (deterministic: gzip mtime 0)."""
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "bzip2":
        return bz2.compress(data)
    if how == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ)
    return data


# --- layers and jsons ------------------------------------------------------------------------------------------------


def layer_tar(rng: random.Random, files: int = 3, max_size: int = 2048, tag: str = "") -> bytes:
    """A small valid layer: a directory, random files, a symlink and a hardlink to an earlier file."""
    out = tar_member("./", typeflag=b"5") + tar_member(f"data{tag}/", typeflag=b"5")
    first = ""
    for i in range(files):
        name = f"data{tag}/f{i}-{rng.randrange(1 << 30):x}.bin"
        first = first or name
        out += tar_member(name, rng.randbytes(rng.randrange(max_size + 1)))
    if first:
        out += tar_member(f"data{tag}/link", typeflag=b"2", linkname="../etc/passwd")
        out += tar_member(f"data{tag}/hard", typeflag=b"1", linkname=first)
    return out + tar_end()


_VERSIONS = ("1.9.1", "1.9.1", "1.8.3", "1.8.2", "1.6.2", "0.4.0")


def layer_json(
    rng: random.Random, v1_id: str, parent: str | None, *, docker_version: str | None = None, created: str | None = None
) -> bytes:
    """A Docker 1.9-style layer json (``json.Marshal`` of the 1.9 image struct)."""
    if created is None:
        created = f"2015-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:0" + (
            f"{rng.randint(0, 9)}.{rng.randrange(10**9):09d}Z"
        )
    version = docker_version if docker_version is not None else rng.choice(_VERSIONS)
    cmd = ["/bin/sh", "-c", f"#(nop) ADD file:{rng.randrange(1 << 64):016x} in /"]
    container_config = {
        "Hostname": f"{rng.randrange(1 << 48):012x}",
        "Domainname": "",
        "User": "",
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": cmd,
        "Image": parent or "",
        "Volumes": None,
        "WorkingDir": "",
        "Entrypoint": None,
        "OnBuild": None,
        "Labels": {},
    }
    doc: dict[str, object] = {"id": v1_id}
    if parent:
        doc["parent"] = parent
    doc.update(
        {
            "created": created,
            "container": f"{rng.randrange(1 << 256):064x}",
            "container_config": container_config,
            "docker_version": version,
            "config": {**container_config, "Cmd": ["/bin/sh"], "Hostname": ""},
            "architecture": "amd64",
            "os": "linux",
            "Size": rng.randrange(1 << 20),
        }
    )
    if rng.random() < 0.3:
        doc["author"] = "Generator <gen@example.com> & co"
    return json.dumps(doc, separators=(",", ":")).encode()


def v1_id(rng: random.Random) -> str:
    """A random v1 layer ID (64 hex digits)."""
    return f"{rng.randrange(1 << 256):064x}"


# --- archive builder -------------------------------------------------------------------------------------------------


class V1Builder:
    """Accumulates outer-archive members; ``layer`` adds a v1 layer directory the way docker save <= 1.9 does."""

    def __init__(self) -> None:
        self.members: list[bytes] = []

    def add(self, member: bytes) -> V1Builder:
        """Append raw member bytes (header(s) + data)."""
        self.members.append(member)
        return self

    def file(self, name: str, data: bytes) -> V1Builder:
        """Append a regular file."""
        return self.add(tar_member(name, data))

    def dir(self, name: str) -> V1Builder:
        """Append a directory."""
        return self.add(tar_member(name.rstrip("/") + "/", typeflag=b"5"))

    def symlink(self, name: str, target: str) -> V1Builder:
        """Append a symlink."""
        return self.add(tar_member(name, typeflag=b"2", linkname=target))

    def layer(self, v1: str, json_bytes: bytes, layer: bytes | None, *, link_to: str | None = None) -> V1Builder:
        """Append ``<v1>/``, ``VERSION``, ``json`` and ``layer.tar`` (or a symlink to another layer.tar)."""
        self.dir(v1).file(f"{v1}/VERSION", b"1.0").file(f"{v1}/json", json_bytes)
        if link_to is not None:
            return self.symlink(f"{v1}/layer.tar", f"../{link_to}/layer.tar")
        return self.file(f"{v1}/layer.tar", layer or b"")

    def repositories(self, repos: object) -> V1Builder:
        """Append a repositories file (``json.NewEncoder`` style)."""
        return self.file("repositories", json.dumps(repos, separators=(",", ":")).encode() + b"\n")

    def build(self, outer: str = "none", *, end: bool = True) -> bytes:
        """The archive bytes, optionally compressed as a whole."""
        return compress(b"".join(self.members) + (tar_end() if end else b""), outer)


@dataclass(frozen=True)
class GeneratedV1:
    """A generated v1 archive and what it should contain."""

    data: bytes
    chains: dict[str, str | None]  # v1 ID -> parent v1 ID
    leaves: tuple[str, ...]
    tags: dict[str, tuple[str, ...]]  # v1 ID -> tags in repositories (empty without a repositories file)
    layer_compression: dict[str, str] = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        """Write the archive bytes to ``path``."""
        path.write_bytes(self.data)
        return path


def random_v1_archive(
    seed: int,
    *,
    layers: int | None = None,
    leaves: int = 1,
    compressions: tuple[str, ...] = COMPRESSIONS,
    outer: str = "none",
    repositories: bool | None = None,
    empty_layers: bool = True,
    symlinks: bool = True,
    files: int = 3,
    max_file_size: int = 2048,
) -> GeneratedV1:
    """A believable v1 archive from ``seed``: ``layers`` layers in a chain, with ``leaves - 1`` extra branches.

    ``repositories`` None picks at random; when present, every leaf gets a tag ``gen/seed<seed>:leaf<i>``.
    """
    rng = random.Random(seed)
    n = layers if layers is not None else rng.randint(1, 5)
    chain: dict[str, str | None] = {}
    order: list[str] = []
    parent: str | None = None
    for _ in range(n):
        vid = v1_id(rng)
        chain[vid] = parent
        order.append(vid)
        parent = vid
    tips = [order[-1]]
    trunk = order[:-1]
    for _ in range(leaves - 1):
        vid = v1_id(rng)
        chain[vid] = rng.choice(trunk) if trunk else None
        order.append(vid)
        tips.append(vid)
    builder = V1Builder()
    seen: dict[bytes, str] = {}
    kinds: dict[str, str] = {}
    for vid in sorted(order):  # docker save writes directories in name order
        roll = rng.random()
        if empty_layers and roll < 0.15:
            data = b""
        elif empty_layers and roll < 0.25:
            data = bytes(10240)
        else:
            data = layer_tar(rng, files=rng.randint(0, files), max_size=max_file_size)
        how = rng.choice(compressions) if data else "none"
        stored = compress(data, how)
        kinds[vid] = how
        link = seen.get(stored) if symlinks else None
        builder.layer(vid, layer_json(rng, vid, chain[vid]), stored, link_to=link)
        if link is None:
            seen.setdefault(stored, vid)
    with_repos = rng.random() < 0.5 if repositories is None else repositories
    tags: dict[str, tuple[str, ...]] = {}
    if with_repos:
        repos: dict[str, dict[str, str]] = {}
        for i, tip in enumerate(tips):
            repos.setdefault(f"gen/seed{seed}", {})[f"leaf{i}"] = tip
            tags[tip] = (f"gen/seed{seed}:leaf{i}",)
        builder.repositories(repos)
    return GeneratedV1(builder.build(outer), chain, tuple(sorted(tips)), tags, kinds)


def write_large_v1_archive(path: Path, total_bytes: int, *, layers: int = 2, seed: int = 0) -> list[str]:
    """Stream a v1 archive of about ``total_bytes`` with ``layers`` uncompressed layers, each one big random file.

    Returns the v1 IDs (base first). Memory stays at one 1 MiB chunk whatever the size.
    """
    rng = random.Random(seed)
    per_layer = max(total_bytes // layers, BLOCK)
    ids = [v1_id(rng) for _ in range(layers)]
    chunk = rng.randbytes(1 << 20)
    with open(path, "wb") as f:
        parent: str | None = None
        for i, vid in enumerate(ids):
            payload = per_layer - 3 * BLOCK
            layer_size = BLOCK + payload + (-payload % BLOCK) + 2 * BLOCK
            f.write(tar_member(f"{vid}/", typeflag=b"5"))
            f.write(tar_member(f"{vid}/VERSION", b"1.0"))
            f.write(tar_member(f"{vid}/json", layer_json(rng, vid, parent, docker_version="1.9.1")))
            f.write(tar_header(f"{vid}/layer.tar", layer_size))
            f.write(tar_header(f"big{i}.bin", payload))
            left = payload
            counter = 0
            while left:
                piece = chunk[: min(len(chunk), left)]
                # vary the content per chunk so no two chunks (or layers) are identical
                piece = hashlib.sha256(b"%d:%d" % (i, counter)).digest() + piece[32:]
                f.write(piece)
                left -= len(piece)
                counter += 1
            f.write(bytes(-payload % BLOCK) + tar_end())
            f.write(bytes(-layer_size % BLOCK))
            parent = vid
        f.write(tar_member("repositories", json.dumps({"bench/big": {"latest": ids[-1]}}).encode() + b"\n"))
        f.write(tar_end())
    return ids


# --- attacks ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    """A hostile or broken archive and how it must be refused."""

    data: bytes
    error: type[ArchiveError]
    rule: str  # a fragment the error message must contain


_A = "a" * 64
_B = "b" * 64
_C = "c" * 64


def _simple(layer: bytes | None = None, json_a: bytes | None = None) -> V1Builder:
    rng = random.Random(7)
    b = V1Builder()
    b.layer(_A, json_a if json_a is not None else layer_json(rng, _A, None), layer if layer is not None else tar_end())
    return b


def _json(parent: str | None = None, **extra: object) -> bytes:
    doc: dict[str, object] = {"id": "x", "created": "2015-01-01T00:00:00Z", "docker_version": "1.9.1"}
    if parent is not None:
        doc["parent"] = parent
    doc.update(extra)
    return json.dumps(doc).encode()


def gzip_bomb(decompressed: int) -> bytes:
    """A gzip stream of ``decompressed`` zero bytes after a valid tar header (about 1000:1)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(tar_header("zeros", decompressed))
        zeros = bytes(1 << 20)
        left = decompressed
        while left:
            gz.write(zeros[: min(len(zeros), left)])
            left -= min(len(zeros), left)
    return out.getvalue()


def _bz2_bomb(decompressed: int) -> bytes:
    comp = bz2.BZ2Compressor(9)
    parts = [comp.compress(tar_header("zeros", decompressed))]
    zeros = bytes(1 << 20)
    left = decompressed
    while left:
        parts.append(comp.compress(zeros[: min(len(zeros), left)]))
        left -= min(len(zeros), left)
    parts.append(comp.flush())
    return b"".join(parts)


def _attacks() -> dict[str, Callable[[], Attack]]:
    rng = random.Random(11)
    good_layer = layer_tar(rng)
    ja = _json()
    return {
        "outer_dotdot_name": lambda: Attack(_simple().file("../../etc/evil", b"x").build(), UnsafeArchiveError, "'..'"),
        "outer_nested_dotdot_name": lambda: Attack(
            _simple().file(f"{_A}/../../evil", b"x").build(), UnsafeArchiveError, "'..'"
        ),
        "outer_absolute_name": lambda: Attack(
            _simple().file("/etc/evil", b"x").build(), UnsafeArchiveError, "absolute"
        ),
        "outer_symlink_escape": lambda: Attack(
            V1Builder().dir(_A).file(f"{_A}/json", ja).symlink(f"{_A}/layer.tar", "../../../etc/passwd").build(),
            UnsafeArchiveError,
            "leaves the archive root",
        ),
        "outer_symlink_absolute": lambda: Attack(
            V1Builder().dir(_A).file(f"{_A}/json", ja).symlink(f"{_A}/layer.tar", "/etc/passwd").build(),
            UnsafeArchiveError,
            "absolute",
        ),
        "outer_symlink_cycle": lambda: Attack(
            V1Builder()
            .dir(_A)
            .file(f"{_A}/json", ja)
            .symlink(f"{_A}/layer.tar", f"../{_B}/layer.tar")
            .dir(_B)
            .file(f"{_B}/json", _json())
            .symlink(f"{_B}/layer.tar", f"../{_A}/layer.tar")
            .build(),
            UnsafeArchiveError,
            "link cycle",
        ),
        "outer_symlinked_json_cycle": lambda: Attack(
            V1Builder().dir(_A).symlink(f"{_A}/json", "json").file(f"{_A}/layer.tar", tar_end()).build(),
            UnsafeArchiveError,
            "link cycle",
        ),
        "outer_hardlink_escape": lambda: Attack(
            _simple().add(tar_member(f"{_A}/other", typeflag=b"1", linkname="../etc/passwd")).build(),
            UnsafeArchiveError,
            "leaves the archive root",
        ),
        "outer_char_device": lambda: Attack(
            _simple().add(tar_member(f"{_A}/tty", typeflag=b"3")).build(), UnsafeArchiveError, "character device"
        ),
        "outer_block_device": lambda: Attack(
            _simple().add(tar_member("sda", typeflag=b"4")).build(), UnsafeArchiveError, "block device"
        ),
        "outer_fifo": lambda: Attack(
            _simple().add(tar_member("fifo", typeflag=b"6")).build(), UnsafeArchiveError, "FIFO"
        ),
        "outer_duplicate_entry": lambda: Attack(
            _simple().file(f"{_A}/json", _json(parent=_B)).build(), UnsafeArchiveError, "duplicate"
        ),
        "outer_duplicate_after_cleaning": lambda: Attack(
            _simple().file(f"./{_A}//json", ja).build(), UnsafeArchiveError, "duplicate"
        ),
        "parent_with_slash": lambda: Attack(
            _simple(json_a=_json(parent="../../etc")).build(), UnsafeArchiveError, "not a v1 layer ID"
        ),
        "parent_missing": lambda: Attack(
            _simple(json_a=_json(parent=_B)).build(), MalformedArchiveError, "not a layer directory"
        ),
        "parent_self": lambda: Attack(
            _simple(json_a=_json(parent=_A)).build(), UnsafeArchiveError, "names itself as parent"
        ),
        "parent_cycle": lambda: Attack(
            _simple(json_a=_json(parent=_B))
            .layer(_B, _json(parent=_C), tar_end())
            .layer(_C, _json(parent=_A), tar_end())
            .build(),
            UnsafeArchiveError,
            "parent cycle",
        ),
        "chain_too_deep": lambda: Attack(_deep_chain(126), ArchiveLimitError, "deeper than 125"),
        "layer_duplicate_path": lambda: Attack(
            _simple(layer=tar_member("a", b"1") + tar_member("./a", b"2") + tar_end()).build(),
            MalformedArchiveError,
            "names this path twice",
        ),
        "layer_duplicate_directory": lambda: Attack(
            _simple(layer=tar_member("d/", typeflag=b"5") + tar_member("./d", typeflag=b"5") + tar_end()).build(),
            MalformedArchiveError,
            "names this path twice",
        ),
        "outer_gzip_padding": lambda: Attack(
            _simple(layer=good_layer).build("gzip") + bytes(1024), MalformedArchiveError, "invalid gzip data"
        ),
        "outer_bzip2_padding": lambda: Attack(
            _simple(layer=good_layer).build("bzip2") + bytes(512), MalformedArchiveError, "invalid bzip2 data"
        ),
        "outer_xz_bad_padding": lambda: Attack(
            _simple(layer=good_layer).build("xz") + bytes(3), MalformedArchiveError, "xz stream padding"
        ),
        "json_not_object": lambda: Attack(_simple(json_a=b"[1,2]").build(), MalformedArchiveError, "json"),
        "json_number": lambda: Attack(_simple(json_a=b"42").build(), MalformedArchiveError, "json"),
        "json_syntax_error": lambda: Attack(_simple(json_a=b'{"id":"x",}').build(), MalformedArchiveError, "json"),
        "json_too_big": lambda: Attack(
            _simple(json_a=b'{"pad":"' + b"x" * (1 << 20) + b'"}').build(), ArchiveLimitError, "limit"
        ),
        "dir_without_json": lambda: Attack(
            _simple().dir("extra").file("extra/x", b"1").build(), MalformedArchiveError, "no json"
        ),
        "layer_missing": lambda: Attack(
            V1Builder().dir(_A).file(f"{_A}/json", ja).build(), MalformedArchiveError, "layer.tar"
        ),
        "repositories_unknown_id": lambda: Attack(
            _simple().repositories({"app": {"latest": _B}}).build(), MalformedArchiveError, "unknown v1 ID"
        ),
        "repositories_uppercase_name": lambda: Attack(
            _simple().repositories({"App": {"latest": _A}}).build(), MalformedArchiveError, "lowercase"
        ),
        "repositories_hex_name": lambda: Attack(
            _simple().repositories({_B: {"latest": _A}}).build(), MalformedArchiveError, "64-byte hexadecimal"
        ),
        "repositories_bad_tag": lambda: Attack(
            _simple().repositories({"app": {"bad tag!": _A}}).build(), MalformedArchiveError, "invalid tag"
        ),
        "repositories_digest_tag": lambda: Attack(
            _simple().repositories({"app": {"sha256:" + _B: _A}}).build(), MalformedArchiveError, "invalid tag"
        ),
        "repositories_not_object": lambda: Attack(
            _simple().file("repositories", b"[1]").build(), MalformedArchiveError, "repositories"
        ),
        "layer_garbage": lambda: Attack(
            _simple(layer=b"this is not a tar" * 64).build(), MalformedArchiveError, "invalid tar header"
        ),
        "layer_truncated": lambda: Attack(_simple(layer=good_layer[:1500]).build(), MalformedArchiveError, "truncated"),
        "layer_truncated_gzip": lambda: Attack(
            _simple(layer=compress(good_layer, "gzip")[:-20]).build(), MalformedArchiveError, "truncated"
        ),
        "layer_dangling_hardlink": lambda: Attack(
            _simple(layer=tar_member("x", typeflag=b"1", linkname="does/not/exist") + tar_end()).build(),
            MalformedArchiveError,
            "hardlink target",
        ),
        "layer_hardlink_dotdot": lambda: Attack(
            _simple(layer=tar_member("x", typeflag=b"1", linkname="../../etc/passwd") + tar_end()).build(),
            UnsafeArchiveError,
            "escapes",
        ),
        "layer_hardlink_absolute": lambda: Attack(
            _simple(layer=tar_member("x", typeflag=b"1", linkname="/etc/passwd") + tar_end()).build(),
            UnsafeArchiveError,
            "absolute",
        ),
        "layer_entry_dotdot": lambda: Attack(
            _simple(layer=tar_member("../../evil", b"x") + tar_end()).build(), UnsafeArchiveError, "escapes"
        ),
        "layer_entry_absolute": lambda: Attack(
            _simple(layer=tar_member("/etc/evil", b"x") + tar_end()).build(), UnsafeArchiveError, "absolute"
        ),
        "layer_unknown_type": lambda: Attack(
            _simple(layer=tar_member("x", typeflag=b"V") + tar_end()).build(), MalformedArchiveError, "unsupported"
        ),
        "layer_huge_pax": lambda: Attack(
            _simple(layer=tar_header("pax", 1 << 30, typeflag=b"x") + bytes(4096)).build(),
            ArchiveLimitError,
            "PAX header",
        ),
        "layer_bad_pax_record": lambda: Attack(
            _simple(layer=tar_header("pax", 16, typeflag=b"x") + _pad(b"99 path=x\n12345") + tar_end()).build(),
            MalformedArchiveError,
            "PAX",
        ),
        "layer_long_name": lambda: Attack(
            _simple(layer=tar_member("d/" + "n" * 5000, b"") + tar_end()).build(), ArchiveLimitError, "longer than"
        ),
        "layer_negative_size": lambda: Attack(
            _simple(layer=tar_header("neg", size_field=b"\xff" * 12) + tar_end()).build(),
            MalformedArchiveError,
            "invalid tar header",
        ),
        "layer_huge_declared_size": lambda: Attack(
            _simple(layer=tar_header("huge", size_field=b"\x80" + (1 << 62).to_bytes(11, "big")) + tar_end()).build(),
            ArchiveLimitError,
            "declared size",
        ),
        "layer_bad_checksum": lambda: Attack(
            _simple(layer=tar_header("x", checksum=b"0000000\x00") + tar_end()).build(),
            MalformedArchiveError,
            "checksum",
        ),
        "layer_zstd": lambda: Attack(
            _simple(layer=b"\x28\xb5\x2f\xfd" + bytes(64)).build(), MalformedArchiveError, "zstd"
        ),
        "layer_bzip2_bomb": lambda: Attack(_simple(layer=_bz2_bomb(80 << 20)).build(), ArchiveLimitError, "ratio"),
        "outer_bzip2_bomb": lambda: Attack(
            _simple().file("zeros", bytes(80 << 20)).build("bzip2"), ArchiveLimitError, "ratio"
        ),
        "outer_truncated": lambda: Attack(_simple(layer=good_layer).build()[:2000], MalformedArchiveError, "truncated"),
        "outer_bad_header": lambda: Attack(
            _simple().add(b"garbage!" * 64).build(), MalformedArchiveError, "invalid tar header"
        ),
        "outer_huge_pax": lambda: Attack(
            _simple().add(tar_header("pax", 1 << 40, typeflag=b"x")).build(), ArchiveLimitError, "extended header"
        ),
        "not_an_image": lambda: Attack(V1Builder().file("hello.txt", b"hi").build(), MalformedArchiveError, "no layer"),
        "empty_file": lambda: Attack(b"", MalformedArchiveError, "no layer"),
        "under_non_directory": lambda: Attack(
            V1Builder().file(_A, b"x").file(f"{_A}/json", ja).file(f"{_A}/layer.tar", tar_end()).build(),
            MalformedArchiveError,
            "not a directory",
        ),
        "os_windows": lambda: Attack(_simple(json_a=_json(os="windows")).build(), MalformedArchiveError, "windows"),
    }


def _deep_chain(depth: int) -> bytes:
    b = V1Builder()
    ids = [f"{i:064x}" for i in range(1, depth + 1)]
    for i, vid in enumerate(ids):
        b.layer(vid, _json(parent=ids[i - 1] if i else None), b"")
    return b.build()


ATTACKS: dict[str, Callable[[], Attack]] = _attacks()


# --- fuzzing ---------------------------------------------------------------------------------------------------------


def mutate(data: bytes, rng: random.Random, *, edits: int = 3) -> bytes:
    """Apply ``edits`` random mutations: bit flips, truncation, byte runs, header-field edits, insert/delete."""
    buf = bytearray(data)
    for _ in range(edits):
        if not buf:
            buf += rng.randbytes(rng.randint(1, 600))
            continue
        op = rng.randrange(7)
        pos = rng.randrange(len(buf))
        if op == 0:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            del buf[rng.randrange(len(buf) + 1) :]
        elif op == 2:
            run = rng.choice([b"\x00", b"\xff", b"7", b"/", b".", b" "]) * rng.randint(1, 16)
            buf[pos : pos + len(run)] = run
        elif op == 3:  # edit a header field of a block-aligned header
            base = (pos // BLOCK) * BLOCK
            field_at, width = rng.choice([(0, 100), (100, 8), (124, 12), (148, 8), (156, 1), (157, 100), (345, 155)])
            value = rng.choice(
                [b"../../x", b"/abs", b"\x80" + bytes(11), b"\xff" * 12, b"77777777777", b"5", b"2", b"1"]
            )
            buf[base + field_at : base + field_at + min(width, len(value))] = value[:width]
            if rng.random() < 0.8 and base + BLOCK <= len(buf):  # keep the checksum valid to reach deeper code
                buf[base + 148 : base + 156] = b" " * 8
                buf[base + 148 : base + 156] = b"%06o\x00 " % sum(buf[base : base + BLOCK])
        elif op == 4:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 64))
        elif op == 5:
            del buf[pos : pos + rng.randint(1, 64)]
        else:  # swap in a json fragment
            frag = rng.choice([b'"parent":"', b"null", b"[", b"}", b'"\\u0000"', b"\xff\xfe", b"1e999"])
            buf[pos : pos + len(frag)] = frag
    return bytes(buf)


@dataclass
class FuzzReport:
    """Outcome counts of a fuzz run; ``failures`` holds (case, traceback) for foreign exceptions or leftovers."""

    cases: int = 0
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[int, str]] = field(default_factory=list)


def fuzz_one(data: bytes, workdir: Path) -> str | None:
    """Upgrade ``data``; returns the error class name if refused, None if accepted; raises on anything else."""
    from keepdocker.images.upgrade import upgrade_archive

    src = workdir / "src.tar"
    dst = workdir / "dst.tar"
    src.write_bytes(data)
    dst.unlink(missing_ok=True)
    try:
        upgrade_archive(src, dst)
    except KeepdockerError as exc:
        if dst.exists():
            raise AssertionError(f"DST exists after {type(exc).__name__}") from exc
        outcome: str | None = type(exc).__name__
    else:
        outcome = None
    leftovers = [p.name for p in workdir.iterdir() if p.name not in ("src.tar", "dst.tar")]
    if leftovers:
        raise AssertionError(f"temporary files left behind: {leftovers}")
    return outcome


def run_fuzz(count: int, seed: int = 0, workdir: Path | None = None) -> FuzzReport:
    """Mutate ``count`` generated archives and upgrade each; foreign exceptions are recorded as failures."""
    rng = random.Random(seed)
    report = FuzzReport()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        work = Path(tmp)
        bases = [
            random_v1_archive(s, layers=rng.randint(1, 3), files=2, max_file_size=300, outer=o).data
            for s, o in zip(range(seed, seed + 8), ["none"] * 6 + ["gzip", "none"], strict=True)
        ]
        for case in range(count):
            data = mutate(rng.choice(bases), rng, edits=rng.randint(1, 4))
            report.cases += 1
            try:
                outcome = fuzz_one(data, work)
            except Exception:
                report.failures.append((case, traceback.format_exc()))
                continue
            if outcome is None:
                report.accepted += 1
            else:
                report.refused[outcome] = report.refused.get(outcome, 0) + 1
    return report

