"""The real arv-put, arv-get and arv-ls work against a fresh stand-in, and its data survives a restart."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keepdocker.testing.standin import RunningStandin

MIB = 1024 * 1024


def _write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 8 * MIB))
            digest.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        for chunk in iter(lambda: src.read(8 * MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _put(run_sdk: Callable[..., Any], env: dict[str, str], path: Path, *extra: str) -> str:
    result = run_sdk("arv-put", "--no-progress", "--no-resume", *extra, str(path), env=env)
    assert result.returncode == 0, result.stderr
    return str(result.stdout.strip())


def test_multi_block_put_get_ls(
    standin: RunningStandin, sdk_env: dict[str, str], run_sdk: Callable[..., Any], tmp_path: Path
) -> None:
    """arv-put of a 70 MiB file makes two blocks; arv-get returns the same bytes; arv-ls lists it by UUID and PDH."""
    src = tmp_path / "big.bin"
    want = _write_random(src, 70 * MIB)
    uuid = _put(run_sdk, sdk_env, src)
    assert uuid.startswith("zzzzz-4zz18-")
    stats = standin.stats()
    assert stats["requests"]["keep PUT"] == 2
    assert stats["blocks"] == 2

    listing = run_sdk("arv-ls", uuid, env=sdk_env)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == ["./big.bin"]

    manifest = run_sdk("arv-get", uuid, env=sdk_env)
    assert manifest.returncode == 0, manifest.stderr
    assert manifest.stdout.count("+A") == 2
    pdh = run_sdk("arv-put", "--no-progress", "--portable-data-hash", "--no-resume", str(src), env=sdk_env)
    assert pdh.returncode == 0, pdh.stderr
    by_pdh = run_sdk("arv-ls", pdh.stdout.strip(), env=sdk_env)
    assert by_pdh.returncode == 0, by_pdh.stderr
    assert by_pdh.stdout.split() == ["./big.bin"]

    out = tmp_path / "copy.bin"
    got = run_sdk("arv-get", f"{uuid}/big.bin", str(out), env=sdk_env)
    assert got.returncode == 0, got.stderr
    assert _sha256(out) == want


def test_data_survives_restart(
    standin: RunningStandin, sdk_env: dict[str, str], run_sdk: Callable[..., Any], tmp_path: Path
) -> None:
    """After SIGTERM (exit 0) and a restart on the same data dir, tokens, records and blocks are all intact."""
    src = tmp_path / "small.bin"
    want = _write_random(src, 3 * MIB)
    uuid = _put(run_sdk, sdk_env, src)
    before = standin.stats()
    tokens = (standin.admin_token, standin.user_token)

    standin.restart()
    assert (standin.admin_token, standin.user_token) == tokens
    after = standin.stats()
    assert after["records"] == before["records"]
    assert after["blocks"] == before["blocks"] == 1

    out = tmp_path / "again.bin"
    got = run_sdk("arv-get", f"{uuid}/small.bin", str(out), env=sdk_env)
    assert got.returncode == 0, got.stderr
    assert _sha256(out) == want


def test_put_into_project_as_regular_user(
    standin: RunningStandin, sdk_env: dict[str, str], run_sdk: Callable[..., Any], tmp_path: Path
) -> None:
    """A non-admin's arv-put --project-uuid stores into their project, with no storage-class warning."""
    status, project = standin.request(
        "POST", "/arvados/v1/groups", token=standin.user_token, body={"name": "uploads", "group_class": "project"}
    )
    assert status == 200, project
    src = tmp_path / "f.txt"
    src.write_text("hello\n")
    env = {**sdk_env, "ARVADOS_API_TOKEN": standin.user_token}
    result = run_sdk("arv-put", "--no-progress", "--no-resume", "--project-uuid", project["uuid"], str(src), env=env)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
    status, coll = standin.request("GET", f"/arvados/v1/collections/{result.stdout.strip()}", token=standin.user_token)
    assert status == 200 and coll["owner_uuid"] == project["uuid"]
    status, _ = standin.request("GET", f"/arvados/v1/collections/{coll['uuid']}", token=standin.admin_token)
    assert status == 200
