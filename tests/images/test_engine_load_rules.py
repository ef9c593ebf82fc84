"""Engine cross-check of the load rules around the tar format: duplicate layer paths, chain depth, compression
framings, ``repositories`` forms and links. dockerd 20.10's legacy load is the ground truth: for every case the
converter accepts exactly when the engine does, with the engine's image IDs and tags, or refuses a case the engine
accepts for a safety rule listed in ``STRICTER`` (and in the README's table of differences from Docker)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from keepdocker.errors import ArchiveError
from keepdocker.images.v1 import read_v1_archive
from keepdocker.testing.v1archives import V1Builder, compress, pax_records, tar_end, tar_header, tar_member

pytestmark = pytest.mark.engine

README = Path(__file__).resolve().parents[2] / "README.md"
A = "a" * 64
DIGEST = "sha256:" + "c" * 64
HEX_NAME = "c" * 64


def js(parent: str | None = None) -> bytes:
    """A minimal Docker 1.9 layer json."""
    doc = {"id": "x", "created": "2015-01-01T00:00:00Z", "docker_version": "1.9.1"}
    if parent:
        doc["parent"] = parent
    return json.dumps(doc).encode()


def f(name: str, data: bytes = b"x") -> bytes:
    """A regular file member."""
    return tar_member(name, data)


def d(name: str) -> bytes:
    """A directory member."""
    return tar_member(name, typeflag=b"5")


def link(name: str, target: str, hard: bool = False) -> bytes:
    """A symlink (or hardlink) member."""
    return tar_member(name, typeflag=b"1" if hard else b"2", linkname=target)


def special(name: str, typeflag: bytes, body: bytes) -> bytes:
    """A PAX ('x', 'g') or GNU long-name ('L') header block with its body."""
    return tar_header(name, len(body), typeflag=typeflag) + body + bytes(-len(body) % 512)


PAX_COMMENT = pax_records({"comment": "x"})
GOOD = f("a") + tar_end()


def one_layer(repo: str, layer: bytes, outer: str = "none") -> bytes:
    """A one-layer v1 archive tagging the layer ``repo:t``."""
    return V1Builder().layer(A, js(), layer).repositories({repo: {"t": A}}).build(outer)


# --- duplicate paths in a layer (tar-split) --------------------------------------------------------------------------

DUPLICATE_LAYERS: dict[str, bytes] = {
    "file-twice": f("a") + f("a"),
    "dir-slash-and-dotslash": d("d/") + d("./d"),
    "dir-twice": d("d/") + d("d/"),
    "dir-then-file": d("d/") + f("d"),
    "file-and-dotslash": f("a") + f("./a"),
    "file-and-trailing-slash": f("a") + f("a/"),
    "dotdot-cleans-to-same": d("x/") + f("x/../a") + f("a"),
    "double-slash": d("x/") + f("x//b") + f("x/b"),
    "hardlink-twice": f("a") + link("h", "a", hard=True) + link("h", "a", hard=True),
    "symlink-twice": link("s", "a") + link("s", "b"),
    "whiteout-twice": f(".wh.a", b"") + f(".wh.a", b""),
    "opaque-twice": d("d/") + f("d/.wh..wh..opq", b"") + f("d/.wh..wh..opq", b""),
    "root-dot-and-dotslash": d("./") + d("."),
    "root-dotslash-twice": d("./") + d("./"),
    "global-header-twice": special("pax_global_header", b"g", PAX_COMMENT) * 2 + f("a"),
    "global-header-named-as-file": special("a", b"g", PAX_COMMENT) + f("a"),
    "pax-path-equals-later-name": special("PaxHeaders/x", b"x", pax_records({"path": "a"})) + f("other") + f("a"),
    "gnu-long-name-equals-later-name": special("././@LongLink", b"L", b"a\x00") + f("other") + f("a"),
}
UNIQUE_LAYERS: dict[str, bytes] = {
    "pax-header-block-name-not-an-entry": special("a", b"x", PAX_COMMENT) + f("b") + f("a"),
    "gnu-header-block-name-not-an-entry": special("a", b"L", b"c\x00") + f("b") + f("a"),
    "same-name-different-case": f("a") + f("A"),
    "distinct-names": d("d/") + f("d/a") + f("d/b") + link("d/h", "d/a", hard=True),
    "absolute-and-relative": f("/a") + f("a"),
}


def duplicate_cases() -> dict[str, bytes]:
    """Layers naming a path twice (the engine refuses) and near misses (the engine accepts)."""
    cases = {f"dup-{k}": one_layer(f"kdrules/dup-{k}", v + tar_end()) for k, v in DUPLICATE_LAYERS.items()}
    cases |= {f"unique-{k}": one_layer(f"kdrules/unique-{k}", v + tar_end()) for k, v in UNIQUE_LAYERS.items()}
    cases["dup-in-gzip-layer"] = one_layer("kdrules/dup-gz", compress(f("a") + f("./a") + tar_end(), "gzip"))
    b = V1Builder().layer(A, js(), f("a") + tar_end()).layer("b" * 64, js(A), f("a") + tar_end())
    cases["unique-same-path-in-two-layers"] = b.repositories({"kdrules/two-layers": {"t": "b" * 64}}).build()
    return cases


# --- chain depth (layer store maxLayerDepth) -------------------------------------------------------------------------


def chain(depth: int) -> bytes:
    """A chain of ``depth`` layers, the top one tagged."""
    b = V1Builder()
    ids = [f"{i:064x}" for i in range(1, depth + 1)]
    for i, vid in enumerate(ids):
        b.layer(vid, js(ids[i - 1] if i else None), tar_end())
    return b.repositories({"kdrules/depth": {f"d{depth}": ids[-1]}}).build()


# --- compression framings --------------------------------------------------------------------------------------------


def framings(data: bytes, cut: int) -> dict[str, bytes]:
    """``data`` compressed every way, with what may follow the last member or stream."""
    head, tail = data[:cut], data[cut:]
    return {
        "plain-trailing-zeros": data + bytes(4096),
        "plain-trailing-garbage": data + b"garbage!" * 64,
        "gzip-trailing-zeros": compress(data, "gzip") + bytes(1024),
        "gzip-trailing-one-zero": compress(data, "gzip") + bytes(1),
        "gzip-trailing-garbage": compress(data, "gzip") + b"garbage!",
        "gzip-truncated": compress(data, "gzip")[:-4],
        "gzip-two-members": compress(head, "gzip") + compress(tail, "gzip"),
        "gzip-member-after-tar": compress(data, "gzip") + compress(b"junk", "gzip"),
        "gzip-empty-member-after": compress(data, "gzip") + compress(b"", "gzip"),
        "bzip2-trailing-zeros": compress(data, "bzip2") + bytes(1024),
        "bzip2-trailing-garbage": compress(data, "bzip2") + b"garbage!",
        "bzip2-two-streams": compress(head, "bzip2") + compress(tail, "bzip2"),
        "bzip2-stream-after-tar": compress(data, "bzip2") + compress(b"junk", "bzip2"),
        "xz-padding-4": compress(data, "xz") + bytes(4),
        "xz-padding-3": compress(data, "xz") + bytes(3),
        "xz-padding-1024": compress(data, "xz") + bytes(1024),
        "xz-trailing-garbage": compress(data, "xz") + b"garbage!",
        "xz-two-streams": compress(head, "xz") + compress(tail, "xz"),
        "xz-padding-between-streams": compress(head, "xz") + bytes(4) + compress(tail, "xz"),
        "xz-stream-after-tar": compress(data, "xz") + compress(b"junk", "xz"),
    }


def framing_cases() -> dict[str, bytes]:
    """Every framing of the outer archive and of a layer."""
    outer = V1Builder().layer(A, js(), GOOD).repositories({"kdrules/outer": {"t": A}}).build()
    cases = {f"outer-{k}": v for k, v in framings(outer, 1536).items()}
    cases |= {f"layer-{k}": one_layer(f"kdrules/layer-{k}", v) for k, v in framings(GOOD, 700).items()}
    return cases


# --- repositories forms and links ------------------------------------------------------------------------------------

REPOSITORIES: dict[str, object] = {
    "name-tag": {"kdrules/r:t1": {"t2": A}},
    "name-digest": {f"kdrules/r@{DIGEST}": {"t": A}},
    "name-tag-digest": {f"kdrules/r:t1@{DIGEST}": {"t": A}},
    "digest-short": {f"kdrules/r@{DIGEST[:-1]}": {"t": A}},
    "digest-upper": {f"kdrules/r@{DIGEST.upper().replace('SHA', 'sha')}": {"t": A}},
    "digest-sha384": {"kdrules/r@sha384:" + "c" * 96: {"t": A}},
    "digest-sha512": {"kdrules/r@sha512:" + "c" * 128: {"t": A}},
    "digest-md5": {"kdrules/r@md5:" + "c" * 32: {"t": A}},
    "digest-sha256-too-long": {"kdrules/r@sha256:" + "c" * 128: {"t": A}},
    "digest-empty": {"kdrules/r@": {"t": A}},
    "localhost-port-tag": {"localhost:5000/kdrules/r:t1": {"t2": A}},
    "upper-tag-in-name": {"kdrules/r:T1": {"t2": A}},
    "bad-tag-in-name": {"kdrules/r:bad!": {"t2": A}},
    "empty-tag-in-name": {"kdrules/r:": {"t2": A}},
    "tag-in-name-128": {"kdrules/r:" + "t" * 128: {"t2": A}},
    "tag-in-name-129": {"kdrules/r:" + "t" * 129: {"t2": A}},
    "docker-io-name-tag": {"docker.io/kdrules/r:t1": {"t2": A}},
    "name-255-with-tag": {"kdrules/" + "r" * (255 - len("docker.io/kdrules/")) + ":t1": {"t2": A}},
    "name-256-with-tag": {"kdrules/" + "r" * (256 - len("docker.io/kdrules/")) + ":t1": {"t2": A}},
    "hex-name-with-tag": {HEX_NAME + ":t": {"t2": A}},
    "hex-name": {HEX_NAME: {"t2": A}},
    "upper-name-with-tag": {"kdrules/R:t1": {"t2": A}},
    "digest-beside-plain": {f"kdrules/r@{DIGEST}": {"t": A}, "kdrules/s": {"u": A}},
    "name-tag-same-tag": {"kdrules/r:t": {"t": A}},
    "two-name-tags-one-result": {"kdrules/r:t1": {"t": A}, "kdrules/r:t2": {"t": A}},
    "null-tags": {"kdrules/r": None},
}


def repositories_cases() -> dict[str, bytes]:
    """``repositories`` keys of every reference form, and repositories/json/layer.tar members that are links."""
    cases = {f"repos-{k}": V1Builder().layer(A, js(), GOOD).repositories(v).build() for k, v in REPOSITORIES.items()}
    meta = json.dumps({"kdrules/linked": {"t": A}}).encode()

    def with_repos(extra: Callable[[V1Builder], V1Builder]) -> bytes:
        return extra(V1Builder().layer(A, js(), GOOD)).build()

    cases |= {
        "link-repos-symlink": with_repos(lambda b: b.file("meta.json", meta).symlink("repositories", "meta.json")),
        "link-repos-symlink-first": with_repos(
            lambda b: b.symlink("repositories", "meta.json").file("meta.json", meta)
        ),
        "link-repos-two-hops": with_repos(
            lambda b: b.file("meta.json", meta).symlink("r2", "meta.json").symlink("repositories", "r2")
        ),
        "link-repos-hardlink": with_repos(
            lambda b: b.file("meta.json", meta).add(link("repositories", "meta.json", True))
        ),
        "link-repos-into-layer-dir": with_repos(
            lambda b: b.file(f"{A}/repos", meta).symlink("repositories", f"{A}/repos")
        ),
        "link-repos-dotdot-inside": with_repos(
            lambda b: b.file("meta.json", meta).symlink("repositories", f"{A}/../meta.json")
        ),
        "link-repos-to-layer-json": with_repos(lambda b: b.symlink("repositories", f"{A}/json")),
        "link-repos-dangling": with_repos(lambda b: b.symlink("repositories", "nothing.json")),
        "link-repos-to-dir": with_repos(lambda b: b.symlink("repositories", A)),
        "link-repos-absolute": with_repos(lambda b: b.file("meta.json", meta).symlink("repositories", "/meta.json")),
        "link-repos-escaping": with_repos(lambda b: b.file("meta.json", meta).symlink("repositories", "../meta.json")),
    }
    tags = {"kdrules/linked-layer": {"t": A}}
    json_link = V1Builder().dir(A).file(f"{A}/VERSION", b"1.0").file("cfg.json", js())
    json_link.symlink(f"{A}/json", "../cfg.json").file(f"{A}/layer.tar", GOOD)
    cases["link-json-to-other-member"] = json_link.repositories(tags).build()
    layer_link = V1Builder().dir(A).file(f"{A}/VERSION", b"1.0").file(f"{A}/json", js()).file("blob.tar", GOOD)
    cases["link-layer-to-other-member"] = layer_link.symlink(f"{A}/layer.tar", "../blob.tar").repositories(tags).build()
    big = f("big", bytes(2 << 20)) + tar_end()
    layer_big = V1Builder().dir(A).file(f"{A}/VERSION", b"1.0").file(f"{A}/json", js()).file("blob.tar", big)
    cases["link-layer-to-big-other-member"] = (
        layer_big.symlink(f"{A}/layer.tar", "../blob.tar").repositories(tags).build()
    )
    hops = V1Builder().layer(A, js(), GOOD).file("meta.json", meta)
    for i in range(6):
        hops.symlink(f"r{i}", f"r{i - 1}" if i else "meta.json")
    cases["link-repos-seven-hops"] = hops.symlink("repositories", "r5").build()
    cases["link-repos-missing"] = V1Builder().layer(A, js(), GOOD).build()
    return cases


def safety_cases() -> dict[str, bytes]:
    """Members Docker clamps or tolerates and the converter refuses (see STRICTER)."""
    tags = {"kdrules/safety": {"t": A}}
    cases = {
        "outer-duplicate-member": V1Builder().layer(A, js(), GOOD).file(f"{A}/json", js()),
        "outer-char-device": V1Builder().layer(A, js(), GOOD).add(tar_member("tty", typeflag=b"3")),
        "outer-dotdot-name": V1Builder().layer(A, js(), GOOD).file("../../kdrules-evil", b"x"),
        "layer-entry-dotdot": V1Builder().layer(A, js(), f("../../kdrules-evil") + tar_end()),
        "layer-hardlink-absolute": V1Builder().layer(A, js(), f("a") + link("h", "/a", hard=True) + tar_end()),
    }
    return {name: b.repositories(tags).build() for name, b in cases.items()}


def all_cases() -> dict[str, bytes]:
    """The whole corpus, by case name."""
    cases = duplicate_cases()
    cases |= {"depth-125": chain(125), "depth-126": chain(126)}
    cases |= framing_cases()
    cases |= repositories_cases()
    cases |= safety_cases()
    return cases


#: Cases the engine loads and the converter refuses on purpose: case -> a fragment of our refusal. Each rule is a row
#: of the README's table of differences from Docker.
STRICTER: dict[str, str] = {
    "unique-absolute-and-relative": "absolute entry name",
    "link-repos-absolute": "is absolute",
    "link-repos-escaping": "leaves the archive root",
    "link-repos-seven-hops": "link hops",
    "link-layer-to-big-other-member": "was not kept",
    "outer-duplicate-member": "duplicate entry",
    "outer-char-device": "not allowed in an image archive",
    "outer-dotdot-name": "contains '..'",
    "layer-entry-dotdot": "escapes the layer root",
    "layer-hardlink-absolute": "is absolute",
}
#: Cases the engine refuses and the converter accepts on purpose (also in the README's table): case -> reason.
LAXER: dict[str, str] = {
    "link-repos-missing": "docker save <id> of Docker <= 1.9 wrote no repositories file; the images load untagged",
}


# --- engine access ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineResult:
    """What one ``docker load`` did: its error ('' when it loaded), and the kdrules/localhost tags it left."""

    error: str
    tags: dict[str, str]
    ids: frozenset[str]  # every image ID in the engine after the load
    added: frozenset[str]  # those the load created


def docker(host: str, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the docker CLI against ``host``."""
    return subprocess.run(["docker", "--host", host, *args], input=data, capture_output=True, check=False)


