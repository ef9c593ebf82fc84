"""Progress of long task steps in the flow run's log (INFO, so the UI shows it) and to the CLI, when one listens."""

from __future__ import annotations

import time
from collections.abc import Sequence

from prefect.logging import get_run_logger

from keepdocker.progress import Meter, ProgressEvent, Step, format_event, meter, report_retry

__all__ = ["announce_retry", "task_meter"]

LOG_EVERY_SECONDS = 10.0


def task_meter(step: Step, subject: str) -> Meter:
    """A Meter for one step of the running task: logged every 10 s, every 25% and at the end."""
    logger = get_run_logger()
    state = {"at": time.monotonic(), "quarter": 0}

    def log(event: ProgressEvent) -> None:
        quarter = 4 * event.done // event.total if event.total else 0
        now = time.monotonic()
        if event.finished or quarter > state["quarter"] or now - state["at"] >= LOG_EVERY_SECONDS:
            state["at"], state["quarter"] = now, max(quarter, int(state["quarter"]))
            logger.info("%s", format_event(event))

    return meter(step, subject, log)


def announce_retry(subject: str, delays: Sequence[float] | float | None, attempt: int, reason: str) -> None:
    """Tell the log and the CLI that ``subject`` will be retried after the delay Prefect will wait."""
    if isinstance(delays, Sequence):
        delay = float(delays[min(attempt, len(delays) - 1)]) if delays else 0.0
    else:
        delay = float(delays or 0)
    logger = get_run_logger()
    report_retry(subject, delay, reason, lambda e: logger.info("%s", format_event(e)))
