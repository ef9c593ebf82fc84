"""Arvados timestamps: the fixed nine-digit UTC format, exact parsing to nanoseconds, and a strictly rising clock."""

from __future__ import annotations

import datetime as _dt
import re
import threading
import time

__all__ = ["MonotonicClock", "format_ns", "parse_timestamp"]

_NS_PER_S = 1_000_000_000
_TS_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9})\d*)?)?)?\s*(Z|z|UTC|[+-]\d{2}:?\d{2})?$"
)


def format_ns(ns: int) -> str:
    """Format nanoseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` (UTC), as the real server does."""
    seconds, frac = divmod(ns, _NS_PER_S)
    stamp = _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"


def parse_timestamp(text: str) -> int:
    """Parse an ISO 8601 timestamp (any fraction length, Z or offset; date alone allowed) to nanoseconds (UTC).

    Raises ValueError when the text is not a timestamp.
    """
    m = _TS_RE.match(text.strip())
    if m is None:
        raise ValueError(f"not a timestamp: {text!r}")
    year, month, day, hour, minute, second, frac, zone = m.groups()
    base = _dt.datetime(
        int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), tzinfo=_dt.UTC
    )
    offset_s = 0
    if zone and zone not in ("Z", "z", "UTC"):
        digits = zone[1:].replace(":", "")
        offset_s = (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * (1 if zone[0] == "+" else -1)
    whole = int(base.timestamp()) - offset_s
    frac_ns = int((frac or "").ljust(9, "0")) if frac else 0
    return whole * _NS_PER_S + frac_ns


class MonotonicClock:
    """Wall-clock nanoseconds that never repeat or go backwards, so ``created_at`` orders records exactly."""

    def __init__(self, last_ns: int = 0) -> None:
        self._last = last_ns
        self._lock = threading.Lock()

    def advance_past(self, ns: int) -> None:
        """Make every later reading greater than ``ns`` (used after loading existing records)."""
        with self._lock:
            self._last = max(self._last, ns)

    def now(self) -> int:
        """A reading strictly greater than every earlier one."""
        with self._lock:
            value = max(time.time_ns(), self._last + 1)
            self._last = value
            return value
