"""Go encoding/json byte semantics: scanner, unquote, compact, string encoder, map marshal, typed decode/encode."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keepdocker.errors import MalformedArchiveError
from keepdocker.images.gojson import (
    ARRAY,
    MAX_DEPTH,
    NULL,
    NUMBER,
    OBJECT,
    STRING,
    T_BOOL,
    T_EMPTY_STRUCT,
    T_INT,
    T_STR_SLICE,
    T_STRING,
    T_TIME,
    Field,
    GoSlice,
    MapOf,
    PtrTo,
    SliceOf,
    Struct,
    compact,
    decode,
    encode,
    encode_string,
    fold_name,
    marshal_raw_map,
    parse,
    raw_object,
    unquote,
    zero,
)

# --- scanner ---------------------------------------------------------------------------------------------------


def test_parse_keeps_raw_spans_and_duplicates() -> None:
    """Object pairs keep source order, duplicates and the exact raw bytes of every value."""
    data = b' {"a" : [1 , 2.50],"a":{"x" :null}, "s":"\\u00e9"} \n'
    root = parse(data)
    assert root.kind == OBJECT
    assert [(k.raw, v.raw) for k, v in root.pairs()] == [
        (b'"a"', b"[1 , 2.50]"),
        (b'"a"', b'{"x" :null}'),
        (b'"s"', b'"\\u00e9"'),
    ]
    first = root.pairs()[0][1]
    assert first.kind == ARRAY
    assert [e.raw for e in first.elements()] == [b"1", b"2.50"]


@pytest.mark.parametrize(
    ("data", "kind"),
    [(b"null", NULL), (b"-0.5e+3", NUMBER), (b'"x"', STRING), (b"[]", ARRAY), (b"{}", OBJECT), (b"\t1\r\n", NUMBER)],
)
def test_parse_accepts_any_top_level_value(data: bytes, kind: int) -> None:
    """Any JSON value is a document, with insignificant whitespace around it."""
    assert parse(data).kind == kind


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b" ",
        b"\xef\xbb\xbf{}",
        b'{"a":1,}',
        b"[1,]",
        b"{} x",
        b"{}{}",
        b"tru",
        b"nul",
        b"True",
        b"NaN",
        b"Infinity",
        b"01",
        b"-",
        b"1.",
        b".5",
        b"+1",
        b"1e",
        b"0x10",
        b'"a\x01"',
        b'"a\n"',
        b'"\\x"',
        b'"\\u12"',
        b'"\\u12G4"',
        b"'a'",
        b'{"a" 1}',
        b"{a:1}",
        b'{"a":1 "b":2}',
        b"[1 2]",
        b'"unterminated',
        b"\xff",
        b"[\x0b]",
        b"[\xa0]",
    ],
)
def test_parse_refuses_invalid_json(data: bytes) -> None:
    """Strict RFC 8259: BOM, trailing commas, bad numbers, control characters and bad escapes all fail."""
    with pytest.raises(MalformedArchiveError):
        parse(data)


def test_parse_does_not_validate_utf8_in_strings() -> None:
    """Invalid UTF-8 inside a string is accepted by the scanner and kept in the raw span."""
    assert parse(b'"\xff\xed\xa0\x80"').raw == b'"\xff\xed\xa0\x80"'


def test_depth_limit_is_ten_thousand() -> None:
    """10000 nested containers pass, 10001 fail with a max-depth error."""
    assert parse(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH).kind == ARRAY
    with pytest.raises(MalformedArchiveError, match="max depth"):
        parse(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    mixed = b'{"a":' * 5000 + b"[" * 5000 + b"]" * 5000 + b"}" * 5000
    assert parse(mixed).kind == OBJECT


# --- unquote ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'"plain"', "plain"),
        (b'"\\"\\\\\\/\\b\\f\\n\\r\\t"', '"\\/\b\f\n\r\t'),
        (b'"\\u00e9\\u0041"', "éA"),
        (b'"k\\u00e9y"', "kéy"),
        (b'"\\ud83d\\ude00"', "😀"),
        (b'"\\ud83d"', "\ufffd"),
        (b'"\\ude00"', "\ufffd"),
        (b'"\\ude00\\ud83d"', "\ufffd\ufffd"),
        (b'"\\ud83d\\u0041"', "\ufffdA"),
        (b'"\\ud83d\\ud83d\\ude00"', "\ufffd😀"),
        (b'"\\ud83dx\\ude00"', "\ufffdx\ufffd"),
        (b'"\\ud83d\\n"', "\ufffd\n"),
        (b'"\xe2\x80"', "\ufffd\ufffd"),
        (b'"\xe2\x80A"', "\ufffd\ufffdA"),
        (b'"\xed\xa0\x80"', "\ufffd\ufffd\ufffd"),
        (b'"\xc0\xaf"', "\ufffd\ufffd"),
        (b'"\xf4\x90\x80\x80"', "\ufffd\ufffd\ufffd\ufffd"),
        (b'"\xf0\x9f\x98"', "\ufffd\ufffd\ufffd"),
        (b'"\xff\\u0041\xfe"', "\ufffdA\ufffd"),
        (b'"\xf0\x9f\x98\x80"', "😀"),
    ],
)
def test_unquote_matches_go(raw: bytes, expected: str) -> None:
    """Escapes decode; each invalid UTF-8 byte and each unpaired surrogate escape gives one U+FFFD."""
    assert unquote(raw) == expected


# --- encoder, compact, map marshal ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", b'"plain"'),
        ('q"b\\', b'"q\\"b\\\\"'),
        ("\n\r\t", b'"\\n\\r\\t"'),
        ("\b\f\x00\x1f", b'"\\u0008\\u000c\\u0000\\u001f"'),
        ("<>&", b'"\\u003c\\u003e\\u0026"'),
        ("\u2028\u2029", b'"\\u2028\\u2029"'),
        ("\x7f", b'"\x7f"'),
        ("é😀\ufffd", '"é😀\ufffd"'.encode()),
        ("/", b'"/"'),
    ],
)
def test_encode_string_matches_go_119(value: str, expected: bytes) -> None:
    """Short escapes for quote, backslash, \\n \\r \\t; \\u00XX for other controls; HTML and U+2028/9 escaped."""
    assert encode_string(value) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b' { "b" : [ 1 , 2 ] ,\n "a" : null } ', b'{"b":[1,2],"a":null}'),
        (b'"<a & b>"', b'"\\u003ca \\u0026 b\\u003e"'),
        (b'"\xe2\x80\xa8\xe2\x80\xa9"', b'"\\u2028\\u2029"'),
        (b'"\\u003c \\/ \\u00e9 \\t \\ud83d"', b'"\\u003c \\/ \\u00e9 \\t \\ud83d"'),
        (b"[1.0, 1E+2, -0, 2e-07, 12345678901234567890123]", b"[1.0,1E+2,-0,2e-07,12345678901234567890123]"),
        (b'"\xff\xe2\x80 x"', b'"\xff\xe2\x80 x"'),
        (b'"  spaces  kept  "', b'"  spaces  kept  "'),
        (b'"a\\" b"', b'"a\\" b"'),
    ],
)
def test_compact_with_html_escaping(raw: bytes, expected: bytes) -> None:
    """Whitespace outside strings goes; <>& and U+2028/9 are escaped; everything else is verbatim."""
    assert compact(raw) == expected


def test_marshal_raw_map_sorts_keys_by_bytes() -> None:
    """Keys sort by UTF-8 bytes (uppercase first, non-ASCII last) and are re-encoded with Go's encoder."""
    values = {"b": b"1", "B": b"2", "Author": b"3", "architecture": b"4", "é": b"5", "<": b"6", "": b"7", "~": b"8"}
    assert marshal_raw_map(values) == (b'{"":7,"\\u003c":6,"Author":3,"B":2,"architecture":4,"b":1,"~":8,"\xc3\xa9":5}')


