"""Docker 1.10-24 legacy-load config construction, rule by rule as moby builds it (image/v1/imagev1.go)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from keepdocker.errors import MalformedArchiveError
from keepdocker.images import gojson, gotime, legacy_config
from keepdocker.images.legacy_config import (
    HistoryEntry,
    LegacyHeader,
    history_of,
    image_id,
    make_config,
    read_header,
    rootfs_diff_ids,
    uses_fallback,
    version_compare,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
ROOTFS1 = b'"rootfs":{"type":"layers","diff_ids":["' + D1.encode() + b'"]}'
ZERO_CONFIG = (
    b'{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,'
    b'"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,"Image":"","Volumes":null,'
    b'"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null}'
)
MODERN = b'"docker_version":"1.9.1"'


def cfg(raw: bytes, parent: bytes | None = None, diff_id: str = D1) -> bytes:
    """make_config for a layer with the given json."""
    return make_config(raw, diff_id, parent)


def test_no_fallback_keeps_raw_values_deletes_keys_and_sorts() -> None:
    """Raw values are compacted, exact deleted keys go, rootfs and history are added, keys sort bytewise."""
    raw = (
        b'{"id":"abc","parent":"","Size":5,"parent_id":"p","layer_id":"l","throwaway":true,"docker_version":"1.9.1",'
        b'"created":"2015-01-01T00:00:00,5Z","b":[ 1.0 , 1E+2 ],"Author":"x","architecture":"amd64","ID":"kept"}'
    )
    assert cfg(raw) == (
        b'{"Author":"x","ID":"kept","architecture":"amd64","b":[1.0,1E+2],"created":"2015-01-01T00:00:00,5Z",'
        b'"docker_version":"1.9.1","history":[{"created":"2015-01-01T00:00:00.5Z","author":"x"}],' + ROOTFS1 + b"}"
    )


def test_escaped_deleted_keys_are_deleted_but_case_variants_stay() -> None:
    """Deletion matches after unescaping and is case-sensitive: \\u0069d goes, Id and \\u0069d2 stay."""
    raw = b'{"\\u0069d":"a","Si\\u007ae":1,"thr\\u006fwaway":true,"Id":"b","\\u0069d2":"c",' + MODERN + b"}"
    config = cfg(raw)
    assert b'"Id":"b"' in config and b'"id2":"c"' in config
    assert b'"id"' not in config and b'"Size"' not in config and b'"throwaway"' not in config


def test_history_entry_order_and_omissions() -> None:
    """History entries are {created, author?, created_by?, comment?}; Cmd is joined with spaces; no empty_layer."""
    raw = b'{"comment":"c","author":"a","container_config":{"Cmd":["sh","-c","x y"]},' + MODERN + b"}"
    assert b'"history":[{"created":"0001-01-01T00:00:00Z","author":"a","created_by":"sh -c x y","comment":"c"}]' in cfg(
        raw
    )
    assert b'"history":[{"created":"0001-01-01T00:00:00Z"}]' in cfg(
        b'{"container_config":{"Cmd":[""]},' + MODERN + b"}"
    )
    assert b"empty_layer" not in cfg(b"{" + MODERN + b"}")


def test_cmd_string_is_kept_raw_but_used_for_created_by() -> None:
    """A string Cmd stays a string in the raw config and becomes created_by as is."""
    config = cfg(b'{"container_config":{"Cmd":"just a string"},' + MODERN + b"}")
    assert b'"container_config":{"Cmd":"just a string"}' in config
    assert b'"created_by":"just a string"' in config


def test_history_strings_use_go_encoder_and_raw_values_keep_escapes() -> None:
    """History strings are re-encoded (HTML, controls, invalid UTF-8 -> raw U+FFFD); raw values keep their bytes."""
    raw = b'{"author":"<\\u00e9>\\b\xe2\x80","x":"\\u00e9<\xff",' + MODERN + b"}"
    config = cfg(raw)
    assert b'"author":"\\u003c\\u00e9\\u003e\\b\xe2\x80"' in config
    assert b'"x":"\\u00e9\\u003c\xff"' in config
    assert '"author":"\\u003cé\\u003e\\u0008\ufffd\ufffd"'.encode() in config


def test_duplicates_last_wins_raw_but_struct_decode_merges() -> None:
    """The raw map keeps the last container_config, while the history uses the merged struct's Cmd."""
    raw = b'{"container_config":{"Cmd":["first"]},"container_config":{"Env":[]},' + MODERN + b"}"
    config = cfg(raw)
    assert b'"container_config":{"Env":[]}' in config
    assert b'"created_by":"first"' in config


