"""Every class of hostile or broken v1 archive is refused with the right error, naming the rule, writing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from keepdocker.errors import ArchiveError
from keepdocker.images.upgrade import upgrade_archive
from keepdocker.testing.v1archives import ATTACKS


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_is_refused_without_output(tmp_path: Path, name: str) -> None:
    """The attack raises its expected ArchiveError subclass with the rule in the message; DST and temps are absent."""
    attack = ATTACKS[name]()
    src = tmp_path / "src.tar"
    src.write_bytes(attack.data)
    dst = tmp_path / "dst.tar"
    with pytest.raises(ArchiveError) as caught:
        upgrade_archive(src, dst)
    assert isinstance(caught.value, attack.error), f"{type(caught.value).__name__}: {caught.value}"
    assert attack.rule in caught.value.message
    assert "\n" not in caught.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.tar"]


def test_refusal_keeps_an_existing_dst(tmp_path: Path) -> None:
    """A failed upgrade never replaces or truncates an existing DST."""
    src = tmp_path / "src.tar"
    src.write_bytes(ATTACKS["parent_cycle"]().data)
    dst = tmp_path / "dst.tar"
    dst.write_bytes(b"previous result")
    with pytest.raises(ArchiveError):
        upgrade_archive(src, dst)
    assert dst.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst.tar", "src.tar"]
