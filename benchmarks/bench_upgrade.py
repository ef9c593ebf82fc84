"""Benchmark the engine-free v1 upgrade against a plain sha256 pass and the engine path (docker load + docker save).

Usage: ``uv run python benchmarks/bench_upgrade.py [--mib 512] [--no-engine]``. Generates a v1 archive of two large
layers, then in one run measures: a sha256 pass over the file; ``upgrade_archive`` in a child process (wall time and
its peak RSS from ``wait4``); and, on a private dockerd, ``docker load`` + ``docker save``. Prints seconds, MiB/s,
ratios and the targets (upgrade within 2x the sha256 pass, >= 8x faster than the engine, peak RSS < 150 MB).
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

from keepdocker.testing.dockerd import private_engine
from keepdocker.testing.v1archives import write_large_v1_archive

_CHILD = """
import sys, time
from pathlib import Path
from keepdocker.images.upgrade import upgrade_archive
start = time.perf_counter()
entries = upgrade_archive(Path(sys.argv[1]), Path(sys.argv[2]))
print(time.perf_counter() - start)
for entry in entries:
    print(entry.id, *entry.tags)
"""


def sha256_pass(path: Path) -> float:
    """Seconds for a plain sha256 of the file, read in 1 MiB pieces."""
    start = time.perf_counter()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return time.perf_counter() - start


def our_upgrade(src: Path, dst: Path) -> tuple[float, float, int, str]:
    """Process wall seconds, seconds inside upgrade_archive, peak RSS in bytes and the entries, from a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(src), str(dst)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"upgrade failed with exit code {proc.returncode}")
    inner, _, entries = out.partition("\n")
    return elapsed, float(inner), usage.ru_maxrss * 1024, entries.strip()


def engine_path(src: Path, out: Path) -> tuple[float, float]:
    """Seconds for `docker load` and `docker save` of the archive on a private engine."""
    with private_engine() as engine:
        env = {**os.environ, "DOCKER_HOST": engine.host}
        start = time.perf_counter()
        subprocess.run(["docker", "load", "-i", str(src)], check=True, env=env, capture_output=True)
        loaded = time.perf_counter()
        subprocess.run(["docker", "save", "-o", str(out), "bench/big:latest"], check=True, env=env, capture_output=True)
        saved = time.perf_counter()
    return loaded - start, saved - loaded


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=512, help="archive size in MiB (default 512)")
    parser.add_argument("--runs", type=int, default=3, help="upgrade runs (best time reported, max RSS)")
    parser.add_argument("--no-engine", action="store_true", help="skip the engine path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-upgrade-", dir="/tmp") as tmp:
        work = Path(tmp)
        src = work / "v1.tar"
        write_large_v1_archive(src, args.mib << 20, layers=2, seed=1)
        mib = src.stat().st_size / (1 << 20)
        sha256_pass(src)  # warm the page cache so both passes read from memory
        t_sha = sha256_pass(src)
        runs = [our_upgrade(src, work / "v2.tar") for _ in range(args.runs)]
        t_wall, t_ours, rss, out = min(runs, key=lambda r: r[1])
        rss = max(r[2] for r in runs)
        print(f"archive: {mib:.0f} MiB, 2 layers; our output: {out}")
        print(f"sha256 pass    : {t_sha:7.2f} s  {mib / t_sha:8.1f} MiB/s")
        print(
            f"our upgrade    : {t_ours:7.2f} s  {mib / t_ours:8.1f} MiB/s  (best of {args.runs}; child process wall "
            f"{t_wall:.2f} s incl. interpreter start)"
        )
        print(
            f"upgrade / sha256 = {t_ours / t_sha:.2f}x   (target <= 2x; with interpreter start {t_wall / t_sha:.2f}x)"
        )
        print(f"peak RSS = {rss / 1e6:.1f} MB   (target < 150 MB)")
        if not args.no_engine:
            (work / "v2.tar").unlink()
            t_load, t_save = engine_path(src, work / "engine.tar")
            t_engine = t_load + t_save
            print(
                f"engine path    : {t_engine:7.2f} s  {mib / t_engine:8.1f} MiB/s  "
                f"(load {t_load:.2f} s + save {t_save:.2f} s)"
            )
            print(
                f"engine / upgrade = {t_engine / t_ours:.1f}x   (target >= 8x; vs child wall {t_engine / t_wall:.1f}x)"
            )


if __name__ == "__main__":
    main()
