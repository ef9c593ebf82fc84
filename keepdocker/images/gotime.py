"""Go 1.19 `time.Time` JSON semantics: lenient `time.Parse(RFC3339)` on raw quoted bytes and RFC3339Nano output.

Docker 1.10-24 (go1.19 for 20.10) decodes `created` with ``time.Parse("\\"" + RFC3339 + "\\"", raw)`` and writes it
back with ``RFC3339Nano``. Go's parser is more lenient than RFC 3339: a one-digit hour, a comma before the fraction,
more than nine fraction digits (truncated) and any two-digit offset (minutes >= 60 folded into the hours) pass.
The formatter strips trailing fraction zeros, writes ``Z`` for a zero offset and otherwise ``±hh:mm``, where the hours
may grow to three digits (which Go then cannot parse back).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ZERO_TIME", "GoTime", "GoTimeError", "format_rfc3339nano", "parse_rfc3339_json"]


class GoTimeError(ValueError):
    """A value Go's ``time.Parse`` refuses; the message says which part broke."""


@dataclass(frozen=True)
class GoTime:
    """A Go ``time.Time`` as its wall-clock fields in its own zone plus the zone offset in seconds east of UTC."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int
    nanosecond: int
    offset: int


ZERO_TIME = GoTime(1, 1, 1, 0, 0, 0, 0, 0)
"""Go's zero ``time.Time`` (what a missing or ``null`` ``created`` leaves), formatted ``0001-01-01T00:00:00Z``."""


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_in(month: int, year: int) -> int:
    if month == 2 and _is_leap(year):
        return 29
    return _DAYS[month - 1]


def _digit(value: bytes, i: int) -> bool:
    return i < len(value) and 0x30 <= value[i] <= 0x39


def _getnum(value: bytes, pos: int, fixed: bool, what: str) -> tuple[int, int]:
    """Go's ``getnum``: one or two digits (exactly two when ``fixed``); returns (number, new position)."""
    if not _digit(value, pos):
        raise GoTimeError(f"cannot parse {what}: expected a digit")
    if not _digit(value, pos + 1):
        if fixed:
            raise GoTimeError(f"cannot parse {what}: expected two digits")
        return value[pos] - 0x30, pos + 1
    return (value[pos] - 0x30) * 10 + (value[pos + 1] - 0x30), pos + 2


def _expect(value: bytes, pos: int, char: bytes, what: str) -> int:
    if value[pos : pos + 1] != char:
        raise GoTimeError(f"cannot parse {what}: expected {char.decode()!r}")
    return pos + 1


def parse_rfc3339_json(raw: bytes) -> GoTime:
    """Parse the raw JSON bytes of a time value (quotes included) as go1.19 ``Time.UnmarshalJSON`` does.

    ``null`` is handled by the caller (it leaves the time unchanged); anything else must match
    ``"2006-01-02T15:04:05Z07:00"`` byte by byte with Go's leniencies, so JSON escapes inside the string fail.
    """
    v = raw
    pos = _expect(v, 0, b'"', "opening quote")
    if len(v) - pos < 4 or not all(_digit(v, pos + k) for k in range(4)):
        raise GoTimeError("cannot parse year: expected four digits")
    year = int(v[pos : pos + 4])
    pos += 4
    pos = _expect(v, pos, b"-", "date")
    month, pos = _getnum(v, pos, True, "month")
    if not 1 <= month <= 12:
        raise GoTimeError("month out of range")
    pos = _expect(v, pos, b"-", "date")
    day, pos = _getnum(v, pos, True, "day")
    pos = _expect(v, pos, b"T", "'T' separator")
    hour, pos = _getnum(v, pos, False, "hour")
    if hour >= 24:
        raise GoTimeError("hour out of range")
    pos = _expect(v, pos, b":", "time")
    minute, pos = _getnum(v, pos, True, "minute")
    if minute >= 60:
        raise GoTimeError("minute out of range")
    pos = _expect(v, pos, b":", "time")
    second, pos = _getnum(v, pos, True, "second")
    if second >= 60:
        raise GoTimeError("second out of range")
    nsec = 0
    if len(v) - pos >= 2 and v[pos] in b".," and _digit(v, pos + 1):
        end = pos + 2
        while _digit(v, end):
            end += 1
        digits = v[pos + 1 : min(end, pos + 10)]
        nsec = int(digits) * 10 ** (9 - len(digits))
        pos = end
    if v[pos : pos + 1] == b"Z":
        offset = 0
        pos += 1
    else:
        if len(v) - pos < 6 or v[pos + 3] != 0x3A:
            raise GoTimeError("cannot parse zone: expected Z or ±hh:mm")
        sign = v[pos]
        hh, _ = _getnum(v[pos + 1 : pos + 3], 0, True, "zone hour")
        mm, _ = _getnum(v[pos + 4 : pos + 6], 0, True, "zone minute")
        if sign == 0x2B:
            offset = (hh * 60 + mm) * 60
        elif sign == 0x2D:
            offset = -(hh * 60 + mm) * 60
        else:
            raise GoTimeError("cannot parse zone: expected Z, + or -")
        pos += 6
    pos = _expect(v, pos, b'"', "closing quote")
    if pos != len(v):
        raise GoTimeError("extra text after the time")
    if day < 1 or day > _days_in(month, year):
        raise GoTimeError("day out of range")
    return GoTime(year, month, day, hour, minute, second, nsec, offset)


def _pad(n: int, width: int) -> str:
    """Go's ``appendInt(b, n, width)``: at least ``width`` digits, a leading '-' for negatives."""
    if n < 0:
        return "-" + _pad(-n, width)
    return str(n).rjust(width, "0")


def format_rfc3339nano(t: GoTime) -> str:
    """Format like Go ``t.Format(time.RFC3339Nano)``: trimmed fraction, ``Z`` for offset 0, else ``±hh:mm``."""
    out = (
        f"{_pad(t.year, 4)}-{_pad(t.month, 2)}-{_pad(t.day, 2)}T"
        f"{_pad(t.hour, 2)}:{_pad(t.minute, 2)}:{_pad(t.second, 2)}"
    )
    if t.nanosecond:
        out += "." + _pad(t.nanosecond, 9).rstrip("0")
    if t.offset == 0:
        return out + "Z"
    zone = int(t.offset / 60)  # Go integer division truncates toward zero
    sign = "+"
    if zone < 0:
        sign = "-"
        zone = -zone
    return f"{out}{sign}{_pad(zone // 60, 2)}:{_pad(zone % 60, 2)}"
