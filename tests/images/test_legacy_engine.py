"""Cross-check of make_config against a real Docker 20.10 engine's legacy load of v1 archives of our own design."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from keepdocker.errors import MalformedArchiveError
from keepdocker.images.legacy_config import image_id, make_config, read_header

pytestmark = pytest.mark.engine

REPO = "kdlegacy/case"


# ----------------------------------------------------------------------------------------------------------------
# Corpus: every case is a chain of v1 layers; each json may use @PARENT@ for the previous layer's v1 ID.


def js(value: Any) -> bytes:
    """Plain JSON bytes for building inputs (tests only)."""
    return json.dumps(value).encode()


def obj(*pairs: tuple[bytes | str, bytes | Any]) -> bytes:
    """A JSON object from (key, value) pairs; bytes are spliced verbatim, anything else is json-encoded."""
    parts = []
    for key, value in pairs:
        k = key if isinstance(key, bytes) else js(key)
        v = value if isinstance(value, bytes) else js(value)
        parts.append(k + b":" + v)
    return b"{" + b",".join(parts) + b"}"


def tar_of(name: str, size: int = 64) -> bytes:
    """A small valid layer tar holding one file whose content depends on ``name``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = (hashlib.sha256(name.encode()).hexdigest() * (size // 64 + 1)).encode()[:size]
        info = tarfile.TarInfo(f"files/{name}.txt")
        info.size = len(data)
        info.mtime = 1_400_000_000
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Case:
    """One v1 image: layer jsons (base first) and optional layer payloads (default: a small tar)."""

    name: str
    jsons: list[bytes]
    layers: list[bytes | None] = field(default_factory=list)

    def v1_id(self, i: int) -> str:
        """The v1 directory name of layer ``i``."""
        return hashlib.sha256(f"{self.name}/{i}".encode()).hexdigest()

    def layer(self, i: int) -> bytes:
        """The layer.tar bytes of layer ``i``."""
        payload = self.layers[i] if i < len(self.layers) else None
        return tar_of(f"{self.name}-{i}") if payload is None else payload

    def json(self, i: int) -> bytes:
        """The json bytes of layer ``i`` with @PARENT@ and @ID@ filled in."""
        raw = self.jsons[i].replace(b"@ID@", self.v1_id(i).encode())
        return raw.replace(b"@PARENT@", self.v1_id(i - 1).encode() if i else b"")

    def tag(self, i: int) -> str:
        """The tag given to layer ``i``'s image."""
        return f"{self.name}-{i}"

    def expected_configs(self) -> list[bytes]:
        """Our chained configs, base first (read_header must find the parent we meant)."""
        configs: list[bytes] = []
        for i in range(len(self.jsons)):
            raw = self.json(i)
            assert read_header(raw).parent == (self.v1_id(i - 1) if i else "")
            diff_id = "sha256:" + hashlib.sha256(self.layer(i)).hexdigest()
            configs.append(make_config(raw, diff_id, configs[-1] if configs else None))
        return configs


MODERN = ("docker_version", "1.9.1")
CREATED = ("created", "2015-11-20T10:00:00.123456789Z")
PARENT = ("parent", "@PARENT@")


def modern(*pairs: tuple[bytes | str, bytes | Any], parent: bool = False) -> bytes:
    """A no-fallback layer json (docker_version 1.9.1) with an id, created and the given extra pairs."""
    head: list[tuple[bytes | str, bytes | Any]] = [("id", "@ID@"), CREATED, MODERN]
    if parent:
        head.append(PARENT)
    return obj(*head, *pairs)


def old(version: Any, *pairs: tuple[bytes | str, bytes | Any], parent: bool = False) -> bytes:
    """A fallback-path layer json with the given docker_version (omitted when ``version`` is ...)."""
    head: list[tuple[bytes | str, bytes | Any]] = [("id", "@ID@"), CREATED]
    if version is not ...:
        head.append(("docker_version", version))
    if parent:
        head.append(PARENT)
    return obj(*head, *pairs)


CC = ("container_config", {"Cmd": ["/bin/sh", "-c", "echo hi"], "Env": ["A=1"]})
LEGACY_CONFIG = {
    "Hostname": "abc",
    "Memory": 0,
    "CpuShares": 0,
    "PortSpecs": None,
    "Cmd": ["/bin/sh"],
    "Env": ["PATH=/bin", None],
    "Volumes": {},
    "Labels": {"n": None, "<b>": "x&y"},
    "ExposedPorts": {},
    "Shell": [],
    "MacAddress": "",
    "Unknown": [1, 2],
}

VERSIONS_FALLBACK = ["", None, "1.8.2", "1.6.2", "0.4.0", "1.8.3-rc1", "1.8.3-dev", "v1.9.1", " 1.9", "1.-9", "1.8.3 "]
VERSIONS_MODERN = [
    "1.8.3",
    "1.8.3.0",
    "1.08.3",
    "1.9.1",
    "1.10.0",
    "1.8.3.-1x",
    "1.99999999999999999999",
    "+1.8.3",
    "2",
]

DEEP = b"[" * 9999 + b"]" * 9999

CASES: list[Case] = [
    Case("base-modern", [modern(CC, ("author", "me"), ("comment", "c"), ("os", "linux"), ("architecture", "amd64"))]),
    Case(
        "chain3-modern",
        [modern(CC), modern(CC, ("author", "two"), parent=True), modern(("comment", "three"), parent=True)],
    ),
    Case(
        "fallback-162",
        [
            old(
                "1.6.2",
                ("checksum", "tarsum+sha256:00"),
                ("container_config", LEGACY_CONFIG),
                ("config", LEGACY_CONFIG),
                ("Size", 1500),
                ("os", "linux"),
                ("architecture", "amd64"),
                ("variant", "v8"),
                ("extra", {"a": 1}),
                ("throwaway", True),
            )
        ],
    ),
    Case("fallback-missing-version", [old(..., CC, ("author", "x<y>"))]),
    *[Case(f"fallback-v{i}", [old(v, CC, ("extra", 1))]) for i, v in enumerate(VERSIONS_FALLBACK)],
    *[Case(f"modern-v{i}", [old(v, CC, ("extra", 1))]) for i, v in enumerate(VERSIONS_MODERN)],
    Case("mixed-chain", [old("0.4.0", CC), old("1.9.1", CC, parent=True), old("1.2.0", CC, ("extra", 2), parent=True)]),
    Case(
        "unicode",
        [
            modern(
                ("author", "Jürgen 😀"),
                (b'"k\\u00e9y"', b'"v\\u00e9\\/x"'),
                ("ä", "raw ü"),
                ("Z", 1),
                ("_", 2),
                (b'"\\u0069d2"', b'"kept"'),
                ("container_config", {"Cmd": ["echo", "é", "\u2028"]}),
            )
        ],
    ),
    Case("unicode-fallback", [old("1.7.0", ("author", "Jürgen 😀\u2029"), ("container_config", {"Cmd": ["é"]}))]),
    Case(
        "html-chars",
        [modern(("author", "<a&b>"), ("labels<", {"x": "<&>"}), ("container_config", {"Cmd": ["a", "&&", "b>c"]}))],
    ),
    Case(
        "line-separators",
        [modern(("author", "a\u2028b\u2029c"), ("ls\u2028key", "v\u2029"), ("comment", "x\u2028"))],
    ),
    Case(
        "control-chars",
        [
            modern(
                (b'"author"', b'"b\\bf\\fu\\u0001n\\nt\\tr\\rdel\x7f q\\" s\\\\"'),
                (b'"raw"', b'"\\b\\f\\u0001\\u001f"'),
            )
        ],
    ),
    Case(
        "invalid-utf8",
        [
            modern(
                (b'"author"', b'"a\xe2\x80b\xed\xa0\x80c\xc0\xafd\xffe"'),
                (b'"bad\xffkey"', b'"v\xe2\x80"'),
                (b'"raw"', b'["\xf0\x9f\x98", "\xf4\x90\x80\x80"]'),
            )
        ],
    ),
    Case("invalid-utf8-fallback", [old("1.5.0", (b'"author"', b'"a\xe2\x80b\xed\xa0\x80c\xc0\xafd\xffe"'))]),
    Case(
        "surrogates",
        [
            modern(
                (b'"author"', b'"\\ud83d\\ude00 \\ud83d \\ude00 \\ud83d\\u0041 \\ude00\\ud83d \\ud83d\\ud83d\\ude00"'),
                (b'"comment"', b'"\\ud83d"'),
                (b'"raw"', b'"\\ud83d\\u0041"'),
            )
        ],
    ),
    Case(
        "numbers",
        [
            modern(
                ("Size", 123),
                (b'"n"', b"[1.0, 1E+2, -0, 2e-07, 12345678901234567890123, 0.1e1, -1.5E-3]"),
                (b'"StopTimeout"', b"1e2"),
            )
        ],
    ),
    Case(
        "pretty-printed",
        [
            b'{\n  "id": "@ID@",\n  "docker_version": "1.9.1",\n  "created": "2015-01-01T00:00:00Z",\n'
            b'  "container_config": {\n    "Cmd": [ "a" ,\t"b" ],\r\n    "Env": null\n  },\n'
            b'  "x": [ 1 , { "b" : 2 , "a" : [ ] } ]\n}\n'
        ],
    ),
    Case(
        "duplicate-keys",
        [
            modern(
                ("author", "first"),
                ("author", "second"),
                ("container_config", {"Cmd": ["first"], "Env": ["E=1"]}),
                ("container_config", {"Env": ["E=2"]}),
                ("x", 1),
                ("x", 2),
            )
        ],
    ),
    Case(
        "duplicate-keys-fallback",
        [
            old(
                "1.6.0",
                ("container_config", {"Cmd": ["first"], "Env": ["a", "b", "c"], "Labels": {"a": "1"}}),
                ("container_config", {"Env": [None], "Labels": {"b": "2"}}),
                ("config", {"Env": ["a", "b"], "Hostname": "h"}),
                ("config", {"Env": [None, None, None], "User": "u"}),
                ("created", None),
            )
        ],
    ),
    Case(
        "case-variant-keys",
        [
            obj(
                ("id", "@ID@"),
                ("Docker_Version", "1.9.1"),
                ("Created", "2016-02-29T12:00:00+01:00"),
                ("Author", "upper"),
                ("architecture", "amd64"),
                ("container_config", {"cmd": ["lower", "cmd"]}),
                ("ID", "kept"),
                ("OS", "linux"),
            ),
            obj(("id", "@ID@"), ("docker_version", "1.9.1"), ("PARENT", "@PARENT@"), ("SIZE", 5)),
            obj(("id", "@ID@"), ("docker_version", "1.9.1"), (b'"p\\u0061rent"', b'"@PARENT@"')),
            obj(("docker_version", "1.9.1"), ("Parent", "@PARENT@"), ("AUTHOR", "x")),
        ],
    ),
    Case(
        "case-variant-fallback", [obj(("Created", "2016-02-29T12:00:00.5+01:00"), ("cOnTaInEr_CoNfIg", {"CMD": "s"}))]
    ),
    Case(
        "escaped-deleted-keys",
        [
            obj(
                (b'"\\u0069d"', b'"@ID@"'),
                ("docker_version", "1.9.1"),
                (b'"Si\\u007ae"', b"7"),
                (b'"thr\\u006fwaway"', b"true"),
                ("layer_id", "x"),
                ("parent_id", "y"),
                ("Layer_id", "kept"),
            ),
            obj(("docker_version", "1.9.1"), (b'"\\u0070arent"', b'"@PARENT@"'), ("id", "x")),
        ],
    ),
    Case("cmd-string", [modern(("container_config", {"Cmd": "just a string"}))]),
    Case("cmd-string-fallback", [old("1.0.0", ("container_config", {"Cmd": "just a string", "Entrypoint": "e"}))]),
    Case("cmd-null", [modern(("container_config", {"Cmd": None}))]),
    Case("cmd-empty", [modern(("container_config", {"Cmd": []}))]),
    Case("cmd-empty-string", [modern(("container_config", {"Cmd": [""]}))]),
    Case("cmd-empty-fallback", [old("1.0.0", ("container_config", {"Cmd": [], "Entrypoint": None}))]),
    Case("null-json", [b"null", obj(("parent", "@PARENT@"))]),
    Case("null-json-spaced", [b" \n null \t"]),
    Case("empty-object", [b"{}"]),
    Case("missing-created", [obj(("docker_version", "1.9.1"), ("author", "a"))]),
    Case("created-null", [obj(("docker_version", "1.9.1"), ("created", None))]),
    Case(
        "created-variants",
        [
            obj(("docker_version", "1.9.1"), ("created", c), *([PARENT] if i else []))
            for i, c in enumerate(
                [
                    "2015-12-01T10:00:00,5Z",
                    "2015-12-01T1:00:00Z",
                    "2015-12-01T10:00:00.123456789123Z",
                    "2015-12-01T10:00:00+00:00",
                    "2015-12-01T10:00:00-00:00",
                    "2015-12-01T10:00:00+23:60",
                    "2015-12-01T10:00:00.120000000+02:00",
                    "2015-12-01T10:00:00.000Z",
                    "2015-12-01T10:00:00+98:99",
                    "2015-12-01T10:00:00-99:59",
                    "2015-12-01T10:00:00-05:30",
                    "0000-01-01T00:00:00Z",
                    "9999-12-31T23:59:59.999999999-00:01",
                ]
            )
        ],
    ),
    Case(
        "created-variants-fallback",
        [
            obj(("created", c), *([PARENT] if i else []))
            for i, c in enumerate(
                [
                    "2015-12-01T10:00:00,5Z",
                    "2015-12-01T1:00:00+00:00",
                    "2015-12-01T10:00:00+23:60",
                    "2015-12-01T10:00:00+99:40",
                ]
            )
        ],
    ),
    Case(
        "fallback-types",
        [
            old(
                "1.8.2",
                (
                    "container_config",
                    {
                        "Cmd": "x",
                        "Shell": [],
                        "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
                        "Volumes": {"/data": {}, "/a": None},
                        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000, "Retries": 0},
                        "StopTimeout": 10,
                        "ArgsEscaped": True,
                        "NetworkDisabled": False,
                        "StopSignal": "SIGTERM",
                        "OnBuild": None,
                        "Tty": True,
                    },
                ),
                ("config", {}),
                ("comment", "c"),
                ("container", "ctr"),
            ),
            old("1.8.2", ("config", None), ("Size", 0), parent=True),
        ],
    ),
    Case("deep-nesting-10000", [modern((b'"deep"', DEEP))]),
    Case("empty-layers", [modern(CC), modern(CC, parent=True), modern(CC, parent=True)], [b"", b"\0" * 1024, None]),
    Case(
        "history-variant-parent",
        [
            modern((b'"History"', b'[{"created":"2014-01-01T00:00:00Z","author":"shadow","empty_layer":true}]')),
            modern(("author", "child"), parent=True),
        ],
    ),
    Case(
        "rootfs-variant-upper",
        [modern((b'"RootFS"', b'{"type":"foo","diff_ids":["sha256:00","sha256:11"]}')), modern(parent=True)],
    ),
    Case(
        "keys-sorting",
        [modern(("b", 1), ("B", 2), ("a", 3), ("Author", "A"), ("é", 4), ("~", 5), ("architecture", "x"))],
    ),
    Case("os-empty", [modern(("os", "")), modern(("OS", None), parent=True)]),
    Case("os-features", [modern(("os.version", "10"), ("os.features", ["a"]), ("os.Features", None))]),
    Case(
        "healthcheck-raw",
        [modern(("container_config", {"Healthcheck": {"Test": ["NONE"], "Interval": 5, "Retries": 3}}))],
    ),
]

CASES += [
    Case(
        "slice-backing-reuse-fallback",
        [
            old(
                "1.0",
                ("container_config", {"Env": ["a", "b", "c"], "OnBuild": ["1", "2", "3", "4", "5"]}),
                ("container_config", {"Env": ["x"], "OnBuild": [None] * 7}),
                ("container_config", {"Env": [None, None]}),
                ("config", {"Cmd": ["a"], "Labels": {"k": "v"}}),
                ("config", None),
            )
        ],
    ),
    Case(
        "key-collisions",
        [
            modern(
                (b'"\u00e9"', b"1"),
                ("é", 2),
                (b'"\ufffd"', b"3"),
                (b'"\xc0"', b"4"),
                (b'"\xff"', b"5"),
                (rb'"a\/b"', b"6"),
                ("", 7),
                ("rootfs", "ignored"),
                ("history", "ignored"),
                ("Created", "2001-01-01T00:00:00Z"),
                ("container_config", {"Cmd": ["a", None, "b"]}),
                (b'"author"', b'"nul\u0000"'),
            )
        ],
    ),
    Case(
        "fold-special-letters",
        [
            obj(("doc\u212aer_version", "1.9.1"), ("o\u017f", "linux"), ("\u017fize", 5), ("author", "k")),
            obj(("o\u017f", "linux"), ("\u017fize", 5), ("\u212a", 1), ("Parent", "@PARENT@")),
            obj(
                ("doc\u212aer_version", "1.9.1"),
                ("created", "2015-01-01T00:00:00Z"),
                ("Created", "2016-01-01T00:00:00Z"),
                ("p\u0061rent", "@PARENT@"),
            ),
        ],
    ),
]

CASES += [
    Case(
        "fallback-zero-pointers",
        [
            old(
                "1.6.2",
                (
                    "container_config",
                    {"StopTimeout": 0, "Healthcheck": {"Retries": 0}, "cmd": "x", "ENV": ["A=1", None]},
                ),
                ("config", {"Healthcheck": {"Test": [], "Interval": 0}, "StopTimeout": -1}),
            )
        ],
    ),
]

REJECTS: dict[str, bytes] = {
    "rootfs-variant-null": obj(("docker_version", "1.9.1"), ("rootf\u017f", None)),
    "os-long-s-windows": obj(("o\u017f", "windows")),
    "docker-version-upper-number": obj((b'"DOCKER_VERSION"', b"1.9")),
    "bytes-after-value": b'{"a":1}\xff',
    "number-leading-zero": b'{"a":01}',
    "number-minus": b'{"a":-}',
    "number-dot": b'{"a":1.}',
    "number-plus": b'{"a":+1}',
    "number-nan": b'{"a":NaN}',
    "unterminated-string": b'{"a":"x}',
    "single-quotes": b"{'a':1}",
    "top-level-array": b"[]",
    "top-level-number": b"1",
    "top-level-string": b'"x"',
    "top-level-true": b"true",
    "bom": b"\xef\xbb\xbf{}",
    "trailing-comma": b'{"a":1,}',
    "trailing-garbage": b"{} x",
    "empty-file": b"",
    "bad-literal": b'{"a":tru}',
    "control-char": b'{"a":"x\x01"}',
    "bad-escape": b'{"a":"\\x"}',
    "depth-10001": b'{"d":' + b"[" * 10000 + b"]" * 10000 + b"}",
    "size-string": obj(("Size", "abc")),
    "size-float": obj(("Size", 1500.0)),
    "size-overflow": obj(("docker_version", "1.9.1"), (b'"Size"', b"12345678901234567890")),
    "cmd-numbers": obj(("docker_version", "1.9.1"), ("container_config", {"Cmd": [1, 2]})),
    "cmd-object": obj(("docker_version", "1.9.1"), ("container_config", {"Cmd": {}})),
    "docker-version-number": obj((b'"docker_version"', b"1.9")),
    "created-month-13": obj(("created", "2015-13-01T00:00:00Z")),
    "created-feb-30": obj(("created", "2015-02-30T00:00:00Z")),
    "created-hour-24": obj(("created", "2015-01-01T24:00:00Z")),
    "created-second-60": obj(("created", "2015-01-01T00:00:60Z")),
    "created-escape": obj((b'"created"', b'"\\u0032015-01-01T00:00:00Z"')),
    "created-lower-z": obj(("created", "2015-01-01T00:00:00z")),
    "created-number": obj((b'"created"', b"5")),
    "created-no-zone": obj(("created", "2015-01-01T00:00:00")),
    "offset-3digit": obj(("docker_version", "1.9.1"), ("created", "2015-01-01T00:00:00-99:99")),
    "offset-3digit-fallback": obj(("created", "2015-01-01T00:00:00+99:60")),
    "author-number": obj(("author", 5)),
    "env-string": obj(("container_config", {"Env": "x"})),
    "labels-number": obj(("config", {"Labels": {"a": 1}})),
    "ports-string": obj(("container_config", {"ExposedPorts": {"80/tcp": "x"}})),
    "config-array": obj(("config", [])),
    "interval-float": obj(("container_config", {"Healthcheck": {"Interval": 1.5}})),
    "stoptimeout-string": obj(("container_config", {"StopTimeout": "x"})),
    "os-windows": obj(("os", "windows")),
    "os-features-string": obj(("docker_version", "1.9.1"), ("os.features", "x")),
    "history-number": obj(("docker_version", "1.9.1"), ("History", 5)),
    "history-variant-extra": obj(("docker_version", "1.9.1"), ("hi\u017ftory", [{}, {}])),
    "rootfs-variant-empty": obj(("docker_version", "1.9.1"), ("rootf\u017f", {"diff_ids": []})),
    "parent-number": obj(("parent", 5)),
}


# ----------------------------------------------------------------------------------------------------------------
# Archive building and engine access


def v1_archive(cases: list[Case]) -> bytes:
    """A v1 archive (VERSION, json, layer.tar per layer; repositories tagging every layer) holding ``cases``."""
    buf = io.BytesIO()
    repositories: dict[str, str] = {}

    def add(name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 1_400_000_000
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for case in cases:
            for i in range(len(case.jsons)):
                directory = tarfile.TarInfo(case.v1_id(i))
                directory.type = tarfile.DIRTYPE
                directory.mode = 0o755
                tar.addfile(directory)
                add(f"{case.v1_id(i)}/VERSION", b"1.0")
                add(f"{case.v1_id(i)}/json", case.json(i))
                add(f"{case.v1_id(i)}/layer.tar", case.layer(i))
                repositories[case.tag(i)] = case.v1_id(i)
        add("repositories", json.dumps({REPO: repositories}).encode())
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(docker_host: str) -> Iterator[docker.DockerClient]:
    """A docker-py client of the test engine."""
    c = docker.DockerClient(base_url=docker_host, timeout=300)
    yield c
    c.close()


def docker_load(docker_host: str, archive: bytes) -> str:
    """``docker load`` of an archive through the CLI; returns '' on success, else the engine's error text."""
    proc = subprocess.run(["docker", "--host", docker_host, "load"], input=archive, capture_output=True, check=False)
    if proc.returncode == 0:
        return ""
    return proc.stderr.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}"


@dataclass
class Loaded:
    """What the engine holds: image ID per tag and config bytes per image ID (both from one ``docker save``)."""

    ids: dict[str, str]
    configs: dict[str, bytes]


def saved(docker_host: str, names: list[str]) -> Loaded:
    """``docker save`` of ``names`` in one call, read back through its manifest.json and ``<hex>.json`` files."""
    out = subprocess.run(["docker", "--host", docker_host, "save", *names], check=True, capture_output=True).stdout
    files = {}
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        for member in tar.getmembers():
            f = tar.extractfile(member) if member.isfile() and "/" not in member.name else None
            if f is not None:
                files[member.name] = f.read()
    ids, configs = {}, {}
    for entry in json.loads(files["manifest.json"]):
        config_id = "sha256:" + entry["Config"].removesuffix(".json")
        configs[config_id] = files[entry["Config"]]
        for tag in entry["RepoTags"] or []:
            ids[tag] = config_id
    return Loaded(ids=ids, configs=configs)


@pytest.fixture(scope="module")
def loaded(docker_host: str) -> Loaded:
    """All accepted cases legacy-loaded by the engine in one archive."""
    error = docker_load(docker_host, v1_archive(CASES))
    assert not error, error
    return saved(docker_host, [f"{REPO}:{case.tag(i)}" for case in CASES for i in range(len(case.jsons))])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_engine_ids_and_configs_match(case: Case, loaded: Loaded) -> None:
    """Every layer's image ID and config bytes from legacy load equal make_config's chained output."""
    for i, ours in enumerate(case.expected_configs()):
        engine_id = loaded.ids[f"{REPO}:{case.tag(i)}"]
        engine_config = loaded.configs[engine_id]
        assert ours == engine_config, f"layer {i}"
        assert image_id(ours) == engine_id


@pytest.fixture(scope="module")
def rejected(docker_host: str) -> dict[str, str]:
    """The engine's load error for each reject case ('' when the engine accepted it)."""
    return {
        name: docker_load(docker_host, v1_archive([Case(f"reject-{name}", [raw])])) for name, raw in REJECTS.items()
    }


@pytest.mark.parametrize("name", sorted(REJECTS))
def test_engine_and_make_config_both_reject(name: str, rejected: dict[str, str]) -> None:
    """Jsons the engine refuses are refused by make_config with MalformedArchiveError (and vice versa)."""
    assert rejected[name], "the engine accepted it"
    with pytest.raises(MalformedArchiveError):
        case = Case(f"reject-{name}", [REJECTS[name]])
        read_header(case.json(0))
        make_config(case.json(0), "sha256:" + hashlib.sha256(case.layer(0)).hexdigest(), None)


def test_real_2015_archive_ids_match_engine(
    client: docker.DockerClient, docker_host: str, moby_v1_archive: Path
) -> None:
    """The real moby emptyLayer v1 archive legacy-loads to the same three image IDs make_config computes."""
    with tarfile.open(moby_v1_archive) as tar:
        files = {}
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            if f is not None:
                files[m.name] = f.read()
    repositories = json.loads(files["repositories"])
    ((repo, tags),) = repositories.items()
    ((tag, top),) = tags.items()
    chain = [top]
    while parent := read_header(files[f"{chain[-1]}/json"]).parent:
        chain.append(parent)
    configs: list[bytes] = []
    for v1 in reversed(chain):
        diff_id = "sha256:" + hashlib.sha256(files[f"{v1}/layer.tar"]).hexdigest()
        configs.append(make_config(files[f"{v1}/json"], diff_id, configs[-1] if configs else None))
    ours = [image_id(c) for c in configs]

    error = docker_load(docker_host, moby_v1_archive.read_bytes())
    assert not error, error
    engine = [client.images.get(f"{repo}:{tag}").id]
    while parent_id := client.api.inspect_image(engine[-1])["Parent"]:
        engine.append(parent_id)
    assert ours == list(reversed(engine))
    assert ours[-1].startswith("sha256:a9e31d6f186f")


# ----------------------------------------------------------------------------------------------------------------
# Seeded random corpus: type-correct but messy jsons (case variants, escapes, duplicates, odd spacing).

_ALPHABET = ["a", "Z", " ", "<", ">", "&", "é", "😀", "\u2028", "\u2029", "\x7f", "\n", "\t", "\b", '"', "\\", "/"]
_CONFIG_FIELDS = {
    "Hostname": "s",
    "User": "s",
    "Tty": "b",
    "Env": "ls",
    "Cmd": "ss",
    "Entrypoint": "ss",
    "Labels": "ms",
    "Volumes": "me",
    "ExposedPorts": "me",
    "WorkingDir": "s",
    "OnBuild": "ls",
    "StopTimeout": "i",
    "ArgsEscaped": "b",
    "Shell": "ss",
    "Image": "s",
}


class Messy:
    """Writes JSON bytes the way odd historical tools might: random spacing, escapes, case and duplicates."""

    def __init__(self, seed: int) -> None:
        import random

        self.rng = random.Random(seed)

    def ws(self) -> bytes:
        """Optional insignificant whitespace."""
        return self.rng.choice([b"", b"", b" ", b"\n  ", b"\t"])

    def string(self, text: str | None = None) -> bytes:
        """A JSON string, each character raw or escaped; random ones may end in invalid UTF-8 or a lone surrogate."""
        rng = self.rng
        dirty = text is None
        if text is None:
            text = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 6)))
        out = b'"'
        for ch in text:
            roll = rng.random()
            if ch in '"\\' or ord(ch) < 0x20:
                out += json.dumps(ch).encode()[1:-1] if roll < 0.5 else b"\\u%04x" % ord(ch)
            elif roll < 0.2 and ord(ch) < 0x10000:
                out += b"\\u%04x" % ord(ch)
            elif roll < 0.25:
                out += json.dumps(ch).encode()[1:-1]
            else:
                out += ch.encode()
        if dirty and rng.random() < 0.1:
            out += rng.choice([b"\xff", b"\xe2\x80", b"\\ud83d", b"\\ude00x", b"\xed\xa0\x80"])
        return out + b'"'

    def key(self, name: str) -> bytes:
        """A key spelling of ``name``: case-varied or escaped some of the time."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.15:
            name = name.upper()
        elif roll < 0.25:
            name = name[:1].upper() + name[1:]
        return self.string(name)

    def value(self, kind: str) -> bytes:
        """A type-correct value of the given kind (s, b, i, ls, ss, ms, me) or null."""
        rng = self.rng
        if rng.random() < 0.1:
            return b"null"
        if kind == "s":
            return self.string()
        if kind == "b":
            return rng.choice([b"true", b"false"])
        if kind == "i":
            return str(rng.randint(-5, 100)).encode()
        if kind == "ss" and rng.random() < 0.3:
            return self.string()
        if kind in ("ls", "ss"):
            items = [self.string() if rng.random() < 0.9 else b"null" for _ in range(rng.randint(0, 3))]
            return b"[" + b",".join(self.ws() + i for i in items) + b"]"
        if kind in ("ms", "me"):
            pairs = [
                self.string() + b":" + (self.string() if kind == "ms" else rng.choice([b"{}", b"null", b'{"x":1}']))
                for _ in range(rng.randint(0, 3))
            ]
            return b"{" + b",".join(pairs) + b"}"
        raise AssertionError(kind)

    def junk(self, depth: int = 0) -> bytes:
        """Any JSON value, with odd number spellings."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.3 or depth > 2:
            return rng.choice([b"1.0", b"1E+2", b"-0", b"2e-07", b"12345678901234567890123", b"true", b"null"])
        if roll < 0.5:
            return self.string()
        if roll < 0.75:
            return b"[" + b",".join(self.ws() + self.junk(depth + 1) for _ in range(rng.randint(0, 3))) + b"]"
        pairs = [self.string() + self.ws() + b":" + self.junk(depth + 1) for _ in range(rng.randint(0, 3))]
        return b"{" + b",".join(pairs) + b"}"

    def config(self) -> bytes:
        """A container config object with a random subset of fields."""
        rng = self.rng
        names = rng.sample(sorted(_CONFIG_FIELDS), rng.randint(0, 6))
        pairs = [self.key(n) + b":" + self.ws() + self.value(_CONFIG_FIELDS[n]) for n in names]
        if rng.random() < 0.3:
            pairs.append(self.string("Memory") + b":" + self.junk())
        return b"{" + b",".join(pairs) + b"}"

    def layer_json(self, has_parent: bool) -> bytes:
        """One layer json; @PARENT@ marks the parent when there is one."""
        rng = self.rng
        pairs: list[bytes] = [self.string("id") + b':"@ID@"']
        if has_parent:
            pairs.append(self.key("parent") + b':"@PARENT@"')
        version = rng.choice(["1.9.1", "1.10.3", "1.8.3", "1.6.2", "1.8.2", "0.4.0", None])
        if version is not None:
            pairs.append(self.key("docker_version") + b":" + self.string(version))
        created = rng.choice(
            ["2015-03-04T21:38:56.769279623Z", "2014-10-01T20:46:13,5+02:00", "2013-06-13T1:03:50.100-07:00", None]
        )
        if created is not None:
            pairs.append(self.key("created") + b":" + json.dumps(created).encode())
        for name in rng.sample(["author", "comment", "container", "architecture", "os", "variant"], rng.randint(0, 4)):
            text = "linux" if name == "os" else None
            pairs.append(self.key(name) + b":" + self.string(text))
        for name in rng.sample(["container_config", "config", "container_config"], rng.randint(0, 3)):
            pairs.append(self.key(name) + b":" + self.ws() + self.config())
        for _ in range(rng.randint(0, 3)):
            pairs.append(self.string() + b":" + self.junk())
        if rng.random() < 0.3:
            pairs.append(self.key("Size") + b":" + str(rng.randint(0, 10**6)).encode())
        rng.shuffle(pairs)
        return b"{" + self.ws() + (b"," + self.ws()).join(pairs) + self.ws() + b"}"


