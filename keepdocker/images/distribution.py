"""Registry images as blobs: read Docker schema 2 / OCI manifests and indexes, pick a platform, write the archive.

A registry serves an image as a manifest (config descriptor + compressed layer descriptors), possibly behind a
manifest list / OCI index with one manifest per platform. ``write_docker_archive`` turns a directory of fetched blobs
(file name = digest hex, as skopeo's ``dir:`` transport writes them) into the Docker 1.10-24 archive layout crunch-run
loads (the bytes ``DockerArchiveWriter`` lays out, written front to back), checking every byte on the way: each
blob's sha256 and size against its descriptor, and each decompressed layer's sha256 against the config's
``rootfs.diff_ids``. The config bytes are written unchanged, so the image ID (``sha256:`` + sha256 of the config) is
the manifest's config digest, exactly what ``docker pull`` reports.

Layers may be uncompressed or gzip (decided by magic bytes, as Docker does); zstd layers are refused with one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keepdocker.errors import ArchiveLimitError, RegistryError, UsageError
from keepdocker.images import limits
from keepdocker.images.docker_archive import manifest_bytes, repositories_bytes, tar_header
from keepdocker.images.model import DIGEST_RE, Image, Layer, config_created
from keepdocker.images.tarscan import BLOCK, Compression, Decoder, sniff_compression

__all__ = [
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "Descriptor",
    "ImageManifest",
    "Platform",
    "config_platform",
    "is_index",
    "parse_index",
    "parse_manifest",
    "select_platform",
    "verify_blob",
    "write_docker_archive",
]

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEX_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)

_PLATFORM_RE = re.compile(r"([a-z0-9_]+)/([a-z0-9_]+)(?:/([a-z0-9_]+))?")


@dataclass(frozen=True)
class Platform:
    """An image platform ``os/architecture[/variant]`` (linux/amd64, linux/arm64, linux/arm/v7)."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]``; raises UsageError naming the accepted form."""
        m = _PLATFORM_RE.fullmatch(text.strip().lower())
        if m is None:
            raise UsageError(f"platform {text!r}: give os/architecture[/variant], e.g. linux/amd64 or linux/arm/v7")
        return cls(m[1], m[2], m[3]).normalized()

    def normalized(self) -> Platform:
        """The platform with Docker's defaults folded in (arm64's v8 is its only variant; aarch64 is arm64)."""
        arch = {"aarch64": "arm64", "x86_64": "amd64", "x86-64": "amd64"}.get(self.architecture, self.architecture)
        variant = self.variant or None
        if arch == "arm64" and variant == "v8":
            variant = None
        return Platform(self.os, arch, variant)

    def accepts(self, offered: Platform) -> bool:
        """True when an image built for ``offered`` satisfies this wanted platform (no variant: any variant)."""
        offered = offered.normalized()
        if (offered.os, offered.architecture) != (self.os, self.architecture):
            return False
        return self.variant is None or offered.variant == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: media type, digest, size, and (in an index) the platform it is for."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None

    @property
    def hex(self) -> str:
        """The digest without its ``sha256:`` prefix (the blob's file name in a ``dir:`` layout)."""
        return self.digest.removeprefix("sha256:")


@dataclass(frozen=True)
class ImageManifest:
    """One image manifest: its media type, config descriptor and layer descriptors (base layer first)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


def _load(raw: bytes, where: str) -> dict[str, Any]:
    if len(raw) > limits.MAX_JSON_BYTES:
        raise RegistryError(f"{where}: manifest larger than {limits.MAX_JSON_BYTES // limits.MIB} MiB")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RegistryError(f"{where}: the registry served invalid manifest JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{where}: the manifest is not a JSON object")
    return doc


def _media_type(doc: dict[str, Any], where: str) -> str:
    media_type = doc.get("mediaType")
    if media_type is None:  # OCI made mediaType optional at first: tell by shape
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if not isinstance(media_type, str):
        raise RegistryError(f"{where}: mediaType must be a string")
    if media_type in _SCHEMA1 or doc.get("schemaVersion") == 1:
        raise RegistryError(
            f"{where}: Docker schema 1 manifests are not supported; re-push the image with a current Docker or skopeo"
        )
    return media_type


def _descriptor(value: object, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise RegistryError(f"{where}: descriptor must be a JSON object")
    digest, size, media_type = value.get("digest"), value.get("size"), value.get("mediaType", "")
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise RegistryError(f"{where}: digest {digest!r} is not sha256:<64 hex> (only sha256 digests are supported)")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"{where}: size must be a non-negative integer")
    if not isinstance(media_type, str):
        raise RegistryError(f"{where}: mediaType must be a string")
    platform = None
    raw_platform = value.get("platform")
    if isinstance(raw_platform, dict):
        os_, arch, variant = (raw_platform.get(k) for k in ("os", "architecture", "variant"))
        if isinstance(os_, str) and isinstance(arch, str):
            platform = Platform(os_, arch, variant if isinstance(variant, str) else None)
    return Descriptor(media_type, digest, size, platform)


def is_index(raw: bytes, where: str = "manifest") -> bool:
    """True when ``raw`` is a manifest list or OCI index rather than one image's manifest."""
    return _media_type(_load(raw, where), where) in INDEX_TYPES


