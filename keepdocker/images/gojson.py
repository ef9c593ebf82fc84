"""Go 1.19 `encoding/json` byte semantics in Python: strict scanner with raw spans, unquote, compact, encode, decode.

Everything here reproduces what the Go standard library (as built into Docker 20.10) does with the same bytes:

* :func:`parse` is the scanner: strict RFC 8259 grammar, nesting depth <= 10000, no UTF-8 validation; every
  node keeps the byte span of its raw text (``json.RawMessage`` semantics).
* :func:`unquote` is Go's ``unquoteBytes``: escapes decoded, each invalid UTF-8 byte and each unpaired surrogate
  escape becomes U+FFFD.
* :func:`compact` is ``json.Compact`` with HTML escaping (what ``json.Marshal`` does to a RawMessage).
* :func:`encode_string` is the encoder's ``string`` with ``escapeHTML``; :func:`marshal_raw_map` marshals a
  ``map[string]*json.RawMessage`` (keys sorted by their UTF-8 bytes).
* :func:`decode` / :func:`encode` run a typed struct decode/encode over a small schema language (:class:`GoType`)
  with Go's rules: case-insensitive field match, last duplicate wins, objects merge, ``null`` leaves non-pointers
  unchanged, slices reuse their backing array, and any type mismatch fails.

Errors are :class:`keepdocker.errors.MalformedArchiveError` with one-line messages modelled on Go's.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keepdocker.errors import MalformedArchiveError
from keepdocker.images.gotime import ZERO_TIME, GoTime, GoTimeError, format_rfc3339nano, parse_rfc3339_json

__all__ = [
    "ARRAY",
    "FALSE",
    "MAX_DEPTH",
    "NULL",
    "NUMBER",
    "OBJECT",
    "STRING",
    "TRUE",
    "T_BOOL",
    "T_EMPTY_STRUCT",
    "T_INT",
    "T_STRING",
    "T_STR_SLICE",
    "T_TIME",
    "Field",
    "GoSlice",
    "GoType",
    "MapOf",
    "Node",
    "PtrTo",
    "SliceOf",
    "Struct",
    "compact",
    "decode",
    "encode",
    "encode_fields",
    "encode_string",
    "fold_name",
    "marshal_raw_map",
    "parse",
    "raw_object",
    "unquote",
    "zero",
]

MAX_DEPTH = 10000
"""Go's ``maxNestingDepth``: 10000 nested arrays/objects pass, 10001 fail."""

OBJECT, ARRAY, STRING, NUMBER, TRUE, FALSE, NULL = range(7)
_KIND_NAMES = ("object", "array", "string", "number", "bool", "bool", "null")


class Node:
    """One JSON value: its kind, its raw byte span ``data[start:end]`` and, for containers, its children."""

    __slots__ = ("data", "end", "items", "kind", "pending", "start")

    def __init__(self, data: bytes, kind: int, start: int, end: int) -> None:
        self.data = data
        self.kind = kind
        self.start = start
        self.end = end
        # OBJECT: list of (key node, value node); ARRAY: list of value nodes.
        self.items: list[Any] = []
        self.pending: Node | None = None

    @property
    def raw(self) -> bytes:
        """The value's exact bytes in the source (for containers, from the bracket to its match)."""
        return self.data[self.start : self.end]

    def pairs(self) -> list[tuple[Node, Node]]:
        """An object's (key, value) pairs in source order, duplicates included."""
        return list(self.items)

    def elements(self) -> list[Node]:
        """An array's elements in order."""
        return list(self.items)


_STRING_RE = re.compile(rb'"(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+"')
_NUMBER_RE = re.compile(rb"-?+(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][+-]?+[0-9]++)?+")
_WS_RE = re.compile(rb"[ \t\r\n]*+")


def _char(data: bytes, i: int) -> str:
    """Go's quoteChar-like rendering of the byte at ``i`` (a byte >= 0x80 shows as its Latin-1 rune, like Go)."""
    return repr(chr(data[i]))


def _syntax(data: bytes, i: int, context: str) -> MalformedArchiveError:
    if i >= len(data):
        return MalformedArchiveError("invalid JSON: unexpected end of JSON input")
    return MalformedArchiveError(f"invalid JSON: invalid character {_char(data, i)} {context} at offset {i}")


