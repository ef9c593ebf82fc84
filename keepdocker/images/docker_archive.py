"""Current image archives: detect the format, read Docker 1.10-24 and 25+/OCI archives, write the 1.10-24 layout.

Reading (``read_archive``) never extracts: one pass indexes the archive and reads manifest.json (capped), a second
pass reads the configs it names (capped); plain archives are passed header to header with seeks, so the cost is
small. The image ID is ``sha256:`` + the sha256 of the config file bytes, exactly what ``docker load`` computes;
layers are taken from the manifest paths and the config's ``rootfs.diff_ids`` (``validate.validate_archive`` re-hashes
them). Every path is cleaned and resolved inside the archive; escaping, duplicate or special entries are refused by
``OuterScanner``.

Writing produces the layout every ``docker load`` since 1.10 accepts (both image stores): ``<diffid hex>/layer.tar``
(uncompressed, one per distinct layer), ``<image id hex>.json`` (config bytes verbatim), ``manifest.json``
(``json.NewEncoder`` style, trailing newline) and ``repositories``. The bytes are deterministic: ustar headers, mode
0644, mtime 0, uid/gid 0, empty owner names, entries in a fixed order. This module makes the pieces (headers,
manifest.json, repositories); ``plan.plan_upgrade`` lays out an upgrade and ``plan.write_plan`` renders it, and
``DockerArchiveWriter`` streams an archive whose layers arrive one by one (the registry source).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import queue
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from keepdocker.errors import ArchiveLimitError, KeepdockerError, MalformedArchiveError, UnsafeArchiveError
from keepdocker.images import limits
from keepdocker.images.model import (
    DIGEST_RE,
    ArchiveFormat,
    Image,
    Layer,
    ReferenceError,
    config_created,
    normalize_tag,
    split_tag,
)
from keepdocker.images.tarscan import BLOCK, EntryKind, OuterEntry, OuterScanner, quote_name

__all__ = [
    "DockerArchiveWriter",
    "detect_format",
    "manifest_bytes",
    "only_image",
    "read_archive",
    "read_members",
    "read_single_image",
    "repositories_bytes",
    "tar_header",
]

_MODE = 0o644


# --- format detection and reading ------------------------------------------------------------------------------------


def _index(path: Path) -> OuterScanner:
    scanner = OuterScanner(path)
    for _ in scanner.entries():
        pass
    return scanner


def _format_of(scanner: OuterScanner) -> ArchiveFormat:
    index = scanner.index
    if "manifest.json" in index:
        return ArchiveFormat.OCI if "oci-layout" in index else ArchiveFormat.DOCKER
    if "oci-layout" in index:
        raise MalformedArchiveError(
            f"archive {quote_name(scanner.label)} is an OCI layout without manifest.json; only Docker archives are read"
        )
    if not any("/" in name or e.kind is EntryKind.DIR for name, e in index.items()):
        raise MalformedArchiveError(f"archive {quote_name(scanner.label)} holds neither manifest.json nor layer dirs")
    return ArchiveFormat.V1


def detect_format(path: Path) -> ArchiveFormat:
    """V1 (no manifest.json), DOCKER (1.10-24 layout) or OCI (25+ layout); reads headers only for plain archives."""
    return _format_of(_index(path))


def read_members(path: Path, wanted: dict[str, int]) -> dict[str, bytes]:
    """The data of the regular entries named in ``wanted`` (cleaned name -> size cap), in one more pass."""
    scanner = OuterScanner(path)
    found: dict[str, bytes] = {}
    total = 0
    for entry in scanner.entries():
        cap = wanted.get(entry.name)
        if cap is not None and entry.kind is EntryKind.FILE:
            found[entry.name] = scanner.read_data(cap, entry.name)
            total += len(found[entry.name])
            if total > limits.MAX_TOTAL_METADATA_BYTES:
                raise ArchiveLimitError(
                    f"archive {quote_name(path.name)}: configs exceed {limits.MAX_TOTAL_METADATA_BYTES // limits.MIB} "
                    "MiB together"
                )
    return found


def _clean_ref(where: str, ref: object) -> str:
    if not isinstance(ref, str) or not ref:
        raise MalformedArchiveError(f"{where}: must be a non-empty path string")
    if ref.startswith("/") or ".." in ref.split("/"):
        raise UnsafeArchiveError(f"{where}: path {quote_name(ref)} leaves the archive")
    return posixpath.normpath(ref)


def _file(scanner: OuterScanner, where: str, ref: str) -> OuterEntry:
    entry = scanner.resolve(ref)
    if entry is None or entry.kind is not EntryKind.FILE:
        raise MalformedArchiveError(f"{where}: {quote_name(ref)} is not a file in the archive")
    return entry


def _load_json(where: str, data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8", "replace"))
    except (ValueError, RecursionError) as exc:
        raise MalformedArchiveError(f"{where}: invalid JSON ({exc})") from None


def _repo_tags(where: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise MalformedArchiveError(f"{where}: RepoTags must be null or a list of strings")
    tags: list[str] = []
    for ref in value:
        slash, colon = ref.rfind("/"), ref.rfind(":")
        if "@" in ref or colon <= slash:
            raise MalformedArchiveError(f"{where}: RepoTags entry {quote_name(ref)} is not NAME:TAG")
        try:
            tags.append(normalize_tag(ref[:colon], ref[colon + 1 :]))
        except ReferenceError as exc:
            raise MalformedArchiveError(f"{where}: {exc}") from None
    return tuple(sorted(set(tags)))


def _diff_ids(where: str, config: bytes) -> list[str]:
    doc = _load_json(where, config)
    rootfs = doc.get("rootfs") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise MalformedArchiveError(f"{where}: not an image config (needs a rootfs of type layers)")
    diff_ids = rootfs.get("diff_ids") or []
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and DIGEST_RE.fullmatch(d) for d in diff_ids):
        raise MalformedArchiveError(f"{where}: rootfs.diff_ids must be a list of sha256:<hex> digests")
    return diff_ids


def only_image(
    images: list[Image], path: Path, *, error: type[KeepdockerError] = MalformedArchiveError, hint: str = ""
) -> Image:
    """The one image read from the archive ``path``; an archive holding several is refused, naming them.

    ``error`` and ``hint`` let the caller say whose mistake it is: a user's archive (UsageError, "push one per
    archive") or an archive this program made or received (MalformedArchiveError, the default).
    """
    if len(images) != 1:
        ids = ", ".join(f"{i.id} ({' '.join(i.tags)})" if i.tags else i.id for i in images)
        raise error(f"{path}: holds {len(images)} images ({ids}); {hint or 'expected exactly one'}")
    return images[0]


def read_single_image(path: Path, *, hint: str = "") -> Image:
    """The one image of a current archive (see ``read_archive`` and ``only_image``)."""
    return only_image(read_archive(path), path, hint=hint)


def read_archive(path: Path) -> list[Image]:
    """The images of a current archive (Docker 1.10-24 or 25+/OCI layout), in manifest order, merged by ID.

    Raises MalformedArchiveError for a v1 archive (upgrade it first) and ArchiveError subclasses for broken or
    unsafe archives.
    """
    scanner = _index(path)
    if _format_of(scanner) is ArchiveFormat.V1:
        raise MalformedArchiveError(
            f"archive {quote_name(path.name)} is a v1 (pre-1.10) archive: convert it with `keepdocker upgrade`"
        )
    manifest_entry = _file(scanner, "manifest.json", "manifest.json")
    manifest_raw = read_members(path, {manifest_entry.name: limits.MAX_JSON_BYTES})[manifest_entry.name]
    manifest = _load_json("manifest.json", manifest_raw)
    if not isinstance(manifest, list) or not manifest:
        raise MalformedArchiveError("manifest.json: must be a non-empty JSON array of images")
    plans: list[tuple[str, OuterEntry, list[OuterEntry], tuple[str, ...], str | None]] = []
    for i, item in enumerate(manifest):
        where = f"manifest.json entry {i}"
        if not isinstance(item, dict):
            raise MalformedArchiveError(f"{where}: must be a JSON object")
        config = _file(scanner, f"{where} Config", _clean_ref(f"{where} Config", item.get("Config")))
        raw_layers = item.get("Layers")
        if not isinstance(raw_layers, list):
            raise MalformedArchiveError(f"{where}: Layers must be a list of paths")
        layer_entries = [_file(scanner, f"{where} Layers", _clean_ref(f"{where} Layers", p)) for p in raw_layers]
        parent = item.get("Parent")
        if parent is not None and (not isinstance(parent, str) or not DIGEST_RE.fullmatch(parent)):
            raise MalformedArchiveError(f"{where}: Parent must be a sha256:<hex> image ID")
        plans.append((where, config, layer_entries, _repo_tags(where, item.get("RepoTags")), parent))
    configs = read_members(path, {config.name: limits.MAX_CONFIG_BYTES for _, config, _, _, _ in plans})
    images: dict[str, Image] = {}
    for where, config, layer_entries, tags, parent in plans:
        data = configs[config.name]
        diff_ids = _diff_ids(f"{where} config {quote_name(config.name)}", data)
        if len(diff_ids) != len(layer_entries):
            raise MalformedArchiveError(
                f"{where}: {len(layer_entries)} layers listed but the config has {len(diff_ids)} diff_ids"
            )
        image_id = "sha256:" + hashlib.sha256(data).hexdigest()
        layers = tuple(Layer(d, e.size, e.name) for d, e in zip(diff_ids, layer_entries, strict=True))
        old = images.get(image_id)
        if old is not None:
            tags = tuple(sorted({*old.tags, *tags}))
        images[image_id] = Image(image_id, data, layers, tags, config_created(data), parent or None)
    return list(images.values())


# --- writing ---------------------------------------------------------------------------------------------------------


def tar_header(name: str, size: int) -> bytes:
    """A deterministic ustar header for a regular file (base-256 size when it does not fit 11 octal digits)."""
    raw = name.encode()
    if len(raw) > 100:
        raise ValueError(f"tar member name too long for a ustar header: {name}")
    h = bytearray(BLOCK)
    h[0 : len(raw)] = raw
    h[100:108] = b"%07o\x00" % _MODE
    h[108:116] = b"0000000\x00"
    h[116:124] = b"0000000\x00"
    h[124:136] = b"%011o\x00" % size if size < 8**11 else b"\x80" + size.to_bytes(11, "big")
    h[136:148] = b"00000000000\x00"
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\x00 " % sum(h)
    return bytes(h)


def _go_json(value: object) -> bytes:
    """Go ``json.Marshal`` bytes for the plain values written here (ASCII-safe names, no HTML characters)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if any(c in text for c in "<>&\u2028\u2029"):
        raise ValueError("manifest values must not need Go's HTML escaping")
    return text.encode()


