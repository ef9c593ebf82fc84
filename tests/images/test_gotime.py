"""Go 1.19 time.Parse(RFC3339) leniency and RFC3339Nano formatting, rule by rule."""

from __future__ import annotations

import pytest

from keepdocker.images.gotime import ZERO_TIME, GoTime, GoTimeError, format_rfc3339nano, parse_rfc3339_json


def roundtrip(text: str) -> str:
    """Parse a JSON string value the way Time.UnmarshalJSON does and format it as Time.MarshalJSON does."""
    return format_rfc3339nano(parse_rfc3339_json(b'"' + text.encode() + b'"'))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2015-12-01T10:00:00Z", "2015-12-01T10:00:00Z"),
        ("2015-12-01T10:00:00.5Z", "2015-12-01T10:00:00.5Z"),
        ("2015-12-01T10:00:00,5Z", "2015-12-01T10:00:00.5Z"),
        ("2015-12-01T1:00:00Z", "2015-12-01T01:00:00Z"),
        ("2015-12-01T10:00:00.123456789123Z", "2015-12-01T10:00:00.123456789Z"),
        ("2015-12-01T10:00:00.120000000+02:00", "2015-12-01T10:00:00.12+02:00"),
        ("2015-12-01T10:00:00.000Z", "2015-12-01T10:00:00Z"),
        ("2015-12-01T10:00:00+00:00", "2015-12-01T10:00:00Z"),
        ("2015-12-01T10:00:00-00:00", "2015-12-01T10:00:00Z"),
        ("2015-12-01T10:00:00+23:60", "2015-12-01T10:00:00+24:00"),
        ("2015-12-01T10:00:00-05:30", "2015-12-01T10:00:00-05:30"),
        ("2015-12-01T10:00:00+98:99", "2015-12-01T10:00:00+99:39"),
        ("2015-12-01T10:00:00-99:99", "2015-12-01T10:00:00-100:39"),
        ("2016-02-29T00:00:00Z", "2016-02-29T00:00:00Z"),
        ("0000-01-01T00:00:00Z", "0000-01-01T00:00:00Z"),
        ("2015-12-01T10:00:00.000000001Z", "2015-12-01T10:00:00.000000001Z"),
    ],
)
def test_parse_then_format_like_go(given: str, expected: str) -> None:
    """Go's lenient parse plus RFC3339Nano output: comma fraction, 1-digit hour, >9 digits, offsets folded."""
    assert roundtrip(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "2015-13-01T00:00:00Z",
        "2015-00-01T00:00:00Z",
        "2015-02-29T00:00:00Z",
        "2015-04-31T00:00:00Z",
        "2015-01-00T00:00:00Z",
        "2015-01-01T24:00:00Z",
        "2015-01-01T00:60:00Z",
        "2015-01-01T00:00:60Z",
        "2015-01-01T00:00:00z",
        "2015-01-01T00:00:00",
        "2015-01-01t00:00:00Z",
        "2015-01-01 00:00:00Z",
        "2015-1-01T00:00:00Z",
        "2015-01-1T00:00:00Z",
        "2015-01-01T00:0:00Z",
        "15-01-01T00:00:00Z",
        "+2015-01-01T00:00:00Z",
        "2015-01-01T00:00:00.Z",
        "2015-01-01T00:00:00+0100",
        "2015-01-01T00:00:00+1:00",
        "2015-01-01T00:00:00*01:00",
        "2015-01-01T00:00:00ZZ",
        "2015-01-01T00:00:00Z ",
        "-100:39",
    ],
)
def test_parse_refuses_what_go_refuses(given: str) -> None:
    """Out-of-range fields, wrong widths, missing or malformed zones and trailing text all fail."""
    with pytest.raises(GoTimeError):
        parse_rfc3339_json(b'"' + given.encode() + b'"')


def test_parse_works_on_raw_bytes_so_escapes_fail() -> None:
    """An escape inside the quoted time is an error, because Go parses the raw quoted bytes."""
    with pytest.raises(GoTimeError):
        parse_rfc3339_json(b'"\\u0032015-01-01T00:00:00Z"')


@pytest.mark.parametrize("raw", [b"5", b"true", b"{}", b"[]", b"2015-01-01T00:00:00Z", b'"2015-01-01T00:00:00Z'])
def test_non_string_values_fail(raw: bytes) -> None:
    """Numbers, booleans, objects, arrays and unquoted text are not times."""
    with pytest.raises(GoTimeError):
        parse_rfc3339_json(raw)


def test_parse_keeps_wall_clock_and_offset() -> None:
    """The parsed value keeps the wall-clock fields and the offset in seconds."""
    assert parse_rfc3339_json(b'"2013-06-13T14:03:50.821769-07:00"') == GoTime(
        2013, 6, 13, 14, 3, 50, 821769000, -7 * 3600
    )


def test_zero_time_formats_as_year_one() -> None:
    """Go's zero time is 0001-01-01T00:00:00Z."""
    assert format_rfc3339nano(ZERO_TIME) == "0001-01-01T00:00:00Z"


def test_negative_sub_hour_offset_keeps_sign() -> None:
    """An offset of minus 30 minutes formats as -00:30."""
    assert format_rfc3339nano(GoTime(2000, 1, 1, 0, 0, 0, 0, -1800)) == "2000-01-01T00:00:00-00:30"