def parse_index(raw: bytes, where: str = "index") -> list[Descriptor]:
    """The manifests a manifest list / OCI index names, with their platforms."""
    doc = _load(raw, where)
    if _media_type(doc, where) not in INDEX_TYPES:
        raise RegistryError(f"{where}: not a manifest list or OCI index")
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise RegistryError(f"{where}: manifests must be a list")
    return [_descriptor(e, f"{where} manifests[{i}]") for i, e in enumerate(entries)]


def select_platform(entries: Sequence[Descriptor], wanted: Platform, where: str) -> Descriptor:
    """The index entry for ``wanted`` (an exact variant before a variant-less one); names the offers otherwise."""
    wanted = wanted.normalized()
    matches = [e for e in entries if e.platform is not None and wanted.accepts(e.platform)]
    if not matches:
        offered = sorted({str(e.platform.normalized()) for e in entries if e.platform and e.platform.os != "unknown"})
        raise UsageError(
            f"{where} has no image for platform {wanted}; it offers {', '.join(offered) or 'none'}: choose one "
            "with --platform"
        )
    return matches[0]


def parse_manifest(raw: bytes, where: str = "manifest") -> ImageManifest:
    """The config and layer descriptors of a Docker schema 2 or OCI image manifest."""
    doc = _load(raw, where)
    media_type = _media_type(doc, where)
    if media_type in INDEX_TYPES:
        raise RegistryError(f"{where}: is an index, not an image manifest")
    if media_type not in MANIFEST_TYPES:
        raise RegistryError(f"{where}: unsupported manifest type {media_type!r} (not a container image?)")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise RegistryError(f"{where}: layers must be a list")
    config = _descriptor(doc.get("config"), f"{where} config")
    return ImageManifest(
        media_type, config, tuple(_descriptor(d, f"{where} layers[{i}]") for i, d in enumerate(layers))
    )


def verify_blob(data: bytes, digest: str, where: str) -> None:
    """Raise RegistryError unless sha256(data) is ``digest``."""
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise RegistryError(f"{where}: content has digest {actual}, not {digest} as named: refusing it")


def _diff_ids(config: bytes, where: str) -> list[str]:
    try:
        doc = json.loads(config)
    except (ValueError, RecursionError) as exc:
        raise RegistryError(f"{where}: invalid JSON ({exc})") from None
    rootfs = doc.get("rootfs") if isinstance(doc, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and DIGEST_RE.fullmatch(d) for d in diff_ids):
        raise RegistryError(f"{where}: not an image config (rootfs.diff_ids must list sha256 digests)")
    return diff_ids


def config_platform(config: bytes) -> Platform | None:
    """The platform an image config declares, when it declares one."""
    try:
        doc = json.loads(config)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("os"), str) or not isinstance(doc.get("architecture"), str):
        return None
    variant = doc.get("variant")
    return Platform(doc["os"], doc["architecture"], variant if isinstance(variant, str) else None)


def _read_config(blobs: Path, desc: Descriptor) -> bytes:
    if desc.size > limits.MAX_CONFIG_BYTES:
        raise ArchiveLimitError(f"image config {desc.digest}: {desc.size} bytes, over the 4 MiB limit")
    with open(blobs / desc.hex, "rb") as f:
        data = f.read(limits.MAX_CONFIG_BYTES + 1)
    if len(data) != desc.size:
        raise RegistryError(f"image config {desc.digest}: {len(data)} bytes fetched, the manifest says {desc.size}")
    verify_blob(data, desc.digest, f"image config {desc.digest[:19]}")
    return data


