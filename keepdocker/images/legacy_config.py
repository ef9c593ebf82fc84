"""Docker 1.10-24 legacy-load config construction from a v1 layer `json`, byte-identical to the engine.

INTERFACE PLACEHOLDER: the owner of this module replaces the bodies; the signatures are the contract.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LegacyHeader:
    """What legacy load reads first from a v1 layer json: its parent v1 ID ('' if none) and OS ('' if unset)."""

    parent: str
    os: str


def read_header(raw: bytes) -> LegacyHeader:
    """Docker's first look at a layer json (`{OS, Parent}`, case-insensitive keys; `null` allowed).

    Raises MalformedArchiveError (message without the entry name; the caller adds it) when the json is
    not a JSON object or null, has bad syntax, or OS/Parent are not strings.
    """
    raise NotImplementedError


def make_config(raw: bytes, diff_id: str, parent_config: bytes | None) -> bytes:
    """The v2 image config bytes legacy load creates for one v1 layer (image ID = sha256 of the result).

    ``raw`` is the layer's json file bytes, ``diff_id`` is ``sha256:<hex>`` of the decompressed layer, and
    ``parent_config`` is the config this function returned for the parent layer (None for a base layer): its
    rootfs.diff_ids and history are extended, as Docker re-reads the parent image from its store.
    Raises MalformedArchiveError for everything Docker would refuse (type errors, bad times, bad os).
    """
    raise NotImplementedError
