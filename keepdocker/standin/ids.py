"""Arvados identifiers: UUIDs with type infixes, object kinds, and v2 API tokens."""

from __future__ import annotations

import re
import secrets
import string

__all__ = [
    "INFIX_BY_KIND",
    "KIND_BY_INFIX",
    "UUID_RE",
    "infix_of",
    "is_uuid",
    "kind_of",
    "new_secret",
    "new_uuid",
    "random_base36",
]

_ALPHABET = string.digits + string.ascii_lowercase
UUID_RE = re.compile(r"^[0-9a-z]{5}-[0-9a-z]{5}-[0-9a-z]{15}$")

KIND_BY_INFIX: dict[str, str] = {
    "tpzed": "arvados#user",
    "j7d0g": "arvados#group",
    "4zz18": "arvados#collection",
    "o0j2j": "arvados#link",
    "bi6l4": "arvados#keepService",
    "gj3su": "arvados#apiClientAuthorization",
    "dz642": "arvados#container",
    "xvhdp": "arvados#containerRequest",
    "57u5n": "arvados#log",
    "7fd4e": "arvados#workflow",
    "2x53u": "arvados#virtualMachine",
    "fngyi": "arvados#authorizedKey",
    "oss07": "arvados#credential",
    "gv0sa": "arvados#userAgreement",
}
INFIX_BY_KIND: dict[str, str] = {kind: infix for infix, kind in KIND_BY_INFIX.items()}


def random_base36(length: int) -> str:
    """A cryptographically random lowercase base-36 string."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_uuid(cluster_id: str, infix: str) -> str:
    """A fresh ``<cluster>-<infix>-<15 random>`` UUID."""
    return f"{cluster_id}-{infix}-{random_base36(15)}"


def new_secret() -> str:
    """A token secret of the length the real server issues (50 base-36 characters)."""
    return random_base36(50)


def is_uuid(value: object) -> bool:
    """True when ``value`` has the shape of an Arvados UUID."""
    return isinstance(value, str) and UUID_RE.match(value) is not None


def infix_of(uuid: str) -> str:
    """The type infix of a UUID (characters 6-10)."""
    return uuid[6:11]


def kind_of(uuid: str | None) -> str | None:
    """The ``arvados#...`` kind a UUID denotes, or None when it is not a UUID of a known type."""
    if uuid is None or not is_uuid(uuid):
        return None
    return KIND_BY_INFIX.get(infix_of(uuid))
