"""The v1 archive reader: images, parents, leaves, tags, symlinked layers, warnings and hardlinks across layers."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from keepdocker.errors import MalformedArchiveError
from keepdocker.images.model import ReferenceError, legacy_repository_tag
from keepdocker.images.v1 import NotV1ArchiveError, read_v1_archive
from keepdocker.testing.v1archives import V1Builder, layer_json, layer_tar, random_v1_archive, tar_end, tar_member

A, B = "a" * 64, "b" * 64


def write(tmp_path: Path, data: bytes) -> Path:
    """Write archive bytes to a file and return its path."""
    path = tmp_path / "v1.tar"
    path.write_bytes(data)
    return path


def test_real_2015_archive_reads_to_the_engine_id(moby_v1_archive: Path) -> None:
    """The moby emptyLayer fixture gives Docker 20.10's legacy-load ID and its repositories tag."""
    archive = read_v1_archive(moby_v1_archive)
    (leaf,) = archive.leaves
    image = archive.images[leaf].image
    assert image.id.startswith("sha256:a9e31d6f186f")
    assert image.tags == ("matthughes/library-centos:6-2015.03.20",)
    assert len(image.layers) == 3 and image.layers[1].size == 0


@pytest.mark.parametrize("seed", range(6))
def test_generated_archive_structure_round_trips(tmp_path: Path, seed: int) -> None:
    """Every v1 directory becomes one image whose chain, leaves and tags match what the generator built."""
    gen = random_v1_archive(seed, leaves=1 + seed % 3, outer=["none", "gzip", "bzip2"][seed % 3])
    archive = read_v1_archive(gen.write(tmp_path / "g.tar"))
    assert set(archive.images) == set(gen.chains)
    assert archive.leaves == gen.leaves
    for v1, parent in gen.chains.items():
        img = archive.images[v1]
        assert img.parent_v1 == parent
        depth, cur = 0, v1
        while cur is not None:
            depth, cur = depth + 1, gen.chains[cur]
        assert len(img.image.layers) == depth
        assert img.image.id == "sha256:" + hashlib.sha256(img.image.config).hexdigest()
        if parent is not None:
            assert img.image.parent == archive.images[parent].image.id
            assert img.image.layers[:-1] == archive.images[parent].image.layers
        assert img.image.tags == gen.tags.get(v1, ())
    assert (archive.repositories is None) == (not gen.tags)


def test_symlinked_layer_shares_the_target_diff_id(tmp_path: Path) -> None:
    """A layer.tar symlinked to another layer.tar (as docker save writes duplicates) gets the same diff ID."""
    rng = random.Random(5)
    layer = layer_tar(rng)
    data = V1Builder().layer(A, layer_json(rng, A, None), layer).layer(B, layer_json(rng, B, A), None, link_to=A)
    archive = read_v1_archive(write(tmp_path, data.build()))
    diff = "sha256:" + hashlib.sha256(layer).hexdigest()
    assert [layer.diff_id for layer in archive.images[B].image.layers] == [diff, diff]


def test_missing_repositories_leaves_untagged_leaves(tmp_path: Path) -> None:
    """Without a repositories file (docker save <id> <= 1.9) the archive is accepted and every image is untagged."""
    gen = random_v1_archive(3, layers=3, repositories=False)
    archive = read_v1_archive(gen.write(tmp_path / "g.tar"))
    assert archive.repositories is None
    assert all(not img.image.tags for img in archive.images.values())


def test_non_hex_directory_and_id_mismatch_are_warnings(tmp_path: Path) -> None:
    """Directory names that are not 64-hex and a json.id that differs are accepted with a warning each."""
    rng = random.Random(6)
    data = V1Builder().layer("base layer", layer_json(rng, "something-else", None), tar_end()).build()
    archive = read_v1_archive(write(tmp_path, data))
    assert list(archive.images) == ["base layer"]
    assert len(archive.warnings) == 2
    assert "not a 64-hex ID" in archive.warnings[0] and "declares id" in archive.warnings[1]