def _scan_string(data: bytes, i: int) -> Node:
    match = _STRING_RE.match(data, i)
    if match is None:
        # Find the first offending byte for the message.
        j = i + 1
        while j < len(data):
            c = data[j]
            if c == 0x22:
                break
            if c < 0x20:
                raise _syntax(data, j, "in string literal")
            if c == 0x5C:
                if j + 1 >= len(data):
                    break
                if data[j + 1] == 0x75:
                    raise _syntax(data, j, "in \\u hexadecimal character escape")
                raise _syntax(data, j + 1, "in string escape code")
            j += 1
        raise MalformedArchiveError("invalid JSON: unexpected end of JSON input")
    return Node(data, STRING, i, match.end())


def _skip_ws(data: bytes, i: int) -> int:
    match = _WS_RE.match(data, i)
    assert match is not None
    return match.end()


def _scan_key(data: bytes, i: int) -> tuple[Node, int]:
    """Scan an object key and its colon; return the key node and the position of the value."""
    if i >= len(data) or data[i] != 0x22:
        raise _syntax(data, i, "looking for beginning of object key string")
    key = _scan_string(data, i)
    i = _skip_ws(data, key.end)
    if i >= len(data) or data[i] != 0x3A:
        raise _syntax(data, i, "after object key")
    return key, _skip_ws(data, i + 1)


def parse(data: bytes) -> Node:
    """Scan one JSON document like Go's ``checkValid``: strict grammar, depth <= 10000, whitespace around allowed."""
    n = len(data)
    stack: list[Node] = []
    i = _skip_ws(data, 0)
    while True:
        # Parse one value starting at i.
        if i >= n:
            raise MalformedArchiveError("invalid JSON: unexpected end of JSON input")
        c = data[i]
        value: Node | None = None
        if c == 0x7B or c == 0x5B:  # { or [
            if len(stack) >= MAX_DEPTH:
                raise MalformedArchiveError(f"invalid JSON: exceeded max depth {MAX_DEPTH} at offset {i}")
            node = Node(data, OBJECT if c == 0x7B else ARRAY, i, -1)
            stack.append(node)
            i = _skip_ws(data, i + 1)
            if i >= n:
                raise MalformedArchiveError("invalid JSON: unexpected end of JSON input")
            closer = 0x7D if c == 0x7B else 0x5D
            if data[i] == closer:
                node.end = i + 1
                i += 1
                stack.pop()
                value = node
            elif c == 0x7B:
                node.pending, i = _scan_key(data, i)
                continue
            else:
                continue
        elif c == 0x22:
            value = _scan_string(data, i)
            i = value.end
        elif c == 0x2D or 0x30 <= c <= 0x39:
            match = _NUMBER_RE.match(data, i)
            if match is None:
                raise _syntax(data, i + 1, "in numeric literal")
            value = Node(data, NUMBER, i, match.end())
            i = match.end()
        elif data.startswith(b"true", i):
            value = Node(data, TRUE, i, i + 4)
            i += 4
        elif data.startswith(b"false", i):
            value = Node(data, FALSE, i, i + 5)
            i += 5
        elif data.startswith(b"null", i):
            value = Node(data, NULL, i, i + 4)
            i += 4
        else:
            raise _syntax(data, i, "looking for beginning of value")
        # Attach the finished value to its container, closing containers as their brackets come.
        while True:
            if not stack:
                i = _skip_ws(data, i)
                if i != n:
                    raise _syntax(data, i, "after top-level value")
                return value
            top = stack[-1]
            if top.kind == OBJECT:
                top.items.append((top.pending, value))
            else:
                top.items.append(value)
            i = _skip_ws(data, i)
            if i >= n:
                raise MalformedArchiveError("invalid JSON: unexpected end of JSON input")
            c = data[i]
            if c == 0x2C:  # ,
                i = _skip_ws(data, i + 1)
                if top.kind == OBJECT:
                    top.pending, i = _scan_key(data, i)
                break
            if c == (0x7D if top.kind == OBJECT else 0x5D):
                top.end = i + 1
                top.pending = None
                i += 1
                stack.pop()
                value = top
                continue
            where = "after object key:value pair" if top.kind == OBJECT else "after array element"
            raise _syntax(data, i, where)


# ---------------------------------------------------------------------------------------------------------------
# Strings


def _go_replace(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler with Go's ``utf8.DecodeRune`` semantics: one U+FFFD per invalid byte."""
    assert isinstance(exc, UnicodeDecodeError)
    return "\ufffd", exc.start + 1


codecs.register_error("keepdocker.gojson", _go_replace)

_ESCAPE_RE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|(.))", re.DOTALL)
_SIMPLE_ESCAPES = {b'"': '"', b"\\": "\\", b"/": "/", b"b": "\b", b"f": "\f", b"n": "\n", b"r": "\r", b"t": "\t"}


