"""Retry and cache policies shared by the tasks: retry only what is temporary, reuse only files still intact."""

from __future__ import annotations

import datetime as dt
import os
from contextlib import AbstractContextManager
from typing import Any, cast

from prefect import Task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff
from prefect.types import DateTime
from prefect.types._datetime import now

from keepdocker.cache import TarCache
from keepdocker.errors import KeepdockerError, is_temporary
from tasks.progress import announce_retry

__all__ = ["IO_RETRY", "ValidatedFileCache", "file_intact", "image_lock", "retry_if_temporary"]


def retry_if_temporary(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a failed task only when its exception is marked temporary (engine gone, 5xx, corrupt cache).

    A retry is announced ("retrying in N s: reason") in the run's log and to a listening CLI.
    """
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:
        if not is_temporary(exc):
            return False
        reason = exc.message if isinstance(exc, KeepdockerError) else f"{type(exc).__name__}: {exc}"
        announce_retry(task_run.name, task.retry_delay_seconds, max(task_run.run_count - 1, 0), reason)
        return True
    return False


def _backoff_seconds() -> float:
    """Base retry delay; KEEPDOCKER_RETRY_DELAY lets tests and CI shorten it."""
    try:
        return max(0.0, float(os.environ.get("KEEPDOCKER_RETRY_DELAY", "5")))
    except ValueError:
        return 5.0


# Options for every I/O task (Docker engine, Arvados API, Keep): three patient retries of temporary failures.
IO_RETRY: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=_backoff_seconds()),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_temporary,
}


def image_lock(owner_uuid: str, image_id: str) -> AbstractContextManager[None]:
    """Serialize placing and linking one image for one owner across threads and processes of this host.

    A concurrent push of the same image waits, then finds the collection and links the first one made.
    """
    return TarCache.from_env().exclusive(f"place-{owner_uuid}-{image_id}")


def file_intact(value: Any) -> bool:
    """True when a cached task result names a file that still has the size and mtime recorded with it."""
    if not isinstance(value, dict) and hasattr(value, "model_dump"):
        value = value.model_dump()
    if not isinstance(value, dict):
        return False
    path, size, mtime_ns = value.get("path"), value.get("size"), value.get("mtime_ns")
    if not isinstance(path, str) or size is None or mtime_ns is None:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return bool(st.st_size == size and st.st_mtime_ns == mtime_ns)


class ValidatedFileCache(CachePolicy):
    """INPUTS + TASK_SOURCE, except that a record whose file is gone or changed is expired, so the task re-runs."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """The usual key, after invalidating its record when the cached file no longer checks out."""
        key = (INPUTS + TASK_SOURCE).compute_key(task_ctx, inputs, flow_parameters, **kwargs)
        store = task_ctx.result_store
        if key is None or store is None:
            return key
        try:
            if store.exists(key) and not file_intact(store.read(key).result):
                past = cast(DateTime, now("UTC") - dt.timedelta(days=1))
                store.write(obj=None, key=key, expiration=past)
        except Exception:  # an unreadable record is a miss anyway
            return key
        return key