class _LayerReader:
    """One compressed blob, decompressed in pieces (gzip or plain, by magic; zstd and others refused)."""

    def __init__(self, blob: Path, desc: Descriptor) -> None:
        self.blob = blob
        self.desc = desc
        self.where = f"layer {desc.digest[:19]}"

    def pieces(self, compressed_hash: Any = None) -> Iterator[bytes]:
        """The decompressed bytes; ``compressed_hash`` (a hashlib object) sees the blob as read."""
        seen = produced = 0
        decoder: Decoder | None = None
        kind: Compression | None = None
        with open(self.blob, "rb") as f:
            while chunk := f.read(limits.CHUNK_BYTES):
                if kind is None:
                    kind = self._kind(chunk)
                    decoder = Decoder(kind, self.where) if kind is Compression.GZIP else None
                seen += len(chunk)
                if compressed_hash is not None:
                    compressed_hash.update(chunk)
                for piece in decoder.feed(chunk) if decoder is not None else (chunk,):
                    produced += len(piece)
                    if produced > limits.MAX_LAYER_BYTES:
                        raise ArchiveLimitError(
                            f"{self.where} decompresses to more than {limits.MAX_LAYER_BYTES >> 30} GiB"
                        )
                    if produced > limits.RATIO_FREE_BYTES and produced > limits.MAX_RATIO * max(seen, 1):
                        raise ArchiveLimitError(f"{self.where} decompresses more than {limits.MAX_RATIO}:1")
                    yield piece
        if decoder is not None:
            decoder.finish()

    def _kind(self, head: bytes) -> Compression:
        kind = sniff_compression(head)
        if kind is Compression.ZSTD:
            raise RegistryError(
                f"{self.where} is zstd-compressed, which keepdocker cannot decompress; re-push the image with "
                "gzip layers (e.g. `skopeo copy --dest-compress-format gzip`)"
            )
        if kind is not Compression.NONE and kind is not Compression.GZIP:
            raise RegistryError(f"{self.where} is {kind.value}-compressed; registry layers must be gzip or plain")
        return kind

    def size(self) -> int:
        """The decompressed size (a plain blob's own size; a gzip blob is decompressed once to count)."""
        with open(self.blob, "rb") as f:
            if self._kind(f.read(8)) is Compression.NONE:
                return os.fstat(f.fileno()).st_size
        return sum(len(piece) for piece in self.pieces())

    def copy(self, size: int, diff_id: str, write: Callable[[bytes], object]) -> None:
        """Write the decompressed layer, checking the blob's digest and size, the diff ID and ``size``."""
        compressed, uncompressed = hashlib.sha256(), hashlib.sha256()
        produced = 0
        for piece in self.pieces(compressed):
            produced += len(piece)
            if produced > size:
                raise RegistryError(f"{self.where}: the blob changed while it was converted (grew past {size})")
            uncompressed.update(piece)
            write(piece)
        desc = self.desc
        on_disk = self.blob.stat().st_size
        if on_disk != desc.size or "sha256:" + compressed.hexdigest() != desc.digest:
            raise RegistryError(
                f"{self.where}: fetched blob ({on_disk} bytes, sha256:{compressed.hexdigest()[:12]}) does not match "
                f"the manifest ({desc.size} bytes): refusing it"
            )
        if "sha256:" + uncompressed.hexdigest() != diff_id:
            raise RegistryError(
                f"{self.where}: decompressed content has diff ID sha256:{uncompressed.hexdigest()[:12]}, the config "
                f"says {diff_id[:19]}: the image is inconsistent"
            )
        if produced != size:
            raise RegistryError(f"{self.where}: the blob changed while it was converted ({produced} of {size} bytes)")


def write_docker_archive(
    blobs: Path, manifest: ImageManifest, write: Callable[[bytes], object], tags: Sequence[str] = ()
) -> Image:
    """Write the image of ``manifest`` (blobs in ``blobs``, named by digest hex) to ``write``, in order; return it.

    The bytes are exactly what ``DockerArchiveWriter`` lays out (layers once each in manifest order, the config,
    manifest.json, repositories when tagged, the end marker), written front to back so they can go straight into
    the tar cache: a first pass learns each layer's decompressed size for its tar header (a plain layer's is its
    file size), the second writes it while checking every digest. ``tags`` (familiar ``name:tag``) become RepoTags.
    Raises RegistryError for a blob that does not match its descriptor or a layer that does not match the config;
    the caller must then discard what was written.
    """
    config = _read_config(blobs, manifest.config)
    image_id = manifest.config.digest
    diff_ids = _diff_ids(config, f"image config {image_id[:19]}")
    if len(diff_ids) != len(manifest.layers):
        raise RegistryError(
            f"image {image_id[:19]}: the manifest lists {len(manifest.layers)} layers, the config {len(diff_ids)}"
        )
    paths = [f"{d.removeprefix('sha256:')}/layer.tar" for d in diff_ids]
    sizes: dict[str, int] = {}
    for desc, path in zip(manifest.layers, paths, strict=True):
        if path not in sizes:
            sizes[path] = _LayerReader(blobs / desc.hex, desc).size()
    written: set[str] = set()
    for desc, diff_id, path in zip(manifest.layers, diff_ids, paths, strict=True):
        if path in written:
            continue  # identical layers are stored once, as docker save and DockerArchiveWriter do
        write(tar_header(path, sizes[path]))
        _LayerReader(blobs / desc.hex, desc).copy(sizes[path], diff_id, write)
        write(bytes(-sizes[path] % BLOCK))
        written.add(path)
    tags = sorted(set(tags))
    files = [(f"{image_id.removeprefix('sha256:')}.json", config)]
    files.append(("manifest.json", manifest_bytes([(image_id, tags, paths)])))
    if tags and paths:
        files.append(("repositories", repositories_bytes({t: paths[-1].split("/", 1)[0] for t in tags})))
    for name, data in files:
        write(tar_header(name, len(data)))
        write(data)
        write(bytes(-len(data) % BLOCK))
    write(bytes(2 * BLOCK))
    layers = tuple(Layer(d, sizes[p], p) for d, p in zip(diff_ids, paths, strict=True))
    return Image(image_id, config, layers, tuple(tags), config_created(config))
