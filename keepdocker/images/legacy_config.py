"""Docker 1.10-24 legacy-load config construction from a v1 layer `json`, byte-identical to the engine.

This mirrors moby's ``legacyLoadImage`` (image/tarexport/load.go), ``HistoryFromConfig`` and
``MakeConfigFromV1Config`` (image/v1/imagev1.go) and the store's ``NewFromJSON`` check, as built with go1.19
(Docker 20.10); the Go ``encoding/json`` and ``time`` details that decide the bytes live in ``gojson`` and ``gotime``.

Deliberate divergences (stricter than Docker): an ``os`` other than ``""``/``"linux"`` is refused (Docker may
crash on it), and a key that folds to ``rootfs`` but overrides the generated root filesystem is refused (Docker's
outcome would depend on which layers its store already holds).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from keepdocker.errors import MalformedArchiveError
from keepdocker.images.gojson import (
    NULL,
    OBJECT,
    STRING,
    T_BOOL,
    T_EMPTY_STRUCT,
    T_INT,
    T_STR_SLICE,
    T_STRING,
    T_TIME,
    Field,
    GoSlice,
    MapOf,
    Node,
    PtrTo,
    SliceOf,
    Struct,
    decode,
    encode,
    encode_fields,
    fold_name,
    marshal_raw_map,
    parse,
    raw_object,
    unquote,
    zero,
)
from keepdocker.images.gotime import format_rfc3339nano

__all__ = [
    "DELETED_KEYS",
    "NO_FALLBACK_MIN_VERSION",
    "HistoryEntry",
    "LegacyHeader",
    "history_of",
    "image_id",
    "make_config",
    "read_header",
    "rootfs_diff_ids",
    "uses_fallback",
    "version_compare",
]

NO_FALLBACK_MIN_VERSION = "1.8.3"
"""Layers whose ``docker_version`` is below this (by :func:`version_compare`) go through the V1Image round trip."""

DELETED_KEYS = ("id", "parent", "Size", "parent_id", "layer_id", "throwaway")
"""Top-level keys ``MakeConfigFromV1Config`` deletes (exact, after key unescaping)."""

SUPPORTED_OS = ("", "linux")

# --- Go structs (api/types/container/config.go and image/image.go @v20.10.24), fields in declaration order. ---

HEALTH_CONFIG = Struct(
    "container.HealthConfig",
    [
        Field("Test", SliceOf(T_STRING), True),
        Field("Interval", T_INT, True),
        Field("Timeout", T_INT, True),
        Field("StartPeriod", T_INT, True),
        Field("Retries", T_INT, True),
    ],
)

CONTAINER_CONFIG = Struct(
    "container.Config",
    [
        Field("Hostname", T_STRING),
        Field("Domainname", T_STRING),
        Field("User", T_STRING),
        Field("AttachStdin", T_BOOL),
        Field("AttachStdout", T_BOOL),
        Field("AttachStderr", T_BOOL),
        Field("ExposedPorts", MapOf(T_EMPTY_STRUCT), True),
        Field("Tty", T_BOOL),
        Field("OpenStdin", T_BOOL),
        Field("StdinOnce", T_BOOL),
        Field("Env", SliceOf(T_STRING)),
        Field("Cmd", T_STR_SLICE),
        Field("Healthcheck", PtrTo(HEALTH_CONFIG), True),
        Field("ArgsEscaped", T_BOOL, True),
        Field("Image", T_STRING),
        Field("Volumes", MapOf(T_EMPTY_STRUCT)),
        Field("WorkingDir", T_STRING),
        Field("Entrypoint", T_STR_SLICE),
        Field("NetworkDisabled", T_BOOL, True),
        Field("MacAddress", T_STRING, True),
        Field("OnBuild", SliceOf(T_STRING)),
        Field("Labels", MapOf(T_STRING)),
        Field("StopSignal", T_STRING, True),
        Field("StopTimeout", PtrTo(T_INT), True),
        Field("Shell", T_STR_SLICE, True),
    ],
)

_V1_FIELDS = [
    Field("id", T_STRING, True),
    Field("parent", T_STRING, True),
    Field("comment", T_STRING, True),
    Field("created", T_TIME),
    Field("container", T_STRING, True),
    Field("container_config", CONTAINER_CONFIG, True),
    Field("docker_version", T_STRING, True),
    Field("author", T_STRING, True),
    Field("config", PtrTo(CONTAINER_CONFIG), True),
    Field("architecture", T_STRING, True),
    Field("variant", T_STRING, True),
    Field("os", T_STRING, True),
    Field("Size", T_INT, True),
]

V1_IMAGE = Struct("V1Image", _V1_FIELDS)

ROOTFS = Struct("image.RootFS", [Field("type", T_STRING), Field("diff_ids", SliceOf(T_STRING), True)])

HISTORY = Struct(
    "image.History",
    [
        Field("created", T_TIME),
        Field("author", T_STRING, True),
        Field("created_by", T_STRING, True),
        Field("comment", T_STRING, True),
        Field("empty_layer", T_BOOL, True),
    ],
)

# image.Image embeds V1Image; its own `parent` (type ID) hides V1Image.parent.
IMAGE = Struct(
    "Image",
    [f for f in _V1_FIELDS if f.name != "parent"]
    + [
        Field("parent", T_STRING, True),
        Field("rootfs", PtrTo(ROOTFS), True),
        Field("history", SliceOf(HISTORY), True),
        Field("os.version", T_STRING, True),
        Field("os.features", SliceOf(T_STRING), True),
    ],
)

HEADER = Struct("struct { OS string; Parent string }", [Field("OS", T_STRING), Field("Parent", T_STRING)])


@dataclass(frozen=True)
class LegacyHeader:
    """What legacy load reads first from a v1 layer json: its parent v1 ID ('' if none) and OS ('' if unset)."""

    parent: str
    os: str


@dataclass(frozen=True)
class HistoryEntry:
    """One decoded ``history`` entry of an image config (``created`` as Go's RFC3339Nano text)."""

    created: str
    author: str
    created_by: str
    comment: str
    empty_layer: bool


def _check_os(root: Node) -> None:
    """Refuse every top-level value Go could decode into the ``os`` field unless it is "" or "linux"."""
    if root.kind != OBJECT:
        return
    for key, value in root.items:
        if fold_name(unquote(key.raw)) != "os" or value.kind == NULL:
            continue
        if value.kind == STRING and unquote(value.raw) in SUPPORTED_OS:
            continue
        shown = unquote(value.raw) if value.kind == STRING else value.raw.decode("utf-8", "replace")
        raise MalformedArchiveError(f"os {shown!r} is not supported: only linux images can be upgraded")


def read_header(raw: bytes) -> LegacyHeader:
    """Docker's first look at a layer json (`{OS, Parent}`, case-insensitive keys; `null` allowed).

    Raises MalformedArchiveError (message without the entry name; the caller adds it) when the json is
    not a JSON object or null, has bad syntax, or OS/Parent are not strings, or the OS is not ""/"linux".
    """
    root = parse(raw)
    header = decode(root, HEADER, zero(HEADER), "json")
    _check_os(root)
    return LegacyHeader(parent=header["Parent"], os=header["OS"])


def _atoi(part: str) -> int:
    """Go ``strconv.Atoi`` as ``versions.compare`` uses it: invalid -> 0, out of int64 range -> clamped."""
    digits = part[1:] if part[:1] in ("+", "-") else part
    if not digits or not all("0" <= c <= "9" for c in digits):
        return 0
    value = int(digits)
    if part[:1] == "-":
        return max(-value, -(1 << 63))
    return min(value, (1 << 63) - 1)


def version_compare(v1: str, v2: str) -> int:
    """moby ``api/types/versions.compare``: dot-separated parts compared as integers (junk and missing = 0)."""
    if v1 == v2:
        return 0
    a, b = v1.split("."), v2.split(".")
    for i in range(max(len(a), len(b))):
        x = _atoi(a[i]) if i < len(a) else 0
        y = _atoi(b[i]) if i < len(b) else 0
        if x != y:
            return 1 if x > y else -1
    return 0


def uses_fallback(docker_version: str) -> bool:
    """True when ``MakeConfigFromV1Config`` round-trips the json through V1Image (``docker_version < 1.8.3``)."""
    return version_compare(docker_version, NO_FALLBACK_MIN_VERSION) == -1


def _decode_image(config: bytes) -> dict[str, Any]:
    """``image.NewFromJSON``: the config decoded as image.Image; rootfs must be present."""
    image: dict[str, Any] = decode(parse(config), IMAGE, zero(IMAGE), "Image")
    if image["rootfs"] is None:
        raise MalformedArchiveError("invalid image JSON, no RootFS key")
    return image


def _history_values(image: dict[str, Any]) -> list[dict[str, Any]]:
    history: GoSlice | None = image["history"]
    return [] if history is None else history.values()


def _diff_ids(image: dict[str, Any]) -> list[str]:
    ids: GoSlice | None = image["rootfs"]["diff_ids"]
    return [] if ids is None else ids.values()


def make_config(raw: bytes, diff_id: str, parent_config: bytes | None) -> bytes:
    """The v2 image config bytes legacy load creates for one v1 layer (image ID = sha256 of the result).

    ``raw`` is the layer's json file bytes, ``diff_id`` is ``sha256:<hex>`` of the decompressed layer, and
    ``parent_config`` is the config this function returned for the parent layer (None for a base layer): its
    rootfs.diff_ids and history are extended, as Docker re-reads the parent image from its store.
    Raises MalformedArchiveError for everything Docker would refuse (type errors, bad times, bad os).
    """
    root = parse(raw)
    decode(root, HEADER, zero(HEADER), "json")  # legacyLoadImage's first Unmarshal: object or null only
    _check_os(root)
    v1 = decode(root, V1_IMAGE, zero(V1_IMAGE), "V1Image")  # HistoryFromConfig: any type error fails the load

    # The parent image as Docker re-reads it from its store.
    if parent_config is None:
        rootfs_type, diff_ids, history = "layers", [], []
    else:
        parent = _decode_image(parent_config)
        rootfs_type, diff_ids, history = parent["rootfs"]["type"], _diff_ids(parent), _history_values(parent)
    diff_ids = [*diff_ids, diff_id]
    cmd: list[str] | None = v1["container_config"]["Cmd"]
    entry = {
        "created": v1["created"],
        "author": v1["author"],
        "created_by": " ".join(cmd or []),
        "comment": v1["comment"],
        "empty_layer": False,
    }
    history = [*history, entry]

    # The pre-1.8.3 fallback path round-trips the json through V1Image; otherwise the raw values are kept.
    values = encode_fields(v1, V1_IMAGE) if uses_fallback(v1["docker_version"]) else raw_object(root)
    for key in DELETED_KEYS:
        values.pop(key, None)
    rootfs = {"type": rootfs_type, "diff_ids": GoSlice(diff_ids, len(diff_ids))}
    values["rootfs"] = encode(rootfs, ROOTFS)
    values["history"] = encode(GoSlice(history, len(history)), SliceOf(HISTORY))
    config = marshal_raw_map(values)
    _validate(config, rootfs_type, diff_ids)
    return config


def _validate(config: bytes, rootfs_type: str, diff_ids: list[str]) -> None:
    """The image store's ``Create`` checks: decodes as image.Image, rootfs present, history within the layers."""
    image = _decode_image(config)
    decoded_ids = _diff_ids(image)
    if image["rootfs"]["type"] != rootfs_type or decoded_ids != diff_ids:
        raise MalformedArchiveError("a top-level key folding to 'rootfs' overrides the generated root filesystem")
    non_empty = sum(1 for h in _history_values(image) if not h["empty_layer"])
    if non_empty > len(decoded_ids):
        raise MalformedArchiveError("too many non-empty layers in History section")


def image_id(config: bytes) -> str:
    """The image ID of a config: ``sha256:`` + hex digest of its bytes."""
    return "sha256:" + hashlib.sha256(config).hexdigest()


def rootfs_diff_ids(config: bytes) -> list[str]:
    """The layer DiffIDs of a config, as Docker decodes them."""
    return _diff_ids(_decode_image(config))


def history_of(config: bytes) -> list[HistoryEntry]:
    """The history entries of a config, as Docker decodes them (``created`` re-formatted as RFC3339Nano)."""
    return [
        HistoryEntry(
            created=format_rfc3339nano(h["created"]),
            author=h["author"],
            created_by=h["created_by"],
            comment=h["comment"],
            empty_layer=h["empty_layer"],
        )
        for h in _history_values(_decode_image(config))
    ]
