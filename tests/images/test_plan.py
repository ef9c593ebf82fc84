"""The upgrade plan: extents over the source, rendered output identical to the pre-plan converter's bytes."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

from keepdocker.images.plan import NewBytes, SourceRange, UpgradePlan, plan_upgrade
from keepdocker.images.upgrade import upgrade
from keepdocker.testing.v1archives import random_v1_archive

# The real 2015 archive (tests/fixtures/README.md), for running this file as a script; tests take the fixture.
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "moby-emptyLayer-v1.tar"
GOLDEN = Path(__file__).with_name("upgrade_golden.json")


def golden_cases() -> list[dict[str, Any]]:
    """Generated archives of every shape, with and without --tag/--image (the same list made the golden file)."""
    cases: list[dict[str, Any]] = []
    for seed in range(40):
        leaves = 1 + seed % 3
        gen: dict[str, Any] = {
            "seed": seed,
            "leaves": leaves,
            "outer": ["none", "gzip", "bzip2", "xz", "none"][seed % 5],
            "repositories": [None, True, False][seed % 3],
            "compressions": [("none",), ("none", "gzip", "bzip2", "xz"), ("none", "none", "gzip")][seed % 3],
        }
        cases.append({"gen": gen, "tags": [], "image": None})
        g = random_v1_archive(**gen)
        if leaves > 1:
            cases.append({"gen": gen, "tags": [], "image": g.leaves[-1]})
            cases.append({"gen": gen, "tags": [f"pick/seed{seed}:v1", "other:x"], "image": g.leaves[0]})
        else:
            cases.append({"gen": gen, "tags": [f"only/seed{seed}"], "image": None})
    return cases


def upgrade_digest(src: Path, dst: Path, tags: list[str], image: str | None) -> str:
    """The sha256 of ``keepdocker upgrade``'s output for one case."""
    upgrade(src, dst, tags, image)
    return hashlib.sha256(dst.read_bytes()).hexdigest()


def make_golden(workdir: Path, fixture: Path = FIXTURE) -> dict[str, str]:
    """Digests of today's upgrade output for every case (run once with the converter the plan replaced)."""
    out: dict[str, str] = {"fixture": upgrade_digest(fixture, workdir / "fixture.tar", [], None)}
    for n, case in enumerate(golden_cases()):
        gen = random_v1_archive(**case["gen"])
        src = gen.write(workdir / f"src-{n}.tar")
        out[str(n)] = upgrade_digest(src, workdir / f"dst-{n}.tar", case["tags"], case["image"])
    return out


def test_plan_rendering_equals_the_converter_it_replaced(tmp_path: Path, moby_v1_archive: Path) -> None:
    """``keepdocker upgrade`` (now: the plan written out) gives byte for byte what the converter before the plan gave,
    on the real 2015 archive and on generated archives of every shape (digests recorded with that converter)."""
    golden = json.loads(GOLDEN.read_text())
    assert golden == make_golden(tmp_path, moby_v1_archive)


def _render(plan: UpgradePlan, source: bytes, spill: bytes) -> bytes:
    out = b""
    for e in plan.extents:
        if isinstance(e, NewBytes):
            out += e.data
        elif isinstance(e, SourceRange):
            out += source[e.offset : e.offset + e.length]
        else:
            out += spill[e.offset : e.offset + e.length]
    return out


def test_plan_from_a_file_object_reuses_uncompressed_layers(tmp_path: Path) -> None:
    """Read from an unseekable file object, a plain archive's uncompressed layers are source ranges, compressed ones
    go to the spill decompressed, and the extents render to exactly the upgrade's bytes."""
    gen = random_v1_archive(5, layers=4, compressions=("none", "gzip"), empty_layers=False, max_file_size=40000)
    src = gen.write(tmp_path / "src.tar")
    spill = io.BytesIO()
    plan = plan_upgrade(io.BufferedReader(io.BytesIO(gen.data)), spill, label="keep.tar")  # type: ignore[arg-type]
    upgrade(src, tmp_path / "dst.tar")
    assert _render(plan, gen.data, spill.getvalue()) == (tmp_path / "dst.tar").read_bytes()
    kinds = set(gen.layer_compression.values())
    assert kinds == {"none", "gzip"}
    assert plan.reused_bytes > 0 and plan.spilled_bytes > 0
    assert plan.size == plan.reused_bytes + plan.spilled_bytes + plan.new_bytes
    assert len(spill.getvalue()) >= plan.spilled_bytes
    for e in plan.extents:
        if isinstance(e, SourceRange):
            assert e.offset % 512 == 0  # a tar entry's data starts on a block


def test_compressed_archive_spills_every_layer(tmp_path: Path) -> None:
    """An archive compressed as a whole has no addressable layer bytes: nothing is a source range."""
    gen = random_v1_archive(6, layers=3, outer="gzip", compressions=("none",))
    spill = io.BytesIO()
    plan = plan_upgrade(io.BytesIO(gen.data), spill)  # type: ignore[arg-type]
    assert plan.reused_bytes == 0 and plan.spilled_bytes > 0
    upgrade(gen.write(tmp_path / "src.tar.gz"), tmp_path / "dst.tar")
    assert _render(plan, b"", spill.getvalue()) == (tmp_path / "dst.tar").read_bytes()


def test_real_2015_archive_is_almost_all_reused(moby_v1_archive: Path) -> None:
    """The real docker save of 2015: every layer payload is reused, the rest is small."""
    with open(moby_v1_archive, "rb") as f:
        plan = plan_upgrade(f, io.BytesIO())  # type: ignore[arg-type]
    assert plan.spilled_bytes == 0
    assert plan.new_bytes < 16384 and plan.reused_bytes == plan.size - plan.new_bytes


if __name__ == "__main__":
    import sys

    print(json.dumps(make_golden(Path(sys.argv[1])), indent=1, sort_keys=True))
