"""Validate a current image archive end to end: config digests are the IDs, layers hash to their diff IDs, tars parse.

``validate_archive`` reads the archive with ``read_archive`` (manifest, configs, tags) and then streams every layer
member once through ``LayerStream`` (decompressing if needed), so it holds no layer in memory. It is the reusable check
the tests run on every archive the writer produces, in the spirit of go-containerregistry's ``pkg/v1/validate``.
"""

from __future__ import annotations

import json
from pathlib import Path

from keepdocker.errors import MalformedArchiveError
from keepdocker.images import limits
from keepdocker.images.docker_archive import read_archive, read_members
from keepdocker.images.model import Image, ReferenceError, normalize_tag
from keepdocker.images.tarscan import EntryKind, LayerFacts, LayerStream, OuterScanner, StreamBudget, quote_name

__all__ = ["read_loadable_archive", "validate_archive"]

_ALLOWED_EXTRA = ("manifest.json", "repositories", "oci-layout", "index.json")


def validate_archive(path: Path, *, strict: bool = True) -> list[Image]:
    """Check ``path`` and return its images; raises MalformedArchiveError (or another ArchiveError) on the first fault.

    Checks: every config's sha256 is its image ID and its file is named by it (``<hex>.json`` or
    ``blobs/sha256/<hex>``); rootfs and history agree (no more non-empty history entries than layers); every layer
    member is a valid layer tar whose decompressed sha256 equals the diff ID in each config that lists it;
    ``repositories``, if present, only names tags the manifest has. With ``strict``, every other file must be a
    config or layer of some manifest entry (``<dir>/json`` and ``<dir>/VERSION`` of docker save are allowed too).
    """
    images = read_archive(path)
    for image in images:
        _check_history(image)
    scanner, expected = _check_layers(path, images)
    config_names = _config_names(path, images, scanner)
    if "repositories" in scanner.index:
        _check_repositories(path, images)
    if strict:
        for name, entry in scanner.index.items():
            if entry.kind is EntryKind.DIR or name in expected or name in config_names or name in _ALLOWED_EXTRA:
                continue
            if name.endswith(("/json", "/VERSION")) or name.startswith("blobs/"):
                continue
            raise MalformedArchiveError(f"archive entry {quote_name(name)} is not referenced by manifest.json")
    return images


def read_loadable_archive(path: Path) -> list[Image]:
    """The images of a current archive, after checking every layer the way ``docker load`` does (one more pass).

    Each layer member is streamed once: it must be a layer tar Docker's layer store accepts (no path twice, no
    truncation, compressed streams ending cleanly) whose decompressed sha256 is the diff ID its configs list, else
    the load would fail. Used before publishing an archive that did not come from an engine.
    """
    images = read_archive(path)
    _check_layers(path, images)
    return images


def _check_layers(path: Path, images: list[Image]) -> tuple[OuterScanner, dict[str, str]]:
    """Stream every layer member through LayerStream and compare its diff ID; returns the scanner and the members."""
    expected: dict[str, str] = {}
    for image in images:
        for layer in image.layers:
            if expected.setdefault(layer.path, layer.diff_id) != layer.diff_id:
                raise MalformedArchiveError(
                    f"layer {quote_name(layer.path)} is listed with two different diff IDs in the manifest"
                )
    scanner = OuterScanner(path)
    budget = StreamBudget()
    facts: dict[str, LayerFacts] = {}
    for entry in scanner.entries():
        if entry.kind is EntryKind.FILE and entry.name in expected:
            stream = LayerStream(f"layer {quote_name(entry.name)}", budget)
            for piece in scanner.iter_data():
                stream.feed(piece)
            facts[entry.name] = stream.close()
    for member, diff_id in expected.items():
        got = facts[member].diff_id
        if got != diff_id:
            raise MalformedArchiveError(f"layer {quote_name(member)} hashes to {got}, but the config says {diff_id}")
    return scanner, expected


def _config_names(path: Path, images: list[Image], scanner: OuterScanner) -> set[str]:
    """The config members, each checked to be named by its digest."""
    manifest = json.loads(read_members(path, {"manifest.json": limits.MAX_JSON_BYTES})["manifest.json"])
    names: set[str] = set()
    ids = {image.id for image in images}
    for item in manifest:
        ref = item["Config"]
        entry = scanner.resolve(ref)
        assert entry is not None  # read_archive checked it
        names.add(entry.name)
        digest = entry.name.removesuffix(".json").rsplit("/", 1)[-1]
        if "sha256:" + digest not in ids:
            raise MalformedArchiveError(
                f"config {quote_name(entry.name)} is not named by its digest (the image ID is sha256 of the file)"
            )
    return names


def _check_history(image: Image) -> None:
    doc = json.loads(image.config.decode("utf-8", "replace"))
    history = doc.get("history") or []
    if not isinstance(history, list):
        raise MalformedArchiveError(f"config of {image.id}: history must be a list")
    non_empty = sum(1 for h in history if not (isinstance(h, dict) and h.get("empty_layer")))
    if history and non_empty > len(image.layers):
        raise MalformedArchiveError(
            f"config of {image.id}: {non_empty} non-empty history entries but {len(image.layers)} layers"
        )


def _check_repositories(path: Path, images: list[Image]) -> None:
    raw = read_members(path, {"repositories": limits.MAX_JSON_BYTES}).get("repositories")
    if raw is None:
        return
    try:
        doc = json.loads(raw.decode("utf-8", "replace"))
    except (ValueError, RecursionError) as exc:
        raise MalformedArchiveError(f"repositories: invalid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise MalformedArchiveError("repositories: must be a JSON object")
    known = {tag for image in images for tag in image.tags}
    for name, tags in doc.items():
        if not isinstance(tags, dict):
            raise MalformedArchiveError(f"repositories: {quote_name(name)} must map tags to IDs")
        for tag in tags:
            try:
                familiar = normalize_tag(name, tag)
            except ReferenceError as exc:
                raise MalformedArchiveError(f"repositories: {exc}") from None
            if familiar not in known:
                raise MalformedArchiveError(f"repositories: {familiar} is not a RepoTag of any manifest entry")