def test_raw_object_unescapes_keys_and_last_duplicate_wins() -> None:
    """The RawMessage map uses decoded keys; equal decoded keys keep the last raw value."""
    root = parse(b'{"\\u00e9":1,"\xc3\xa9":2,"\xff":3,"\\ufffd":4,"x":[ 1 ]}')
    assert raw_object(root) == {"é": b"2", "\ufffd": b"4", "x": b"[ 1 ]"}


def test_raw_object_refuses_non_objects() -> None:
    """Only an object decodes into the RawMessage map."""
    with pytest.raises(MalformedArchiveError):
        raw_object(parse(b"[]"))


# --- field-name folding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "name", "match"),
    [
        ("Parent", "parent", True),
        ("PARENT", "parent", True),
        ("o\u017f", "os", True),
        ("doc\u212aer_version", "docker_version", True),
        ("DOCKER_VERSION", "docker_version", True),
        ("docker-version", "docker_version", False),
        ("os ", "os", False),
        ("\u00f6s", "os", False),
        ("ID", "id", True),
    ],
)
def test_fold_name_follows_go_119(key: str, name: str, match: bool) -> None:
    """ASCII case folds, U+017F folds to s and KELVIN SIGN to k; nothing else folds."""
    assert (fold_name(key) == fold_name(name)) is match


