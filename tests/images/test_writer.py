"""The docker-archive writer and readers: deterministic bytes, layout, validator, OCI layout and format detection."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from keepdocker.errors import MalformedArchiveError
from keepdocker.images.docker_archive import detect_format, read_archive
from keepdocker.images.model import ArchiveFormat
from keepdocker.images.upgrade import upgrade_archive
from keepdocker.images.validate import read_loadable_archive, validate_archive
from keepdocker.testing.v1archives import V1Builder, compress, random_v1_archive, tar_end, tar_member


def upgraded(tmp_path: Path, seed: int, **kwargs: object) -> Path:
    """Upgrade a generated archive and return DST."""
    gen = random_v1_archive(seed, **kwargs)  # type: ignore[arg-type]
    dst = tmp_path / f"out-{seed}.tar"
    upgrade_archive(gen.write(tmp_path / f"src-{seed}.tar"), dst)
    return dst


def test_output_is_deterministic(tmp_path: Path) -> None:
    """Two upgrades of the same input, from differently named copies, give identical bytes."""
    gen = random_v1_archive(21, layers=4, leaves=2, outer="gzip")
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    upgrade_archive(gen.write(tmp_path / "one.tar.gz"), a)
    upgrade_archive(gen.write(tmp_path / "two"), b)
    assert a.read_bytes() == b.read_bytes()


def test_output_headers_are_normalised(tmp_path: Path) -> None:
    """Every member has mtime 0, uid/gid 0, empty owner names, mode 0644 and is a regular file."""
    dst = upgraded(tmp_path, 22, layers=3)
    with tarfile.open(dst) as tar:
        members = tar.getmembers()
    assert members
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) == (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)
    names = [m.name for m in members]
    assert names[-2:] in (["manifest.json", "repositories"],) or names[-1] == "manifest.json"


def test_layout_and_manifest_bytes(tmp_path: Path) -> None:
    """manifest.json is Go-encoder style with a newline; configs <id>.json; layers <diffid>/layer.tar, decompressed."""
    dst = upgraded(tmp_path, 23, layers=3, compressions=("gzip", "xz"), repositories=True)
    with tarfile.open(dst) as tar:
        raw = tar.extractfile("manifest.json").read()  # type: ignore[union-attr]
        (entry,) = json.loads(raw)
        assert raw.endswith(b"]\n") and b", " not in raw
        config = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        assert entry["Config"] == hashlib.sha256(config).hexdigest() + ".json"
        for path, diff in zip(entry["Layers"], json.loads(config)["rootfs"]["diff_ids"], strict=True):
            data = tar.extractfile(path).read()  # type: ignore[union-attr]
            assert path == diff.removeprefix("sha256:") + "/layer.tar"
            assert "sha256:" + hashlib.sha256(data).hexdigest() == diff
        repos = json.loads(tar.extractfile("repositories").read())  # type: ignore[union-attr]
    assert entry["RepoTags"] == ["gen/seed23:leaf0"]
    assert repos == {"gen/seed23": {"leaf0": entry["Layers"][-1].split("/")[0]}}


@pytest.mark.parametrize("seed", range(8))
def test_validator_accepts_every_output(tmp_path: Path, seed: int) -> None:
    """The v2 validator passes on the upgrade of generated archives of every shape."""
    dst = upgraded(tmp_path, seed, leaves=1 + seed % 3, outer=["none", "bzip2", "xz", "gzip"][seed % 4])
    images = validate_archive(dst)
    assert images and detect_format(dst) is ArchiveFormat.DOCKER


def test_identical_layers_are_stored_once(tmp_path: Path) -> None:
    """Two v1 layers with the same bytes (two empty layers) produce one layer member listed twice."""
    data = V1Builder().layer("a" * 64, b'{"created":"2015-01-01T00:00:00Z"}', b"")
    data.layer("b" * 64, b'{"parent":"' + b"a" * 64 + b'","created":"2015-01-02T00:00:00Z"}', b"")
    src = tmp_path / "v1.tar"
    src.write_bytes(data.build())
    dst = tmp_path / "out.tar"
    upgrade_archive(src, dst)
    with tarfile.open(dst) as tar:
        layers = [m.name for m in tar.getmembers() if m.name.endswith("layer.tar")]
    (image,) = validate_archive(dst)
    assert len(layers) == 1 and len(image.layers) == 2


def test_unreferenced_branch_layers_are_dropped(tmp_path: Path) -> None:
    """Choosing one image with --image leaves no layer of other branches in DST (strict validation passes)."""
    gen = random_v1_archive(24, layers=3, leaves=3, repositories=False, empty_layers=False, symlinks=False)
    src = gen.write(tmp_path / "src.tar")
    dst = tmp_path / "out.tar"
    (entry,) = upgrade_archive(src, dst, image=gen.leaves[0])
    (image,) = validate_archive(dst, strict=True)
    with tarfile.open(dst) as tar:
        layer_members = [m for m in tar.getmembers() if m.name.endswith("/layer.tar")]
    assert image.id == entry.id and len(layer_members) == len(image.layers)


def test_validator_refuses_a_wrong_layer(tmp_path: Path) -> None:
    """A layer whose bytes no longer hash to the config's diff ID is caught."""
    dst = upgraded(tmp_path, 25, layers=1, empty_layers=False)
    with tarfile.open(dst) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    broken = io.BytesIO()
    with tarfile.open(fileobj=broken, mode="w") as tar:
        for m, data in members:
            if m.name.endswith("layer.tar"):
                data = tar_member("other", b"x") + tar_end()
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    dst.write_bytes(broken.getvalue())
    with pytest.raises(MalformedArchiveError, match="hashes to"):
        validate_archive(dst)


