"""Progress of long steps (save, convert, upload, download) and retries, as events for whoever listens.

The core calls a plain ``(done, total)`` callback while it streams; a `Meter` turns those calls into
`ProgressEvent`s (with the rate) for its listeners: the CLI draws them on stderr, a flow run logs them. Listeners
registered with `listening` hear every meter of the process (the CLI runs its flows in-process).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Listener",
    "Meter",
    "Progress",
    "ProgressEvent",
    "Step",
    "format_event",
    "listening",
    "meter",
    "report_retry",
]

Step = Literal["pull", "save", "convert", "upload", "download", "retry"]
Progress = Callable[[int, int], None]  # (bytes done, bytes expected; 0 when unknown)
MIB = 1 << 20


@dataclass(frozen=True)
class ProgressEvent:
    """One step's state: bytes done of total (0 = unknown), the mean rate so far, and whether it ended."""

    step: Step
    subject: str  # what the step works on: an image ID, a PDH, a file name
    done: int = 0
    total: int = 0
    rate: float = 0.0  # bytes per second since the step started
    finished: bool = False
    retry_in: float = 0.0  # for step "retry": seconds until the next attempt
    reason: str = ""  # for step "retry": why the attempt failed


Listener = Callable[[ProgressEvent], None]

_lock = threading.Lock()
_listeners: list[Listener] = []


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send every progress event of this process to ``listener`` while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def _emit(event: ProgressEvent, extra: Listener | None) -> None:
    with _lock:
        targets = list(_listeners)
    if extra is not None:
        targets.append(extra)
    for listener in targets:
        listener(event)


class Meter:
    """A ``(done, total)`` callback that emits rate-stamped events, at most every ``interval`` s and at the end."""

    def __init__(self, step: Step, subject: str, listener: Listener | None = None, interval: float = 0.2) -> None:
        self.step = step
        self.subject = subject
        self.listener = listener
        self.interval = interval
        self.started = time.monotonic()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        """Record progress; emits when ``interval`` has passed or the step is complete."""
        now = time.monotonic()
        complete = total > 0 and done >= total
        if not complete and now - self._last < self.interval:
            return
        self._last = now
        self._send(done, total, complete, now)

    def finish(self, done: int, total: int = 0) -> None:
        """The step ended with ``done`` bytes (sends the final event even when the total was unknown)."""
        self._send(done, total or done, True, time.monotonic())

    def _send(self, done: int, total: int, finished: bool, now: float) -> None:
        elapsed = max(now - self.started, 1e-6)
        event = ProgressEvent(self.step, self.subject, done, total, done / elapsed, finished)
        _emit(event, self.listener)


def meter(step: Step, subject: str, listener: Listener | None = None) -> Meter:
    """A Meter for one step; ``listener`` hears it besides the process-wide listeners."""
    return Meter(step, subject, listener)


def report_retry(subject: str, delay: float, reason: str, listener: Listener | None = None) -> None:
    """Announce that ``subject`` failed and will be tried again in ``delay`` seconds."""
    _emit(ProgressEvent("retry", subject, retry_in=delay, reason=reason), listener)


def format_event(event: ProgressEvent) -> str:
    """One line for people: `upload sha256:0123abcd: 120.0 of 400.0 MiB (30%), 85.2 MiB/s`."""
    if event.step == "retry":
        delay = f"{event.retry_in:.0f}" if event.retry_in >= 1 else f"{event.retry_in:.1f}"
        return f"{event.subject}: retrying in {delay} s: {event.reason}"
    # MiB as the readers expect; KiB for the small images of tests and rehearsals (not "0.0 of 0.0 MiB").
    scale, unit = (MIB, "MiB") if max(event.total, event.done) >= MIB else (1024, "KiB")
    done = f"{event.done / scale:.1f}"
    if event.total > 0:
        pct = 100 * event.done // event.total
        amount = f"{done} of {event.total / scale:.1f} {unit} ({pct}%)"
    else:
        amount = f"{done} {unit}"
    rate_scale, rate_unit = (MIB, "MiB/s") if event.rate >= MIB / 10 else (1024, "KiB/s")
    verb = "done" if event.finished else ""
    line = f"{event.step} {event.subject}: {amount}, {event.rate / rate_scale:.1f} {rate_unit}"
    return f"{line} {verb}".rstrip()