def _decode_bytes(b: bytes) -> str:
    return b.decode("utf-8", "keepdocker.gojson")


def unquote(raw: bytes) -> str:
    """Go's ``unquoteBytes`` on a scanned string literal (quotes included): the Go string it decodes to."""
    body = raw[1:-1]
    if b"\\" not in body:
        return _decode_bytes(body)
    out: list[str] = []
    pos = 0
    pending_high: int | None = None  # a high surrogate waiting for its low half
    for match in _ESCAPE_RE.finditer(body):
        if match.start() != pos:
            if pending_high is not None:
                out.append("\ufffd")
                pending_high = None
            out.append(_decode_bytes(body[pos : match.start()]))
        pos = match.end()
        hexdigits = match.group(1)
        if hexdigits is None:
            if pending_high is not None:
                out.append("\ufffd")
                pending_high = None
            out.append(_SIMPLE_ESCAPES[match.group(2)])
            continue
        rune = int(hexdigits, 16)
        if pending_high is not None:
            if 0xDC00 <= rune <= 0xDFFF:
                out.append(chr(0x10000 + ((pending_high - 0xD800) << 10) + (rune - 0xDC00)))
                pending_high = None
                continue
            out.append("\ufffd")
            pending_high = None
        if 0xD800 <= rune <= 0xDBFF:
            pending_high = rune
        elif 0xDC00 <= rune <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(chr(rune))
    if pending_high is not None:
        out.append("\ufffd")
    out.append(_decode_bytes(body[pos:]))
    return "".join(out)


def _build_escape_table() -> dict[int, str]:
    table: dict[int, str] = {c: f"\\u00{c:02x}" for c in range(0x20)}
    table.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x22: '\\"', 0x5C: "\\\\"})
    table.update({0x3C: "\\u003c", 0x3E: "\\u003e", 0x26: "\\u0026", 0x2028: "\\u2028", 0x2029: "\\u2029"})
    # A lone surrogate cannot come out of unquote; if a caller passes one, Go would see 3 invalid bytes.
    table.update({c: "\\ufffd" * 3 for c in range(0xD800, 0xE000)})
    return table


_ESCAPE_TABLE = _build_escape_table()


def encode_string(s: str) -> bytes:
    """Go's ``encodeState.string(s, escapeHTML=true)`` (go1.19: ``\\b``/``\\f`` as ``\\u0008``/``\\u000c``)."""
    return b'"' + s.translate(_ESCAPE_TABLE).encode("utf-8") + b'"'


_COMPACT_RE = re.compile(rb'("(?:[^"\\]++|\\.)*+")|[ \t\r\n]++', re.DOTALL)


def compact(raw: bytes) -> bytes:
    """Go's ``compact(dst, src, escapeHTML=true)`` on valid JSON: drop insignificant space, escape <>& and U+2028/9."""
    out = _COMPACT_RE.sub(lambda m: m.group(1) or b"", raw)
    if b"<" in out or b">" in out or b"&" in out or b"\xe2\x80" in out:
        out = (
            out.replace(b"<", b"\\u003c")
            .replace(b">", b"\\u003e")
            .replace(b"&", b"\\u0026")
            .replace(b"\xe2\x80\xa8", b"\\u2028")
            .replace(b"\xe2\x80\xa9", b"\\u2029")
        )
    return out