@pytest.mark.parametrize(
    ("version", "fallback"),
    [
        ("", True),
        ("1.8.2", True),
        ("1.6.2", True),
        ("0.4.0", True),
        ("1.8.3-rc1", True),
        ("1.8.3-dev", True),
        ("v1.9.1", True),
        (" 1.9", True),
        ("1.-9", True),
        ("1.8.+2", True),
        ("1.8.3", False),
        ("1.8.3.0", False),
        ("1.08.3", False),
        ("1.9.1", False),
        ("1.10.0", False),
        ("1.99999999999999999999", False),
        ("2", False),
        ("1.8.3.1", False),
    ],
)
def test_fallback_versions_table(version: str, fallback: bool) -> None:
    """moby's lenient versions.compare decides the fallback path: junk parts count as 0."""
    assert uses_fallback(version) is fallback


def test_version_compare_orders_like_moby() -> None:
    """Equal strings are equal, missing parts are 0, and integer parts compare numerically."""
    assert version_compare("1.8.3", "1.8.3") == 0
    assert version_compare("1.8", "1.8.0") == 0
    assert version_compare("1.10", "1.9") == 1
    assert version_compare("1.x", "1.0") == 0


def test_null_json_materializes_zero_v1image() -> None:
    """`null` goes through the fallback path: zero container_config, zero created, history with zero time."""
    assert cfg(b"null") == (
        b'{"container_config":' + ZERO_CONFIG + b',"created":"0001-01-01T00:00:00Z",'
        b'"history":[{"created":"0001-01-01T00:00:00Z"}],' + ROOTFS1 + b"}"
    )


def test_fallback_drops_unknown_fields_and_normalizes() -> None:
    """Fallback keeps only V1Image/Config fields, canonical keys, normalized created and Go-marshalled values."""
    raw = json.dumps(
        {
            "id": "x",
            "checksum": "c",
            "Created": "2015-01-01T00:00:00.120000000+02:00",
            "AUTHOR": "a<",
            "docker_version": "1.6.2",
            "config": {},
            "container_config": {
                "cmd": "x",
                "Memory": 0,
                "Shell": [],
                "ExposedPorts": {},
                "MacAddress": "",
                "Volumes": {},
                "Labels": {"n": None},
                "Env": ["A=1", None],
                "StopTimeout": 0,
                "Healthcheck": {"Retries": 0},
            },
            "os": "linux",
            "Size": 7,
        }
    ).encode()
    zero_config = ZERO_CONFIG.decode()
    container_config = (
        zero_config.replace('"Env":null,"Cmd":null', '"Env":["A=1",""],"Cmd":["x"],"Healthcheck":{}')
        .replace('"Volumes":null', '"Volumes":{}')
        .replace('"Labels":null}', '"Labels":{"n":""},"StopTimeout":0}')
    )
    assert cfg(raw).decode() == (
        '{"author":"a\\u003c","config":' + zero_config + ',"container_config":' + container_config + ","
        '"created":"2015-01-01T00:00:00.12+02:00","docker_version":"1.6.2",'
        '"history":[{"created":"2015-01-01T00:00:00.12+02:00","author":"a\\u003c","created_by":"x"}],'
        '"os":"linux",' + ROOTFS1.decode() + "}"
    )


def test_fallback_omits_null_config_and_decodes_invalid_utf8() -> None:
    """config:null is omitted; fallback strings are decoded, so invalid bytes become raw U+FFFD."""
    config = cfg(b'{"config":null,"comment":"\xed\xa0\x80"}')
    assert b'"config"' not in config
    assert ('"comment":"' + "\ufffd" * 3 + '"').encode() in config


def test_created_raw_in_config_but_normalized_in_history() -> None:
    """Without fallback the top-level created is kept verbatim; the history carries the normalized form."""
    config = cfg(b'{"created":"2015-12-01T1:00:00+00:00",' + MODERN + b"}")
    assert b'"created":"2015-12-01T1:00:00+00:00"' in config
    assert b'"history":[{"created":"2015-12-01T01:00:00Z"}]' in config