# --- typed decode / encode -------------------------------------------------------------------------------------

INNER = Struct("Inner", [Field("A", T_STRING), Field("B", SliceOf(T_STRING), True)])
OUTER = Struct(
    "Outer",
    [
        Field("s", T_STRING, True),
        Field("b", T_BOOL, True),
        Field("n", T_INT, True),
        Field("t", T_TIME),
        Field("cmd", T_STR_SLICE),
        Field("list", SliceOf(T_STRING)),
        Field("labels", MapOf(T_STRING)),
        Field("set", MapOf(T_EMPTY_STRUCT), True),
        Field("inner", INNER),
        Field("ptr", PtrTo(INNER), True),
        Field("num", PtrTo(T_INT), True),
    ],
)


def dec(data: bytes) -> dict[str, Any]:
    """Decode into a fresh Outer."""
    value: dict[str, Any] = decode(parse(data), OUTER, zero(OUTER), "Outer")
    return value


def test_decode_matches_fields_case_insensitively_last_wins() -> None:
    """Keys fold onto fields, unknown keys are ignored and the last occurrence wins."""
    v = dec(b'{"S":"one","s":"two","unknown":[{"deep":1}],"N":-5,"B":true}')
    assert (v["s"], v["n"], v["b"]) == ("two", -5, True)


def test_null_leaves_scalars_and_structs_but_clears_pointers_maps_slices() -> None:
    """null keeps strings, bools, ints, times and structs, and sets slices, maps, pointers and StrSlice to nil."""
    v = dec(
        b'{"s":"x","s":null,"n":3,"n":null,"t":"2015-01-01T00:00:00Z","t":null,"inner":{"A":"a"},"inner":null,'
        b'"list":["a"],"list":null,"labels":{"a":"b"},"labels":null,"ptr":{},"ptr":null,"cmd":["c"],"cmd":null}'
    )
    assert (v["s"], v["n"], v["inner"]["A"]) == ("x", 3, "a")
    assert encode(v["t"], T_TIME) == b'"2015-01-01T00:00:00Z"'
    assert v["list"] is None and v["labels"] is None and v["ptr"] is None and v["cmd"] is None


def test_objects_merge_into_structs_maps_and_pointers() -> None:
    """A repeated object merges into the struct, map or pointee that is already there."""
    v = dec(
        b'{"inner":{"A":"a","B":["x"]},"inner":{"B":["y"]},"labels":{"a":"1"},"labels":{"b":"2"},'
        b'"ptr":{"A":"p"},"ptr":{"B":[]}}'
    )
    assert v["inner"]["A"] == "a" and v["inner"]["B"].values() == ["y"]
    assert v["labels"] == {"a": "1", "b": "2"}
    assert v["ptr"]["A"] == "p" and v["ptr"]["B"].values() == []


def test_map_values_start_from_zero_and_null_gives_zero() -> None:
    """Each map value is decoded into a fresh zero value: null becomes ""."""
    assert dec(b'{"labels":{"n":null,"x":"y","x":"z"}}')["labels"] == {"n": "", "x": "z"}


def test_slices_reuse_backing_array_like_go() -> None:
    """Decoding into an existing slice overwrites in place, truncates, and re-exposes stale elements within cap."""
    v = dec(b'{"list":["a","b","c"],"list":["x"],"list":[null,null]}')
    assert v["list"].values() == ["x", "b"]
    grown = dec(b'{"list":["a","b","c","d","e"],"list":[null,null,null,null,null,null,null]}')
    assert grown["list"].values() == ["a", "b", "c", "d", "e", "", ""]
    assert dec(b'{"list":["a"],"list":[]}')["list"].values() == []


