"""Progress on stderr for people: one redrawn line on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from keepdocker.progress import ProgressEvent, format_event, listening

__all__ = ["PLAIN_EVERY_SECONDS", "ConsoleProgress", "console_progress"]

PLAIN_EVERY_SECONDS = 5.0


class ConsoleProgress:
    """Draws progress events on ``stream``: redrawn in place on a TTY, else one line per step every 5 s and at its end.

    Retries are always printed on a line of their own.
    """

    def __init__(self, stream: TextIO, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._drawn = False

    def __call__(self, event: ProgressEvent) -> None:
        """Render one event."""
        line = format_event(event)
        with self._lock:
            if event.step == "retry":
                self._newline_line(line)
            elif self.tty:
                self.stream.write(f"\r\x1b[K{line}")
                self._drawn = True
                if event.finished:
                    self.stream.write("\n")
                    self._drawn = False
            else:
                key = (event.step, event.subject)
                now = time.monotonic()
                if event.finished or now - self._last.get(key, -PLAIN_EVERY_SECONDS) >= PLAIN_EVERY_SECONDS:
                    self._last[key] = now
                    self.stream.write(f"{line}\n")
            self.stream.flush()

    def _newline_line(self, line: str) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False
        self.stream.write(f"{line}\n")

    def close(self) -> None:
        """End a half-drawn line so what follows starts on its own line."""
        with self._lock:
            if self._drawn:
                self.stream.write("\n")
                self.stream.flush()
                self._drawn = False


@contextlib.contextmanager
def console_progress(quiet: bool = False, stream: TextIO | None = None) -> Iterator[None]:
    """Show this process's progress events on stderr while the block runs (nothing when ``quiet``)."""
    if quiet:
        yield
        return
    console = ConsoleProgress(stream or sys.stderr)
    try:
        with listening(console):
            yield
    finally:
        console.close()
