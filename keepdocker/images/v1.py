"""Read a Docker <= 1.9 (v1) image archive in one streaming pass into the images Docker 1.10-24's legacy load creates.

The outer archive is read once (``OuterScanner``); each ``<dir>/json`` is kept (capped), each ``<dir>/layer.tar`` is
streamed through ``LayerStream`` (decompressed, hashed, tar-checked) and, when an ``output`` is given, written straight
into it. After the pass the parent graph is checked and every layer directory becomes one image, its config built by
``legacy_config.make_config`` in parent-first order, exactly as ``legacyLoadImage`` does.

An archive is accepted exactly when Docker 20.10's legacy load accepts it, with the image IDs and tags it creates,
except for the deliberate differences in the README's table (checked against a real engine by
``tests/images/test_engine_load_rules.py``). The ones decided here:

* refused: parent cycles and self-parents (Docker recurses until it crashes); also refused as Docker refuses them:
  parent chains deeper than ``MAX_CHAIN_DEPTH`` (its layer store's limit), parents that are not layer directories,
  and hardlinks whose target exists neither earlier in their layer nor in a parent layer;
* ``repositories``, ``<dir>/json`` and ``<dir>/layer.tar`` may be links to other members, as Docker follows them; since
  the archive is read once, every other member up to 1 MiB is kept in case a link names it, and a layer linked to a
  larger member not named ``layer.tar`` is refused;
* accepted with a warning: directory names that are not 64 lowercase hex digits, and a ``json.id`` that differs from
  the directory name (Docker ignores both; the ID never depends on them);
* accepted: a missing ``repositories`` file (Docker >= 1.13 refuses it, but ``docker save <id>`` <= 1.9 never wrote
  one); every image is then untagged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from keepdocker.errors import ArchiveLimitError, MalformedArchiveError, UnsafeArchiveError
from keepdocker.images import legacy_config, limits
from keepdocker.images.model import HEX64_RE, Image, Layer, ReferenceError, config_created, legacy_repository_tag
from keepdocker.images.tarscan import (
    Compression,
    EntryKind,
    LayerFacts,
    LayerStream,
    OuterScanner,
    StreamBudget,
    name_hash,
    quote_name,
)

__all__ = ["LayerOutput", "NotV1ArchiveError", "V1Archive", "V1Image", "read_v1_archive"]

log = logging.getLogger(__name__)


class NotV1ArchiveError(MalformedArchiveError):
    """The archive has a manifest.json (or an OCI layout): it is a current archive, not a v1 one."""


class LayerOutput(Protocol):
    """Where layers go while the v1 archive is read (the upgrade planner implements it)."""

    def start_layer(self, source_offset: int | None, stream: LayerStream) -> Callable[[bytes], object] | None:
        """Begin a layer stored at ``source_offset`` of the source (None when the archive is compressed as a whole);
        returns the function that receives its decompressed bytes in order, or None."""
        ...

    def finish_layer(self, facts: LayerFacts) -> str:
        """End the layer begun last; returns the member path that holds it (identical layers share one)."""
        ...


@dataclass(frozen=True)
class V1Image:
    """One v1 layer directory and the image legacy load makes of it."""

    v1_id: str
    parent_v1: str | None
    image: Image


@dataclass
class V1Archive:
    """Everything read from a v1 archive."""

    images: dict[str, V1Image]  # by v1 directory name, sorted
    leaves: tuple[str, ...]  # v1 IDs that no other layer names as parent, sorted
    repositories: dict[str, tuple[str, ...]] | None  # v1 ID -> familiar tags; None without a repositories file
    compression: Compression
    layer_paths: dict[str, str] = field(default_factory=dict)  # diff ID -> member path in the output, if written
    warnings: list[str] = field(default_factory=list)


def _prefixed(where: str, exc: MalformedArchiveError) -> MalformedArchiveError:
    return type(exc)(f"{where}: {exc.message}")


def read_v1_archive(
    src: Path | BinaryIO, output: LayerOutput | None = None, *, label: str | None = None
) -> V1Archive:
    """Read the v1 archive ``src`` (a path or a readable binary file object, named ``label`` in messages); write its
    layers to ``output`` when given. Raises ArchiveError subclasses."""
    scanner = OuterScanner(src, label)
    budget = StreamBudget()
    captured: dict[str, bytes] = {}
    facts: dict[str, LayerFacts] = {}
    layer_paths: dict[str, str] = {}
    metadata = spare = 0
    for entry in scanner.entries():
        if entry.name == "manifest.json":
            raise NotV1ArchiveError(f"archive {quote_name(scanner.label)} has a manifest.json: it is a current archive")
        if entry.kind is not EntryKind.FILE:
            continue
        parts = entry.name.split("/")
        if entry.name == "repositories" or (len(parts) == 2 and parts[1] == "json"):
            data = scanner.read_data(limits.MAX_JSON_BYTES, entry.name)
            metadata += len(data)
            if metadata > limits.MAX_TOTAL_METADATA_BYTES:
                raise ArchiveLimitError(
                    f"archive entry {quote_name(entry.name)}: the layer jsons exceed "
                    f"{limits.MAX_TOTAL_METADATA_BYTES // limits.MIB} MiB together"
                )
            captured[entry.name] = data
        elif len(parts) != 2 or parts[1] != "layer.tar":
            # Any other small file is kept too: Docker follows a repositories, json or layer.tar that is a link to
            # any member, and the archive is read only once. Beyond the budget such files are simply not kept.
            if entry.size <= limits.MAX_JSON_BYTES and spare + entry.size <= limits.MAX_KEPT_OTHER_BYTES:
                captured[entry.name] = scanner.read_data(limits.MAX_JSON_BYTES, entry.name)
                spare += entry.size
        else:
            stream = LayerStream(f"layer {quote_name(entry.name)}", budget)
            if output is not None:
                plain = scanner.compression is Compression.NONE
                stream.sink = output.start_layer(scanner.data_offset if plain else None, stream)
            for piece in scanner.iter_data():
                stream.feed(piece)
            layer = facts[entry.name] = stream.close()
            if output is not None:
                layer_paths[layer.diff_id] = output.finish_layer(layer)
    if "oci-layout" in scanner.index:
        raise NotV1ArchiveError(
            f"archive {quote_name(scanner.label)} is an OCI layout without manifest.json; only Docker archives are read"
        )
    _linked_layers(scanner, captured, facts, budget, output, layer_paths)
    archive = _build(scanner, captured, facts)
    archive.layer_paths = layer_paths
    return archive


def _linked_layers(
    scanner: OuterScanner,
    captured: dict[str, bytes],
    facts: dict[str, LayerFacts],
    budget: StreamBudget,
    output: LayerOutput | None,
    layer_paths: dict[str, str],
) -> None:
    """Stream the kept members that a ``<dir>/layer.tar`` links to although they are not named ``layer.tar``."""
    for d in _top_dirs(scanner):
        target = scanner.resolve(f"{d}/layer.tar")
        if target is None or target.name in facts or target.name not in captured:
            continue
        stream = LayerStream(f"layer {quote_name(target.name)}", budget)
        if output is not None:
            stream.sink = output.start_layer(None, stream)  # kept in memory: not a range of the source to copy
        stream.feed(captured[target.name])
        layer = facts[target.name] = stream.close()
        if output is not None:
            layer_paths[layer.diff_id] = output.finish_layer(layer)


def _not_kept(link: str, target: str) -> ArchiveLimitError:
    return ArchiveLimitError(
        f"{quote_name(link)} links to {quote_name(target)}, which was not kept: the archive is read once, and members "
        f"other than layer jsons, repositories and layer.tar files are kept only up to "
        f"{limits.MAX_JSON_BYTES // limits.MIB} MiB each and {limits.MAX_KEPT_OTHER_BYTES // limits.MIB} MiB in all"
    )


def _top_dirs(scanner: OuterScanner) -> list[str]:
    dirs = {name.split("/", 1)[0] for name in scanner.index if "/" in name}
    dirs.update(name for name, e in scanner.index.items() if "/" not in name and e.kind is EntryKind.DIR)
    if len(dirs) > limits.MAX_V1_LAYERS:
        raise ArchiveLimitError(f"archive has {len(dirs)} top-level directories; the limit is {limits.MAX_V1_LAYERS}")
    return sorted(dirs)


def _build(scanner: OuterScanner, captured: dict[str, bytes], facts: dict[str, LayerFacts]) -> V1Archive:
    dirs = _top_dirs(scanner)
    if not dirs:
        raise MalformedArchiveError(
            f"archive {quote_name(scanner.label)} has no layer directories and no manifest.json: not an image archive"
        )
    dir_set = set(dirs)
    raws: dict[str, bytes] = {}
    layers: dict[str, tuple[str, LayerFacts]] = {}
    parents: dict[str, str | None] = {}
    warnings: list[str] = []
    for d in dirs:
        where = f"{d}/json"
        json_entry = scanner.resolve(where)
        if json_entry is None or json_entry.kind is not EntryKind.FILE:
            raise MalformedArchiveError(
                f"top-level directory {quote_name(d)} has no json file: every top-level directory of a v1 archive "
                "must be a layer (Docker refuses it too)"
            )
        raw = captured.get(json_entry.name)
        if raw is None:
            raise _not_kept(where, json_entry.name)
        raws[d] = raw
        try:
            header = legacy_config.read_header(raw)
        except MalformedArchiveError as exc:
            raise _prefixed(quote_name(where), exc) from None
        parents[d] = _check_parent(d, header.parent, dir_set)
        layer_entry = scanner.resolve(f"{d}/layer.tar")
        if layer_entry is None:
            raise MalformedArchiveError(f"{quote_name(d + '/layer.tar')} is missing: every v1 layer needs one")
        layer = facts.get(layer_entry.name)
        if layer is None:
            raise _not_kept(f"{d}/layer.tar", layer_entry.name)
        layers[d] = (layer_entry.name, layer)
        if not HEX64_RE.fullmatch(d):
            warnings.append(f"v1 layer directory {quote_name(d)} is not a 64-hex ID (accepted; Docker ignores it)")
    depth = _depths(dirs, parents)
    _check_hardlinks(dirs, parents, layers)
    order = sorted(dirs, key=lambda d: (depth[d], d))
    images: dict[str, V1Image] = {}
    for d in order:
        parent = parents[d]
        parent_image = images[parent].image if parent else None
        source, layer = layers[d]
        try:
            config = legacy_config.make_config(raws[d], layer.diff_id, parent_image.config if parent_image else None)
        except MalformedArchiveError as exc:
            raise _prefixed(quote_name(f"{d}/json"), exc) from None
        image_layers = (*(parent_image.layers if parent_image else ()), Layer(layer.diff_id, layer.size, source))
        image = Image(
            id="sha256:" + hashlib.sha256(config).hexdigest(),
            config=config,
            layers=image_layers,
            created=config_created(config),
            parent=parent_image.id if parent_image else None,
        )
        images[d] = V1Image(v1_id=d, parent_v1=parent, image=image)
        declared = _json_id(raws[d])
        if declared is not None and declared != d:
            warnings.append(
                f"{quote_name(d + '/json')} declares id {quote_name(declared)} (accepted; Docker ignores it)"
            )
    named = {p for p in parents.values() if p}
    leaves = tuple(d for d in dirs if d not in named)
    repositories = _read_repositories(scanner, captured, dir_set)
    if repositories is not None:
        tagged: dict[str, list[str]] = {}
        for tag, v1_id in repositories.items():
            tagged.setdefault(v1_id, []).append(tag)
        for v1_id, tags in tagged.items():
            old = images[v1_id]
            images[v1_id] = V1Image(old.v1_id, old.parent_v1, _with_tags(old.image, tuple(sorted(tags))))
    for w in warnings:
        log.warning("%s", w)
    return V1Archive(
        images={d: images[d] for d in dirs},
        leaves=leaves,
        repositories=None if repositories is None else _group(repositories),
        compression=scanner.compression,
        warnings=warnings,
    )


def _with_tags(image: Image, tags: tuple[str, ...]) -> Image:
    return Image(image.id, image.config, image.layers, tags, image.created, image.parent)


def _group(repositories: dict[str, str]) -> dict[str, tuple[str, ...]]:
    grouped: dict[str, list[str]] = {}
    for tag, v1_id in repositories.items():
        grouped.setdefault(v1_id, []).append(tag)
    return {v1_id: tuple(sorted(tags)) for v1_id, tags in sorted(grouped.items())}


def _check_parent(d: str, parent: str, dir_set: set[str]) -> str | None:
    if not parent:
        return None
    where = quote_name(f"{d}/json")
    if "/" in parent or "\x00" in parent or parent in (".", ".."):
        raise UnsafeArchiveError(f"{where}: parent {quote_name(parent)} is not a v1 layer ID (has '/', NUL or dots)")
    if parent not in dir_set:
        raise MalformedArchiveError(f"{where}: parent {quote_name(parent)} is not a layer directory of the archive")
    return parent


def _depths(dirs: list[str], parents: dict[str, str | None]) -> dict[str, int]:
    """Chain depth of every layer (base = 1); refuses cycles and chains deeper than MAX_CHAIN_DEPTH."""
    depth: dict[str, int] = {}
    for d in dirs:
        chain: list[str] = []
        on_chain: set[str] = set()
        cur: str | None = d
        while cur is not None and cur not in depth:
            if cur in on_chain:
                cycle = [*chain[chain.index(cur) :], cur]
                what = "names itself as parent" if len(cycle) == 2 else "parent cycle " + " -> ".join(cycle)
                raise UnsafeArchiveError(
                    f"{quote_name(cur + '/json')}: {what} (Docker would recurse until it crashes); refused"
                )
            chain.append(cur)
            on_chain.add(cur)
            cur = parents[cur]
        base = depth[cur] if cur is not None else 0
        for node in reversed(chain):
            base += 1
            depth[node] = base
            if base > limits.MAX_CHAIN_DEPTH:
                raise ArchiveLimitError(
                    f"{quote_name(node + '/json')}: parent chain deeper than {limits.MAX_CHAIN_DEPTH} layers "
                    "(Docker: max depth exceeded)"
                )
    return depth


def _check_hardlinks(
    dirs: list[str], parents: dict[str, str | None], layers: dict[str, tuple[str, LayerFacts]]
) -> None:
    """Hardlinks not resolved inside their own layer must point at a file of a parent layer, or Docker's apply fails."""
    for d in dirs:
        source, layer = layers[d]
        for entry, target in layer.unresolved_links:
            key = name_hash(target)
            cur = parents[d]
            while cur is not None and not layers[cur][1].has_name(key):
                cur = parents[cur]
            if cur is None:
                raise MalformedArchiveError(
                    f"layer {quote_name(source)} entry {quote_name(entry)}: hardlink target {quote_name(target)} is "
                    "neither an earlier entry of the layer nor a file of a parent layer (Docker: no such file)"
                )


