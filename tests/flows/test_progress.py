"""Progress and retries inside flow runs: events for a listening CLI, INFO lines in the run's log."""

from __future__ import annotations

import logging

import pytest
from prefect import flow, task

from keepdocker.errors import EngineUnavailableError
from keepdocker.progress import ProgressEvent, format_event, listening
from tasks.policy import IO_RETRY
from tasks.progress import task_meter

ATTEMPTS: list[int] = []


@task(name="flaky-transfer", **IO_RETRY)
def flaky_transfer(total: int) -> int:
    """Fails once as the engine going away, then reports a transfer of ``total`` bytes."""
    ATTEMPTS.append(1)
    if len(ATTEMPTS) == 1:
        raise EngineUnavailableError("the Docker engine went away")
    progress = task_meter("upload", "sha256:0123")
    for done in range(0, total + 1, total // 4):
        progress(done, total)
    return total


@flow(name="progress-probe")
def probe(total: int) -> int:
    """Runs the flaky transfer."""
    return flaky_transfer(total)


def test_retry_and_progress_reach_the_listener_and_the_run_log(caplog: pytest.LogCaptureFixture) -> None:
    """A temporary failure is announced as 'retrying in N s: reason'; the transfer's end is logged at INFO."""
    events: list[ProgressEvent] = []
    ATTEMPTS.clear()
    with listening(events.append):
        assert probe(8 << 20) == 8 << 20
    retry = [e for e in events if e.step == "retry"]
    assert len(retry) == 1 and retry[0].reason == "the Docker engine went away"
    assert format_event(retry[0]).startswith("flaky-transfer-") and ": retrying in 0.2 s: the Docker engine" in (
        format_event(retry[0])
    )
    assert [e.finished for e in events if e.step == "upload"][-1]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "upload sha256:0123: 8.0 of 8.0 MiB (100%)" in " ".join(logged)
    assert any("retrying in 0.2 s: the Docker engine went away" in m for m in logged), logged
