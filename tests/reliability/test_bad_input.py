"""Bad input refused: every archive attack (upgrade, push, sweep), bombs within fixed limits, bad arguments first."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from reliability_support import KEEPDOCKER, MakeStandin, PrefectServer, admin_session, run_cli, standin_rows

from cli import main as cli
from keepdocker.arv.catalog import MIGRATION_LINK
from keepdocker.images.limits import MAX_RATIO, RATIO_FREE_BYTES
from keepdocker.testing.oldcluster import seed_v1_image
from keepdocker.testing.standin import RunningStandin
from keepdocker.testing.v1archives import (
    ATTACKS,
    Attack,
    V1Builder,
    gzip_bomb,
    layer_json,
    tar_end,
    tar_header,
    tar_member,
)

V1_ID = "a" * 64
# Fixed budgets a refusal must stay within (measured figures are printed; see the README's Reliability section).
MAX_RSS_MB = 150
MAX_SECONDS = 30.0


@cache
def attacks() -> dict[str, Attack]:
    """Every attack archive, built once per session (the bzip2 bombs take seconds to compress)."""
    return {name: build() for name, build in ATTACKS.items()}


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (relative), to prove nothing else was written."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def error_lines(stderr: str, command: str) -> list[str]:
    """The CLI's own error lines."""
    return [line for line in stderr.splitlines() if line.startswith(f"keepdocker {command}: ")]