def manifest_bytes(entries: Iterable[tuple[str, Sequence[str], Sequence[str]]]) -> bytes:
    """manifest.json for ``(image id, familiar tags, layer paths)`` entries, as ``json.NewEncoder`` writes it."""
    doc = [
        {"Config": f"{image_id.removeprefix('sha256:')}.json", "RepoTags": list(tags) or None, "Layers": list(layers)}
        for image_id, tags, layers in entries
    ]
    return _go_json(doc) + b"\n"


def repositories_bytes(tops: dict[str, str]) -> bytes:
    """repositories for ``familiar name:tag -> top layer directory`` (Go map order: sorted keys), with newline."""
    repos: dict[str, dict[str, str]] = {}
    for ref, top in tops.items():
        name, tag = split_tag(ref)
        repos.setdefault(name, {})[tag] = top
    ordered = {name: dict(sorted(tags.items())) for name, tags in sorted(repos.items())}
    return _go_json(ordered) + b"\n"


class DockerArchiveWriter:
    """Writes a Docker 1.10-24 archive onto a seekable binary file, deterministically.

    Use ``start_layer``/``finish_layer`` for each layer (streamed; identical layers are stored once), then
    ``add_file`` for configs, manifest.json and repositories, then ``close``.
    """

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self._start: int | None = None
        self._pump: _Pump | None = None
        self.spans: dict[str, tuple[int, int]] = {}  # layer member path -> [start, end) in the file

    def start_layer(self) -> Callable[[bytes], object]:
        """Reserve a header for the next layer and return the function that writes its data.

        The data is written by a background thread through a small bounded queue, so the caller's hashing and
        the file writes overlap (both release the GIL); at most ``_PUMP_DEPTH`` pieces are in flight.
        """
        self._start = self.f.tell()
        self.f.write(bytes(BLOCK))
        self._pump = _Pump(self.f)
        return self._pump.write

    def finish_layer(self, diff_id: str) -> str:
        """Patch the layer's header (name from its diff ID, size) and pad it; drop it if already written."""
        start, self._start = self._start, None
        assert start is not None and self._pump is not None
        pump, self._pump = self._pump, None
        pump.close()
        path = f"{diff_id.removeprefix('sha256:')}/layer.tar"
        if path in self.spans:
            self.f.seek(start)
            self.f.truncate()
            return path
        end = self.f.tell()
        size = end - start - BLOCK
        self.f.write(bytes(-size % BLOCK))
        stop = self.f.tell()
        self.f.seek(start)
        self.f.write(tar_header(path, size))
        self.f.seek(stop)
        self.spans[path] = (start, stop)
        return path

    def abort(self) -> None:
        """Stop a layer in progress (after an error): the background writer is drained and joined."""
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.close(raise_error=False)

    def add_file(self, name: str, data: bytes) -> None:
        """Append a regular file entry."""
        self.f.write(tar_header(name, len(data)))
        self.f.write(data)
        self.f.write(bytes(-len(data) % BLOCK))

    def close(self) -> None:
        """Write the end-of-archive marker (two zero blocks) and flush."""
        self.f.write(bytes(2 * BLOCK))
        self.f.flush()


_PUMP_DEPTH = 8


class _Pump:
    """A background thread writing queued pieces to a file; errors surface on the next write or at close."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_PUMP_DEPTH)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="layer-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (piece := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.f.write(piece)
                except BaseException as exc:
                    self.error = exc

    def write(self, piece: bytes) -> None:
        """Queue one piece (blocks while the queue is full)."""
        if self.error is not None:
            raise self.error
        self.queue.put(piece)

    def close(self, raise_error: bool = True) -> None:
        """Wait until every queued piece is written."""
        self.queue.put(None)
        self.thread.join()
        if raise_error and self.error is not None:
            raise self.error


def _copy(src: BinaryIO, dst: BinaryIO, n: int) -> None:
    while n > 0:
        piece = src.read(min(limits.CHUNK_BYTES, n))
        if not piece:
            raise OSError("short read while compacting the archive")
        dst.write(piece)
        n -= len(piece)


def copy_file(src: Path, dst: BinaryIO) -> None:
    """Copy a whole file into an open binary file."""
    with open(src, "rb") as f:
        shutil.copyfileobj(f, dst, limits.CHUNK_BYTES)
