"""`keepdocker upgrade SRC DST [--tag REPO:TAG ...] [--image V1ID]`: output lines, tags, errors and current archives."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from cli.main import run
from keepdocker.testing.v1archives import random_v1_archive


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, list[str], str]:
    """Run the CLI; return exit code, stdout lines and stderr."""
    code = run(["upgrade", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def manifest(path: Path) -> list[dict[str, object]]:
    """The manifest.json of an archive."""
    with tarfile.open(path) as tar:
        data = tar.extractfile("manifest.json").read()  # type: ignore[union-attr]
    result: list[dict[str, object]] = json.loads(data)
    return result


def test_prints_one_line_per_entry_with_tags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tagged leaves from repositories come out as `sha256:<id> tag...`, one line per manifest entry."""
    src = random_v1_archive(31, layers=3, leaves=2, repositories=True).write(tmp_path / "src.tar")
    code, lines, err = cli(capsys, src, tmp_path / "dst.tar")
    assert (code, err) == (0, "")
    entries = manifest(tmp_path / "dst.tar")
    assert len(lines) == len(entries) == 2
    for line, entry in zip(lines, entries, strict=True):
        image_id, *tags = line.split(" ")
        assert entry["Config"] == image_id.removeprefix("sha256:") + ".json"
        assert tags == entry["RepoTags"]


def test_untagged_leaves_without_repositories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An archive without repositories yields one untagged entry per leaf (RepoTags null), IDs only on stdout."""
    src = random_v1_archive(32, layers=2, leaves=2, repositories=False).write(tmp_path / "src.tar")
    code, lines, _ = cli(capsys, src, tmp_path / "dst.tar")
    assert code == 0 and len(lines) == 2 and all(len(line.split()) == 1 for line in lines)
    assert [e["RepoTags"] for e in manifest(tmp_path / "dst.tar")] == [None, None]


def test_tag_option_tags_the_single_leaf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--tag applies to the only leaf, normalised to the familiar form; TAG defaults to latest."""
    src = random_v1_archive(33, layers=3, repositories=False).write(tmp_path / "src.tar")
    code, lines, _ = cli(capsys, src, tmp_path / "dst.tar", "--tag", "docker.io/library/app:v2", "--tag", "me/app")
    assert code == 0
    (line,) = lines
    assert line.split()[1:] == ["app:v2", "me/app:latest"]


def test_image_option_selects_a_branch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With several leaves, --tag needs --image; --image picks the v1 layer to export and tag."""
    gen = random_v1_archive(34, layers=2, leaves=2, repositories=False)
    src = gen.write(tmp_path / "src.tar")
    code, _, err = cli(capsys, src, tmp_path / "dst.tar", "--tag", "app:1")
    assert code == 2 and "--image" in err and not (tmp_path / "dst.tar").exists()
    code, lines, _ = cli(capsys, src, tmp_path / "dst.tar", "--tag", "app:1", "--image", gen.leaves[1])
    assert code == 0 and lines[0].endswith(" app:1") and len(lines) == 1


def test_bad_input_fails_with_one_line_and_no_dst(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken archive exits 1 with a one-line error on stderr; DST and temporary files do not appear."""
    src = tmp_path / "src.tar"
    src.write_bytes(random_v1_archive(35).data[:1000])
    code, lines, err = cli(capsys, src, tmp_path / "dst.tar")
    assert code == 1 and lines == []
    assert err.count("\n") == 1 and err.startswith("keepdocker upgrade: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.tar"]


def test_bad_tag_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid --tag exits 2 naming the option and the grammar rule."""
    src = random_v1_archive(36).write(tmp_path / "src.tar")
    code, _, err = cli(capsys, src, tmp_path / "dst.tar", "--tag", "UPPER:1")
    assert code == 2 and "--tag 'UPPER:1'" in err and "lowercase" in err


def test_current_archive_is_copied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A v2 archive as SRC is reported as already current: exit 0, IDs printed, DST a byte copy."""
    v1 = random_v1_archive(37, repositories=True).write(tmp_path / "v1.tar")
    cli(capsys, v1, tmp_path / "v2.tar")
    code, lines, err = cli(capsys, tmp_path / "v2.tar", tmp_path / "copy.tar")
    assert code == 0 and "already a current archive" in err
    assert (tmp_path / "copy.tar").read_bytes() == (tmp_path / "v2.tar").read_bytes()
    with tarfile.open(tmp_path / "copy.tar") as tar:
        config = tar.extractfile(str(manifest(tmp_path / "copy.tar")[0]["Config"]))
        assert config is not None
        assert lines[0].split()[0] == "sha256:" + hashlib.sha256(config.read()).hexdigest()