def test_upgrade_cli_refuses_every_attack(tmp_path: Path) -> None:
    """`keepdocker upgrade` exits 1 with one line naming the entry and rule; DST and temporaries never appear."""
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    for name, attack in attacks().items():
        (work / f"{name}.tar").write_bytes(attack.data)
    before = tree(tmp_path)

    def one(name: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        cmd = [KEEPDOCKER, "upgrade", f"{name}.tar", f"out-{name}.tar"]
        return name, subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300, check=False)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, sorted(attacks())))
    for name, done in results:
        attack = attacks()[name]
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1, (name, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("keepdocker upgrade: error: "), (name, done.stderr)
        assert attack.rule in lines[0], (name, lines[0])
        assert done.stdout == ""
    assert tree(tmp_path) == before


def test_upgrade_refuses_malformed_layer_jsons(tmp_path: Path) -> None:
    """Layer jsons Docker's legacy load also refuses, beyond the attacks: type errors, bad `created`, deep JSON, BOM."""
    import random

    rng = random.Random(3)
    good = layer_json(rng, V1_ID, None)
    cases = {
        "created_not_rfc3339": (good.replace(b'"created":"2015-', b'"created":"15-'), "created"),
        "created_wrong_type": (
            b'{"id":"x","created":12,"docker_version":"1.9.1"}',
            "json",
        ),
        "size_wrong_type": (good[:-1] + b',"Size":"big"}', "json"),
        "config_wrong_type": (good.replace(b'"config":{', b'"config":[{', 1)[:-1] + b"]}", "json"),
        "json_too_deep": (b'{"id":"x","x":' + b"[" * 10_001 + b"]" * 10_001 + b"}", "json"),
        "json_bom": (b"\xef\xbb\xbf" + good, "json"),
    }
    for name, (doc, rule) in cases.items():
        data = V1Builder().layer(V1_ID, doc, tar_end()).build()
        (tmp_path / f"{name}.tar").write_bytes(data)
        done = run_cli(
            "upgrade", str(tmp_path / f"{name}.tar"), str(tmp_path / f"{name}-out.tar"), env=dict(os.environ)
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1, (name, done.stderr, done.stdout)
        assert len(lines) == 1 and rule in lines[0].lower(), (name, lines)
        assert not (tmp_path / f"{name}-out.tar").exists()


@pytest.fixture()
def in_process_flows(
    reliability_prefect: PrefectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Run flows in this process against the dedicated server, with the CLI's defaults pinned for the test only."""
    from prefect.settings import PREFECT_API_URL, PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    for name, value in {
        "HOME": str(home),
        "KEEPDOCKER_CACHE_DIR": str(tmp_path / "cache"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",
    }.items():
        monkeypatch.setenv(name, value)
    settings = {PREFECT_API_URL: reliability_prefect.url, PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(tmp_path / "results")}
    with temporary_settings(settings):  # type: ignore[dict-item]
        yield


@pytest.fixture()
def push_standin(make_standin: MakeStandin, in_process_flows: None, monkeypatch: pytest.MonkeyPatch) -> RunningStandin:
    """A stand-in whose ARVADOS_* settings the in-process CLI uses."""
    standin = make_standin()
    for name, value in standin.client_env({}).items():
        if name.startswith("ARVADOS_"):
            monkeypatch.setenv(name, value)
    return standin


@pytest.mark.slow
def test_push_from_archive_refuses_every_attack(
    push_standin: RunningStandin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keepdocker push --from-archive` of each attack exits 1 naming the rule, before any collection or link."""
    standin = push_standin
    work = tmp_path / "archives"
    work.mkdir()
    for name, attack in attacks().items():
        (work / f"{name}.tar").write_bytes(attack.data)
    before = tree(tmp_path / "archives")
    for name, attack in sorted(attacks().items()):
        code = cli.run(["push", "kd/evil:1", "--from-archive", str(work / f"{name}.tar")])
        err = capsys.readouterr().err
        mine = error_lines(err, "push")
        assert code == 1, (name, err[-2000:])
        assert len(mine) == 1 and err.strip().splitlines()[-1] == mine[0], (name, err[-2000:])
        if name not in ("empty_file", "not_an_image"):  # those are refused as "not an image archive" at all
            assert attack.rule in mine[0], (name, mine[0])
    assert tree(tmp_path / "archives") == before
    assert standin_rows(standin, "collections") == 0
    assert standin_rows(standin, "links") == 0
    cache_dir = tmp_path / "cache"
    leftovers = [p for p in cache_dir.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert leftovers == []


def current_archive(layer: bytes) -> bytes:
    """A Docker 1.10-24 layout archive of one image with the single (uncompressed) layer ``layer``."""
    diff = hashlib.sha256(layer).hexdigest()
    config = json.dumps({"os": "linux", "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff}"]}}).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": ["kd/twice:1"], "Layers": [f"{diff}/layer.tar"]}]
    b = V1Builder().dir(diff).file(f"{diff}/layer.tar", layer).file(f"{config_hex}.json", config)
    return b.file("manifest.json", json.dumps(manifest).encode()).build()


@pytest.mark.slow
def test_push_from_archive_refuses_a_current_archive_no_engine_loads(
    push_standin: RunningStandin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A v2 archive whose layer names a path twice (tar-split refuses it at load) is refused before any upload."""
    standin = push_standin
    path = tmp_path / "twice.tar"
    path.write_bytes(current_archive(tar_member("a", b"1") + tar_member("./a", b"2") + tar_end()))
    code = cli.run(["push", "kd/twice:1", "--from-archive", str(path)])
    mine = error_lines(capsys.readouterr().err, "push")
    assert code == 1 and len(mine) == 1 and "names this path twice" in mine[0], mine
    assert standin_rows(standin, "collections") == 0
    assert standin_rows(standin, "links") == 0


@pytest.mark.slow
def test_sweep_refuses_every_attack_and_links_nothing(
    make_standin: MakeStandin, base_env: dict[str, str], tmp_path: Path
) -> None:
    """Each attack stored as a v1 image fails alone with its rule in the summary; no collection, no link is made."""
    standin = make_standin()
    session = admin_session(standin)
    pdhs: dict[str, str] = {}
    for name, attack in sorted(attacks().items()):
        path = tmp_path / f"{name}.tar"
        path.write_bytes(attack.data)
        pdhs[name] = seed_v1_image(session, path, V1_ID, (f"evil/{name.replace('_', '-')}:1",)).collection.pdh
    before = (standin_rows(standin, "collections"), standin_rows(standin, "links"))
    env = standin.client_env(base_env)
    done = run_cli("migrate", "--concurrency", "2", env=env)
    assert done.returncode == 1, done.stderr[-2000:]
    rows = {line.split()[1]: line for line in done.stdout.splitlines()[1:-1]}
    for name, pdh in pdhs.items():
        assert "failed:" in rows[pdh], (name, rows[pdh])
        assert attacks()[name].rule in rows[pdh] or name in ("empty_file", "not_an_image"), (name, rows[pdh])
    assert f"0 migrated, {len(pdhs)} failed" in done.stdout.splitlines()[-1]
    assert (standin_rows(standin, "collections"), standin_rows(standin, "links")) == before
    assert standin_rows(standin, "links", f"link_class = '{MIGRATION_LINK}'") == 0
    cache_dir = Path(env["KEEPDOCKER_CACHE_DIR"])
    assert not [p for p in cache_dir.rglob("*") if p.name.startswith(".tmp#") or p.name.endswith(".partial")]


# Forks from a small launcher: a child forked straight from pytest would inherit pytest's RSS high-water mark.
_LAUNCHER = """
import os, sys, time
start = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), time.monotonic() - start, usage.ru_maxrss / 1024)
"""


def _measure(args: list[str], cwd: Path) -> tuple[int, str, float, float]:
    """Run a command; return its exit code, stderr, wall seconds and peak RSS in MiB (from wait4)."""
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=True
    )
    code, seconds, rss = done.stdout.splitlines()[-1].split()
    return int(code), done.stderr, float(seconds), float(rss)


def _xz_bomb(decompressed: int, prefix: bytes = b"") -> bytes:
    """An xz stream of ``prefix``, a tar header for a file of ``decompressed`` zero bytes, and those bytes."""
    comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=6)
    parts = [comp.compress(prefix + tar_header("zeros", decompressed))]
    zeros = bytes(1 << 20)
    for _ in range(decompressed >> 20):
        parts.append(comp.compress(zeros))
    parts.append(comp.flush())
    return b"".join(parts)


def _with_layer(layer: bytes) -> bytes:
    import random

    return V1Builder().layer(V1_ID, layer_json(random.Random(1), V1_ID, None), layer).build()


@pytest.mark.slow
def test_bombs_and_huge_sizes_refused_within_fixed_limits(tmp_path: Path) -> None:
    """Bombs and huge declared sizes are refused by `keepdocker upgrade` under 150 MiB RSS and 30 s each."""
    cases: dict[str, tuple[bytes, str]] = {
        name: (attacks()[name].data, attacks()[name].rule)
        for name in (
            "layer_bzip2_bomb",
            "outer_bzip2_bomb",
            "layer_huge_declared_size",
            "layer_huge_pax",
            "outer_huge_pax",
            "json_too_big",
            "layer_long_name",
        )
    }
    cases["layer_xz_bomb_1g"] = (_with_layer(_xz_bomb(1 << 30)), "ratio")
    outer = _with_layer(tar_end())
    cases["outer_xz_bomb_1g"] = (_xz_bomb(1 << 30, outer[: -2 * 512]), "ratio")
    figures = {}
    for name, (data, rule) in cases.items():
        src = tmp_path / f"{name}.tar"
        src.write_bytes(data)
        code, err, seconds, rss = _measure([KEEPDOCKER, "upgrade", src.name, "out.tar"], tmp_path)
        figures[name] = (len(data), round(seconds, 2), round(rss, 1))
        assert code == 1 and rule in err, (name, err)
        assert len(err.strip().splitlines()) == 1, (name, err)
        assert rss < MAX_RSS_MB and seconds < MAX_SECONDS, (name, rss, seconds)
        assert not (tmp_path / "out.tar").exists()
    # A gzip stream cannot pass about 1032:1, under MAX_RATIO: a 256 MiB gzip "bomb" is a legal layer, streamed
    # through at bounded memory (the 64 GiB per-layer cap refuses larger ones).
    assert MAX_RATIO > 1032 and RATIO_FREE_BYTES < 256 << 20
    src = tmp_path / "gzip_256m.tar"
    src.write_bytes(_with_layer(gzip_bomb(256 << 20)))
    code, err, seconds, rss = _measure([KEEPDOCKER, "upgrade", src.name, "out.tar"], tmp_path)
    figures["layer_gzip_256m_accepted"] = (src.stat().st_size, round(seconds, 2), round(rss, 1))
    assert code == 0, err
    assert rss < MAX_RSS_MB, rss
    print("\nFIGURES bombs (input bytes, seconds, peak RSS MiB):")
    for name, row in figures.items():
        print(f"  {name}: {row}")


BAD_ARGUMENTS = [
    (["push", "Bad Image!"], "IMAGE: "),
    (["push", "kd/ok", "bad tag!"], "TAG: "),
    (["push", "kd/ok:1", "--project-uuid", "not-a-uuid"], "--project-uuid: "),
    (["push", "kd/ok:1", "--pull", "--from-archive", "/nonexistent.tar"], "--pull and --from-archive"),
    (["migrate", "--pdh", "nothex+12"], "--pdh: "),
    (["migrate", "--limit", "-1"], "--limit: "),
    (["migrate", "--limit", "0"], "--limit: "),
    (["migrate", "--concurrency", "0"], "--concurrency: "),
    (["migrate", "--project-uuid", "zzzzz-4zz18-aaaaaaaaaaaaaaa"], "--project-uuid: "),
    (["upgrade", "/nonexistent-src.tar", "out.tar"], "SRC"),
    (["upgrade", "--tag", "Bad:Tag!", "/nonexistent-src.tar", "out.tar"], "tag"),
]


@pytest.mark.slow
def test_bad_cli_arguments_rejected_before_any_work(
    make_standin: MakeStandin, base_env: dict[str, str], tmp_path: Path
) -> None:
    """Bad names, tags, UUIDs, PDHs and limits: exit 2 and one line naming the flag as typed; the API sees nothing."""
    standin = make_standin()
    env = standin.client_env(base_env)
    before = standin.stats()["requests"]

    def one(case: tuple[list[str], str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KEEPDOCKER, *case[0]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(one, BAD_ARGUMENTS))
    for (args, field), done in zip(BAD_ARGUMENTS, results, strict=True):
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith(f"keepdocker {args[0]}: error: "), (args, lines)
        assert field.lower() in lines[0].lower(), (args, lines)
    after = standin.stats()["requests"]
    after["api GET /_standin/stats"] -= 1
    assert after == before
    assert not (tmp_path / "out.tar").exists()


def test_bad_flow_parameters_fail_before_any_task(
    make_standin: MakeStandin, in_process_flows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad parameters (as a deployment passes them) fail before any task or request, naming the parameter.

    Bounds and patterns fail Prefect's validation of the flat signature; what needs two parameters at once (a tag
    given twice) fails the core request's validation as the flow's first step, with the parameter's spelling.
    """
    from prefect.exceptions import ParameterTypeError

    from flows.migrate import migrate_image, migrate_images
    from flows.push import push_image
    from keepdocker.errors import UsageError

    standin = make_standin()
    for name, value in standin.client_env({}).items():
        monkeypatch.setenv(name, value)
    before = standin.stats()["requests"]
    bad: list[tuple[Any, dict[str, Any], type[Exception], str]] = [
        (migrate_images, {"limit": -1}, ParameterTypeError, "limit"),
        (migrate_images, {"pdhs": ["zzzzz-4zz18-aaaaaaaaaaaaaaa"]}, ParameterTypeError, "pdhs"),
        (migrate_images, {"concurrency": 0}, ParameterTypeError, "concurrency"),
        (migrate_images, {"request": {"dry_run": True}}, TypeError, "keyword argument .request."),
        (migrate_image, {"pdh": "zzzzz-4zz18-aaaaaaaaaaaaaaa"}, ParameterTypeError, "pdh"),
        (push_image, {"image": ""}, UsageError, "^image: give the image to push"),
        (push_image, {"image": "x" * 513}, ParameterTypeError, "image"),
        (push_image, {"image": "Bad Image!"}, UsageError, "^image: "),
        (push_image, {"image": "kd/x:1", "tag": "2"}, UsageError, "^tag: "),
        (push_image, {"image": "ok", "project_uuid": "../../etc"}, ParameterTypeError, "project_uuid"),
        (push_image, {"image": "ok", "pull": True, "from_archive": "/x.tar"}, UsageError, "^pull=true and from_arch"),
        (push_image, {"image": "ok", "credentials_block": "Not A Name"}, ParameterTypeError, "credentials_block"),
    ]
    for flow_fn, parameters, error, match in bad:
        with pytest.raises(error, match=match):
            flow_fn(**parameters)
    after = standin.stats()["requests"]
    after["api GET /_standin/stats"] -= 1
    assert after == before