def test_hardlink_to_a_parent_layer_file_is_accepted(tmp_path: Path) -> None:
    """A hardlink whose target lives in a parent layer applies fine in Docker, so it is accepted."""
    rng = random.Random(7)
    base = tar_member("etc/", typeflag=b"5") + tar_member("etc/data", b"123") + tar_end()
    top = tar_member("etc/again", typeflag=b"1", linkname="./etc/data") + tar_end()
    data = V1Builder().layer(A, layer_json(rng, A, None), base).layer(B, layer_json(rng, B, A), top).build()
    archive = read_v1_archive(write(tmp_path, data))
    assert len(archive.images[B].image.layers) == 2


def test_hardlink_to_a_later_entry_is_refused(tmp_path: Path) -> None:
    """A hardlink to an entry that only comes later in the same layer fails in Docker's apply, so it is refused."""
    rng = random.Random(8)
    layer = tar_member("x", typeflag=b"1", linkname="y") + tar_member("y", b"1") + tar_end()
    data = V1Builder().layer(A, layer_json(rng, A, None), layer).build()
    with pytest.raises(MalformedArchiveError, match="hardlink target 'y'"):
        read_v1_archive(write(tmp_path, data))


def test_manifest_json_means_current_archive(tmp_path: Path) -> None:
    """An archive with manifest.json is reported as not v1 (the upgrade then treats it as current)."""
    data = V1Builder().file("manifest.json", b"[]").build()
    with pytest.raises(NotV1ArchiveError, match="current archive"):
        read_v1_archive(write(tmp_path, data))


def test_null_json_and_stray_files_are_accepted(tmp_path: Path) -> None:
    """A layer json of `null` (Docker accepts it) and stray top-level files/nested dirs (Docker ignores them) load."""
    data = (
        V1Builder()
        .layer(A, b"null", tar_end())
        .file("README", b"hello")
        .dir(f"{A}/nested")
        .file(f"{A}/nested/file", b"x")
        .build()
    )
    archive = read_v1_archive(write(tmp_path, data))
    assert list(archive.images) == [A]
    assert b'"created":"0001-01-01T00:00:00Z"' in archive.images[A].image.config


@pytest.mark.parametrize(
    ("key", "tag", "expected"),
    [
        ("app", "v1", "app:v1"),
        ("app:old", "v1", "app:v1"),
        ("localhost:5000/app:old", "v1", "localhost:5000/app:v1"),
        ("docker.io/library/app:OLD", "v1", "app:v1"),
        ("app@sha256:" + "c" * 64, "v1", None),
        ("app:old@sha512:" + "c" * 128, "v1", None),
        ("c" * 64 + ":old", "v1", "c" * 64 + ":v1"),
    ],
)
def test_repositories_keys_are_references(key: str, tag: str, expected: str | None) -> None:
    """A repositories key may carry a tag (replaced) or a digest (nothing tagged), as Docker's legacy load does."""
    assert legacy_repository_tag(key, tag) == expected


@pytest.mark.parametrize(
    "key", ["App:v1", "app:bad!", "app:", "app@sha256:" + "c" * 63, "app@md5:" + "c" * 32, "app@sha256:" + "C" * 64]
)
def test_repositories_keys_docker_refuses_are_refused(key: str) -> None:
    """Keys ParseNormalizedNamed refuses fail, as they fail Docker's load."""
    with pytest.raises(ReferenceError):
        legacy_repository_tag(key, "v1")


def test_linked_repositories_json_and_layer_are_followed(tmp_path: Path) -> None:
    """repositories, a json and a layer.tar that are links to other (small) members are read through the link."""
    a = "a" * 64
    layer = tar_member("f", b"1") + tar_end()
    b = V1Builder().dir(a).file("cfg", b'{"docker_version":"1.9.1"}').symlink(f"{a}/json", "../cfg")
    b.file("blob", layer).symlink(f"{a}/layer.tar", "../blob")
    b.symlink("repositories", "meta").file("meta", b'{"app:old":{"v1":"' + a.encode() + b'"}}')
    archive = read_v1_archive(write(tmp_path, b.build()))
    image = archive.images[a].image
    assert image.tags == ("app:v1",)
    assert image.layers[0].diff_id == "sha256:" + hashlib.sha256(layer).hexdigest()
