"""A test oracle of the API server's container_image resolution (Collection.find_all_for_docker_image)."""

from __future__ import annotations

import re
from typing import Any

import ciso8601

from keepdocker.arv.catalog import HASH_LINK, MIGRATION_LINK, REPO_TAG_LINK, keyset
from keepdocker.arv.client import ArvadosSession
from keepdocker.arv.transfer import single_tar
from keepdocker.errors import ArvadosError

__all__ = ["resolve_image"]

PDH = re.compile(r"^[0-9a-f]{32}\+\d+$")
PATTERNS = {
    ("v1", "v2"): re.compile(r"^(sha256:)?[0-9A-Fa-f]{64}\.tar$"),
    ("v2",): re.compile(r"^(sha256:)[0-9A-Fa-f]{64}\.tar$"),
    ("v1",): re.compile(r"^[0-9A-Fa-f]{64}\.tar$"),
}


def _ts(value: object) -> float:
    try:
        return ciso8601.parse_datetime(str(value)).timestamp()
    except ValueError:
        return 0.0


def resolve_image(session: ArvadosSession, term: str, formats: tuple[str, ...] = ("v2",)) -> str | None:
    """The PDH the API server would run for ``term`` (repo:tag, hash prefix or PDH), or None when unresolvable.

    Follows services/api/app/models/collection.rb: repo+tag links first, else hash-prefix links; collections sorted
    by image_timestamp then created_at (newest first); an incompatible collection is replaced by the head of a
    system-owned docker_image_migration link whose tail is its PDH.
    """
    pattern = PATTERNS[tuple(sorted(formats))]
    collections = {
        c["uuid"]: c
        for c in keyset(
            session, "collections", [], select=["uuid", "portable_data_hash", "manifest_text", "created_at"]
        )
    }
    by_pdh: dict[str, dict[str, Any]] = {}
    for c in collections.values():
        by_pdh.setdefault(c["portable_data_hash"], c)

    if PDH.match(term):
        candidates = [by_pdh[term]] if term in by_pdh else []
    else:
        repo, _, tag = term.partition(":")
        links = keyset(
            session, "links", [["link_class", "=", REPO_TAG_LINK], ["name", "=", f"{repo}:{tag or 'latest'}"]]
        )
        links = [lk for lk in links if lk["head_uuid"] in collections]
        if not links:
            links = keyset(session, "links", [["link_class", "=", HASH_LINK], ["name", "like", f"{term}%"]])
            links = [lk for lk in links if lk["head_uuid"] in collections]
        links.sort(key=lambda lk: _ts(lk["created_at"]), reverse=True)
        keys: dict[str, tuple[float, float]] = {}
        for lk in links:  # the last processed link wins per collection (bug #9429, mirrored)
            keys[lk["head_uuid"]] = (
                -_ts((lk.get("properties") or {}).get("image_timestamp")),
                -_ts(lk["created_at"]),
            )
        candidates = [collections[u] for u in sorted(keys, key=lambda u: keys[u])]

    migrations = sorted(
        keyset(
            session,
            "links",
            [["link_class", "=", MIGRATION_LINK], ["owner_uuid", "=", session.system_user_uuid]],
        ),
        key=lambda lk: _ts(lk["created_at"]),
    )
    for coll in candidates:
        if _compatible(coll, pattern):
            return str(coll["portable_data_hash"])
        for lk in migrations:
            if lk["tail_uuid"] == coll["portable_data_hash"] and lk["head_uuid"] in by_pdh:
                new = by_pdh[lk["head_uuid"]]
                if _compatible(new, pattern):
                    return str(new["portable_data_hash"])
    return None


def _compatible(collection: dict[str, Any], pattern: re.Pattern[str]) -> bool:
    try:
        name, _ = single_tar(str(collection.get("manifest_text") or ""))
    except ArvadosError:
        return False
    return bool(pattern.match(name))
