"""Manifest text: validation, signature stripping and signing, portable data hash, and file statistics."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "LOCATOR_RE",
    "ManifestError",
    "ManifestStats",
    "locator_tokens",
    "locators",
    "map_locators",
    "portable_data_hash",
    "portable_manifest",
    "strip_signatures",
    "validate_manifest",
]

LOCATOR_RE = re.compile(r"^([0-9a-f]{32})\+([0-9]+)((?:\+[A-Z][A-Za-z0-9@_-]*)*)$")
_FILE_TOKEN_RE = re.compile(r"^([0-9]+):([0-9]+):(\S+)$")
_STREAM_RE = re.compile(r"^\.(/\S+)?$")
PDH_RE = re.compile(r"^[0-9a-f]{32}\+[0-9]+$")


class ManifestError(ValueError):
    """The manifest text is not well formed; the message names the line and token."""


@dataclass(frozen=True)
class ManifestStats:
    """Derived numbers stored beside a manifest."""

    file_count: int
    file_size_total: int


def _is_locator(token: str) -> bool:
    return ":" not in token and LOCATOR_RE.match(token) is not None


def map_locators(text: str, fn: Callable[[str], str]) -> str:
    """Rewrite every block locator of every stream line with ``fn``, leaving everything else byte-identical."""
    if not text:
        return text
    out: list[str] = []
    for line in text.split("\n"):
        if not line:
            out.append(line)
            continue
        tokens = line.split(" ")
        for i in range(1, len(tokens)):
            if _is_locator(tokens[i]):
                tokens[i] = fn(tokens[i])
            else:
                break
        out.append(" ".join(tokens))
    return "\n".join(out)


def locators(text: str) -> list[str]:
    """Every block locator in order of appearance (with hints)."""
    found: list[str] = []
    for line in text.split("\n"):
        for token in line.split(" ")[1:]:
            if _is_locator(token):
                found.append(token)
            else:
                break
    return found


def locator_tokens(text: str) -> list[str]:
    """Every token anywhere in the text that has the form of a block locator, even out of place after file segments.

    The API server's signature check looks at every such token before the manifest's form is validated.
    """
    return [token for token in text.split() if _is_locator(token)]


def strip_signatures(text: str) -> str:
    """The manifest with ``+A`` permission hints removed (other hints kept), as the server stores it."""
    return map_locators(text, lambda loc: "+".join(p for i, p in enumerate(loc.split("+")) if i < 2 or p[:1] != "A"))


def portable_manifest(text: str) -> str:
    """The manifest with every locator reduced to ``md5+size`` (no normalization)."""
    return map_locators(text, lambda loc: "+".join(loc.split("+")[:2]))


def portable_data_hash(text: str) -> str:
    """``md5(portable text)+length``, the server's PDH of a manifest."""
    data = portable_manifest(text).encode()
    return f"{hashlib.md5(data).hexdigest()}+{len(data)}"


def validate_manifest(text: str) -> ManifestStats:
    """Check the manifest grammar and return its file statistics; raise ManifestError naming the first problem."""
    if text == "":
        return ManifestStats(0, 0)
    if not text.endswith("\n"):
        raise ManifestError("manifest_text must end with a newline")
    files: dict[tuple[str, str], int] = {}
    for number, line in enumerate(text[:-1].split("\n"), start=1):
        tokens = line.split(" ")
        if not _STREAM_RE.match(tokens[0]):
            raise ManifestError(f"manifest line {number}: invalid stream name {tokens[0]!r}")
        i = 1
        stream_size = 0
        while i < len(tokens) and _is_locator(tokens[i]):
            stream_size += int(tokens[i].split("+")[1])
            i += 1
        if i == 1:
            raise ManifestError(f"manifest line {number}: no block locator after the stream name")
        if i == len(tokens):
            raise ManifestError(f"manifest line {number}: no file segment after the block locators")
        for token in tokens[i:]:
            match = _FILE_TOKEN_RE.match(token)
            if match is None:
                raise ManifestError(f"manifest line {number}: invalid file segment or locator {token!r}")
            pos, size, name = int(match.group(1)), int(match.group(2)), match.group(3)
            if pos + size > stream_size:
                raise ManifestError(f"manifest line {number}: file segment {token!r} extends past the stream's blocks")
            key = (tokens[0], name)
            files[key] = files.get(key, 0) + size
    return ManifestStats(file_count=len(files), file_size_total=sum(files.values()))