def image_ids(host: str) -> set[str]:
    """Every image ID in the engine."""
    return set(docker(host, "images", "-aq", "--no-trunc").stdout.decode().split())


def engine_tags(host: str) -> dict[str, str]:
    """The engine's tags of this corpus (repositories containing 'kdrules', or the 64-hex one), with image IDs."""
    out = docker(host, "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.decode()
    pairs = (line.split() for line in out.splitlines() if "kdrules" in line or line.startswith(HEX_NAME))
    return {tag: image_id for tag, image_id in pairs}


def engine_load(host: str, data: bytes) -> EngineResult:
    """Load ``data``, note the error and the corpus tags, then remove what the load added."""
    before = image_ids(host)
    done = docker(host, "load", data=data)
    error = "" if done.returncode == 0 else done.stderr.decode("utf-8", "replace").strip() or "failed"
    after = image_ids(host)
    added = after - before
    result = EngineResult(error, engine_tags(host), frozenset(after), frozenset(added))
    for tag in result.tags:
        docker(host, "rmi", "--no-prune", tag)
    for _ in range(3):  # removing a leaf prunes its untagged parents; a parent alone fails while it has children
        left = image_ids(host) & added
        for image_id in left:
            docker(host, "rmi", image_id)
    return result


CASES = all_cases()


@pytest.fixture(scope="module")
def engine(docker_host: str) -> dict[str, EngineResult]:
    """The engine's verdict on every case (one load each)."""
    leftover = engine_tags(docker_host)
    for tag in leftover:
        docker(docker_host, "rmi", "--no-prune", tag)
    return {name: engine_load(docker_host, data) for name, data in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_converter_agrees_with_engine(name: str, engine: dict[str, EngineResult], tmp_path: Path) -> None:
    """We accept exactly what the engine loads, with its image IDs and tags, or refuse by a documented rule."""
    src = tmp_path / "v1.tar"
    src.write_bytes(CASES[name])
    verdict = engine[name]
    try:
        archive = read_v1_archive(src)
    except ArchiveError as exc:
        if not verdict.error:
            assert name in STRICTER, f"the engine loads it, we refuse: {exc}"
            assert STRICTER[name] in str(exc)
        else:
            assert name not in STRICTER
        return
    assert name not in STRICTER
    if verdict.error:
        assert name in LAXER, f"the engine refuses it ({verdict.error}), we accept"
        return
    ours = {tag: v.image.id for v in archive.images.values() for tag in v.image.tags}
    assert ours == verdict.tags
    ids = {v.image.id for v in archive.images.values()}
    assert ids <= verdict.ids and verdict.added <= ids


def test_every_class_has_both_outcomes(engine: dict[str, EngineResult]) -> None:
    """Each class of the corpus holds cases the engine loads and cases it refuses (the corpus probes the line)."""
    assert all(engine[n].error for n in LAXER)
    assert not any(engine[n].error for n in STRICTER)
    for prefix in ("dup-", "unique-", "depth-", "outer-", "layer-", "repos-", "link-"):
        outcomes = {not engine[n].error for n in CASES if n.startswith(prefix)}
        if prefix == "dup-":
            assert outcomes == {False}
        elif prefix == "unique-":
            assert outcomes == {True}
        else:
            assert outcomes == {True, False}, prefix


def test_stricter_rules_are_in_the_readme() -> None:
    """Every deliberate refusal of something the engine loads names its rule in the README's differences table."""
    readme = README.read_text()
    for name, fragment in STRICTER.items():
        assert f"`{fragment}`" in readme, name