def messy_cases(count: int, seed: int) -> list[Case]:
    """``count`` seeded random chains of one to three layers."""
    cases = []
    for n in range(count):
        m = Messy(seed * 1000 + n)
        depth = m.rng.randint(1, 3)
        cases.append(Case(f"messy{seed}-{n}", [m.layer_json(i > 0) for i in range(depth)]))
    return cases


MESSY = messy_cases(40, seed=1)


def test_messy_corpus_is_accepted_by_us() -> None:
    """make_config accepts every messy chain: one config per layer with the chain's diff_ids and history so far."""
    assert len(MESSY) == 40
    ids: set[str] = set()
    for case in MESSY:
        configs = case.expected_configs()
        diff_ids = ["sha256:" + hashlib.sha256(case.layer(i)).hexdigest() for i in range(len(case.jsons))]
        assert len(configs) == len(case.jsons) >= 1, case.name
        for i, config in enumerate(configs):
            doc = json.loads(config.decode("utf-8", "replace"))  # some hold non-UTF-8 bytes, as Docker's do
            assert doc["rootfs"] == {"type": "layers", "diff_ids": diff_ids[: i + 1]}, f"{case.name} layer {i}"
            assert len(doc["history"]) == i + 1, f"{case.name} layer {i}"
            ids.add(image_id(config))
    assert len(ids) == sum(len(case.jsons) for case in MESSY)  # every layer its own image (the engine batch tags each)


def test_messy_corpus_matches_engine(docker_host: str) -> None:
    """For seeded random messy chains, every layer's engine image ID and config bytes equal ours."""
    error = docker_load(docker_host, v1_archive(MESSY))
    assert not error, error
    engine = saved(docker_host, [f"{REPO}:{case.tag(i)}" for case in MESSY for i in range(len(case.jsons))])
    for case in MESSY:
        for i, ours in enumerate(case.expected_configs()):
            engine_id = engine.ids[f"{REPO}:{case.tag(i)}"]
            assert engine.configs[engine_id] == ours, f"{case.name} layer {i}: {case.json(i)!r}"
            assert image_id(ours) == engine_id