def _json_id(raw: bytes) -> str | None:
    """The ``id`` a layer json declares, for the mismatch warning only (never used for the image ID)."""
    try:
        doc = json.loads(raw.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


_GO_SPACE = " \t\n\r"


def _read_repositories(scanner: OuterScanner, captured: dict[str, bytes], dir_set: set[str]) -> dict[str, str] | None:
    """``familiar name:tag -> v1 ID`` from the repositories file (first JSON value, as Go's Decoder), or None."""
    entry = scanner.resolve("repositories")
    if entry is None:
        if "repositories" in scanner.index:
            raise MalformedArchiveError("repositories is a link to a member the archive does not hold")
        return None
    raw = captured.get(entry.name)
    if entry.kind is not EntryKind.FILE:
        raise MalformedArchiveError("repositories is not a regular file of the archive")
    if raw is None:
        raise _not_kept("repositories", entry.name)
    text = raw.decode("utf-8", "replace")
    start = len(text) - len(text.lstrip(_GO_SPACE))

    def no_constants(name: str) -> object:
        raise ValueError(f"invalid character {name[0]!r}")

    try:
        doc, _ = json.JSONDecoder(parse_constant=no_constants).raw_decode(text, start)
    except (ValueError, RecursionError) as exc:
        raise MalformedArchiveError(f"repositories: invalid JSON ({exc})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise MalformedArchiveError("repositories: must be a JSON object mapping names to {tag: v1 ID}")
    result: dict[str, str] = {}
    for name, tags in doc.items():
        if tags is None:
            continue
        if not isinstance(tags, dict):
            raise MalformedArchiveError(f"repositories: {quote_name(name)} must map tags to v1 IDs")
        for tag, v1_id in tags.items():
            if not isinstance(v1_id, str):
                raise MalformedArchiveError(f"repositories: {quote_name(name + ':' + tag)} must name a v1 ID string")
            if v1_id not in dir_set:
                raise MalformedArchiveError(
                    f"repositories: {quote_name(name + ':' + tag)} targets unknown v1 ID {quote_name(v1_id)}"
                )
            try:
                familiar = legacy_repository_tag(name, tag)
            except ReferenceError as exc:
                raise MalformedArchiveError(f"repositories: {exc}") from None
            if familiar is None:
                log.info("repositories: %s carries a digest; Docker tags nothing for it", quote_name(name))
                continue
            if result.get(familiar, v1_id) != v1_id:
                raise MalformedArchiveError(f"repositories: {familiar} names two different v1 IDs")
            result[familiar] = v1_id
    return result
