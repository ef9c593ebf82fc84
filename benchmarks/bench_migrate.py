"""Benchmark: a real migrate-images sweep of generated v1 images beside a pure sha256 pass over the same tars.

Run: ``uv run python benchmarks/bench_migrate.py [--images 20] [--total-mib 1024] [--concurrency 1,2] [--ephemeral]``.
Generates ``--images`` v1 archives of two big layers each (about ``--total-mib`` in all), times one sha256 pass per
tar (the sum is the hashing baseline), then for each concurrency seeds a fresh stand-in like an old cluster
(`seed_v1_image`: `<v1 id>.tar` collections with hash and repo+tag links, in two owners) and times
`keepdocker migrate --concurrency N` (the `migrate-images` flow) with a fresh cache, so every sweep does the full
work: download, upgrade, upload, link. By default the flow runs on a `prefect server start` of its own
(PREFECT_API_URL exported), which also gives the per-task breakdown; ``--ephemeral`` uses the ephemeral API instead.
Prints images per minute, MiB/s, the ratio sweep/hashing and the target (concurrency 2 within 3x hashing).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_push
from bench_push import (
    BIN,
    MIB,
    api_post,
    bench_standin,
    group_cpu_seconds,
    init_prefect_home,
    prefect_env,
    prefect_server,
    task_runs,
    timed,
    tool_env,
)
from bench_push import _seconds as run_seconds

from keepdocker.arv.client import ArvadosConfig, connect
from keepdocker.testing.oldcluster import seed_v1_image
from keepdocker.testing.standin import RunningStandin
from keepdocker.testing.v1archives import write_large_v1_archive

TARGET_RATIO = 3.0


def sha256_seconds(path: Path) -> float:
    """Seconds for one sha256 pass over the file in 1 MiB reads."""
    started = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(MIB):
            digest.update(piece)
    return time.perf_counter() - started


def seed(standin: RunningStandin, archives: list[tuple[Path, str]]) -> float:
    """Upload every archive as an old cluster stored it (alternating admin and user as owners); return seconds."""
    started = time.perf_counter()
    admin = connect(ArvadosConfig.from_env(standin.client_env({})))
    user_uuid = str(connect(ArvadosConfig.from_env(standin.client_env({}, standin.user_token)))
                    .api.users().current().execute()["uuid"])
    for i, (path, v1_id) in enumerate(archives):
        owner = user_uuid if i % 2 else None
        seed_v1_image(admin, path, v1_id, (f"bench/img{i}:v1",), owner_uuid=owner)
    return time.perf_counter() - started


def breakdown(url: str) -> str:
    """The newest migrate-images run: its duration and the summed seconds of each task kind."""
    runs = api_post(url, "/flow_runs/filter", {
        "flows": {"name": {"any_": ["migrate-images"]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 1,
    })
    if not runs:
        return "no flow run found"
    tasks = task_runs(url, runs[0]["id"])
    per: dict[str, float] = {}
    for t in tasks:
        kind = str(t["name"]).split("-")[0]
        if str(t["name"]).startswith("link-migration"):
            kind = "link-migration"
        elif str(t["name"]).startswith("discover"):
            kind = "discover"
        per[kind] = per.get(kind, 0.0) + run_seconds(t)
    parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
    return f"flow run {run_seconds(runs[0]):.1f} s; summed task seconds: {parts}"


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20, help="v1 images (default 20)")
    parser.add_argument("--total-mib", type=int, default=1024, help="their total size in MiB (default 1024)")
    parser.add_argument("--concurrency", default="1,2", help="sweep concurrencies to time (default 1,2)")
    parser.add_argument("--ephemeral", action="store_true", help="run the flow on the ephemeral API (no server)")
    parser.add_argument(
        "--no-bytecode-cache", action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE as set (every command recompiles what it imports)",
    )
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-migrate-", dir="/tmp") as tmp:
        work = Path(tmp)
        if not args.no_bytecode_cache:
            bench_push.PYCACHE = work / "pycache"
            bench_push.warm_bytecode()
        print(f"bytecode: {'cached' if bench_push.PYCACHE else 'as the environment says'}")
        started = time.perf_counter()
        archives: list[tuple[Path, str]] = []
        for i in range(args.images):
            path = work / f"v1-{i:02d}.tar"
            ids = write_large_v1_archive(path, args.total_mib * MIB // args.images, layers=2, seed=1000 + i)
            archives.append((path, ids[-1]))
        total = sum(p.stat().st_size for p, _ in archives)
        print(f"generated {len(archives)} v1 archives, {total / MIB:.0f} MiB, in {time.perf_counter() - started:.0f} s")
        hashing = sum(sha256_seconds(p) for p, _ in archives)
        print(f"sha256 passes: {hashing:.2f} s summed ({total / MIB / hashing:.0f} MiB/s)")

        prefect_home = work / "prefect-home"
        init_prefect_home(prefect_home)
        results: list[tuple[int, float, str]] = []

        def sweeps(server_url: str | None) -> None:
            for c in levels:
                with bench_standin(work / f"standin-c{c}") as standin:
                    seeded = seed(standin, archives)
                    extra = prefect_env(prefect_home)
                    if server_url:
                        extra["PREFECT_API_URL"] = server_url
                    env = tool_env(standin.client_env({}), os.environ.get("DOCKER_HOST", "unix:///nonexistent"),
                                   work / f"home-c{c}", extra)
                    assert standin.process is not None
                    cpu_before = (group_cpu_seconds(standin.process.pid),
                                  group_cpu_seconds(bench_push.SERVER_PGID) if bench_push.SERVER_PGID else 0.0)
                    run = timed([str(BIN / "keepdocker"), "migrate", "--concurrency", str(c)], env)
                    cpu = (f"CPU seconds: keepdocker {run.cpu:.1f}, stand-in "
                           f"{group_cpu_seconds(standin.process.pid) - cpu_before[0]:.1f}")
                    if bench_push.SERVER_PGID:
                        cpu += f", Prefect server {group_cpu_seconds(bench_push.SERVER_PGID) - cpu_before[1]:.1f}"
                    last = run.stdout.splitlines()[-1] if run.stdout else ""
                    if not last.startswith(f"{len(archives)} migrated, 0 failed"):
                        raise SystemExit(f"the sweep did not migrate every image: {last!r}\n{run.stdout[-3000:]}")
                    detail = breakdown(server_url) if server_url else "ephemeral API: no per-task breakdown"
                    print(f"concurrency {c}: seeded in {seeded:.1f} s; sweep {run.seconds:.1f} s ({last}); {detail}; "
                          f"{cpu} (of {2 * run.seconds:.0f} on {os.cpu_count()} cores)", flush=True)
                    results.append((c, run.seconds, detail))

        if args.ephemeral:
            sweeps(None)
        else:
            with prefect_server(work / "prefect-server") as url:
                sweeps(url)

    mode = "ephemeral API" if args.ephemeral else "Prefect server"
    print()
    print(f"{args.images} images, {total / MIB:.0f} MiB, flow on the {mode}; hashing baseline {hashing:.2f} s")
    print(f"{'concurrency':>11} {'sweep s':>8} {'images/min':>10} {'MiB/s':>7} {'sweep/hash':>10}")
    for c, seconds, _ in results:
        print(f"{c:>11} {seconds:8.1f} {len(archives) * 60 / seconds:10.1f} {total / MIB / seconds:7.1f} "
              f"{seconds / hashing:10.2f}")
    for c, seconds, _ in results:
        if c == 2:
            verdict = "met" if seconds / hashing <= TARGET_RATIO else "MISSED"
            print(f"target: sweep at concurrency 2 within {TARGET_RATIO:.0f}x hashing: "
                  f"{seconds / hashing:.2f}x, {verdict}")
    print(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
