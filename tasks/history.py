"""Per-image run history: keyed Prefect table artifacts, one row per run that pushed or migrated the image.

A row is filed under every name that finds the image: the name the user gave (a push) or every tag of a migrated
image, plus the image ID and, for a migration, the old v1 ID. `read_history` finds rows by name, by full ID or by
ID prefix. V2_BYTES is always the size of the v2 image tar in Keep (0 when nothing reached Keep).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx
from prefect import get_client
from prefect.artifacts import create_table_artifact
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import PrefectException

from keepdocker.errors import UsageError
from keepdocker.references import parse_reference

__all__ = [
    "HISTORY_COLUMNS",
    "HistoryAction",
    "HistoryOutcome",
    "HistoryRow",
    "canonical_image_name",
    "history_key",
    "history_keys",
    "history_row",
    "id_key",
    "read_history",
    "record_history",
]

log = logging.getLogger(__name__)

HistoryAction = Literal["push", "migrate"]
# uploaded / copied / present: what a push did; migrated: a v1 image got its v2 twin; failed: see `reason`.
HistoryOutcome = Literal["uploaded", "copied", "present", "migrated", "failed"]

# Column order of every history table: the outcome first, the long free-text reason last.
HISTORY_COLUMNS = (
    "outcome",
    "action",
    "time",
    "image",
    "image_id",
    "v1_id",
    "collection",
    "pdh",
    "v2_bytes",
    "bytes_reused",
    "bytes_written",
    "seconds",
    "flow_run",
    "flow",
    "reason",
)

_HEX_ID = re.compile(r"(?:sha256:)?([0-9a-f]{1,64})")
# ID keys carry the first 24 hex digits (96 bits): unique in practice, short enough for the UI's artifact cards.
ID_KEY_DIGITS = 24


@dataclass(frozen=True)
class HistoryRow:
    """One run's effect on one image; ``v2_bytes`` is the v2 image tar's size in Keep (0 if none got there)."""

    outcome: HistoryOutcome
    action: HistoryAction
    image: str  # the name(s) the run was given or found, comma-separated
    time: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    image_id: str = ""
    v1_id: str = ""
    collection: str = ""
    pdh: str = ""
    v2_bytes: int = 0
    bytes_reused: int = 0  # of v2_bytes, bytes that are the old image's Keep blocks (a migration in place)
    bytes_written: int = 0  # bytes this run put into Keep for the image
    seconds: float = 0.0
    flow_run: str = ""
    flow: str = ""
    reason: str = ""

    def as_table_row(self) -> dict[str, Any]:
        """The row as a dict in HISTORY_COLUMNS order."""
        data = asdict(self)
        return {c: data[c] for c in HISTORY_COLUMNS}

    def summary(self) -> str:
        """One line for the artifact version's description: action, outcome, name and reason."""
        text = f"{self.action} {self.outcome}: {self.image}"
        return f"{text} ({self.reason})" if self.reason else text


def _run_names() -> tuple[str, str]:
    """The current flow run as 'name (id)' and the flow's name; empty outside a run."""
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        run = flow_ctx.flow_run
        return f"{run.name} ({run.id})", flow_ctx.flow.name if flow_ctx.flow is not None else ""
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        return str(task_ctx.task_run.flow_run_id or ""), ""
    return "", ""


def history_row(
    action: HistoryAction,
    outcome: HistoryOutcome,
    image: str,
    *,
    reason: str = "",
    image_id: str = "",
    v1_id: str = "",
    collection: str = "",
    pdh: str = "",
    size: int = 0,
    seconds: float = 0.0,
    reused: int = 0,
    written: int = 0,
) -> HistoryRow:
    """One history row stamped with the current time and flow run."""
    flow_run, flow_name = _run_names()
    return HistoryRow(
        outcome=outcome,
        action=action,
        image=image,
        image_id=image_id,
        v1_id=v1_id,
        collection=collection,
        pdh=pdh,
        v2_bytes=size,
        bytes_reused=reused,
        bytes_written=written,
        seconds=round(seconds, 2),
        flow_run=flow_run,
        flow=flow_name,
        reason=reason,
    )


def canonical_image_name(image: str, tag: str | None = None) -> str:
    """The name a history is filed under: Docker's familiar `repo:tag` (tag defaulting to latest), or the ID."""
    try:
        ref = parse_reference(image, tag)
    except UsageError:
        return image.strip()
    if ref.repository is None:
        return f"sha256:{ref.id_prefix}"
    return ref.repo_tag or ref.familiar()