def _utf8_key(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def marshal_raw_map(values: Mapping[str, bytes]) -> bytes:
    """``json.Marshal(map[string]*json.RawMessage)``: keys sorted by their bytes, each raw value compacted."""
    parts = [encode_string(k) + b":" + compact(values[k]) for k in sorted(values, key=_utf8_key)]
    return b"{" + b",".join(parts) + b"}"


def raw_object(node: Node) -> dict[str, bytes]:
    """``json.Unmarshal`` into ``map[string]*json.RawMessage``: decoded keys, raw value bytes, last duplicate wins."""
    if node.kind != OBJECT:
        raise MalformedArchiveError(f"json: cannot unmarshal {_KIND_NAMES[node.kind]} into a map of raw values")
    return {unquote(k.raw): v.raw for k, v in node.items}


def fold_name(name: str) -> str:
    """Go 1.19's field-name folding: ASCII letters case-insensitive, U+017F ~ 's' and U+212A (Kelvin) ~ 'k'."""
    out = []
    for ch in name:
        if "A" <= ch <= "Z":
            out.append(chr(ord(ch) + 32))
        elif ch == "\u017f":
            out.append("s")
        elif ch == "\u212a":
            out.append("k")
        else:
            out.append(ch)
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------------
# Typed decode/encode


class GoType:
    """A Go type in the small schema language; ``go`` is how Go spells it in error messages."""

    go: str = "?"


class _Scalar(GoType):
    def __init__(self, go: str) -> None:
        self.go = go


T_STRING = _Scalar("string")
T_BOOL = _Scalar("bool")
T_INT = _Scalar("int64")
T_TIME = _Scalar("time.Time")
T_STR_SLICE = _Scalar("strslice.StrSlice")
T_EMPTY_STRUCT = _Scalar("struct {}")


class SliceOf(GoType):
    """A Go slice ``[]elem`` (decoded into a :class:`GoSlice`, ``None`` when nil)."""

    def __init__(self, elem: GoType) -> None:
        self.elem = elem
        self.go = "[]" + elem.go


class MapOf(GoType):
    """A Go map with string keys (a ``dict``, ``None`` when nil)."""

    def __init__(self, elem: GoType) -> None:
        self.elem = elem
        self.go = "map[string]" + elem.go


class PtrTo(GoType):
    """A Go pointer (``None`` when nil, else the pointee's value)."""

    def __init__(self, elem: GoType) -> None:
        self.elem = elem
        self.go = "*" + elem.go


@dataclass(frozen=True)
class Field:
    """One struct field: its JSON name, type and ``omitempty``."""

    name: str
    type: GoType
    omitempty: bool = False


class Struct(GoType):
    """A Go struct; its value is a ``dict`` from JSON field name to value, in declaration order."""

    def __init__(self, go: str, fields: Iterable[Field]) -> None:
        self.go = go
        self.fields = tuple(fields)
        self._by_fold = {fold_name(f.name): f for f in self.fields}

    def lookup(self, key: str) -> Field | None:
        """The field a decoded JSON key selects (exact match preferred, then Go's fold), or None."""
        return self._by_fold.get(fold_name(key))


@dataclass
class GoSlice:
    """A Go slice value: the backing array (its length is the capacity) and the slice length."""

    backing: list[Any] = field(default_factory=list)
    length: int = 0

    def values(self) -> list[Any]:
        """The visible elements."""
        return self.backing[: self.length]


def zero(t: GoType) -> Any:
    """Go's zero value of ``t``."""
    if t is T_STRING:
        return ""
    if t is T_BOOL:
        return False
    if t is T_INT:
        return 0
    if t is T_TIME:
        return ZERO_TIME
    if t is T_EMPTY_STRUCT:
        return ()
    if isinstance(t, Struct):
        return {f.name: zero(f.type) for f in t.fields}
    return None  # StrSlice, slices, maps, pointers: nil


_INT_RE = re.compile(rb"-?[0-9]+")


def _type_error(node: Node, t: GoType, path: str) -> MalformedArchiveError:
    what = _KIND_NAMES[node.kind]
    if node.kind == NUMBER:
        what = "number " + node.raw.decode("ascii")
    return MalformedArchiveError(f"json: cannot unmarshal {what} into Go field {path} of type {t.go}")


def decode(node: Node, t: GoType, current: Any, path: str) -> Any:
    """Decode ``node`` into a Go value of type ``t`` whose current value is ``current``; return the new value.

    Containers are updated in place where Go would (struct merge, map merge, slice backing reuse).
    """
    kind = node.kind
    if t is T_TIME:
        if kind == NULL:
            return current
        try:
            return parse_rfc3339_json(node.raw)
        except GoTimeError as exc:
            raise MalformedArchiveError(f"{path}: cannot parse {_show(node.raw)} as RFC 3339 time: {exc}") from None
    if t is T_STR_SLICE:
        if kind == NULL:
            return None
        if kind == STRING:
            return [unquote(node.raw)]
        if kind == ARRAY:
            out = []
            for element in node.items:
                if element.kind == STRING:
                    out.append(unquote(element.raw))
                elif element.kind == NULL:
                    out.append("")
                else:
                    raise _type_error(element, T_STRING, path + "[]")
            return out
        raise _type_error(node, t, path)
    if kind == NULL:
        if isinstance(t, (SliceOf, MapOf, PtrTo)):
            return None
        return current
    if t is T_STRING:
        if kind == STRING:
            return unquote(node.raw)
        raise _type_error(node, t, path)
    if t is T_BOOL:
        if kind in (TRUE, FALSE):
            return kind == TRUE
        raise _type_error(node, t, path)
    if t is T_INT:
        if kind == NUMBER and _INT_RE.fullmatch(node.raw):
            number = int(node.raw)
            if -(1 << 63) <= number < (1 << 63):
                return number
        raise _type_error(node, t, path)
    if t is T_EMPTY_STRUCT:
        if kind == OBJECT:
            return current
        raise _type_error(node, t, path)
    if isinstance(t, PtrTo):
        return decode(node, t.elem, zero(t.elem) if current is None else current, path)
    if isinstance(t, Struct):
        if kind != OBJECT:
            raise _type_error(node, t, path)
        for key_node, value in node.items:
            f = t.lookup(unquote(key_node.raw))
            if f is not None:
                current[f.name] = decode(value, f.type, current[f.name], f"{path}.{f.name}")
        return current
    if isinstance(t, MapOf):
        if kind != OBJECT:
            raise _type_error(node, t, path)
        target: dict[str, Any] = {} if current is None else current
        for key_node, value in node.items:
            key = unquote(key_node.raw)
            target[key] = decode(value, t.elem, zero(t.elem), f"{path}[{key!r}]")
        return target
    if isinstance(t, SliceOf):
        if kind != ARRAY:
            raise _type_error(node, t, path)
        return _decode_slice(node, t, current, path)
    raise AssertionError(f"unknown Go type {t.go}")


def _decode_slice(node: Node, t: SliceOf, current: GoSlice | None, path: str) -> GoSlice:
    """Go's ``array()`` into a slice: grow by 1.5x (at least 4), decode into existing elements, then truncate."""
    s = GoSlice() if current is None else current
    i = 0
    for element in node.items:
        cap = len(s.backing)
        if i >= cap:
            newcap = max(cap + cap // 2, 4)
            s.backing = s.backing[: s.length] + [zero(t.elem) for _ in range(newcap - s.length)]
        if i >= s.length:
            s.length = i + 1
        s.backing[i] = decode(element, t.elem, s.backing[i], f"{path}[{i}]")
        i += 1
    if i < s.length:
        s.length = i
    if i == 0:
        return GoSlice()
    return s


def _show(raw: bytes) -> str:
    text = raw[:80].decode("utf-8", "backslashreplace")
    return repr(text) if len(raw) <= 80 else repr(text) + "..."


def _is_empty(value: Any, t: GoType) -> bool:
    """Go's ``isEmptyValue`` for the kinds used here (structs and times are never empty, pointers only when nil)."""
    if value is None:
        return True
    if isinstance(t, (PtrTo, Struct)) or t is T_TIME:
        return False
    if isinstance(value, GoSlice):
        return value.length == 0
    if isinstance(value, (str, list, dict)):
        return len(value) == 0
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value == 0
    return False


def _encode_map(value: dict[str, Any], elem: Callable[[Any], bytes]) -> bytes:
    parts = [encode_string(k) + b":" + elem(value[k]) for k in sorted(value, key=_utf8_key)]
    return b"{" + b",".join(parts) + b"}"


def encode(value: Any, t: GoType) -> bytes:
    """``json.Marshal`` of a Go value of type ``t`` (HTML-escaped strings, sorted map keys, omitempty)."""
    if t is T_STRING:
        return encode_string(value)
    if t is T_BOOL:
        return b"true" if value else b"false"
    if t is T_INT:
        return str(value).encode("ascii")
    if t is T_TIME:
        assert isinstance(value, GoTime)
        return b'"' + format_rfc3339nano(value).encode("ascii") + b'"'
    if t is T_EMPTY_STRUCT:
        return b"{}"
    if t is T_STR_SLICE:
        if value is None:
            return b"null"
        return b"[" + b",".join(encode_string(s) for s in value) + b"]"
    if isinstance(t, SliceOf):
        if value is None:
            return b"null"
        return b"[" + b",".join(encode(v, t.elem) for v in value.values()) + b"]"
    if isinstance(t, MapOf):
        if value is None:
            return b"null"
        elem_type = t.elem
        return _encode_map(value, lambda v: encode(v, elem_type))
    if isinstance(t, PtrTo):
        return b"null" if value is None else encode(value, t.elem)
    if isinstance(t, Struct):
        parts = [
            encode_string(f.name) + b":" + encode(value[f.name], f.type)
            for f in t.fields
            if not (f.omitempty and _is_empty(value[f.name], f.type))
        ]
        return b"{" + b",".join(parts) + b"}"
    raise AssertionError(f"unknown Go type {t.go}")


def encode_fields(value: dict[str, Any], t: Struct) -> dict[str, bytes]:
    """The fields ``json.Marshal`` would write for a struct, as a name -> encoded value map (omitempty applied)."""
    return {
        f.name: encode(value[f.name], f.type)
        for f in t.fields
        if not (f.omitempty and _is_empty(value[f.name], f.type))
    }