def test_strslice_accepts_string_or_array() -> None:
    """StrSlice takes a string as a one-element list, an array of strings (null elements as ""), or null."""
    assert dec(b'{"cmd":"just a string"}')["cmd"] == ["just a string"]
    assert dec(b'{"cmd":["a",null,"b"]}')["cmd"] == ["a", "", "b"]
    assert dec(b'{"cmd":[]}')["cmd"] == []


@pytest.mark.parametrize(
    "data",
    [
        b'{"s":5}',
        b'{"s":true}',
        b'{"s":{}}',
        b'{"s":[]}',
        b'{"b":"true"}',
        b'{"b":1}',
        b'{"n":"1"}',
        b'{"n":1.0}',
        b'{"n":1e3}',
        b'{"n":9223372036854775808}',
        b'{"t":5}',
        b'{"t":"yesterday"}',
        b'{"cmd":[1,2]}',
        b'{"cmd":{}}',
        b'{"cmd":5}',
        b'{"list":"x"}',
        b'{"list":[1]}',
        b'{"labels":[]}',
        b'{"labels":{"a":1}}',
        b'{"set":{"a":"x"}}',
        b'{"set":{"a":[]}}',
        b'{"inner":"x"}',
        b'{"ptr":[]}',
        b'{"num":"5"}',
        b"[]",
        b'"x"',
        b"1",
        b"true",
    ],
)
def test_type_mismatches_fail(data: bytes) -> None:
    """Any value that does not fit its Go field type fails the whole decode."""
    with pytest.raises(MalformedArchiveError):
        dec(data)


def test_int_range_and_null_object() -> None:
    """int64 bounds are accepted; a top-level null leaves the zero struct; {} into struct{} is fine."""
    assert dec(b'{"n":-9223372036854775808}')["n"] == -(1 << 63)
    assert dec(b"null") == zero(OUTER)
    assert dec(b'{"set":{"a":{"x":1},"b":null}}')["set"] == {"a": (), "b": ()}


def test_encode_applies_omitempty_and_sorts_maps() -> None:
    """Marshal writes declaration order, drops empty omitempty fields and sorts map keys by bytes."""
    v = dec(b'{"labels":{"b":"<","a":"1","\xc3\xa9":"2"},"set":{},"cmd":"x","num":0,"ptr":{"A":"p"}}')
    assert encode(v, OUTER) == (
        b'{"t":"0001-01-01T00:00:00Z","cmd":["x"],"list":null,"labels":{"a":"1","b":"\\u003c","\xc3\xa9":"2"},'
        b'"inner":{"A":""},"ptr":{"A":"p"},"num":0}'
    )


def test_encode_nil_versus_empty() -> None:
    """A nil slice or map encodes as null, an empty one as [] or {}."""
    assert encode(None, SliceOf(T_STRING)) == b"null"
    assert encode(GoSlice(), SliceOf(T_STRING)) == b"[]"
    assert encode({}, MapOf(T_STRING)) == b"{}"
    assert encode(None, T_STR_SLICE) == b"null"


@given(st.text())
def test_encode_then_unquote_roundtrips(text: str) -> None:
    """Any string without lone surrogates survives Go encoding and decoding unchanged."""
    clean = "".join(ch for ch in text if not 0xD800 <= ord(ch) <= 0xDFFF)
    encoded = encode_string(clean)
    assert parse(encoded).kind == STRING
    assert unquote(encoded) == clean


@given(st.binary(max_size=64))
def test_unquote_of_raw_bytes_is_valid_text(body: bytes) -> None:
    """Whatever bytes a scanned string holds, unquote yields text and re-encoding gives valid UTF-8 JSON."""
    raw = b'"' + body.replace(b"\\", b"").replace(b'"', b"") + b'"'
    if any(c < 0x20 for c in raw):
        with pytest.raises(MalformedArchiveError):
            parse(raw)
        return
    text = unquote(parse(raw).raw)
    encode_string(text).decode("utf-8")
