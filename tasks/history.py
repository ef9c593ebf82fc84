"""Per-image run history: one keyed Prefect table artifact per image, one row per run that touched it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any

from prefect import get_client
from prefect.artifacts import create_table_artifact
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.context import get_run_context

__all__ = ["HISTORY_COLUMNS", "history_key", "history_row", "read_history", "record_history"]

HISTORY_COLUMNS = (
    "time", "flow_run", "flow", "action", "outcome", "image_id", "collection", "pdh", "bytes", "bytes_reused",
    "bytes_written", "seconds",
)


def canonical_image_name(image: str) -> str:
    """The name a history is filed under: `repo:tag` (tag defaulting to latest) or an image ID as given."""
    image = image.strip()
    if image.startswith("sha256:") or re.fullmatch(r"[0-9a-f]{64}", image):
        return image
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last else f"{image}:latest"


def history_key(image: str) -> str:
    """The artifact key for an image: a readable slug plus a short hash, only [a-z0-9-] as Prefect requires."""
    name = canonical_image_name(image)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48].strip("-")
    return f"img-{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def history_row(
    action: str,
    outcome: str,
    *,
    image_id: str = "",
    collection: str = "",
    pdh: str = "",
    size: int = 0,
    seconds: float = 0.0,
    reused: int = 0,
    written: int = 0,
) -> dict[str, Any]:
    """One history row stamped with the current time and flow run."""
    flow_run, flow_name = "", ""
    try:
        ctx = get_run_context()
        run = getattr(ctx, "flow_run", None) or getattr(getattr(ctx, "task_run", None), "flow_run_id", None)
        if run is not None and hasattr(run, "name"):
            flow_run = f"{run.name} ({run.id})"
            flow_name = str(getattr(getattr(ctx, "flow", None), "name", ""))
    except Exception:
        pass
    return {
        "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "flow_run": flow_run,
        "flow": flow_name,
        "action": action,
        "outcome": outcome,
        "image_id": image_id,
        "collection": collection,
        "pdh": pdh,
        "bytes": size,
        "bytes_reused": reused,
        "bytes_written": written,
        "seconds": round(seconds, 2),
    }


def record_history(image: str, row: dict[str, Any]) -> None:
    """Append one row to the image's history (a new version of its keyed table artifact)."""
    name = canonical_image_name(image)
    create_table_artifact(table=[row], key=history_key(name), description=f"Run history of {name}")


def read_history(image: str, limit: int = 200) -> list[dict[str, Any]]:
    """The image's history rows, newest first (one per recorded run)."""
    key = history_key(image)
    rows: list[dict[str, Any]] = []
    with get_client(sync_client=True) as client:
        offset = 0
        while len(rows) < limit:
            batch = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC,
                limit=min(200, limit - len(rows)),
                offset=offset,
            )
            if not batch:
                break
            for art in batch:
                data = json.loads(art.data) if isinstance(art.data, str) else art.data
                rows.extend(data if isinstance(data, list) else [])
            offset += len(batch)
    return rows[:limit]
