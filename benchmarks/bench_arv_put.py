"""Benchmark: arv-put of a large file to a fresh stand-in, beside a plain local copy of the same bytes.

Run: ``uv run python benchmarks/bench_arv_put.py [--size-mib 512]``. Prints MiB/s for both and their ratio.
The arv-put figure is wall time of the real command (including its ~1 s start-up, reported separately).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keepdocker.testing.standin import running_standin

MIB = 1024 * 1024
SDK_BIN = Path(sys.executable).parent


def write_random(path: Path, size: int) -> None:
    """Write ``size`` random bytes to ``path``."""
    with open(path, "wb") as out:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 16 * MIB))
            out.write(chunk)
            remaining -= len(chunk)


def timed_copy(src: Path, dst: Path) -> float:
    """Seconds to copy ``src`` to ``dst`` with a plain read/write loop (no kernel copy offload)."""
    started = time.perf_counter()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 * MIB)
    return time.perf_counter() - started


def timed_arv_put(path: Path, env: dict[str, str]) -> tuple[float, str]:
    """Seconds for `arv-put` of ``path`` and the collection UUID it printed."""
    started = time.perf_counter()
    result = subprocess.run(
        [str(SDK_BIN / "arv-put"), "--no-progress", "--no-cache", str(path)],
        env=env, capture_output=True, text=True, check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"arv-put failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed, result.stdout.strip()


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=512, help="file size in MiB (default 512)")
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    args = parser.parse_args()
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="bench-arv-put-", dir=args.dir) as tmp:
        root = Path(tmp)
        src = root / "payload.bin"
        write_random(src, size)
        tiny = root / "tiny.bin"
        tiny.write_bytes(b"x")
        home = root / "home"
        home.mkdir()

        copy_s = timed_copy(src, root / "copy.bin")
        (root / "copy.bin").unlink()

        with running_standin(root / "standin-data") as standin:
            env = standin.client_env()
            env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"))
            startup_s, _ = timed_arv_put(tiny, env)
            put_s, uuid = timed_arv_put(src, env)
            stats = standin.stats()

        copy_rate = size / MIB / copy_s
        put_rate = size / MIB / put_s
        net_rate = size / MIB / max(put_s - startup_s, 1e-9)
        print(f"file size                 {args.size_mib} MiB")
        print(f"plain local copy          {copy_s:7.2f} s  {copy_rate:8.1f} MiB/s")
        print(f"arv-put to stand-in       {put_s:7.2f} s  {put_rate:8.1f} MiB/s  (collection {uuid})")
        print(f"arv-put start-up (1 byte) {startup_s:7.2f} s")
        print(f"arv-put minus start-up    {put_s - startup_s:7.2f} s  {net_rate:8.1f} MiB/s")
        print(f"ratio arv-put / copy      {put_rate / copy_rate:7.2f}  (minus start-up: {net_rate / copy_rate:.2f})")
        print(f"keep PUT requests         {stats['requests'].get('keep PUT', 0)}  blocks stored {stats['blocks']}")


if __name__ == "__main__":
    main()