def oci_archive(layer: bytes, tag: str, extra_layers: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """A Docker 25+ style archive: oci-layout, index.json, blobs/sha256 and manifest.json with blob paths."""
    diff = hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-05-01T10:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff}"]},
            "history": [{"created": "2024-05-01T10:00:00Z"}],
        },
        separators=(",", ":"),
    ).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": f"sha256:{config_hex}"}}).encode()
    man_hex = hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [{"digest": f"sha256:{man_hex}"}]}).encode()
    docker_manifest = json.dumps(
        [{"Config": f"blobs/sha256/{config_hex}", "RepoTags": [tag], "Layers": [*extra_layers, f"blobs/sha256/{diff}"]}]
    ).encode()
    data = (
        tar_member("blobs/", typeflag=b"5")
        + tar_member("blobs/sha256/", typeflag=b"5")
        + tar_member(f"blobs/sha256/{diff}", layer)
        + tar_member(f"blobs/sha256/{config_hex}", config)
        + tar_member(f"blobs/sha256/{man_hex}", manifest)
        + tar_member("index.json", index)
        + tar_member("manifest.json", docker_manifest)
        + tar_member("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        + tar_end()
    )
    return data, f"sha256:{config_hex}"


def test_oci_layout_archive_is_read(tmp_path: Path) -> None:
    """A Docker 25+/OCI layout archive gives its config digest as ID, its tags, created time and layers."""
    layer = tar_member("hello", b"world") + tar_end()
    data, image_id = oci_archive(layer, "docker.io/library/app:v1")
    path = tmp_path / "oci.tar"
    path.write_bytes(compress(data, "gzip"))
    assert detect_format(path) is ArchiveFormat.OCI
    (image,) = read_archive(path)
    assert image.id == image_id
    assert image.tags == ("app:v1",)
    assert image.created is not None and image.created.year == 2024
    assert [(layer.path, layer.size) for layer in image.layers] == [(image.layers[0].path, len(layer))]
    assert validate_archive(path)[0].id == image_id


def test_v1_archive_is_not_read_as_current(tmp_path: Path) -> None:
    """read_archive points a v1 archive to the upgrade instead of misreading it."""
    path = random_v1_archive(26).write(tmp_path / "v1.tar")
    assert detect_format(path) is ArchiveFormat.V1
    with pytest.raises(MalformedArchiveError, match="keepdocker upgrade"):
        read_archive(path)


def test_manifest_layer_count_mismatch_is_refused(tmp_path: Path) -> None:
    """A manifest entry listing more layers than its config's diff_ids is refused (Docker: layers length mismatch)."""
    layer = tar_end()
    data, _ = oci_archive(layer, "app:v1", extra_layers=("oci-layout",))
    path = tmp_path / "bad.tar"
    path.write_bytes(data)
    with pytest.raises(MalformedArchiveError, match="diff_ids"):
        read_archive(path)


def test_loadable_check_refuses_a_current_archive_docker_would_not_load(tmp_path: Path) -> None:
    """read_loadable_archive streams each layer: a layer naming a path twice or hashing wrongly is refused."""
    good = tar_member("hello", b"world") + tar_end()
    data, image_id = oci_archive(good, "app:v1")
    path = tmp_path / "good.tar"
    path.write_bytes(data)
    assert [i.id for i in read_loadable_archive(path)] == [image_id]
    twice = tar_member("d/", typeflag=b"5") + tar_member("./d", typeflag=b"5") + tar_end()
    path.write_bytes(oci_archive(twice, "app:v1")[0])
    assert len(read_archive(path)) == 1
    with pytest.raises(MalformedArchiveError, match="names this path twice"):
        read_loadable_archive(path)
    path.write_bytes(data.replace(b"world", b"WORLD"))
    with pytest.raises(MalformedArchiveError, match="hashes to"):
        read_loadable_archive(path)