def test_parent_config_chains_rootfs_and_history() -> None:
    """A child's rootfs and history extend its parent's as Docker re-reads them from its store."""
    parent = cfg(b'{"author":"p",' + MODERN + b"}")
    child = cfg(b'{"comment":"c","parent":"x",' + MODERN + b"}", parent, D2)
    assert rootfs_diff_ids(child) == [D1, D2]
    assert history_of(child) == [
        HistoryEntry("0001-01-01T00:00:00Z", "p", "", "", False),
        HistoryEntry("0001-01-01T00:00:00Z", "", "", "c", False),
    ]
    assert image_id(child) == "sha256:" + hashlib.sha256(child).hexdigest()


def test_parent_history_is_the_decoded_one() -> None:
    """A case-variant History key in the parent merges into the decoded history the child inherits."""
    parent = cfg(
        b'{"History":[{"created":"2014-01-01T00:00:00Z","author":"shadow","empty_layer":true}],' + MODERN + b"}"
    )
    child = cfg(b"{" + MODERN + b"}", parent, D2)
    assert b'"history":[{"created":"0001-01-01T00:00:00Z","author":"shadow","empty_layer":true},' in child


def test_read_header_folds_keys_and_accepts_null() -> None:
    """The header reads OS/Parent case-insensitively, last wins, and null is an empty header."""
    assert read_header(b'{"PARENT":"a","p\\u0061rent":"b","Os":"linux"}') == LegacyHeader(parent="b", os="linux")
    assert read_header(b"null") == LegacyHeader(parent="", os="")
    assert read_header(b'{"parent":"a","parent":null}') == LegacyHeader(parent="a", os="")


@pytest.mark.parametrize(
    "raw",
    [b"[]", b"1", b'"x"', b"true", b'{"parent":5}', b'{"os":[]}', b"{", b"", b'{"os":"windows"}', b'{"o\xc5\xbf":"x"}'],
)
def test_read_header_refusals(raw: bytes) -> None:
    """Non-objects, non-string OS/Parent, bad syntax and unsupported OS values are refused."""
    with pytest.raises(MalformedArchiveError):
        read_header(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b"\xef\xbb\xbf{}",
        b'{"a":1,}',
        b'{"d":' + b"[" * 10000 + b"]" * 10000 + b"}",
        b'{"Size":"abc"}',
        b'{"Size":1500.0}',
        b'{"docker_version":"1.9.1","Size":12345678901234567890}',
        b'{"docker_version":1.9}',
        b'{"container_config":{"Cmd":[1,2]}}',
        b'{"config":{"Env":"x"}}',
        b'{"created":"2015-13-01T00:00:00Z"}',
        b'{"created":"\\u0032015-01-01T00:00:00Z"}',
        b'{"created":5}',
        b'{"docker_version":"1.9.1","created":"2015-01-01T00:00:00-99:99"}',
        b'{"created":"2015-01-01T00:00:00+99:60"}',
        b'{"os":"windows"}',
        b'{"OS":"freebsd"}',
        b'{"os":"LINUX"}',
        b'{"docker_version":"1.9.1","os.features":"x"}',
        b'{"docker_version":"1.9.1","os.version":1}',
        b'{"docker_version":"1.9.1","History":5}',
        b'{"docker_version":"1.9.1","hi\xc5\xbftory":[{},{}]}',
        b'{"docker_version":"1.9.1","rootf\xc5\xbf":{"diff_ids":[]}}',
        b'{"docker_version":"1.9.1","rootf\xc5\xbf":null}',
    ],
)
def test_make_config_refusals(raw: bytes) -> None:
    """Syntax, depth, type, time, OS and store-validation failures all raise MalformedArchiveError."""
    with pytest.raises(MalformedArchiveError):
        cfg(raw)


def test_deep_nesting_at_limit_is_kept_raw() -> None:
    """A value nested to the 10000 limit is accepted and copied into the config."""
    deep = b"[" * 9999 + b"]" * 9999
    assert b'"d":' + deep in cfg(b'{"d":' + deep + b"," + MODERN + b"}")


def test_accepted_os_values() -> None:
    """Empty, null and linux OS values are accepted and kept."""
    assert b'"os":"linux"' in cfg(b'{"os":"linux",' + MODERN + b"}")
    assert b'"os":""' in cfg(b'{"os":"","OS":null,' + MODERN + b"}")


def test_modules_never_use_python_json() -> None:
    """The modules that decide the bytes do not import Python's json module."""
    for module in (gojson, gotime, legacy_config):
        source = Path(module.__file__ or "").read_text()
        assert "import json" not in source and "json.loads" not in source and "json.dumps" not in source