def history_key(image: str, tag: str | None = None) -> str:
    """The artifact key for a name: a readable slug plus a short hash, only [a-z0-9-] as Prefect requires."""
    name = canonical_image_name(image, tag)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48].strip("-")
    return f"img-{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def id_key(image_id: str) -> str:
    """The artifact key for an image ID (v2 `sha256:<hex>` or bare v1 hex): `img-id-<first 24 hex digits>`."""
    match = _HEX_ID.fullmatch(image_id.strip().lower())
    if match is None:
        raise ValueError(f"{image_id!r} is not an image ID")
    return f"img-id-{match.group(1)[:ID_KEY_DIGITS]}"


def _row_has_id(row: dict[str, Any], hex_prefix: str) -> bool:
    ids = (str(row.get("image_id", "")).removeprefix("sha256:"), str(row.get("v1_id", "")))
    return any(i.startswith(hex_prefix) for i in ids if i)


def history_keys(names: Iterable[str], ids: Iterable[str]) -> list[str]:
    """Every key a row is filed under: each name's and each full ID's, without repeats."""
    keys = [history_key(n) for n in names if n]
    keys += [id_key(i) for i in ids if i and _HEX_ID.fullmatch(i.lower()) and len(i.removeprefix("sha256:")) == 64]
    return list(dict.fromkeys(keys))


def record_history(names: Sequence[str], row: HistoryRow) -> None:
    """Append ``row`` to the history of each name and of its image IDs (a new version of each keyed artifact).

    A history that cannot be written (the API refused or is gone) is logged, never fails the run it describes.
    """
    for key in history_keys(names, [row.image_id, row.v1_id]):
        try:
            create_table_artifact(table=[row.as_table_row()], key=key, description=row.summary())
        except (httpx.HTTPError, PrefectException, OSError) as exc:
            log.warning("could not record history %s for %s: %s", key, row.image, exc)


def _artifact_rows(artifact_filter: ArtifactFilter, limit: int) -> list[tuple[str, dict[str, Any]]]:
    """(created, row) pairs of the matching artifacts, newest first, up to ``limit`` artifacts."""
    out: list[tuple[str, dict[str, Any]]] = []
    with get_client(sync_client=True) as client:
        while len(out) < limit:
            batch = client.read_artifacts(
                artifact_filter=artifact_filter,
                sort=ArtifactSort.CREATED_DESC,
                limit=min(200, limit - len(out)),
                offset=len(out),
            )
            if not batch:
                break
            for art in batch:
                try:
                    data = json.loads(art.data) if isinstance(art.data, str) else art.data
                except ValueError:
                    log.warning("history artifact %s holds no JSON table; skipped", art.key)
                    continue
                for row in data if isinstance(data, list) else []:
                    if isinstance(row, dict):
                        out.append((str(art.created), row))
            if len(batch) < 200:
                break
    return out


def read_history(image: str, tag: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """The rows filed under a name (`repo[:tag]`, or IMAGE TAG), a full image ID or an ID prefix; newest first.

    One run filed under several of the matched keys (a name and its ID) is shown once.
    """
    name_key = history_key(image, tag)
    found = _artifact_rows(ArtifactFilter(key=ArtifactFilterKey(any_=[name_key])), limit)
    text = image.strip().lower()
    match = _HEX_ID.fullmatch(text)
    if tag is None and match is not None and (text.startswith("sha256:") or len(match.group(1)) >= 4):
        digits = match.group(1)
        prefix = f"img-id-{digits[:ID_KEY_DIGITS]}"
        by_id = _artifact_rows(ArtifactFilter(key=ArtifactFilterKey(like_=f"{prefix}%")), limit)
        found += [(created, row) for created, row in by_id if _row_has_id(row, digits)]
    rows: dict[tuple[str, str, str, str], tuple[str, dict[str, Any]]] = {}
    for created, row in found:
        ident = (str(row.get("time")), str(row.get("flow_run")), str(row.get("action")), str(row.get("image")))
        rows.setdefault(ident, (created, row))
    ordered = sorted(rows.values(), key=lambda cr: (str(cr[1].get("time", "")), cr[0]), reverse=True)
    return [row for _, row in ordered[:limit]]
