"""Retry and cache policies shared by the tasks: retry only what is temporary, reuse only files still intact."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Any

from prefect import Task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.logging import get_logger
from prefect.tasks import exponential_backoff

from keepdocker.cache import TarCache
from keepdocker.errors import KeepdockerError, is_temporary
from tasks.progress import announce_retry

__all__ = ["IO_RETRY", "MAX_CACHE_GENERATIONS", "ValidatedFileCache", "file_intact", "image_lock", "retry_if_temporary"]

_log = get_logger(__name__)

# How many times one task's cached file may be found damaged before its cache is bypassed (each time costs a read).
MAX_CACHE_GENERATIONS = 100


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
    """INPUTS + TASK_SOURCE, except that a record whose file is gone or changed is passed over, so the task re-runs.

    Prefect has no hook that validates a cached value before reuse: the engine computes the key, then reuses any
    record stored under it. So the check happens here, and only reads. When the record under the usual key names a
    file that no longer checks out (``file_intact``), the key moves on to ``<key>-1``, ``<key>-2``, ...: the first
    one with no record makes the task run and store its new file there; the first one whose file checks out is
    reused. Old records are never rewritten.
    """

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """The usual key, or the first successor whose record is absent or names an intact file."""
        key = (INPUTS + TASK_SOURCE).compute_key(task_ctx, inputs, flow_parameters, **kwargs)
        store = task_ctx.result_store
        if key is None or store is None:
            return key
        for generation in range(MAX_CACHE_GENERATIONS):
            candidate = f"{key}-{generation}" if generation else key
            if not store.exists(candidate):
                return candidate
            try:
                value = store.read(candidate).result
            except (OSError, ValueError) as exc:  # the record vanished or broke since exists(): a miss, rewritten
                _log.debug("cache record %s unreadable (%s); the task runs again", candidate, exc)
                return candidate
            if file_intact(value):
                return candidate
        _log.warning("cache key %s: %d damaged generations; running uncached", key, MAX_CACHE_GENERATIONS)
        return None
