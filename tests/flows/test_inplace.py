"""Native migration in place: the v2 collection is segments over the old image's blocks, read by the real clients."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from flows.migrate import migrate_images
from keepdocker.arv.catalog import keyset
from keepdocker.arv.client import ArvadosSession
from keepdocker.arv.inplace import plan_in_place
from keepdocker.arv.transfer import single_tar
from keepdocker.errors import ArchiveLimitError, MalformedArchiveError, PartialFailureError, UnsafeArchiveError
from keepdocker.images.upgrade import upgrade
from keepdocker.testing.oldcluster import SeededImage, seed_v1_image, seed_v1_image_in_blocks
from keepdocker.testing.resolution import resolve_image
from keepdocker.testing.standin import RunningStandin
from keepdocker.testing.v1archives import (
    ATTACKS,
    V1Builder,
    compress,
    layer_json,
    layer_tar,
    random_v1_archive,
    v1_id,
    write_large_v1_archive,
)

BIN = Path(sys.executable).parent
MIB = 1 << 20


@dataclass
class Seeded:
    """One seeded old image and the file it was made from."""

    image: SeededImage
    archive: Path


def _mixed(tmp: Path) -> tuple[Path, str]:
    """A chain of a big uncompressed layer, a gzip layer and an xz layer (compressed layers are written)."""
    rng = random.Random(41)
    ids = [v1_id(rng) for _ in range(3)]
    builder = V1Builder()
    parent = None
    stored = [
        layer_tar(rng, files=6, max_size=700_000),
        compress(layer_tar(rng, files=3, max_size=50_000), "gzip"),
        compress(layer_tar(rng, files=3, max_size=50_000), "xz"),
    ]
    for vid, layer in zip(ids, stored, strict=True):
        builder.layer(vid, layer_json(rng, vid, parent), layer)
        parent = vid
    path = tmp / "mixed.tar"
    path.write_bytes(builder.build())
    return path, ids[-1]


def _seed_all(session: ArvadosSession, tmp: Path) -> dict[str, Seeded]:
    out: dict[str, Seeded] = {}
    big = tmp / "big.tar"
    ids = write_large_v1_archive(big, 6 * MIB, layers=2, seed=11)
    out["big"] = Seeded(seed_v1_image(session, big, ids[-1], ("new/big:1",)), big)

    odd = random_v1_archive(31, layers=3, compressions=("none",), files=8, max_file_size=1_000_000, empty_layers=False)
    odd_path = odd.write(tmp / "odd.tar")
    out["odd"] = Seeded(seed_v1_image_in_blocks(session, odd.data, odd.leaves[0], ("new/odd:2",)), odd_path)

    mixed, leaf = _mixed(tmp)
    out["mixed"] = Seeded(seed_v1_image(session, mixed, leaf, ("new/mixed:3",)), mixed)

    forest = random_v1_archive(
        33, layers=3, leaves=2, compressions=("none",), files=8, max_file_size=1_000_000, empty_layers=False,
        repositories=False,
    )
    forest_path = forest.write(tmp / "forest.tar")
    out["forest"] = Seeded(seed_v1_image(session, forest_path, forest.leaves[1], ("new/forest:b",)), forest_path)

    whole = random_v1_archive(34, layers=2, compressions=("none",), files=4, max_file_size=400_000)
    whole_path = tmp / "whole.tar.gz"
    whole_path.write_bytes(gzip.compress(whole.data, mtime=0))
    out["gzouter"] = Seeded(seed_v1_image(session, whole_path, whole.leaves[0], ("new/gz:4",)), whole_path)
    return out


def _segments(manifest: str) -> tuple[list[tuple[str, int, int]], list[tuple[int, int]]]:
    """(locator, stream start, size) of every block and the (start, length) segments of the one file."""
    tokens = manifest.split()
    assert tokens[0] == "." and manifest.count("\n") == 1
    blocks, pos = [], 0
    segments = []
    for tok in tokens[1:]:
        if re.fullmatch(r"[0-9a-f]{32}\+\d+(\+\S+)?", tok):
            size = int(tok.split("+")[1])
            blocks.append((tok.split("+")[0], pos, size))
            pos += size
        else:
            start, length, _ = tok.split(":", 2)
            segments.append((int(start), int(length)))
    return blocks, segments


@pytest.mark.engine
def test_native_sweep_migrates_in_place_for_the_real_clients(
    arvados: ArvadosSession, standin: RunningStandin, docker_host: str, tmp_path: Path
) -> None:
    """Big, odd-block/shuffled/several-segment, mixed compressed-layer and two-leaf images are migrated in place
    (the gzip-compressed one by the whole-file path): arv-get gives `keepdocker upgrade`'s bytes, docker load gives
    the recorded ID, one tar per collection, arv-keepdocker lists them and resolution picks v2."""
    seeded = _seed_all(arvados, tmp_path)
    old_blocks = {b for s in seeded.values() for b, _, _ in _segments(_manifest(arvados, s.image.collection.uuid))[0]}
    report = migrate_images(concurrency=2)
    by_old = {o.old_pdh: o for o in report.images}
    client = docker.DockerClient(base_url=docker_host)
    listing = subprocess.run(
        [str(BIN / "arv-keepdocker"), "images"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    for name, s in seeded.items():
        o = by_old[s.image.collection.pdh]
        assert o.outcome == "migrated", (name, o.error)
        expected = tmp_path / f"{name}-expected.tar"
        (entry,) = upgrade(s.archive, expected, list(s.image.repo_tags), s.image.v1_id).entries
        assert o.new_id == entry.id
        got = tmp_path / f"{name}-arv-get.tar"
        subprocess.run([str(BIN / "arv-get"), f"{o.new_pdh}/{o.new_id}.tar", str(got)], check=True, timeout=120)
        assert got.read_bytes() == expected.read_bytes(), name
        manifest = _manifest(arvados, o.collection)
        assert single_tar(manifest) == (f"{o.new_id}.tar", expected.stat().st_size)
        loaded = client.images.load(got.read_bytes())
        assert o.new_id in [i.id for i in loaded]
        assert resolve_image(arvados, s.image.repo_tags[0], ("v2",)) == o.new_pdh
        repo, tag = s.image.repo_tags[0].split(":")
        assert any(line.split()[:2] == [repo, tag] and o.collection in line for line in listing.splitlines()), listing
        blocks, segments = _segments(manifest)
        # every listed block is used by a segment; contiguous segments are merged
        for _, start, size in blocks:
            assert any(a < start + size and start < a + n for a, n in segments), (name, manifest)
        assert all(a1 + n1 != a2 for (a1, n1), (a2, _) in itertools.pairwise(segments))
        if name == "gzouter":
            assert (o.path, o.bytes_reused) == ("whole file: the archive is compressed as a whole", 0)
            continue
        assert o.path == "in place" and o.action == "in place"
        assert o.bytes_reused + o.bytes_written >= expected.stat().st_size
        assert any(b in old_blocks for b, _, _ in blocks)
        if name in ("big", "odd", "forest"):
            assert o.bytes_written < 64 * 1024 and len(segments) > 1
    mixed = by_old[seeded["mixed"].image.collection.pdh]
    assert mixed.bytes_written > 50_000  # the decompressed gzip and xz layers were written
    odd_new = by_old[seeded["odd"].image.collection.pdh].collection
    odd_blocks = {b for b, _, _ in _segments(_manifest(arvados, odd_new))[0]}
    assert len(odd_blocks & old_blocks) >= 3


def _manifest(session: ArvadosSession, uuid: str) -> str:
    return str(session.api.collections().get(uuid=uuid).execute()["manifest_text"])


def test_sweep_of_uncompressed_images_writes_under_one_percent(
    arvados: ArvadosSession, standin: RunningStandin, tmp_path: Path
) -> None:
    """Keep bytes written by a sweep of uncompressed-layer images, measured at the stand-in's block store, are at
    most 1% of the images' bytes; the report's figures agree."""
    total = 0
    for i in range(3):
        path = tmp_path / f"v1-{i}.tar"
        ids = write_large_v1_archive(path, 5 * MIB, layers=2, seed=50 + i)
        seed_v1_image(arvados, path, ids[-1], (f"pct/img{i}:1",))
        total += path.stat().st_size
    before = standin.keep_bytes()
    report = migrate_images(concurrency=2)
    written = standin.keep_bytes() - before
    assert [o.path for o in report.images] == ["in place"] * 3
    assert 0 < written <= 0.01 * total, (written, total)
    assert sum(o.bytes_written for o in report.images) >= written
    assert sum(o.bytes_reused for o in report.images) > 0.98 * total


@pytest.mark.parametrize("attack", ["outer_dotdot_name", "layer_bzip2_bomb", "layer_dangling_hardlink"])
def test_malicious_archive_from_keep_is_refused_with_nothing_created(
    arvados: ArvadosSession, tmp_path: Path, attack: str
) -> None:
    """An attack archive read straight from Keep fails its image with the rule named; no collection, no link."""
    made = ATTACKS[attack]()
    path = tmp_path / "evil.tar"
    path.write_bytes(made.data)
    # A name and v1 ID of its own: the stand-in and the Prefect history are shared with other test files.
    v1_id = hashlib.sha256(attack.encode()).hexdigest()
    tag = f"evil/in-place-{attack.replace('_', '-')}:1"
    bad = seed_v1_image(arvados, path, v1_id, (tag,))
    before = (len(keyset(arvados, "collections", [])), len(keyset(arvados, "links", [])))
    with pytest.raises(PartialFailureError) as info:
        migrate_images(pdhs=(bad.collection.pdh,))
    (failed,) = info.value.report.images
    assert made.rule in failed.error
    assert (len(keyset(arvados, "collections", [])), len(keyset(arvados, "links", []))) == before
    with pytest.raises((MalformedArchiveError, UnsafeArchiveError, ArchiveLimitError)):
        plan_in_place(arvados, bad.collection.pdh, [tag], v1_id)


def test_keep_503s_while_reading_are_retried(
    arvados: ArvadosSession, standin: RunningStandin, tmp_path: Path
) -> None:
    """With 30% of Keep requests failing 503, the old image is still read in full and migrated in place."""
    path = tmp_path / "v1.tar"
    ids = write_large_v1_archive(path, 3 * MIB, layers=2, seed=60)
    seeded = seed_v1_image_in_blocks(arvados, path.read_bytes(), ids[-1], ("flaky/img:1",), block_sizes=(200_003,))
    standin.extra_args = ["--keep-failure-rate", "0.3", "--seed", "5"]
    standin.restart()
    report = migrate_images()
    (o,) = report.images
    assert (o.outcome, o.path) == ("migrated", "in place"), o.error
    requests = standin.stats()["requests"]
    assert sum(int(v) for k, v in requests.items() if "keep injected" in k) > 0
    (entry,) = upgrade(path, tmp_path / "expected.tar", ["flaky/img:1"], ids[-1]).entries
    assert o.new_id == entry.id and o.old_pdh == seeded.collection.pdh
