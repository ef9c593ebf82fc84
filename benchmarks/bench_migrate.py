"""Benchmark: a real migrate-images sweep of generated v1 images beside one md5 + sha256 pass over the same tars.

Run: ``uv run python benchmarks/bench_migrate.py [--images 20] [--total-mib 1024] [--concurrency 1,2] [--ephemeral]
[--rss-mib 2048,256] [--strategy native|engine]``.
Generates ``--images`` v1 archives of two big uncompressed layers each (about ``--total-mib`` in all), times one pass
per tar computing md5 and sha256 together (the sum is the floor: Keep's client checks md5 on every read and the diff
IDs need sha256), then for each concurrency seeds a fresh stand-in like an old cluster (`seed_v1_image`: `<v1 id>.tar`
collections with hash and repo+tag links, in two owners) and times `keepdocker migrate --concurrency N` (the
`migrate-images` flow) with a fresh cache. It prints the Keep bytes the sweep wrote, measured at the stand-in's block
store before and after, and the bytes reused and written as the report sums them. By default the flow runs on a
`prefect server start` of its own (PREFECT_API_URL exported), which also gives the per-task breakdown;
``--ephemeral`` uses the ephemeral API instead. Prints images per minute, MiB/s, the ratio sweep/floor and the target
(concurrency 2 within 3x the floor, aiming for 1.5x).

Then, for each size in ``--rss-mib``, one image of that size is migrated in place by a child process (the core
functions, no Prefect) whose peak RSS comes from ``wait4``'s ``ru_maxrss``, with the bytes left on local disk under
its private HOME and cache (the SDK's disk cache would land there): the target is under 256 MB whatever the size.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
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


def md5_sha256_seconds(path: Path) -> float:
    """Seconds for one pass over the file in 1 MiB reads, updating an md5 and a sha256."""
    started = time.perf_counter()
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(MIB):
            md5.update(piece)
            sha.update(piece)
    return time.perf_counter() - started


# The child that migrates one image in place: the core functions only, as a migrate-in-place task runs them.
_RSS_CHILD = """
import sys
from keepdocker.arv.client import ArvadosConfig, connect
from keepdocker.arv.inplace import place_in_place, plan_in_place
from keepdocker.arv.push import find_existing
session = connect(ArvadosConfig.from_env())
pdh, v1_id, owner = sys.argv[1:4]
plan = plan_in_place(session, pdh, ["rss/big:1"], v1_id)
assert not plan.fallback, plan.fallback
ref, action = place_in_place(session, plan, find_existing(session, plan.image_id, owner), name="rss", repo_tag=None)
print(plan.size, plan.reused_bytes, plan.written_bytes, action)
"""

# Forks from a small launcher, so the child's high-water mark is its own (not inherited from this process).
_LAUNCHER = """
import os, sys, time
start = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), time.monotonic() - start, usage.ru_maxrss * 1024)
"""


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root``."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def peak_rss(work: Path, mib: int) -> str:
    """Migrate one ``mib`` MiB image in place in a child process; its peak RSS, wall time and local disk used."""
    archive = work / f"rss-{mib}.tar"
    ids = write_large_v1_archive(archive, mib * MIB, layers=2, seed=77)
    with bench_standin(work / f"standin-rss-{mib}") as standin:
        env = standin.client_env({})
        session = connect(ArvadosConfig.from_env(env))
        seeded = seed_v1_image(session, archive, ids[-1], ("rss/big:1",))
        archive.unlink()
        home = work / f"home-rss-{mib}"
        home.mkdir()
        child_env = {**os.environ, **env, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
                     "KEEPDOCKER_CACHE_DIR": str(home / "kd-cache")}
        before = standin.keep_bytes()
        done = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, sys.executable, "-c", _RSS_CHILD, seeded.collection.pdh, ids[-1],
             seeded.owner_uuid],
            env=child_env, capture_output=True, text=True, timeout=3600, check=True,
        )
        code, seconds, rss = done.stdout.splitlines()[-1].split()
        if int(code) != 0:
            raise SystemExit(f"the in-place child failed: {done.stderr[-2000:]}")
        size, reused, written, action = done.stdout.splitlines()[-2].split(maxsplit=3)
        keep = standin.keep_bytes() - before
    return (f"{mib} MiB image in place: peak RSS {int(rss) / MIB:.0f} MiB (target < 256 MB), {float(seconds):.1f} s, "
            f"{int(size) / MIB:.0f} MiB tar: {int(reused) / MIB:.1f} MiB reused, {int(written)} bytes written "
            f"(block store +{keep} bytes), local disk left under HOME: {tree_bytes(home)} bytes ({action})")


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
    parser.add_argument("--strategy", default="native", choices=("native", "engine"), help="sweep strategy")
    parser.add_argument("--rss-mib", default="2048,256", help="image sizes for the peak-RSS runs ('' for none)")
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
        hashing = sum(md5_sha256_seconds(p) for p, _ in archives)
        print(f"md5+sha256 passes (the floor): {hashing:.2f} s summed ({total / MIB / hashing:.0f} MiB/s)")

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
                    keep_before = standin.keep_bytes()
                    cpu_before = (group_cpu_seconds(standin.process.pid),
                                  group_cpu_seconds(bench_push.SERVER_PGID) if bench_push.SERVER_PGID else 0.0)
                    run = timed([str(BIN / "keepdocker"), "migrate", "--concurrency", str(c),
                                 "--strategy", args.strategy], env)
                    keep_written = standin.keep_bytes() - keep_before
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
                    print(f"concurrency {c}: Keep bytes written (block store before/after): {keep_written} "
                          f"= {100 * keep_written / total:.3f}% of the images' {total} bytes", flush=True)
                    results.append((c, run.seconds, detail))

        if args.ephemeral:
            sweeps(None)
        else:
            with prefect_server(work / "prefect-server") as url:
                sweeps(url)
        for p, _ in archives:
            p.unlink()
        rss_lines = []
        for m in (int(x) for x in args.rss_mib.split(",") if x.strip()):
            rss_lines.append(peak_rss(work, m))
            print(rss_lines[-1], flush=True)

    mode = "ephemeral API" if args.ephemeral else "Prefect server"
    print()
    print(f"{args.images} images, {total / MIB:.0f} MiB, strategy {args.strategy}, flow on the {mode}; "
          f"md5+sha256 floor {hashing:.2f} s")
    print(f"{'concurrency':>11} {'sweep s':>8} {'images/min':>10} {'MiB/s':>7} {'sweep/floor':>11}")
    for c, seconds, _ in results:
        print(f"{c:>11} {seconds:8.1f} {len(archives) * 60 / seconds:10.1f} {total / MIB / seconds:7.1f} "
              f"{seconds / hashing:11.2f}")
    for c, seconds, _ in results:
        if c == 2:
            verdict = "met" if seconds / hashing <= TARGET_RATIO else "MISSED"
            print(f"target: sweep at concurrency 2 within {TARGET_RATIO:.0f}x the md5+sha256 floor (aim 1.5x): "
                  f"{seconds / hashing:.2f}x, {verdict}")
    for line in rss_lines:
        print(line)
    print(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
